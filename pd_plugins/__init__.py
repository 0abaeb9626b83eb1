"""pd_plugins: dataset distillation with pruning first.

Pruners, distillers, datasets, models, augmentations, evaluators and generators are
pluggy plugins. Importing this package is cheap: torch is only imported by the
strategies themselves, when they run.
"""
from __future__ import annotations

__version__ = "0.2.0"

from pd_plugins import _compat  # noqa: E402

_compat.install()  # old flat module paths keep importing for one release, with a DeprecationWarning

from pd_plugins.hookspecs import hookimpl  # noqa: E402
from pd_plugins.errors import (  # noqa: E402
    PdPluginsError,
    UnknownNameError,
    RegistryError,
    PluginLoadError,
    OptionsError,
    StrategyError,
    DataError,
)
from pd_plugins.strategies import Pruner, ScorePruner, Distiller  # noqa: E402


def get_registry(kind: str):
    """The registry of one kind ("pruner", "distiller", ...), with all plugins loaded."""
    from pd_plugins.plugins import registries

    return registries()[kind]


def list_pruners() -> list[str]:
    return get_registry("pruner").names()


def list_distillers() -> list[str]:
    return get_registry("distiller").names()


def get_pruner(name: str, **options):
    """Instantiate the pruner ``name`` with typed ``options``."""
    return get_registry("pruner").create(name, options)


def get_distiller(name: str, **options):
    """Instantiate the distiller ``name`` with typed ``options``."""
    return get_registry("distiller").create(name, options)


def run(config, **kwargs):
    """Run a full pipeline from a :class:`RunConfig` (see :mod:`pd_plugins.pipeline.runner`)."""
    from pd_plugins.pipeline.runner import run as _run

    return _run(config, **kwargs)


__all__ = [
    "__version__",
    "hookimpl",
    "Pruner",
    "ScorePruner",
    "Distiller",
    "get_registry",
    "get_pruner",
    "get_distiller",
    "list_pruners",
    "list_distillers",
    "run",
    "PdPluginsError",
    "UnknownNameError",
    "RegistryError",
    "PluginLoadError",
    "OptionsError",
    "StrategyError",
    "DataError",
]
