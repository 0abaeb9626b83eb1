"""Score-based pruners: selection on hand-made scores, options, scoring path, cache, report."""
from __future__ import annotations

import math

import pytest
import torch

from pd_plugins.errors import DataError, OptionsError
from pd_plugins.pruning.selection import class_kl, select

TINY = {"scorer_options": {"width": 8, "depth": 2}, "batch": 64, "augment": False}


def _labels(per_class=(20, 20, 20)):
    return torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])


# -- selection on hand-made scores -------------------------------------------------------------
def test_easy_and_hard_are_complementary_at_half():
    y = _labels((20, 30, 10))
    scores = torch.randperm(60, generator=torch.Generator().manual_seed(1)).double()
    easy, _ = select(scores, y, 3, keep=0.5, direction="easy")
    hard, _ = select(scores, y, 3, keep=0.5, direction="hard")
    assert set(easy.tolist()).isdisjoint(hard.tolist())
    assert sorted(easy.tolist() + hard.tolist()) == list(range(60))
    for c in range(3):  # every easy sample of a class scores below every hard one
        e, h = scores[easy][y[easy] == c], scores[hard][y[hard] == c]
        assert e.max() < h.min()


def test_window_picks_the_percentile_band_per_class():
    from pd_plugins.pruning.el2n import EL2NWindowPruner

    y = _labels((50, 100, 30))
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(180, generator=g, dtype=torch.float64)
    opts = EL2NWindowPruner.resolve_options({"window": "70,80"})
    kept, meta = select(scores, y, 3, **EL2NWindowPruner(opts).selection(opts.implied_keep()))
    for c, n in enumerate((50, 100, 30)):
        cls = torch.nonzero(y == c).flatten()
        ranks = torch.argsort(torch.argsort(scores[cls]))  # ascending rank within class
        expected = set(cls[(ranks >= math.floor(0.7 * n)) & (ranks < math.floor(0.8 * n))].tolist())
        got = set(kept[y[kept] == c].tolist())
        assert got == expected and len(got) == int(0.8 * n) - int(0.7 * n)
    assert meta["window"] == [0.7, 0.8] and meta["keep"] is None


def test_balance_and_kl():
    y = _labels((40, 40, 20, 100))
    scores = torch.arange(200).double()  # class 3 holds the highest scores
    kept, meta = select(scores, y, 4, keep=0.25, direction="hard", balanced=True)
    assert meta["per_class_kept"] == [10, 10, 5, 25]
    assert class_kl(y[kept], y, 4) == pytest.approx(0.0, abs=1e-12)
    kept_g, meta_g = select(scores, y, 4, keep=0.25, direction="hard", balanced=False)
    assert meta_g["per_class_kept"] == [0, 0, 0, 50]
    assert class_kl(y[kept_g], y, 4) > 0.5


def test_empty_class_is_an_error_unless_allowed():
    y = _labels((20, 3))
    with pytest.raises(OptionsError, match="keeps 0"):
        select(torch.arange(23.0), y, 2, keep=0.2)
    kept, meta = select(torch.arange(23.0), y, 2, keep=0.2, allow_empty=True)
    assert meta["per_class_kept"] == [4, 0]


# -- options ---------------------------------------------------------------------------------
@pytest.mark.parametrize("window,keep", [("0.7,0.8", 0.1), ("70,80", 0.1), ("0,50", 0.5), ("[20, 30]", 0.1)])
def test_window_forms_and_implied_keep(window, keep):
    from pd_plugins.pruning.el2n import EL2NWindowPruner

    assert EL2NWindowPruner.resolve_options({"window": window}).implied_keep() == pytest.approx(keep)


@pytest.mark.parametrize("values,msg", [
    ({"window": "80,70"}, "lo < hi"), ({"window": "0.5,0.5"}, "lo < hi"), ({"window": "-5,20"}, r"\[0, 100\]"),
    ({"window": "50,120"}, r"\[0, 100\]"), ({"window": "0.7,80"}, "mixes"), ({"models": 0}, "K"),
    ({"window": "1,2,3"}, "2 values"),
])
def test_bad_el2n_options(values, msg):
    from pd_plugins.pruning.el2n import EL2NWindowPruner

    with pytest.raises(OptionsError, match=msg):
        EL2NWindowPruner.resolve_options(values)


