"""What a strategy declares about its own cost, for ``pd-run plan`` and the pre-run memory check.

A strategy's optional ``cost`` hook (:meth:`pd_plugins.Pruner.cost`, :meth:`pd_plugins.Distiller.cost`,
:meth:`pd_plugins.Evaluator.cost`; same arguments as ``prune``/``distill``/``evaluate``) returns one
:class:`StageCost` per stage it runs. A stage declares

* the network passes alive at its memory peak (:class:`NetworkPass`): the host traces each network
  at batch 1 and 2 to learn the bytes autograd keeps per sample and scales them by batch and count;
* the other tensors it keeps (``resident``: synthetic images, optimiser state, expert trajectories);
* the units of work whose timing multiplies out to the stage's wall time (:class:`TimedUnit`):
  the host runs each once or twice at the real shapes and multiplies by its count.

Calling ``cost`` must be cheap (the memory check calls it before every run): build networks, but
leave data and heavy state to the :class:`TimedUnit` callables, which only ``pd-run plan`` runs.
This module imports nothing heavy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from pd_plugins.pipeline.context import RunContext
    from pd_plugins.training.augment import Augmenter
    from pd_plugins.types import ImageDataset

#: what a pass keeps: 0 no graph (inference), 1 a graph for one backward, 2 a gradient taken with
#: ``create_graph`` (differentiated again later, as MTT's unrolled student and DC's synthetic side)
ORDERS = (0, 1, 2)


@dataclass
class NetworkPass:
    """``batch`` samples of ``sample_shape`` (C, H, W) through ``net`` as the stage runs them.

    ``held``: how many such graphs are alive together at the stage's peak (an unrolled MTT
    iteration keeps ``syn_steps``, DM one per class); 0 for a pass whose graph is freed before the
    held ones are built or after they are gone (a real batch under ``no_grad``, a training step
    between matching steps): it adds only its own peak on top of the held graphs.
    ``input_grad``: the input is a leaf that needs a gradient (synthetic images), so the first
    layer keeps its input too. ``augmenter``: applied to the input inside the pass (its saved
    tensors count). ``train_params``: the network's parameters get gradients (training, order 2).
    ``role`` names the network in the report (``student``, ``scorer``, ...). Passes of different
    ``phase`` are never alive together (DC's inner training runs after the matching graphs are freed):
    the stage's peak is its largest phase, or their sum under pd-run's keep-freed allocator, which
    cannot hand one phase's blocks to the next when tensors kept in between fragment them. A pass that
    frees everything before the held graphs are built (MTT's constant-memory first pass) is better
    declared ``held=0`` in the same phase. ``trace(b)``, for a computation the generic pass does not
    describe, builds the pass at batch ``b`` and returns ``(outputs, inputs)``; the host then counts the
    tensors the outputs keep alive, and the peak while their sum is differentiated for ``inputs``, at
    ``b`` = 1 and 2 (e.g. DC's per-class gradients in one ``torch.func.vmap``, which autograd's
    saved-tensor hooks cannot see).
    """

    net: "torch.nn.Module"
    sample_shape: tuple[int, ...]
    batch: int
    order: int = 1
    held: int = 1
    input_grad: bool = False
    augmenter: Optional["Augmenter"] = None
    train_params: bool = True
    role: str = "network"
    phase: str = ""
    trace: Optional[Callable[[int], Any]] = None

    def __post_init__(self):
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order}")
        if self.batch < 1 or self.held < 0:
            raise ValueError(f"batch must be >= 1 and held >= 0, got {self.batch}, {self.held}")


@dataclass
class TimedUnit:
    """A unit of a stage's work: ``run()`` does one at the real shapes; the stage does ``count`` of them.

    ``what`` says what one unit is (``"expert SGD step (batch 256)"``). ``run`` may build what it
    needs on its first call (that call is the warm-up and is not the one timed when it is fast).
    """

    what: str
    run: Callable[[], Any]
    count: float


@dataclass
class StageCost:
    """One stage's declared cost: memory (passes and resident tensors) and time (timed units).

    ``resident``: tensors the stage keeps besides the passes' graphs, in bytes by name.
    ``stored``: bytes the stage writes or caches (expert trajectories on disk), by name; reported only.
    ``lower``: the options whose lowering shrinks this stage's memory, as the user types them
    (``"-D batch_syn"``, ``"--ipc"``); named when a run is refused for memory.
    ``note``: one line on what the estimate assumes (``"no experts cached"``).
    """

    stage: str
    passes: list[NetworkPass] = field(default_factory=list)
    resident: dict[str, int] = field(default_factory=dict)
    units: list[TimedUnit] = field(default_factory=list)
    stored: dict[str, int] = field(default_factory=dict)
    lower: tuple[str, ...] = ()
    note: str = ""


def parameter_bytes(net: "torch.nn.Module") -> int:
    """Bytes of ``net``'s parameters."""
    return sum(p.numel() * p.element_size() for p in net.parameters())


def synthetic_state(data: "ImageDataset", ipc: int) -> dict[str, int]:
    """The resident entry of a pixel distiller's synthetic set: ``ipc`` float32 images per class with
    their gradient and SGD momentum."""
    c, (h, w) = data.channels, data.im_size
    return {"synthetic images, gradient, momentum": 3 * data.num_classes * ipc * c * h * w * 4}


def pool_on_device(data: "ImageDataset", ctx: "RunContext") -> dict[str, int]:
    """The resident entry of a real pool a loop keeps on a CUDA device (:class:`RealPool`; it stays in host
    memory when it would take more than a quarter of the device's free memory); nothing on a CPU, where
    the pool is the data the process already holds."""
    from pd_plugins.training.device import fits_on_device, is_cuda

    nbytes = data.pixels.numel() * data.pixels.element_size()
    if not is_cuda(ctx.device) or not fits_on_device(nbytes, ctx.device):
        return {}
    return {"real pool on the device": nbytes}


def training_state_bytes(net: "torch.nn.Module", momentum: float) -> int:
    """Bytes SGD training of ``net`` keeps besides its parameters: gradients, and momentum buffers
    when ``momentum`` is not 0."""
    return parameter_bytes(net) * (2 if momentum else 1)
