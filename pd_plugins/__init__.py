"""pd_plugins: dataset distillation with pruning first.

Pruners, distillers, datasets, models, augmentations, evaluators and generators are
pluggy plugins. ``import pd_plugins`` is the public API: every name in ``__all__`` (base
classes, data and result types, the run context and config, ``option``, the errors, ``hookimpl``
and the helpers plugin authors reuse) is importable from here, and only these names are
public; everything else lives in internal modules that may change. Importing this package is
cheap: names resolve lazily (``_EXPORTS``), and torch is only imported by the names that need it.
The guide is ``docs/plugins.md``; the test kit is :mod:`pd_plugins.testing`.
"""
from __future__ import annotations

import importlib
from typing import Any

from pd_plugins import _compat
from pd_plugins._version import __version__
from pd_plugins.pipeline import context as _context

_compat.install()  # old flat module paths keep importing for one release, with a DeprecationWarning

#: public name -> the module that defines it (imported on first access)
_EXPORTS: dict[str, str] = {
    # plugin hooks
    "hookimpl": "pd_plugins.hookspecs",
    "Register": "pd_plugins.hookspecs",
    # base classes
    "Strategy": "pd_plugins.strategies",
    "NoOptions": "pd_plugins.strategies",
    "Pruner": "pd_plugins.strategies",
    "ScorePruner": "pd_plugins.strategies",
    "Distiller": "pd_plugins.strategies",
    "Evaluator": "pd_plugins.strategies",
    "SelectionDistiller": "pd_plugins.distillation.real_selection",
    "Selection": "pd_plugins.distillation.real_selection",
    "Objective": "pd_plugins.distillation.objectives",
    "distill_pixels": "pd_plugins.distillation.objectives",
    "Generator": "pd_plugins.distillation.generative.base",
    "Augmenter": "pd_plugins.training.augment",
    "DatasetFactory": "pd_plugins.types",
    # data and result types
    "ImageDataset": "pd_plugins.types",
    "DataSplits": "pd_plugins.types",
    "PruneResult": "pd_plugins.types",
    "DistillResult": "pd_plugins.types",
    "EvalResult": "pd_plugins.types",
    "make_splits": "pd_plugins.data.builtin",
    # the run
    "RunContext": "pd_plugins.pipeline.context",
    "RunConfig": "pd_plugins.config",
    "load_config_file": "pd_plugins.config",
    "option": "pd_plugins.options",
    # errors
    "PdPluginsError": "pd_plugins.errors",
    "UnknownNameError": "pd_plugins.errors",
    "RegistryError": "pd_plugins.errors",
    "PluginLoadError": "pd_plugins.errors",
    "OptionsError": "pd_plugins.errors",
    "StrategyError": "pd_plugins.errors",
    "DataError": "pd_plugins.errors",
    "DivergenceError": "pd_plugins.errors",
    "StageExistsError": "pd_plugins.errors",
    # helpers for plugin authors
    "ScorerRecipe": "pd_plugins.pruning.scoring",
    "train_scorers": "pd_plugins.pruning.scoring",
    "embed_dataset": "pd_plugins.training.features",
    # what a strategy's ``cost`` hook declares (pd-run plan, the pre-run memory check)
    "StageCost": "pd_plugins.planning.costs",
    "NetworkPass": "pd_plugins.planning.costs",
    "TimedUnit": "pd_plugins.planning.costs",
    # the plugin host
    "Host": "pd_plugins.plugins",
    "get_host": "pd_plugins.plugins",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pd_plugins' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


def register_plugin(plugin, name: str = "") -> None:
    """Register a plugin object (a module, or an object with ``@hookimpl`` methods) with the
    process-wide host, as an installed entry point would be; ``name`` defaults to the module name."""
    from pd_plugins.plugins import get_host

    get_host().register(plugin, name or getattr(plugin, "__name__", "") or type(plugin).__name__)


def get_registry(kind: str):
    """The registry of one kind ("pruner", "distiller", ...), with all plugins loaded."""
    from pd_plugins.plugins import registries

    return registries()[kind]


_context.use_process_registry(get_registry)  # a RunContext without registries uses the process-wide host's


def list_pruners() -> list[str]:
    """Names of the registered pruners."""
    return get_registry("pruner").names()


def list_distillers() -> list[str]:
    """Names of the registered distillers."""
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
    *_EXPORTS,
    "register_plugin",
    "get_registry",
    "get_pruner",
    "get_distiller",
    "list_pruners",
    "list_distillers",
    "run",
]
