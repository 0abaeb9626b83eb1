"""Same seed and config give bit-identical results on CPU across separate processes."""
from __future__ import annotations

import pytest
import torch

from tests.proc_runs import DM_TINY, MTT_TINY, assert_same_run, distilled, run


@pytest.mark.parametrize("args", [DM_TINY, pytest.param(MTT_TINY, marks=pytest.mark.slow)], ids=["dm", "mtt"])
def test_two_processes_bit_identical(tmp_path, args):
    # separate caches: the MTT experts are trained in each process, not shared
    run(args, tmp_path / "a", tmp_path / "cache-a")
    run(args, tmp_path / "b", tmp_path / "cache-b")
    assert_same_run(tmp_path / "a", tmp_path / "b")


@pytest.mark.slow
def test_other_seed_differs(tmp_path):
    """The comparison can fail: a different seed changes the distilled images."""
    run(DM_TINY, tmp_path / "a", tmp_path / "cache")
    run([*DM_TINY, "--seed", "1"], tmp_path / "b", tmp_path / "cache")
    assert not torch.equal(distilled(tmp_path / "a")["images"], distilled(tmp_path / "b")["images"])
