"""Entry point of the plugin: registers the ``forgetting`` pruner lazily (no torch import here)."""
from pd_plugins import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_pruners(register):
    register("forgetting", "pd_plugins_forgetting.impl:ForgettingPruner",
             summary="forgetting events during training (Toneva et al. 2019)")
