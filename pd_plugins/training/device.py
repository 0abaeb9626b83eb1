"""The device a run works on: checking its name, setting it up, what it used, and running out of it.

Device policy (docs/gpu.md):

* **Names.** ``cpu``, ``cuda`` or ``cuda:N``; :func:`check_device` turns anything else -- an unknown
  name, CUDA on a machine without it, an index the machine does not have -- into one
  :class:`~pd_plugins.errors.DeviceError` line (exit 2) before any work.
* **Randomness.** Every generator lives on the CPU (``RunContext.generator``) and what it draws is
  moved to the device, so a seed draws the same permutations, augmentations and initial networks on
  every device; a CPU and a CUDA run differ only by the arithmetic of their kernels.
* **Determinism.** :func:`configure` makes a CUDA run repeat bit for bit (deterministic cuDNN and
  torch algorithms, a fixed cuBLAS workspace). ``cudnn_benchmark=True`` trades that for cuDNN's
  autotuned kernels; it is a measured switch (``benchmarks/gpu_check.py``), never the default.
* **Artifacts.** Every tensor a run writes is read back with ``map_location="cpu"``
  (:func:`pd_plugins.io.safe_torch_load`) and moved to the device that needs it, so a file written on
  a GPU loads on a CPU and the other way round.
* **Caches.** Results that depend on the device's arithmetic -- expert trajectories, pruning
  scores, trained priors -- are keyed by the device *type*; a CPU run never reuses a CUDA entry
  (bf16 autocast differs between them, and even fp32 kernels round differently), so a run's
  result never depends on which machine filled the cache first.
* **Memory.** :class:`PeakMemory` records CUDA's peak allocation per stage in the run manifest;
  :func:`is_out_of_memory` recognises an allocation failure, which the host reports as one
  :class:`~pd_plugins.errors.DeviceMemoryError` line naming the options that lower memory.
"""
from __future__ import annotations

import os
import re
from typing import Optional

from pd_plugins.errors import DeviceError

#: what cuBLAS needs to pick deterministic kernels (set before its first use in the process)
CUBLAS_WORKSPACE = ":4096:8"


def device_type(device) -> str:
    """``"cuda"`` for ``cuda``/``cuda:N``, else the name itself (``"cpu"``, ``"meta"``)."""
    return str(device).split(":", 1)[0]


def is_cuda(device) -> bool:
    return device_type(device) == "cuda"


def device_key(device) -> dict:
    """The cache-key entry of a result computed on ``device``: ``{"device": "cuda"}`` off the CPU, nothing on
    it (the CPU is the implicit default, so caches filled before the device entered their keys stay valid)."""
    kind = device_type(device)
    return {} if kind == "cpu" else {"device": kind}


def check_device(device: str) -> str:
    """``device`` if this machine has it (``cpu``, ``cuda``, ``cuda:N``); else one DeviceError line."""
    import torch

    name = str(device).strip()
    if name == "cpu":
        return name
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match is None:
        raise DeviceError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} requested but CUDA is not available on this machine "
                          f"(torch {torch.__version__}); use --device cpu")
    count = torch.cuda.device_count()
    if match.group(1) is not None and int(match.group(1)) >= count:
        raise DeviceError(f"device {device!r} requested but this machine has {count} CUDA device(s) "
                          f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})")
    return name