@pytest.mark.parametrize("cls,values", [("loss", {"trials": 0}), ("early_loss", {"trials": 0}), ("loss", {"epochs": 0})])
def test_bad_trial_counts(cls, values):
    import importlib

    mod = importlib.import_module(f"pd_plugins.pruning.{cls}")
    pruner = mod.LossEasyPruner if cls == "loss" else mod.EarlyLossPruner
    with pytest.raises(OptionsError):
        pruner.resolve_options(values)


def test_runner_rejects_keep_disagreeing_with_window(host):
    from pd_plugins.config import RunConfig
    from pd_plugins.pipeline.runner import Run

    with pytest.raises(OptionsError, match="disagrees"):
        Run(RunConfig(pruner="el2n-window", keep=0.3, pruner_options={"window": "70,80"}, distiller="none"))
    run = Run(RunConfig(pruner="el2n-window", keep=0.2, pruner_options={"window": "0.6,0.8"}, distiller="none"))
    assert run.resolved["keep"] == pytest.approx(0.2)


def test_all_four_registered(host):
    names = set(host.registries()["pruner"].names())
    assert {"loss-easy", "loss-hard", "el2n-window", "early-loss"} <= names


# -- the scoring path ---------------------------------------------------------------------------
@pytest.fixture
def small(digits_splits):
    return digits_splits.train.subset(torch.arange(120))


def test_statistics_match_their_definitions(small, ctx):
    from pd_plugins.pruning.scoring import sample_statistic

    with ctx.fork_rng("net"):
        net = ctx.make_model(small.channels, small.num_classes, small.im_size, name="convnet", width=8, depth=2)
    loss = sample_statistic(net, small, ctx, "loss", batch=256)
    el2n = sample_statistic(net, small, ctx, "el2n", batch=256)
    with torch.no_grad():
        net.eval()
        logits = net(small.images()).float()
    p = torch.softmax(logits, 1)
    onehot = torch.nn.functional.one_hot(small.hard_labels, small.num_classes).float()
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits, small.hard_labels, reduction="none"), atol=1e-5)
    assert torch.allclose(el2n, (p - onehot).norm(dim=1), atol=1e-5)
    assert float(el2n.max()) <= math.sqrt(2) + 1e-6


def _count_training(monkeypatch):
    from pd_plugins.pruning import scoring

    calls = []
    real = scoring.train_scorer

    def counting(*a, **kw):
        calls.append(a[3])
        return real(*a, **kw)

    monkeypatch.setattr(scoring, "train_scorer", counting)
    return calls


def test_cache_is_reused_across_keep_direction_and_window(small, ctx, tmp_path, monkeypatch):
    from pd_plugins.pruning.el2n import EL2NWindowPruner
    from pd_plugins.pruning.loss import LossEasyPruner, LossHardPruner

    monkeypatch.delenv("PD_CACHE_DIR", raising=False)
    ctx.cache_dir = tmp_path / "cache"
    calls = _count_training(monkeypatch)
    opts = {**TINY, "epochs": 1}
    easy = LossEasyPruner(LossEasyPruner.resolve_options(opts)).prune(small, 0.5, ctx)
    assert len(calls) == 1 and easy.meta["scoring"]["cache"] == "miss"
    hard = LossHardPruner(LossHardPruner.resolve_options(opts)).prune(small, 0.5, ctx)
    easy3 = LossEasyPruner(LossEasyPruner.resolve_options(opts)).prune(small, 0.3, ctx)
    assert len(calls) == 1 and hard.meta["scoring"]["cache"] == "hit"
    assert torch.equal(easy.scores, hard.scores) and torch.equal(easy.scores, easy3.scores)
    assert set(easy.keep.tolist()).isdisjoint(hard.keep.tolist())
    # a different scorer config retrains
    LossEasyPruner(LossEasyPruner.resolve_options({**opts, "epochs": 2})).prune(small, 0.5, ctx)
    assert len(calls) == 2
    # EL2N: K models once, then any window is free
    el_opts = {**TINY, "models": 2, "score_epoch": 1}
    EL2NWindowPruner(EL2NWindowPruner.resolve_options({**el_opts, "window": "70,80"})).prune(small, 0.1, ctx)
    assert len(calls) == 4
    EL2NWindowPruner(EL2NWindowPruner.resolve_options({**el_opts, "window": "20,60"})).prune(small, 0.4, ctx)
    assert len(calls) == 4


