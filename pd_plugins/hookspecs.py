"""Hook specifications of the ``pd_plugins`` plugin host.

Provider hooks receive a ``register`` callback owned by the host::

    register(name, factory, *, summary="", aliases=(), replace=False, **meta)

``factory`` is a class or callable, or a lazy ``"module:attr"`` string (preferred: it
keeps ``pd-run list`` from importing torch). Names are kebab-case; a plugin registering a
taken name is skipped (with one line naming both plugins) unless it passes ``replace=True``.
A factory must be of the hook's kind (see each hook): a class is checked when it registers, a
lazy string when it is first loaded.

Observer hooks are called for every run; their return values are ignored.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("pd_plugins")
hookimpl = pluggy.HookimplMarker("pd_plugins")


@hookspec
def register_pruners(register):
    """Register pruners: :class:`pd_plugins.Pruner` subclasses with an ``Options`` dataclass."""


@hookspec
def register_distillers(register):
    """Register distillers: :class:`pd_plugins.Distiller` subclasses with an ``Options`` dataclass."""


@hookspec
def register_datasets(register):
    """Register datasets: ``factory(root, **options) -> DataSplits``."""


@hookspec
def register_models(register):
    """Register backbones: ``factory(channels, num_classes, im_size, **options) -> nn.Module`` with ``embed``."""


@hookspec
def register_augmentations(register):
    """Register augmentations: ``factory(*, allow_flip, **options) -> Augmenter``."""


@hookspec
def register_evaluators(register):
    """Register evaluators: classes with ``Options`` and ``evaluate(distilled, test, ctx) -> EvalResult``."""


@hookspec
def register_generators(register):
    """Register generative priors (GLaD/LD3M): classes with ``Options``, ``init_latents`` and ``decode``."""


@hookspec
def register_commands(cli):
    """Add click sub-commands to the ``pd-run`` group."""


@hookspec
def on_run_start(config, context):
    """Called once a run's config is resolved, before the data stage."""


@hookspec
def on_stage_end(stage, result, context):
    """Called after each stage (``data``, ``prune``, ``distill``, ``eval``) with its result."""


@hookspec
def on_log(step, metrics, context):
    """Called for every ``ctx.log(step, **metrics)`` from a strategy."""
