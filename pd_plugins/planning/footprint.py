"""The memory a network pass holds, from the network's own shapes.

:func:`footprint` runs a :class:`~pd_plugins.planning.costs.NetworkPass` on the CPU at batch 1 and 2
and records, through :func:`torch.autograd.graph.saved_tensors_hooks`, every tensor autograd keeps
for the backward (counted once per storage: an in-place ReLU's output that the next pool saves is
one tensor). That is the per-layer activation rule of the network as PyTorch applies it (conv
inputs, norm statistics, pooling inputs, the second-order graph of a ``create_graph`` gradient),
for any backbone a plugin registers. The two batches give a fixed and a per-sample part; forward
hooks give the largest single activation, which bounds what a backward (or a no-grad forward)
streams through at one time.

:func:`pass_bytes` turns a footprint into bytes at the pass's real batch and count:

    held     = held x (fixed + per_sample x batch)          [+ 2 x parameters per order-2 step]
    working  = STREAM[order] x largest activation x batch    [+ the whole graph of a held=0 pass]

``STREAM`` is the number of largest-activation-sized buffers a pass has live at its worst moment
beyond what autograd keeps: a no-grad forward holds a layer's input and output (2); a backward a
gradient in and out and a recomputed intermediate (3); a second-order backward also rebuilds the
first backward's gradients (9). Measured as the peak resident set of one pass above its saved
tensors, on ConvNet-3 at MNIST size (batch 64 and 256: order 0 2.0-3.0, order 1 2.2-3.1, order 2
6.2-9.0 activations) and ConvNet-2 at digits size (batch 100 and 400: order 1 3.0-4.2, order 2
8.6-8.9), in fresh processes; ``benchmarks/bench_plan.py`` checks whole stages against it.
"""
from __future__ import annotations

import copy
import gc
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

if TYPE_CHECKING:  # pragma: no cover
    from pd_plugins.planning.costs import NetworkPass

#: largest-activation-sized buffers a pass streams through beyond its saved tensors, by order
STREAM = {0: 2.0, 1: 3.0, 2: 9.0}


@dataclass(frozen=True)
class Footprint:
    """Bytes a pass keeps, ``fixed + per_sample x batch`` per graph, and streams through on top,
    ``work_fixed + work_per_sample x batch``; ``params``: the network's parameter bytes."""

    fixed: int
    per_sample: int
    work_fixed: int
    work_per_sample: int
    params: int


_CACHE: dict[tuple, Footprint] = {}


def _key(p: "NetworkPass") -> tuple:
    layout = tuple((n, tuple(t.shape), t.dtype) for n, t in p.net.named_parameters())
    return (type(p.net).__qualname__, layout, tuple(p.sample_shape), p.order, p.input_grad, p.train_params,
            None if p.augmenter is None else repr(p.augmenter))


def footprint(p: "NetworkPass") -> Footprint:
    """What ``p`` holds per graph and streams through, at batch 1 and 2 on the CPU: autograd's saved
    tensors of the generic pass (cached per network layout), or the live tensors ``p.trace`` leaves."""
    params = sum(t.numel() * t.element_size() for t in p.net.parameters())
    if p.trace is not None:
        (one, peak1), (two, peak2) = live_tensors(lambda: p.trace(1)), live_tensors(lambda: p.trace(2))
        work1, work2 = peak1 - one, peak2 - two
        return Footprint(fixed=max(0, 2 * one - two), per_sample=max(0, two - one),
                         work_fixed=max(0, 2 * work1 - work2), work_per_sample=max(0, work2 - work1), params=params)
    key = _key(p)
    if key not in _CACHE:
        net = copy.deepcopy(p.net).cpu()
        net.train()
        one, act1 = _trace(net, p, 1)
        two, act2 = _trace(net, p, 2)
        _CACHE[key] = Footprint(fixed=max(0, 2 * one - two), per_sample=max(0, two - one), work_fixed=0,
                                work_per_sample=int(STREAM[p.order] * max(act1, act2)), params=params)
    return _CACHE[key]


def pass_bytes(p: "NetworkPass") -> tuple[int, int]:
    """``(held, working)``: bytes of the ``held`` graphs alive together, and the bytes the pass
    streams through on top of them at its worst moment (its own graph too when ``held`` is 0)."""
    fp = footprint(p)
    graph = fp.fixed + fp.per_sample * p.batch
    if p.order == 2 and p.train_params and p.trace is None:
        graph += 2 * fp.params  # the updated parameters the next step differentiates through, and the gradient
    working = fp.work_fixed + fp.work_per_sample * p.batch
    if p.held == 0:
        return 0, graph + working
    return p.held * graph, working


class _LiveTensors(TorchDispatchMode):
    """Counts the bytes of the storages that operations create while it is active and that are still
    alive, and their peak (a storage counts once, however many views share it)."""

    def __init__(self):
        super().__init__()
        self.sizes: dict[int, int] = {}
        self.live = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self.sizes:
                    self.sizes[key] = storage.nbytes()
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._freed, key)
        return out

    def _freed(self, key: int) -> None:
        self.live -= self.sizes.pop(key, 0)


def live_tensors(build: Callable[[], Any]) -> tuple[int, int]:
    """``(bytes alive after build(), peak bytes alive while it and the backward ran)``: ``build()`` returns
    ``(outputs, inputs)``; the bytes its outputs keep alive are counted, then the sum of the outputs is
    differentiated for ``inputs`` as a run's backward would be. Unlike autograd's saved-tensor hooks this
    sees through ``torch.func`` transforms (``vmap``, ``grad``), which run on plain tensors underneath."""
    mode = _LiveTensors()
    with mode:
        outputs, inputs = build()
        gc.collect()
        alive = mode.live
        flat = [t for t in tree_flatten(outputs)[0] if isinstance(t, torch.Tensor) and t.requires_grad]
        if flat:
            torch.autograd.grad(sum(t.float().sum() for t in flat), inputs, allow_unused=True)
    del outputs, flat
    return alive, mode.peak


def _trace(net: torch.nn.Module, p: "NetworkPass", batch: int) -> tuple[int, int]:
    """``(bytes autograd keeps, largest activation in bytes)`` of one pass at ``batch``."""
    from torch.func import functional_call

    params = {n: t.detach().clone().requires_grad_(p.train_params or p.order == 2)
              for n, t in net.named_parameters()}
    before = {t.untyped_storage().data_ptr() for t in params.values()}
    kept: dict[int, int] = {}
    largest = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        kept[storage.data_ptr()] = storage.nbytes()
        return t

    def watch(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output.numel() * output.element_size())

    hooks = [m.register_forward_hook(watch) for m in net.modules() if not list(m.children())]
    gen = torch.Generator().manual_seed(0)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.set_grad_enabled(p.order > 0):
            x = torch.randn(batch, *p.sample_shape, generator=gen).requires_grad_(p.input_grad and p.order > 0)
            largest[0] = x.numel() * x.element_size()
            if p.augmenter is not None:  # the same draw (op) at every batch
                x = p.augmenter(x, torch.Generator().manual_seed(0))
            logits = functional_call(net, params, (x,))
            if p.order == 0:
                kept_alive = logits
            else:
                loss = torch.nn.functional.cross_entropy(logits.float(), torch.zeros(batch, dtype=torch.long))
                if p.order == 1:
                    kept_alive = loss
                else:
                    kept_alive = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    finally:
        for h in hooks:
            h.remove()
    total = sum(nbytes for ptr, nbytes in kept.items() if ptr not in before)
    del kept_alive
    return total, largest[0] // batch