def test_scorer_model_options_and_stage_key_the_cache(small, ctx, tmp_path, monkeypatch):
    """A scorer of the run's model inherits the run's model options: changing one re-scores."""
    from pd_plugins.pruning.loss import LossEasyPruner

    monkeypatch.delenv("PD_CACHE_DIR", raising=False)
    ctx.cache_dir = tmp_path / "cache"
    calls = _count_training(monkeypatch)
    p = LossEasyPruner(LossEasyPruner.resolve_options({"scorer_options": {"width": 8}, "batch": 64,
                                                       "augment": False, "epochs": 1}))
    ctx.model_options = {"depth": 2}
    deep = p.prune(small, 0.5, ctx)
    ctx.model_options = {"depth": 1}
    shallow = p.prune(small, 0.5, ctx)
    assert len(calls) == 2 and shallow.meta["scoring"]["cache"] == "miss"
    assert not torch.equal(deep.scores, shallow.scores)
    assert shallow.meta["scoring"]["scorer"]["model_options"] == {"depth": 1, "width": 8}
    ctx.model_options = {"depth": 1, "width": 64}  # the scorer's own width wins: the same scorer, a hit
    again = p.prune(small, 0.5, ctx)
    assert len(calls) == 2 and again.meta["scoring"]["cache"] == "hit" and torch.equal(again.scores, shallow.scores)
    ctx.stage = "elsewhere"  # the stage key seeds the scorer's init and batches
    p.prune(small, 0.5, ctx)
    assert len(calls) == 3


def test_prune_fingerprint_follows_the_scorer_model_options(host, tmp_path):
    from pd_plugins.config import RunConfig
    from pd_plugins.pipeline.runner import Run

    def fp(pruner, scorer_options, **model_options):
        popts = {"scorer_options": scorer_options} if pruner != "random" else {}
        cfg = RunConfig(pruner=pruner, keep=0.5, pruner_options=popts, distiller="none", evaluator="none",
                        model_options=model_options, out=str(tmp_path / "r"))
        return Run(cfg, quiet=True).stage_fingerprint("prune", "data")

    assert fp("loss-easy", {"width": 8}, depth=1) != fp("loss-easy", {"width": 8}, depth=2)
    assert fp("loss-easy", {"width": 8}, depth=1, width=16) == fp("loss-easy", {"width": 8}, depth=1, width=32)
    assert fp("loss-easy", {}, width=16) != fp("loss-easy", {}, width=32)
    assert fp("random", {}, width=16) == fp("random", {}, width=32)  # no scorer: the model does not matter


def test_corrupt_cache_entry_warns_and_recomputes(small, ctx, tmp_path, monkeypatch):
    from pd_plugins.pruning.early_loss import EarlyLossPruner

    monkeypatch.delenv("PD_CACHE_DIR", raising=False)
    ctx.cache_dir = tmp_path / "cache"
    calls = _count_training(monkeypatch)
    p = EarlyLossPruner(EarlyLossPruner.resolve_options({**TINY, "trials": 1}))
    first = p.prune(small, 0.5, ctx)
    entries = list((tmp_path / "cache" / "scores").glob("*.pt"))
    assert len(entries) == 1 and len(calls) == 1
    entries[0].write_bytes(b"not a torch file")
    with pytest.warns(RuntimeWarning, match="corrupt score cache"):
        again = p.prune(small, 0.5, ctx)
    assert len(calls) == 2 and torch.equal(first.scores, again.scores)
    assert not list((tmp_path / "cache" / "scores").glob(".*.tmp"))  # atomic writes leave no temp files
    third = p.prune(small, 0.5, ctx)  # the rewritten entry is valid again
    assert len(calls) == 2 and third.meta["scoring"]["cache"] == "hit"


def test_scores_are_seeded_and_average_runs(small, ctx, monkeypatch):
    from pd_plugins.pruning import scoring
    from pd_plugins.pruning.early_loss import EarlyLossPruner

    monkeypatch.delenv("PD_CACHE_DIR", raising=False)
    assert ctx.cache_dir is None  # no cache: every score() below trains its scorers afresh
    calls = _count_training(monkeypatch)
    per_run = []
    real_statistic = scoring.sample_statistic

    def recording(*a, **kw):
        per_run.append(real_statistic(*a, **kw))
        return per_run[-1]

    monkeypatch.setattr(scoring, "sample_statistic", recording)
    p = EarlyLossPruner(EarlyLossPruner.resolve_options({**TINY, "trials": 2}))
    a, meta = p.cached_score(small, ctx)
    assert len(calls) == 2 and len(per_run) == 2 and meta["cache"] == "off"
    assert not torch.equal(per_run[0], per_run[1])  # the trials are independently seeded scorers
    assert torch.allclose(a, (per_run[0] + per_run[1]) / 2)  # ... whose statistics are averaged
    b = p.score(small, ctx)
    assert len(calls) == 4 and torch.equal(a, b)  # recomputed, not cached: same seed, same scores
    assert a.shape == (120,) and torch.isfinite(a).all()
    one = EarlyLossPruner(EarlyLossPruner.resolve_options({**TINY, "trials": 1})).score(small, ctx)
    assert torch.equal(one, per_run[0])  # trial 0 is the same scorer whatever the number of trials


