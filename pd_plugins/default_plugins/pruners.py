"""Built-in pruners."""
from pd_plugins import hookimpl

_M = "pd_plugins.pruners"


@hookimpl
def register_pruners(register):
    register("random", f"{_M}.random:RandomPruner", summary="seeded random subset, class-balanced by default")
