"""Coreset baselines: the selection rules against their definitions, and the distillers end to end."""
from __future__ import annotations

import pytest
import torch

from pd_plugins.distillation.selection_rules import (PresentationLog, forgetting_events, herding, k_center_greedy, most_forgotten,
                                train_on_pool)
from pd_plugins.errors import OptionsError


# ---------------------------------------------------------------------------------------------
# selection rules on hand-made inputs


def test_herding_follows_greedy_mean_matching_by_hand():
    # A=(1,0) B=(-1,0) C=(0.9,0.1) D=(0,0); class mean mu=(0.225,0.025).
    # t=1: ||mu-x||^2: A .601, B 1.501, C .461, D .051 -> D
    # t=2: ||mu-(D+x)/2||^2: A .076, B .526, C .051 -> C
    # t=3: ||mu-(D+C+x)/3||^2: A .167, B .067 -> B   (nearest-to-mean would take A here)
    f = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.9, 0.1], [0.0, 0.0]])
    assert herding(f, 3).tolist() == [3, 2, 1]
    assert herding(f, 4).tolist() == [3, 2, 1, 0]
    nearest_to_mean = torch.argsort(((f - f.mean(0)) ** 2).sum(1))[:3].tolist()
    assert nearest_to_mean == [3, 2, 0]  # the rule above is not "the k nearest to the mean"


def test_herding_mean_error_beats_random_subsets():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(200, 6, generator=g)
    mu = f.mean(0)
    sel = herding(f, 10)
    err = float(((f[sel].mean(0) - mu) ** 2).sum())
    rand = [float(((f[torch.randperm(200, generator=g)[:10]].mean(0) - mu) ** 2).sum()) for _ in range(200)]
    assert err < min(rand)


def test_k_center_by_hand_and_first_pick_nearest_mean():
    f = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0]])  # mean 4.8: nearest is 2
    # then farthest from {2}: 11; then farthest from {2, 11}: 0 (distance 2 beats 10's and 1's 1)
    assert k_center_greedy(f, 3).tolist() == [2, 4, 0]


def test_k_center_each_pick_maximises_min_distance():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(60, 5, generator=g)
    sel = k_center_greedy(f, 12).tolist()
    d = torch.cdist(f.double(), f.double())
    assert sel[0] == int(torch.argmin(((f - f.mean(0)) ** 2).sum(1)))
    for t in range(1, len(sel)):
        min_to_chosen = d[:, sel[:t]].min(1).values
        others = [i for i in range(60) if i not in sel[:t]]
        assert min_to_chosen[sel[t]] >= min_to_chosen[others].max() - 1e-12
    assert len(set(sel)) == len(sel)


def test_forgetting_events_by_hand():
    correct = torch.tensor([[1, 0, 1, 0],   # presentation 1 of samples 0..3
                            [0, 0, 1, 1],
                            [1, 0, 1, 1],
                            [0, 0, 1, 0]], dtype=torch.bool)
    # sample 0: 1->0 twice; 1: never correct -> 4 (= presentations); 2: never forgotten; 3: once
    assert forgetting_events(correct).tolist() == [2.0, 4.0, 0.0, 1.0]


def test_most_forgotten_keeps_highest_counts_with_seeded_ties():
    counts = torch.tensor([0.0, 3.0, 1.0, 1.0, 1.0, 5.0, 0.0])
    pick = lambda s: most_forgotten(counts, 3, torch.Generator().manual_seed(s)).tolist()  # noqa: E731
    for s in range(5):
        chosen = pick(s)
        assert chosen[:2] == [5, 1] and chosen[2] in (2, 3, 4)
        assert pick(s) == chosen
    assert len({pick(s)[2] for s in range(20)}) > 1  # ties are not broken by position


# ---------------------------------------------------------------------------------------------
# the training hook behind forgetting


def _small(digits_splits, per_class=20):
    train = digits_splits.train
    pos = torch.cat([p[:per_class] for p in train.by_class()])
    return train.subset(pos)


def test_presentation_log_matches_predictions_of_a_frozen_net(digits_splits, ctx):
    from pd_plugins.pruning.scoring import ScorerRecipe

    data = _small(digits_splits)
    log = PresentationLog(len(data), 3)
    # lr 0 keeps the network fixed, so every presentation must equal the net's own prediction
    net = train_on_pool(data, ctx, ScorerRecipe(epochs=3, lr=0.0, batch=32, augment=False), on_batch=log)
    with torch.no_grad():
        expected = net(data.images()).argmax(1) == data.hard_labels
    assert 0 < int(expected.sum()) < len(data)  # a mix, so a misplaced position would show
    for e in range(3):
        assert torch.equal(log.correct[e], expected)
    counts = log.counts()
    assert torch.equal(counts, torch.where(expected, 0.0, 3.0).double())


