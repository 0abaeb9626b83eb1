"""Built-in distillers."""
from pd_plugins import hookimpl

_M = "pd_plugins.distillers"


@hookimpl
def register_distillers(register):
    register("dm", f"{_M}.dm:DM", summary="Distribution Matching (Zhao & Bilen, WACV 2023)")
