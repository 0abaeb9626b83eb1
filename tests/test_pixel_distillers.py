"""DC / DSA / MTT at tiny shapes on CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pd_plugins.pipeline.context import RunContext
from pd_plugins.errors import DivergenceError, OptionsError


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # the shared 2-core box thrashes with 2 threads
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny(digits_splits):
    """40 digits images (4 per class), 8x8."""
    train = digits_splits.train
    pos = torch.cat([idx[:4] for idx in train.by_class()])
    return train.subset(pos)


def _ctx(tmp_path, **kw):
    kw.setdefault("model_options", {"width": 8})
    return RunContext(seed=0, device="cpu", work_dir=tmp_path / "run", cache_dir=tmp_path / "cache",
                      stage="distill", **kw)


def _distiller(host, name, **opts):
    cls = host.registries()["distiller"].load(name)
    return cls(cls.resolve_options(opts))


def test_registered_with_recommended_keep(host):
    reg = host.registries()["distiller"]
    for name in ("dc", "dsa", "mtt"):
        assert reg.load(name).recommended_keep == 0.6
    assert reg.load("dc")().objective is not None


def test_distances():
    from pd_plugins.distillation.dc import match_distance

    a = [torch.randn(4, 3, 3, 3), torch.randn(4)]
    assert match_distance(a, a, "ours").abs() < 1e-4          # identical gradients -> 0
    neg = [-t for t in a]
    assert match_distance(a, neg, "ours") == pytest.approx(8.0, abs=1e-3)  # 4 rows x (1 - (-1)); bias ignored
    assert match_distance(a, neg, "cos") == pytest.approx(2.0, abs=1e-4)
    assert match_distance(a, neg, "mse") == pytest.approx(float(sum((2 * t).pow(2).sum() for t in a)), rel=1e-5)
    with pytest.raises(OptionsError):
        match_distance(a, a, "nope")


def test_loops_need_explicit_counts_for_unpublished_ipc(host, tiny, tmp_path):
    from pd_plugins.distillation.dc import loops_for

    assert loops_for(10, 0, 0) == (10, 50)
    with pytest.raises(OptionsError, match="outer_loop"):
        loops_for(3, 0, 0)


@pytest.mark.parametrize("name", ["dc", "dsa"])
def test_gradient_matching_reaches_images_and_decreases(host, tiny, tmp_path, name):
    from pd_plugins.distillation.synthetic import class_major_labels, initial_images

    ctx = _ctx(tmp_path)
    obj = _distiller(host, name, batch_real=4, outer_loop=1, inner_loop=1).objective()
    labels = class_major_labels(10, 1)
    obj.setup(tiny, 1, labels, ctx)
    with ctx.fork_rng("net"):
        obj.fixed_net = ctx.make_model(1, 10, (8, 8))
    images = initial_images(tiny, 1, "noise", ctx.generator("i"), "cpu").requires_grad_(True)
    opt = torch.optim.SGD([images], lr=0.1, momentum=0.5)
    losses = []
    for it in range(6):
        obj.begin_iteration(0)
        loss, _ = obj.loss(images, 0, 0)  # same real batch and augmentation every step
        opt.zero_grad()
        loss.backward()
        assert images.grad is not None and images.grad.abs().sum() > 0
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_dc_runs_and_runtime_prune(host, tiny, tmp_path):
    d = _distiller(host, "dc", iterations=2, batch_real=4, outer_loop=2, inner_loop=1, runtime_prune=0.25, log_every=1)
    res = d.distill(tiny, 1, _ctx(tmp_path))
    assert res.images.shape == (10, 1, 8, 8) and torch.isfinite(res.images).all()
    assert len(res.history) == 2 and res.options["init"] == "noise"


def _mtt(host, **kw):
    opts = dict(iterations=4, syn_steps=2, expert_epochs=1, max_start_epoch=1, train_epochs=2, experts=2,
                expert_batch=20, lr_img=10.0, lr_lr=1e-6, lr_teacher=0.01, log_every=1)
    opts.update(kw)
    return _distiller(host, "mtt", **opts)


def test_mtt_experts_cached_and_lr_learned(host, tiny, tmp_path):
    ctx = _ctx(tmp_path)
    res = _mtt(host).distill(tiny, 1, ctx)
    assert res.meta["experts_trained"] == 2
    lrs = [h["syn_lr"] for h in res.history]
    assert all(torch.isfinite(torch.tensor(lrs))) and res.lr == lrs[-1] and res.lr != 0.01
    again = _mtt(host).distill(tiny, 1, _ctx(tmp_path))
    assert again.meta["experts_trained"] == 0  # cache reused
    assert torch.equal(again.images, res.images)
    # a different pool (another pruned set) has its own experts
    other = _mtt(host, experts=1).distill(tiny.subset(torch.arange(1, 40)), 1, _ctx(tmp_path))
    assert other.meta["experts_trained"] == 1


def test_mtt_expert_seed_shares_one_buffer_across_run_seeds(host, tiny, tmp_path):
    """expert_seed fixes the experts' seed: runs of other seeds reuse them (MTT trains its buffer once) while
    their own seed still drives the distillation; -1 (the default) gives each run seed its own experts."""
    from pathlib import Path

    from pd_plugins.distillation.experts import load_trajectory

    def run(seed, **kw):
        ctx = RunContext(seed=seed, device="cpu", work_dir=tmp_path / f"run{seed}", cache_dir=tmp_path / "cache",
                         stage="distill", model_options={"width": 8})
        return _mtt(host, iterations=2, **kw).distill(tiny, 1, ctx)

    own0, own1 = run(0), run(1)
    assert own0.meta["experts_trained"] == own1.meta["experts_trained"] == 2
    assert own0.meta["experts_dir"] != own1.meta["experts_dir"]
    shared1 = run(1, expert_seed=0)
    assert shared1.meta["experts_trained"] == 0 and shared1.meta["experts_dir"] == own0.meta["experts_dir"]
    shared2 = run(2, expert_seed=0)
    assert shared2.meta["experts_trained"] == 0 and shared2.meta["experts_dir"] == own0.meta["experts_dir"]
    assert not torch.equal(shared1.images, shared2.images)  # the run seed still draws the distillation
    fresh = run(0, expert_seed=5)
    assert fresh.meta["experts_trained"] == 2
    assert not torch.equal(load_trajectory(Path(fresh.meta["experts_dir"]), 0),
                           load_trajectory(Path(own0.meta["experts_dir"]), 0))
    with pytest.raises(ValueError, match="expert_seed"):
        _mtt(host, expert_seed=-2)


def test_mtt_experts_train_only_to_the_latest_target_epoch(host, tiny, tmp_path):
    """Start epochs run 0..max_start_epoch-1, so experts need max_start_epoch - 1 + expert_epochs epochs: one
    fewer is refused, and exactly that many is enough for every segment the run draws."""
    from pathlib import Path

    from pd_plugins.distillation.experts import load_trajectory

    with pytest.raises(ValueError, match="train_epochs must be >= max_start_epoch - 1 \\+ expert_epochs"):
        _mtt(host, max_start_epoch=2, expert_epochs=2, train_epochs=2)
    res = _mtt(host, max_start_epoch=2, expert_epochs=2, train_epochs=3, iterations=12).distill(tiny, 1, _ctx(tmp_path))
    assert load_trajectory(Path(res.meta["experts_dir"]), 0).shape[0] == 4  # epochs 0..3
    starts = {row["start_epoch"] for row in res.history if "start_epoch" in row}
    assert starts == {0, 1}  # the segment 1 -> 3 reaches the last stored epoch


def test_mtt_loss_decreases_on_fixed_expert(host, tiny, tmp_path):
    from pd_plugins.distillation.synthetic import class_major_labels, initial_images

    ctx = _ctx(tmp_path)
    obj = _mtt(host, experts=1).objective()
    obj.setup(tiny, 1, class_major_labels(10, 1), ctx)
    images = initial_images(tiny, 1, "real", ctx.generator("i"), "cpu").requires_grad_(True)
    opt = torch.optim.SGD([images], lr=10.0, momentum=0.5)
    losses = []
    for _ in range(5):
        loss, _ = obj.loss(images, 0, 0)
        opt.zero_grad()
        loss.backward()
        assert images.grad.abs().sum() > 0 and obj.syn_lr.grad is not None
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_mtt_soft_labels_and_divergence_guard(host, tiny, tmp_path):
    res = _mtt(host, soft_labels=True, lr_labels=1.0, lr_lr=1e-7).distill(tiny, 1, _ctx(tmp_path))
    assert res.labels.shape == (10, 10) and not torch.equal(res.labels, torch.eye(10))
    assert res.labels.min() >= 0 and torch.allclose(res.labels.sum(1), torch.ones(10), atol=1e-5)
    with pytest.raises(DivergenceError) as err:
        _mtt(host, lr_img=1e12, lr_lr=1e6).distill(tiny, 1, _ctx(tmp_path))
    assert err.value.state is not None and torch.isfinite(err.value.state["tensors"]["images"]).all()


def test_soft_labels_are_projected_onto_the_simplex_as_a_quadratic_program_would():
    from scipy.optimize import minimize

    from pd_plugins.distillation.mtt import project_to_simplex

    g = torch.Generator().manual_seed(0)
    v = torch.randn(6, 5, generator=g, dtype=torch.float64) * 2
    ours = project_to_simplex(v)
    for row, got in zip(v.numpy(), ours.numpy()):
        qp = minimize(lambda x: ((x - row) ** 2).sum(), np.full(5, 0.2), method="SLSQP", bounds=[(0, None)] * 5,
                      constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1}], options={"ftol": 1e-12})
        np.testing.assert_allclose(got, qp.x, atol=1e-5)
    assert torch.allclose(project_to_simplex(ours), ours, atol=1e-12)  # points of the simplex stay put


def test_mtt_rejects_unwired_options(host, tiny, tmp_path):
    with pytest.raises(OptionsError, match="zca"):
        _mtt(host, zca=True).objective()
    with pytest.raises(OptionsError, match="runtime"):
        _mtt(host, runtime_prune=0.1).objective()


class _Kill(Exception):
    pass


@pytest.mark.parametrize("name", ["dsa", "mtt", "mtt-soft"])
def test_resume_is_bit_exact(host, tiny, tmp_path, monkeypatch, name):
    from pd_plugins.distillation import synthetic

    def make():
        if name == "mtt":
            return _mtt(host, iterations=5)
        if name == "mtt-soft":  # a projected group: its optimiser state checkpoints with weights_only=True
            return _mtt(host, iterations=5, soft_labels=True, lr_labels=1.0, lr_lr=1e-7)
        return _distiller(host, name, iterations=5, batch_real=4, outer_loop=2, inner_loop=1, log_every=1)

    ref = make().distill(tiny, 1, _ctx(tmp_path / "a", checkpoint_every=2))
    ctx = _ctx(tmp_path / "b", checkpoint_every=2)
    ctx.cache_dir = tmp_path / "a" / "cache"
    real_log = ctx.log

    def dying_log(step, **metrics):
        if step == 3:
            raise _Kill()
        real_log(step, **metrics)

    monkeypatch.setattr(ctx, "log", dying_log)
    with pytest.raises(_Kill):
        make().distill(tiny, 1, ctx)
    assert ctx.load_checkpoint()["iteration"] == 2
    monkeypatch.undo()
    resumed = make().distill(tiny, 1, ctx)
    assert torch.equal(resumed.images, ref.images)
    assert resumed.lr == ref.lr
    assert torch.equal(resumed.labels, ref.labels)
    if name == "mtt-soft":
        assert not torch.equal(ref.labels, torch.eye(10))  # the labels were learned, not left one-hot
        assert ref.labels.min() >= 0 and torch.allclose(ref.labels.sum(1), torch.ones(10), atol=1e-5)
    del synthetic


def test_a_declared_projection_follows_each_step_and_stays_out_of_the_optimiser_state():
    import io

    from pd_plugins.distillation.mtt import project_to_simplex
    from pd_plugins.distillation.objectives import Objective, SyntheticOptimiser

    push = torch.tensor([[3.0, -1.0, 0.5, 0.0], [0.0, 0.0, 0.0, -2.0], [1.0, 1.0, 1.0, 1.0]])

    def make():
        labels = torch.full((3, 4), 0.25, requires_grad=True)
        images = torch.zeros(3, 2, requires_grad=True)

        class Declares(Objective):
            def extra_parameters(self):
                return [{"params": [labels], "lr": 1.0, "momentum": 0.5, "projection": project_to_simplex}]

        groups = [{"params": [images], "lr": 0.1, "projection": lambda t: t.clamp(max=0.05)}]
        opt = SyntheticOptimiser(Declares(), {"images": images}, groups, momentum=0.5)
        assert "projection" in groups[0]  # the caller's group is left as it was
        return opt, labels, images

    def update(opt, labels, images):
        opt.zero_grad()
        ((labels * push).sum() - images.sum()).backward()
        opt.step()

    opt, labels, images = make()
    for _ in range(2):
        update(opt, labels, images)
        assert images.max() <= 0.05 and images.min() > 0  # the image group's clamp ran after its update
        assert labels.min() >= 0 and torch.allclose(labels.sum(1), torch.ones(3))
    assert labels[0].tolist() == [0.0, 1.0, 0.0, 0.0]  # descended along -push, then projected
    buf = io.BytesIO()
    torch.save(opt.state(), buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)  # no callable in the optimiser state
    assert all("projection" not in g for st in (saved["opt"], saved["extra_opt"]) for g in st["param_groups"])
    twin, twin_labels, twin_images = make()
    twin.load_state(saved)
    with torch.no_grad():
        twin_labels.copy_(labels)  # the objective's own state would carry these; here there is none
    update(opt, labels, images)
    update(twin, twin_labels, twin_images)
    assert torch.equal(twin_images, images) and torch.equal(twin_labels, labels)
    assert torch.equal(twin.extra_opt.state_dict()["state"][0]["momentum_buffer"],
                       opt.extra_opt.state_dict()["state"][0]["momentum_buffer"])


def test_experts_command_caches_and_resumes(host, tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from pd_plugins.cli import cli

    monkeypatch.setenv("PD_CACHE_DIR", str(tmp_path / "cache"))
    args = ["experts", "--dataset", "digits", "--pruner", "random", "--keep", "0.05", "--model-option", "width=8",
            "-D", "experts=2", "-D", "train_epochs=2", "-D", "max_start_epoch=1", "-D", "expert_epochs=1",
            "--out", str(tmp_path / "run"), "--json"]
    first = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    out = json.loads(first.output[first.output.index("{"):])
    assert out["trained_now"] == 2 and out["pool_size"] < 100
    # simulate an interrupted run: the second expert's file is missing
    import pathlib

    (pathlib.Path(out["experts_dir"]) / "expert_0001.pt").unlink()
    second = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert second.exit_code == 0, second.output
    assert json.loads(second.output[second.output.index("{"):])["trained_now"] == 1


def _digits_quick_acc(host, digits_splits, tmp_path, name, ipc, **opts):
    """Test accuracy of ``name`` distilled on digits with its quick budget (quick evaluator, 2 nets)."""
    from pd_plugins.training.evaluate import StepEvaluator

    train, test = digits_splits.train, digits_splits.test
    ctx = RunContext(seed=0, cache_dir=tmp_path / "cache", stage="distill")
    cls = host.registries()["distiller"].load(name)
    res = cls(cls.resolve_options(opts, "quick")).distill(train, ipc, ctx)
    ev = StepEvaluator(StepEvaluator.resolve_options({"repeats": 2}, "quick"))
    return ev.evaluate(res.as_dataset(train), test, RunContext(seed=0, stage="eval"), lr=res.lr).mean


# Whether each distiller beats its own initial images is checked in tests/test_distill_quality.py.
@pytest.mark.slow
def test_mtt_real_init_beats_noise_init_on_digits(host, digits_splits, tmp_path):
    real = _digits_quick_acc(host, digits_splits, tmp_path, "mtt", 10)
    noise = _digits_quick_acc(host, digits_splits, tmp_path, "mtt", 10, init="noise")
    assert real > noise


@pytest.mark.parametrize("pool_size,syn_steps,expert_epochs", [(143, 10, 2), (143, 20, 2), (40, 8, 1), (7, 30, 3),
                                                                (3000, 20, 2), (50000, 20, 3)])
def test_expert_batch_fit_keeps_syn_steps_expert_steps_in_a_segment(pool_size, syn_steps, expert_epochs):
    import math

    from pd_plugins.distillation.experts import ExpertRecipe
    from pd_plugins.distillation.mtt import fit_expert_batch

    recipe = ExpertRecipe(epochs=4, batch=256)
    fitted = fit_expert_batch(recipe, pool_size, syn_steps, expert_epochs)
    segment_steps = expert_epochs * math.ceil(pool_size / fitted.batch)
    assert 1 <= fitted.batch <= recipe.batch
    assert segment_steps >= syn_steps or fitted.batch == 1  # a pool too small for syn_steps: one image a step
    if expert_epochs * math.ceil(pool_size / recipe.batch) >= syn_steps:  # MTT's data: the paper's batch stands
        assert fitted.batch == recipe.batch
    assert (fitted.epochs, fitted.lr, fitted.augment) == (recipe.epochs, recipe.lr, recipe.augment)


def test_mtt_fitted_expert_batch_is_recorded_and_keeps_the_learned_lr_up(host, tiny, tmp_path):
    """On a 40-image pool, batch 256 is one expert step an epoch against 8 student steps: matching
    that segment drives the learned lr down; the fitted batch gives the segment 8 steps."""
    import math

    kw = dict(syn_steps=8, expert_epochs=1, expert_batch=256, iterations=6, lr_lr=1e-7, lr_img=1.0)
    fitted = _mtt(host, **kw).distill(tiny, 1, _ctx(tmp_path))
    plain = _mtt(host, fit_expert_batch=False, **kw).distill(tiny, 1, _ctx(tmp_path))
    assert plain.meta["expert_batch"] == 256
    assert fitted.meta["expert_batch"] < 256 and math.ceil(len(tiny) / fitted.meta["expert_batch"]) >= 8
    assert fitted.meta["experts_dir"] != plain.meta["experts_dir"]  # the batch is part of the expert cache key
    assert plain.lr < 0.01 and fitted.lr > 2 * plain.lr  # measured: about 0.0099 against 0.0016
