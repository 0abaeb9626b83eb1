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

from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, Union

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import click

    from pd_plugins.pipeline.context import RunContext
    from pd_plugins.types import DataSplits, DistillResult, EvalResult, PruneResult

hookspec = pluggy.HookspecMarker("pd_plugins")
hookimpl = pluggy.HookimplMarker("pd_plugins")

#: a strategy class, a factory callable, or a lazy ``"module:attr"`` string
Factory = Union[type, Callable[..., Any], str]


class Register(Protocol):
    """The callback provider hooks receive."""

    def __call__(self, name: str, factory: Factory, *, summary: str = "", aliases: Sequence[str] = (),
                 replace: bool = False, **meta: Any) -> None: ...


@hookspec
def register_pruners(register: Register) -> None:
    """Register pruners: :class:`pd_plugins.Pruner` subclasses with an ``Options`` dataclass."""


@hookspec
def register_distillers(register: Register) -> None:
    """Register distillers: :class:`pd_plugins.Distiller` subclasses with an ``Options`` dataclass."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register datasets: ``factory(root, **options) -> DataSplits``."""


@hookspec
def register_models(register: Register) -> None:
    """Register backbones: ``factory(channels, num_classes, im_size, **options) -> nn.Module`` with ``embed``."""


@hookspec
def register_augmentations(register: Register) -> None:
    """Register augmentations: ``factory(*, allow_flip, **options) -> Augmenter``."""


@hookspec
def register_evaluators(register: Register) -> None:
    """Register evaluators: :class:`pd_plugins.Evaluator` classes with ``Options`` and
    ``evaluate(train, test, ctx, *, lr=None, model=None, repeats=1) -> EvalResult``."""


@hookspec
def register_generators(register: Register) -> None:
    """Register generative priors (GLaD/LD3M): classes with ``Options``, ``init_latents`` and ``decode``."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click sub-commands to the ``pd-run`` group."""


@hookspec
def on_run_start(config: dict, context: RunContext) -> None:
    """Called once a run's config is resolved, before the data stage; ``config`` is what
    ``config.json`` holds (the run config, ``out`` and ``resolved``)."""


@hookspec
def on_stage_end(stage: str, result: Union[DataSplits, PruneResult, DistillResult, EvalResult],
                 context: RunContext) -> None:
    """Called after each stage that ran (``data``, ``prune``, ``distill``, ``eval``) with its result:
    DataSplits, PruneResult, DistillResult or EvalResult."""


@hookspec
def on_log(step: int, metrics: dict, context: RunContext) -> None:
    """Called for every ``ctx.log(step, **metrics)`` from a strategy."""
