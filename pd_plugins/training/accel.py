"""Execution speed-ups: effective precision and a compiled functional forward shared by fresh networks.

* :func:`resolve_precision` turns the requested ``--precision`` into the one the device can run
  (bf16 on a CPU without AVX512-BF16/AMX falls back to fp32 with a one-line note).
* :func:`forward` runs ``net(x)`` (or ``net.embed(x)``) through ``torch.compile`` of a
  functional forward ``f(params, buffers, x)`` built with :func:`torch.func.functional_call` on
  a *template* module. The compiled function is cached per (module class, parameter/buffer
  layout, train/eval, method, input shape and dtype), so DM and DC, which draw a fresh network
  every iteration, pay the compile warm-up once per run and architecture. If compilation fails
  the failure is printed once and that key runs eager from then on; the run never fails for it.

Compiled graphs do not support double backward (``create_graph``): DC's synthetic-side
gradient and MTT's unrolled student stay eager; callers only route single-backward paths here.
"""
from __future__ import annotations

import copy
import sys
from typing import Any, Callable, Optional

import torch
from torch.func import functional_call

#: backend handed to ``torch.compile`` (tests substitute a counting or a failing backend)
BACKEND: Any = "inductor"

_CACHE: dict[tuple, "_Entry"] = {}


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 matmul support (AVX512-BF16 or AMX)."""
    cpu = getattr(torch, "cpu", None)
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        probe = getattr(cpu, name, None)
        if probe is not None:
            try:
                if probe():
                    return True
            except Exception:  # noqa: BLE001 - a probe that cannot answer means "unknown", i.e. no
                pass
    return False


def resolve_precision(requested: str, device: str) -> tuple[str, Optional[str]]:
    """The precision to run for ``requested`` on ``device`` and a one-line note when it differs."""
    if requested != "bf16":
        return requested, None
    dev = str(device)
    if dev.startswith("cuda"):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16", None
        return "fp32", f"note: {dev} has no bf16 support; running fp32"
    if dev == "cpu" and not cpu_supports_bf16():
        return "fp32", "note: this CPU has no AVX512-BF16/AMX support for bf16; running fp32"
    return "bf16", None


class _Method(torch.nn.Module):
    """Exposes ``module.<method>`` as ``forward`` so functional_call can run it."""

    def __init__(self, module: torch.nn.Module, method: str):
        super().__init__()
        self.inner = module
        self.method = method

    def forward(self, x):
        return getattr(self.inner, self.method)(x)


class _Entry:
    def __init__(self, template: torch.nn.Module, method: str):
        wrapper = _Method(template, method)

        def f(params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
            return functional_call(wrapper, (params, buffers), (x,))

        self.eager: Callable = f
        self.compiled: Optional[Callable] = torch.compile(f, backend=BACKEND, dynamic=False)
        self.calls = 0


def _key(net: torch.nn.Module, x: torch.Tensor, method: str) -> tuple:
    layout = tuple((n, tuple(p.shape), p.dtype, p.requires_grad) for n, p in net.named_parameters())
    blayout = tuple((n, tuple(b.shape), b.dtype) for n, b in net.named_buffers())
    return (type(net).__module__, type(net).__qualname__, layout, blayout, net.training, method,
            tuple(x.shape), x.dtype, str(x.device), torch.is_grad_enabled())


def _entry(net: torch.nn.Module, x: torch.Tensor, method: str) -> _Entry:
    key = _key(net, x, method)
    entry = _CACHE.get(key)
    if entry is None:
        template = copy.deepcopy(net)
        entry = _CACHE[key] = _Entry(template, method)
    return entry


def functional_forward(net: torch.nn.Module, params: dict, x: torch.Tensor, *, compile: bool,
                       method: str = "forward") -> torch.Tensor:
    """``net.<method>(x)`` with ``params`` replacing the parameters; compiled (cached) when ``compile``."""
    buffers = dict(net.named_buffers())
    if not compile:
        return functional_call(_Method(net, method), ({f"inner.{k}": v for k, v in params.items()},
                                                      {f"inner.{k}": v for k, v in buffers.items()}), (x,))
    entry = _entry(net, x, method)
    p = {f"inner.{k}": v for k, v in params.items()}
    b = {f"inner.{k}": v for k, v in buffers.items()}
    if entry.compiled is not None:
        try:
            out = entry.compiled(p, b, x)
            entry.calls += 1
            return out
        except Exception as exc:  # noqa: BLE001 - any compiler failure falls back to eager, loudly
            entry.compiled = None
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"warning: torch.compile failed for {type(net).__name__}.{method} "
                  f"({type(exc).__name__}: {msg[:160]}); running eager", file=sys.stderr)
    return entry.eager(p, b, x)


def forward(net: torch.nn.Module, x: torch.Tensor, ctx, method: str = "forward") -> torch.Tensor:
    """``net(x)`` / ``net.embed(x)`` under the run's autocast, compiled when ``ctx.compile``."""
    with ctx.autocast():
        if not ctx.compile:
            return getattr(net, method)(x)
        return functional_forward(net, dict(net.named_parameters()), x, compile=True, method=method)


def clear_cache() -> None:
    """Forget every compiled forward (tests; a new backend)."""
    _CACHE.clear()
