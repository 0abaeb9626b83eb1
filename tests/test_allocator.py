"""The process keeps freed memory (glibc malloc without mmap for large blocks), as pd-run sets it up."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# allocate and free a 64 MiB tensor 24 times; report the minor page faults of the last 12
_PROBE = r"""
import json, resource, sys
from pd_plugins.training.allocator import keep_freed_memory
setting = keep_freed_memory()
import torch
for _ in range(12):  # warm-up: the kept heap grows until its free lists hold an aligned 64 MiB block
    torch.ones(16 * 2 ** 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(12):
    torch.ones(16 * 2 ** 20)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"setting": setting, "again": keep_freed_memory(), "faults": faults}))
"""


def _probe(malloc: str) -> dict:
    env = {**os.environ, "PD_PLUGINS_MALLOC": malloc}
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_system_setting_leaves_malloc_alone():
    res = _probe("system")
    assert res["setting"] == {"malloc": "system", "why": "PD_PLUGINS_MALLOC=system"}
    assert res["again"] == res["setting"]


@pytest.mark.skipif(not GLIBC, reason="keep_freed_memory acts on glibc malloc only")
def test_keeping_freed_memory_stops_the_page_faults_of_large_tensors():
    kept, system = _probe(""), _probe("system")
    assert kept["setting"]["malloc"] == "glibc-keep-freed" and kept["again"] == kept["setting"]
    pages = 12 * 64 * 2 ** 20 // 4096 // 512  # 12 allocations of 64 MiB, even if backed by 2 MiB huge pages
    assert system["faults"] >= pages  # glibc maps (and the kernel zero-fills) every large block afresh
    assert kept["faults"] < system["faults"] / 10  # the kept heap reuses pages already mapped


def test_a_run_records_the_allocator_in_its_manifest(tmp_path):
    from pd_plugins.config import RunConfig
    from pd_plugins.pipeline.runner import Run
    from pd_plugins.training import allocator

    cfg = RunConfig(pruner="random", distiller="none", evaluator="none", out=str(tmp_path / "run"))
    Run(cfg, quiet=True).execute(("prune",))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["malloc"] == allocator.current()
    assert manifest["malloc"]["malloc"] in ("glibc-keep-freed", "system")


def test_a_c_library_other_than_glibc_is_left_alone(monkeypatch):
    from pd_plugins.training import allocator

    monkeypatch.delenv(allocator.ENV, raising=False)
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setattr(allocator, "_glibc_version", lambda: "")
    assert allocator.keep_freed_memory() == {"malloc": "system", "why": "not glibc"}


@pytest.mark.skipif(not GLIBC, reason="confstr names glibc only under glibc")
def test_glibc_is_detected_by_confstr():
    from pd_plugins.training import allocator

    assert allocator._glibc_version().startswith("glibc ")
