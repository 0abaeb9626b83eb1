"""The pre-run memory check: a run's estimated peak memory against the memory free where it runs.

Before a run starts (after its inputs are checked, before its directory is written) the host
estimates the peak of the stages it will compute (:func:`~pd_plugins.planning.estimate.estimate_run`,
without timing) and compares it, plus a margin for what a process loads on first use, with the free
memory of the device: the GPU's free memory for a CUDA run, else the host's available RAM. A run whose estimate exceeds it is refused in one line naming the
options that lower it, unless forced (``--force``); the estimate goes into the run's manifest.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from pd_plugins.errors import OptionsError, PdPluginsError

# ``run`` arguments are pd_plugins.pipeline.runner.Run objects (not imported: the runner imports this module)
if TYPE_CHECKING:  # pragma: no cover
    from pd_plugins.planning.estimate import RunEstimate

#: what a process adds besides a stage's tensors the first time it runs one: libraries loaded on first use
#: (torchvision and PIL for synthetic.png: 180 MB; kornia: 16 MB) and the kernels' first workspaces (20-40 MB)
FIRST_USE_MARGIN = 256 * 2 ** 20

_CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def free_memory(device: str) -> Optional[tuple[int, str]]:
    """``(bytes free, what they are)`` on ``device``: CUDA's free memory, else the host's available RAM
    (``MemAvailable``, capped by the process's cgroup memory limit); None where it cannot be read."""
    from pd_plugins.training.device import is_cuda

    if is_cuda(device):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free), f"free memory of {device}"
    available = _meminfo_available()
    if available is None:
        return None
    room = _cgroup_room()
    if room is not None and room < available:
        return room, "memory left under this process's cgroup limit"
    return available, "available RAM"


def _meminfo_available() -> Optional[int]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> Optional[int]:
    for limit_file, usage_file in _CGROUP_FILES:
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2 ** 60:
            return max(0, int(limit) - usage)
    return None


def check_estimate(estimate: "RunEstimate", free: Optional[tuple[int, str]], *, force: bool) -> dict:
    """Refuse a run whose estimated peak plus :data:`FIRST_USE_MARGIN` exceeds ``free`` (an OptionsError line
    naming the options to lower), unless ``force``; returns what the manifest records of the check."""
    from pd_plugins.planning.estimate import fmt_bytes

    peak, stage = estimate.peak()
    record = {"peak_bytes": peak, "peak_stage": stage.stage if stage else None,
              "stages": {s.stage: s.peak for s in estimate.stages}, "margin_bytes": FIRST_USE_MARGIN,
              "free_bytes": free[0] if free else None, "free_of": free[1] if free else None,
              "not_estimated": [s.stage for s in estimate.stages if s.peak is None], "forced": bool(force)}
    if stage is None or free is None or peak + FIRST_USE_MARGIN <= free[0]:
        return record
    if force:
        print(f"warning: estimated peak memory {fmt_bytes(peak)} ({stage.stage} stage) and "
              f"{fmt_bytes(FIRST_USE_MARGIN)} for libraries exceed the {fmt_bytes(free[0])} of {free[1]}; "
              "running anyway (--force)", file=sys.stderr)
        return record
    lower = list(stage.lower)
    options = f"lower {', '.join(lower[:-1])} or {lower[-1]}" if len(lower) > 1 else (
        f"lower {lower[0]}" if lower else "use a smaller configuration")
    raise OptionsError(f"estimated peak memory {fmt_bytes(peak)} of the {stage.stage} stage ({stage.strategy}), "
                       f"plus {fmt_bytes(FIRST_USE_MARGIN)} for libraries and workspaces, exceeds the "
                       f"{fmt_bytes(free[0])} of {free[1]}; {options}, or pass --force (pd-run plan shows the estimate)")


def check_run(run, stages: tuple[str, ...], *, force: bool = False) -> dict:
    """Estimate the peak memory of ``stages`` of ``run`` and check it against the device's free memory
    (see :func:`check_estimate`). An estimator that fails for a reason other than bad input skips the
    check with a warning line, recorded in the returned dict."""
    from pd_plugins.planning.estimate import estimate_run

    if not stages:
        return {"stages": {}}
    try:
        estimate = estimate_run(run, stages, timed=False)
    except PdPluginsError:
        raise
    except Exception as exc:  # noqa: BLE001 - the check must not be what stops a run it cannot judge
        why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        print(f"warning: memory check skipped, the estimate failed ({why[:200]})", file=sys.stderr)
        return {"skipped": why[:200]}
    return check_estimate(estimate, free_memory(run.device), force=force)