def test_checkpoint_scorer_and_mismatch(small, ctx, tmp_path):
    from pd_plugins.pruning.loss import LossHardPruner

    with ctx.fork_rng("ckpt"):
        net = ctx.make_model(small.channels, small.num_classes, small.im_size, name="convnet", width=8, depth=2)
    good = tmp_path / "scorer.pt"
    torch.save(net.state_dict(), good)
    p = LossHardPruner(LossHardPruner.resolve_options({**TINY, "checkpoint": str(good)}))
    res = p.prune(small, 0.5, ctx)
    net.eval()
    with torch.no_grad():
        want = torch.nn.functional.cross_entropy(net(small.images()), small.hard_labels, reduction="none")
    assert torch.allclose(res.scores, want, atol=1e-5) and res.meta["scoring"]["checkpoint"] == str(good)

    with ctx.fork_rng("ckpt"):  # wrong number of classes
        other = ctx.make_model(small.channels, 7, small.im_size, name="convnet", width=8, depth=2)
    bad = tmp_path / "bad.pt"
    torch.save(other.state_dict(), bad)
    p = LossHardPruner(LossHardPruner.resolve_options({**TINY, "checkpoint": str(bad)}))
    with pytest.raises(DataError, match=r"does not match .*10 classes.*shape \(7,"):
        p.prune(small, 0.5, ctx)
    p = LossHardPruner(LossHardPruner.resolve_options({**TINY, "checkpoint": str(tmp_path / "none.pt")}))
    with pytest.raises(DataError, match="not found"):
        p.prune(small, 0.5, ctx)


# -- runtime pruning (Xu et al.) ------------------------------------------------------------------
class _FixedLoss(torch.nn.Module):
    """Logits whose CE against class 0 grows with the first pixel value."""

    def forward(self, x):
        v = x.flatten(1)[:, :1]
        return torch.cat([-v, v], dim=1)


@pytest.mark.parametrize("rho,b", [(0.1, 10), (0.25, 10), (0.5, 7), (0.3, 1)])
def test_runtime_prune_drops_the_highest_losses(rho, b):
    from pd_plugins.pruning.runtime_prune import RuntimePrune

    vals = torch.randperm(b, generator=torch.Generator().manual_seed(b)).float()
    real = vals.view(b, 1, 1, 1).expand(b, 1, 2, 2).contiguous()
    rp = RuntimePrune(rho)
    mask = rp.keep_mask(_FixedLoss(), real, 0)
    drop = min(math.ceil(rho * b), b - 1)
    assert int((~mask).sum()) == drop
    if drop:
        assert vals[~mask].min() > vals[mask].max()  # the dropped ones are the highest-loss ones
    assert torch.equal(rp(_FixedLoss(), real, 0), real[mask])


def test_runtime_prune_rejects_bad_fraction():
    from pd_plugins.pruning.runtime_prune import RuntimePrune

    with pytest.raises(ValueError):
        RuntimePrune(1.0)


# -- report -------------------------------------------------------------------------------------
def test_prune_report_files(digits_splits, tmp_path):
    import json

    from pd_plugins.pruning.report import write_prune_report
    from pd_plugins.types import PruneResult

    train = digits_splits.train
    scores = torch.rand(len(train), generator=torch.Generator().manual_seed(0))
    kept, meta = select(scores, train.hard_labels, 10, keep=0.3, balanced=False)
    meta["kl_to_full"] = class_kl(train.hard_labels[kept], train.hard_labels, 10)
    report = write_prune_report(tmp_path, train, PruneResult(keep=kept, scores=scores, pruner="x", meta=meta))
    saved = json.loads((tmp_path / "prune_report.json").read_text())
    assert saved["per_class_kept"] == meta["per_class_kept"] == report["per_class_kept"]
    assert sum(saved["per_class_kept"]) == kept.numel() and saved["scores"]["kept"]["max"] <= saved["scores"]["dropped"]["min"]
    assert (tmp_path / "prune_scores.png").stat().st_size > 1000 and (tmp_path / "prune_examples.png").exists()
