"""Keep freed heap memory in the process, so that large tensors do not page-fault on every allocation.

glibc's malloc serves every block above its mmap threshold (at most 32 MiB) with a fresh ``mmap``
and returns it with ``munmap`` when freed. A ConvNet-3 activation at batch 100-256 is 10-40 MiB,
so every forward and backward maps fresh pages and the kernel zero-fills each one on first touch:
on this project's 2-core machines that was a third to half of a distillation iteration's wall
time, spent in the kernel (MTT ipc 10: 7.7 s an iteration, 24 s of 64 s CPU in ``sys``). With
mmap off and heap trimming off, freed blocks go back to malloc's free lists and the next tensor of
the same size reuses pages that are already mapped (MTT: 4.0-4.5 s an iteration, ``sys`` 2 s).

PyTorch's CPU performance guide recommends the same cure through jemalloc or tcmalloc, which must
be preloaded (``LD_PRELOAD``) before the interpreter starts; ``mallopt`` does it from inside the
process with the C library that is already loaded. The cost is a resident set that stays at its
peak instead of shrinking between iterations, plus fragmentation: MTT's peak went from 4.2 to 5.4 GB,
and a loop that allocates and frees one 64-byte-aligned 64 MiB block grows the heap to about 0.9 GB
before the free lists hold a block that fits.

Set ``PD_PLUGINS_MALLOC=system`` to leave the C library's defaults alone. Elsewhere than glibc
(macOS, Windows, musl) this is a no-op.
"""
from __future__ import annotations

import ctypes
import os
from typing import Optional

ENV = "PD_PLUGINS_MALLOC"
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER_TRIM = 2 ** 31 - 1  # mallopt takes an int: 2 GiB of free top-of-heap before glibc returns it

_applied: Optional[dict] = None


def keep_freed_memory() -> dict:
    """Switch glibc malloc to keep freed memory (once per process); returns what the process uses.

    The record is ``{"malloc": "glibc-keep-freed", ...}`` when applied, ``{"malloc": "system", "why": ...}``
    when left alone (``PD_PLUGINS_MALLOC=system``, not glibc, or ``mallopt`` refused).
    """
    global _applied
    if _applied is not None:
        return dict(_applied)
    if os.environ.get(ENV, "").strip().lower() == "system":
        _applied = {"malloc": "system", "why": f"{ENV}=system"}
    elif not _glibc_version().startswith("glibc"):
        _applied = {"malloc": "system", "why": "not glibc"}
    else:
        libc = ctypes.CDLL(None)  # the C library already loaded into the process (dlopen(NULL))
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM) == 1
        _applied = ({"malloc": "glibc-keep-freed", "mmap_max": 0, "trim_threshold": _NEVER_TRIM} if ok
                    else {"malloc": "system", "why": "mallopt refused"})
    return dict(_applied)


def _glibc_version() -> str:
    """``"glibc 2.36"`` under glibc, ``""`` elsewhere; a libc call, not ``ctypes.util.find_library``
    (which runs ``ldconfig -p`` in a subprocess on every process start)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):  # no confstr (Windows) or no such name (musl, macOS)
        return ""


def current() -> dict:
    """What :func:`keep_freed_memory` settled on in this process (``system`` if it was never called)."""
    return dict(_applied) if _applied is not None else {"malloc": "system", "why": "not requested"}