def configure(device: str, *, cudnn_benchmark: bool = False) -> dict:
    """Set the process up for ``device``; returns the settings (recorded in the run manifest).

    CUDA, by default: deterministic cuDNN, ``torch.use_deterministic_algorithms(warn_only=True)``
    (an op without a deterministic kernel warns instead of failing) and the cuBLAS workspace that
    makes its kernels deterministic -- set here, so it holds only if cuBLAS was not used before in
    this process. ``cudnn_benchmark=True``: cuDNN autotunes its kernels per shape instead (faster
    for fixed shapes, not bit-repeatable). A CPU needs nothing.
    """
    if not is_cuda(device):
        return {}
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
    torch.backends.cudnn.deterministic = not cudnn_benchmark
    torch.use_deterministic_algorithms(not cudnn_benchmark, warn_only=True)
    return {"cudnn_benchmark": bool(cudnn_benchmark), "deterministic": not cudnn_benchmark,
            "cublas_workspace": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
            "tf32_conv": bool(torch.backends.cudnn.allow_tf32),
            "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32)}


def describe(device: str) -> dict:
    """What the manifest records of ``device``: its name and memory on CUDA, the thread count on a CPU."""
    import torch

    if not is_cuda(device):
        return {"type": device_type(device), "threads": torch.get_num_threads()}
    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    props = torch.cuda.get_device_properties(index)
    return {"type": "cuda", "index": index, "name": props.name, "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2 ** 30, 2), "torch_cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version()}


class PeakMemory:
    """Peak CUDA memory allocated while the ``with`` block runs (``mib``; None on a CPU).

    :meth:`record` is what a manifest entry gets: ``{"cuda_max_memory_allocated_mib": ...}`` on
    CUDA, nothing on a CPU (whose peak resident set includes the interpreter and is not per stage).
    """

    def __init__(self, device: str):
        self.device = str(device)
        self.mib: Optional[float] = None

    def __enter__(self) -> "PeakMemory":
        if is_cuda(self.device):
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc) -> None:
        if is_cuda(self.device):
            import torch

            self.mib = round(torch.cuda.max_memory_allocated(self.device) / 2 ** 20, 1)

    def record(self) -> dict:
        return {} if self.mib is None else {"cuda_max_memory_allocated_mib": self.mib}


def out_of_memory_errors() -> tuple:
    """The exception classes torch raises when a device allocation fails."""
    import torch

    found = {getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)}
    return tuple(c for c in found if isinstance(c, type))


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed device allocation (``torch.OutOfMemoryError``)."""
    return isinstance(exc, out_of_memory_errors())


def allocation_failure(exc: BaseException) -> str:
    """The short part of an out-of-memory message: ``"tried to allocate 2.00 GiB"``, else its first sentence."""
    text = str(exc).strip()
    match = re.search(r"Tried to allocate [\d.]+ [KMGT]?i?B", text)
    if match:
        return match.group(0)[0].lower() + match.group(0)[1:]
    return (text.split(". ")[0] or type(exc).__name__)[:120]


#: the share of free CUDA memory a loop's pixels may take to stay resident on the device
RESIDENT_SHARE = 0.25


def fits_on_device(nbytes: int, device: str, share: float = RESIDENT_SHARE) -> bool:
    """Whether ``nbytes`` take at most ``share`` of the free memory of CUDA ``device`` (a CPU: always)."""
    if not is_cuda(device):
        return True
    import torch

    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return nbytes <= share * free


def gather_to(pixels, positions, device: str, *, pin: bool):
    """``pixels[positions]`` on ``device``, gathered on the host (into page-locked memory when ``pin``)
    and copied without blocking: the copy overlaps the device's work, and torch's pinned-memory cache
    reuses the buffer only after its copy has finished."""
    import torch

    positions = positions.cpu()
    buf = torch.empty((positions.numel(), *pixels.shape[1:]), dtype=pixels.dtype, pin_memory=pin)
    torch.index_select(pixels, 0, positions, out=buf)
    return buf.to(device, non_blocking=pin)


class DevicePixels:
    """A data set's pixels as a loop on ``device`` reads them: resident on the device when they take
    at most :data:`RESIDENT_SHARE` of its free memory, else in host memory, every batch gathered into
    pinned memory and copied without blocking (:func:`gather_to`)."""

    def __init__(self, pixels, device: str):
        self.device = str(device)
        already_there = pixels.device.type != "cpu" and pixels.device.type == device_type(self.device)
        self.resident = already_there or fits_on_device(pixels.numel() * pixels.element_size(), self.device)
        self.pixels = pixels.to(self.device) if self.resident else pixels.cpu()

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def take(self, positions):
        """The pixels at ``positions`` (a CPU or device index tensor), on the device."""
        if self.resident:
            return self.pixels[positions.to(self.pixels.device, non_blocking=True)]
        return gather_to(self.pixels, positions, self.device, pin=is_cuda(self.device))