def test_forgetting_counts_on_a_training_run(digits_splits, ctx):
    from pd_plugins.pruning.scoring import ScorerRecipe

    data = _small(digits_splits)
    log = PresentationLog(len(data), 6)
    train_on_pool(data, ctx, ScorerRecipe(epochs=6, lr=0.05, momentum=0.9, batch=32, augment=True), on_batch=log)
    assert (log.seen == 6).all()
    assert log.correct[-1].float().mean() > log.correct[0].float().mean()  # the net learned
    counts = log.counts()
    assert counts.max() <= 6 and (counts > 0).any()


# ---------------------------------------------------------------------------------------------
# distillers


def _distiller(host, name, **values):
    cls = host.registries()["distiller"].load(name)
    return cls(cls.resolve_options(values))


@pytest.mark.parametrize("name", ["random", "herding", "k-center", "forgetting"])
def test_coreset_returns_real_class_major_images_deterministically(host, digits_splits, ctx, name):
    data = _small(digits_splits)
    opts = {} if name == "random" else {"epochs": 2}
    res = _distiller(host, name, **opts).distill(data, 3, ctx, data)
    rec = res.meta["coreset"]
    pos = torch.tensor(rec["positions"])
    assert torch.equal(res.images, data.images(pos))
    assert torch.equal(res.labels, torch.arange(10).repeat_interleave(3))
    assert torch.equal(data.hard_labels[pos], res.labels) and len(set(rec["positions"])) == 30
    assert rec["source_index"] == data.index[pos].tolist()
    again = _distiller(host, name, **opts).distill(data, 3, ctx, data)
    assert again.meta["coreset"]["positions"] == rec["positions"]
    from dataclasses import replace

    other = _distiller(host, name, **opts).distill(data, 3, replace(ctx, seed=5), data)
    assert other.meta["coreset"]["positions"] != rec["positions"]


def test_herding_selects_by_herding_in_the_trained_feature_space(host, digits_splits, ctx):
    from pd_plugins.distillation.selection_rules import embed
    from pd_plugins.pruning.scoring import train_scorer

    data = _small(digits_splits)
    dist = _distiller(host, "herding", epochs=2)
    res = dist.distill(data, 4, ctx, data)
    feats = embed(train_scorer(data, ctx, dist.recipe(ctx), ("coreset",)), data, ctx)
    for c, pos in enumerate(data.by_class()):
        assert res.meta["coreset"]["positions"][4 * c:4 * c + 4] == pos[herding(feats[pos], 4)].tolist()


def test_coreset_refuses_init_mode(host, digits_splits, ctx):
    data = _small(digits_splits)
    with pytest.raises(OptionsError, match="mode pool"):
        _distiller(host, "herding", epochs=1).distill(digits_splits.train, 2, ctx, data)


def test_herding_run_beats_chance_on_digits(host, tmp_path):
    from pd_plugins.config import RunConfig
    from pd_plugins.pipeline.runner import Run

    cfg = RunConfig(distiller="herding", ipc=2, distiller_options={"epochs": 5}, evaluator_options={"epochs": 60},
                    eval_repeats=1, out=str(tmp_path / "h"), progress=False, device="cpu")
    summary = Run(cfg, host=host).execute()
    assert summary["synthetic"] == 20 and summary["acc_mean"] > 0.5  # chance is 0.1


@pytest.mark.slow
@pytest.mark.parametrize("name", ["k-center", "forgetting", "random"])
def test_coreset_runs_beat_chance_on_digits(host, tmp_path, name):
    from pd_plugins.config import RunConfig
    from pd_plugins.pipeline.runner import Run

    cfg = RunConfig(distiller=name, ipc=10, evaluator_options={"epochs": 100}, eval_repeats=1,
                    out=str(tmp_path / name), progress=False, device="cpu")
    assert Run(cfg, host=host).execute()["acc_mean"] > 0.6


def test_table1_has_the_coreset_rows():
    import importlib.util
    from pathlib import Path

    from pd_plugins.config import RunConfig

    spec = importlib.util.spec_from_file_location("table1", Path(__file__).resolve().parents[1] / "baselines" / "table1.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    base = {"dataset": "digits", "distiller": "dm", "ipc": 2, "distiller_options": {"iterations": 3}, "mode": "init"}
    rows = mod.coreset_configs(base, {"epochs": 4})
    assert set(rows) == {"herding", "k-center", "forgetting"}
    for name, cfg in rows.items():
        assert cfg["distiller"] == name and cfg["distiller_options"] == {"epochs": 4}
        assert cfg["ipc"] == 2 and cfg["pruner"] == "none" and cfg["mode"] == "pool"
        RunConfig.from_dict(cfg)
