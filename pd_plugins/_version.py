"""The package version, in a module of its own so internal modules read it without importing the
``pd_plugins`` facade (which imports them)."""

__version__ = "0.2.0"
