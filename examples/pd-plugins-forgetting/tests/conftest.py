"""The pd_plugins test kit's fixtures (tiny_dataset, run_context, pd_host, ...)."""
from pd_plugins.testing import pd_host, run_context, tiny_dataset  # noqa: F401
