"""`--mode init` (Sundar et al.): exactly ipc per class at the selection's edge seed the images."""
from __future__ import annotations

import math

import pytest
import torch

from pd_plugins.errors import OptionsError
from pd_plugins.pruning.selection import select, selection_edge, take_at_edge


def _labels(per_class):
    return torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])


def _rank_band(scores, labels, c, start, stop):
    """Positions of class ``c`` whose ascending within-class rank lies in [start, stop)."""
    cls = torch.nonzero(labels == c).flatten()
    ranks = torch.argsort(torch.argsort(scores[cls], stable=True), stable=True)
    return set(cls[(ranks >= start) & (ranks < stop)].tolist())


def test_window_edge_is_the_lower_percentile():
    per_class = (50, 100, 30)
    y = _labels(per_class)
    scores = torch.rand(len(y), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    kept, meta = select(scores, y, 3, window=(0.7, 0.8))
    assert selection_edge(meta, scores) == "low"
    got = take_at_edge(scores, y, kept, 3, 2, "low")
    for c, n in enumerate(per_class):  # the two samples at the 70th percentile, not anywhere in the band
        lo = math.floor(0.7 * n)
        assert set(got[y[got] == c].tolist()) == _rank_band(scores, y, c, lo, lo + 2)


@pytest.mark.parametrize("direction,edge", [("easy", "low"), ("hard", "high")])
def test_ratio_edges_are_the_easiest_or_hardest(direction, edge):
    per_class = (40, 25)
    y = _labels(per_class)
    scores = torch.randperm(65, generator=torch.Generator().manual_seed(0)).double()
    kept, meta = select(scores, y, 2, keep=0.5, direction=direction)
    assert selection_edge(meta, scores) == edge
    got = take_at_edge(scores, y, kept, 2, 3, edge)
    for c, n in enumerate(per_class):
        start, stop = (0, 3) if direction == "easy" else (n - 3, n)
        assert set(got[y[got] == c].tolist()) == _rank_band(scores, y, c, start, stop)


def test_edge_needs_ipc_per_class_and_unscored_sets_must_be_exact():
    y = _labels((20, 20))
    scores = torch.arange(40).double()
    kept, meta = select(scores, y, 2, window=(0.7, 0.8))  # 2 per class
    with pytest.raises(OptionsError, match="class 0 kept 2 sample.*fewer than the 3"):
        take_at_edge(scores, y, kept, 2, 3, "low")
    nan = torch.full((40,), float("nan"))
    assert selection_edge(meta, nan) is None and selection_edge(meta, None) is None
    exact = torch.tensor([1, 5, 22, 30])
    assert torch.equal(take_at_edge(nan, y, exact, 2, 2, None), exact)
    with pytest.raises(OptionsError, match="no scores.*keep exactly 1"):
        take_at_edge(nan, y, exact, 2, 1, None)


# -- through the runner --------------------------------------------------------------------------
EL2N_TINY = {"scorer_options": {"width": 8, "depth": 2}, "batch": 64, "augment": False, "models": 1,
             "score_epoch": 1, "epochs": 1, "window": "0.7,0.8"}


@pytest.fixture
def capture_init_pool(monkeypatch):
    """Record the init_pool the runner hands to dm (its source indices and labels)."""
    from pd_plugins.distillation.dm import DM

    seen = {}
    real = DM.distill

    def distill(self, data, ipc, ctx, init_pool=None):
        seen.update(pool_size=len(data), index=init_pool.index.clone(), labels=init_pool.hard_labels.clone())
        return real(self, data, ipc, ctx, init_pool)

    monkeypatch.setattr(DM, "distill", distill)
    return seen


def _run(tmp_path, mode, ipc=2, **over):
    from pd_plugins.config import RunConfig
    from pd_plugins.pipeline.runner import Run

    values = {"pruner": "el2n-window", "pruner_options": EL2N_TINY, "mode": mode, "distiller": "dm", "ipc": ipc,
              "distiller_options": {"iterations": 1}, "evaluator": "none", "model_options": {"width": 8},
              "out": str(tmp_path / mode), "progress": False, **over}
    return Run(RunConfig.from_dict(values), quiet=True)


def test_init_mode_seeds_exactly_ipc_at_the_window_low_edge(tmp_path, host, monkeypatch, capture_init_pool):
    monkeypatch.setenv("PD_CACHE_DIR", str(tmp_path / "cache"))
    run = _run(tmp_path, "init")
    run.execute()
    train = run.data().train
    saved = torch.load(run.out / "prune.pt", weights_only=True)
    scores, y = saved["scores"].double(), train.hard_labels
    assert run.resolved["init_select"] == "edge"
    assert capture_init_pool["pool_size"] == len(train)  # matching and experts on the full set
    assert torch.bincount(capture_init_pool["labels"], minlength=10).tolist() == [2] * 10
    expected = set()
    for c in range(10):
        lo = math.floor(0.7 * int((y == c).sum()))
        expected |= _rank_band(scores, y, c, lo, lo + 2)
    got = set(capture_init_pool["index"].tolist())
    assert got == set(train.index[sorted(expected)].tolist())
    distilled = torch.load(run.out / "distill.pt", weights_only=True)
    assert set(distilled["meta"]["init_source_index"]) == got and distilled["meta"]["init_pool_size"] == 20


def test_init_random_draws_from_the_whole_window(tmp_path, host, monkeypatch, capture_init_pool):
    monkeypatch.setenv("PD_CACHE_DIR", str(tmp_path / "cache"))
    run = _run(tmp_path, "init-random")
    run.execute()
    saved = torch.load(run.out / "prune.pt", weights_only=True)
    assert run.resolved["init_select"] == "random"
    assert torch.equal(torch.sort(capture_init_pool["index"]).values, torch.sort(saved["source_index"]).values)
    assert len(capture_init_pool["index"]) > 20


def test_init_mode_rejects_what_it_cannot_take_ipc_from(tmp_path, host, monkeypatch):
    from pd_plugins.errors import PdPluginsError

    monkeypatch.setenv("PD_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(PdPluginsError, match="larger than the smallest class"):  # the window holds ~14 per class
        _run(tmp_path, "init", ipc=20).execute()
    with pytest.raises(OptionsError, match="no scores.*keep exactly 2"):
        _run(tmp_path, "init", pruner="random", pruner_options={}, keep=0.5).execute()
    assert not (tmp_path / "init").exists()  # failed before distilling: no half-made run directory


def test_init_selection_is_recorded_and_fingerprinted(host, tmp_path):
    pool, init, rand = (_run(tmp_path, m) for m in ("pool", "init", "init-random"))
    assert "init_select" not in pool.resolved
    fps = {r.stage_fingerprint("distill", "d") for r in (pool, init, rand)}
    assert len(fps) == 3
