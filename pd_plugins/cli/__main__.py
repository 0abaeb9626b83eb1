"""``python -m pd_plugins.cli``: the same as ``pd-run``."""
from pd_plugins.cli import cli

if __name__ == "__main__":  # pragma: no cover
    cli()
