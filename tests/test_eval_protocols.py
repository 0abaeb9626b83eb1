"""Evaluation protocols by name: each follows its reference code's schedule (algorithms.md section 6)."""
from __future__ import annotations

import pytest
import torch

from pd_plugins.pipeline.context import RunContext
from pd_plugins.errors import OptionsError
from pd_plugins.types import ImageDataset


def _tiny_set(n_per_class=2, classes=3):
    g = torch.Generator().manual_seed(0)
    n = n_per_class * classes
    return ImageDataset(pixels=torch.rand(n, 1, 8, 8, generator=g), labels=torch.arange(classes).repeat_interleave(n_per_class),
                        num_classes=classes, mean=(0.0,), std=(1.0,), name="tiny", index=torch.arange(n),
                        source_id="tiny", normalized=True, allow_flip=False)


class _SpySGD(torch.optim.SGD):
    """Records, for every optimiser step, which optimiser made it and at what lr."""

    steps: list = []

    def step(self, closure=None):
        _SpySGD.steps.append((id(self), self.param_groups[0]["lr"], self.param_groups[0]["momentum"]))
        return super().step(closure)


@pytest.fixture
def spy(monkeypatch):
    _SpySGD.steps = []
    monkeypatch.setattr(torch.optim, "SGD", _SpySGD)
    return _SpySGD.steps


def _evaluator(host, name, **opts):
    cls = host.registries()["evaluator"].load(name)
    return cls(cls.resolve_options({"repeats": 1, "augment": False, **opts}))


def _ctx():
    return RunContext(seed=0, stage="eval", model_options={"width": 8, "depth": 1}, progress_enabled=False)


def reference_step_lrs(epochs: int, lr: float) -> list[float]:
    """The lr of every training pass as DC/DSA/MTT's ``evaluate_synset`` schedules it."""
    out, schedule = [], [epochs // 2 + 1]
    for ep in range(epochs + 1):
        out.append(lr)  # epoch('train', ...) runs at the current lr
        if ep in schedule:
            lr *= 0.1  # and the optimiser is re-created
    return out


@pytest.mark.parametrize("epochs", [1, 2, 5, 8])
def test_step_protocol_follows_the_reference_schedule(host, spy, epochs):
    """E + 1 passes; x0.1 after pass E//2 + 1 with a new optimiser (momentum reset)."""
    data = _tiny_set()  # one batch per pass: one optimiser step per pass
    res = _evaluator(host, "dsa-step", epochs=epochs).evaluate(data, data, _ctx())
    want = reference_step_lrs(epochs, 0.01)
    assert [lr for _, lr, _ in spy] == pytest.approx(want)
    owners = [o for o, _, _ in spy]
    first_decayed = next((i for i, lr in enumerate(want) if lr < 0.01), None)
    assert len(set(owners)) == (1 if first_decayed is None else 2)
    if first_decayed is not None:  # the optimiser changes exactly where the lr drops
        assert owners[first_decayed - 1] != owners[first_decayed] and len(set(owners[first_decayed:])) == 1
    assert res.meta["schedule"]["passes"] == epochs + 1


def test_protocol_names_and_defaults(host):
    reg = host.registries()["evaluator"]
    assert reg.get("dsa-step-1000").name == "dsa-step"
    assert reg.get("dc-step").name == "dc-step"  # no longer an alias of the DSA protocol
    dc = reg.load("dc-step").Options()
    dsa = reg.load("dsa-step").Options()
    mtt = reg.load("mtt-step-lr").Options()
    glad = reg.load("glad-ema-cosine").Options()
    assert (dc.epochs, dc.augment, dc.lr, dc.use_learned_lr) == (300, False, 0.01, False)
    assert (dsa.epochs, dsa.augment, dsa.lr, dsa.use_learned_lr) == (1000, True, 0.01, True)
    assert (mtt.epochs, mtt.augment, mtt.use_learned_lr) == (1000, True, True)
    assert (glad.epochs, glad.lr, glad.vgg11_lr, glad.ema_decay, glad.augment) == (1000, 1e-3, 1e-4, 0.995, True)
    for name in ("dc-step", "dsa-step", "mtt-step-lr", "glad-ema-cosine"):  # the summary names the paper
        assert any(p in reg.get(name).summary for p in ("DC", "DSA", "MTT", "GLaD"))
    # budgets scale only through options
    assert reg.load("dsa-step").resolve_options({}, "quick").epochs == 300


def test_learned_lr_per_protocol(host):
    data = _tiny_set()
    lr_of = {}
    for name, opts in (("dsa-step", {}), ("dc-step", {}), ("mtt-step-lr", {}), ("mtt-step-lr", {"use_learned_lr": False}),
                       ("glad-ema-cosine", {})):
        res = _evaluator(host, name, epochs=2, **opts).evaluate(data, data, _ctx(), lr=0.037)
        lr_of[(name, bool(opts))] = (res.options["lr_used"], res.options["lr_source"])
    assert lr_of[("dsa-step", False)] == (0.037, "learned")
    assert lr_of[("dc-step", False)] == (0.01, "option")
    assert lr_of[("mtt-step-lr", False)] == (0.037, "learned")
    assert lr_of[("mtt-step-lr", True)] == (0.01, "option")
    assert lr_of[("glad-ema-cosine", False)] == (1e-3, "protocol")
    with pytest.raises(OptionsError, match="learned lr"):
        _evaluator(host, "mtt-step-lr", epochs=2).evaluate(data, data, _ctx())
    vgg = _evaluator(host, "glad-ema-cosine")
    assert vgg.learning_rate(None, "vgg11") == (1e-4, "protocol")


def torch_glad_lrs(epochs: int) -> list[float]:
    """Per-epoch lr factors of GLaD's ``evaluate_synset`` built from torch's schedulers as GLaD builds them."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0, momentum=0.9)
    sched1 = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.0000001, end_factor=1.0, total_iters=epochs // 2)
    sched2 = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs // 2)
    sched, out = sched1, []
    for ep in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        if ep == epochs // 2:
            sched = sched2
    return out


@pytest.mark.parametrize("epochs", [2, 10, 11, 1000])
def test_glad_schedule_matches_torch_schedulers(epochs):
    from pd_plugins.training.evaluate import glad_lr_factor

    want = torch_glad_lrs(epochs)
    got = [glad_lr_factor(ep, epochs) for ep in range(epochs)]
    assert got == pytest.approx(want, rel=1e-6, abs=1e-12)


def test_glad_trains_e_epochs_on_one_optimiser_and_tests_the_ema(host, spy, monkeypatch):
    import pd_plugins.training.evaluate as evaluate

    data = _tiny_set()
    ev = _evaluator(host, "glad-ema-cosine", epochs=6)
    snapshots = []
    real = evaluate.train_network

    def recording(net, *a, after_epoch=None, **kw):  # snapshot the weights each EMA update sees
        def after():
            snapshots.append([p.detach().clone() for p in net.parameters()])
            after_epoch()
        return real(net, *a, after_epoch=after, **kw)

    monkeypatch.setattr(evaluate, "train_network", recording)
    ctx = _ctx()
    with ctx.fork_rng("eval-net", ctx.model, 0):
        net = ctx.make_model(1, 3, (8, 8))
    tested, _ = ev.train_one(net, data, ctx, lr=0.5, augmenter=None,
                             generator=torch.Generator().manual_seed(0), desc="t")
    assert len(spy) == 6 and len({o for o, _, _ in spy}) == 1  # E epochs, no optimiser re-creation
    assert [lr for _, lr, _ in spy] == pytest.approx([0.5 * f for f in torch_glad_lrs(6)], rel=1e-6, abs=1e-12)
    # ema_pytorch EMA(beta=0.995, power=1, update_after_step=0), one update per epoch
    ema = [s.clone() for s in snapshots[0]]
    for n, snap in enumerate(snapshots[1:], start=1):
        decay = min(0.995, 1 - (1 + n) ** -1)
        ema = [decay * e + (1 - decay) * s for e, s in zip(ema, snap)]
    for got, want in zip(tested.parameters(), ema):
        assert torch.allclose(got, want, atol=1e-6)
    assert not all(torch.allclose(a, b) for a, b in zip(tested.parameters(), net.parameters()))


def test_a_changed_protocol_revision_makes_old_evaluations_stale(host, monkeypatch):
    from pd_plugins.training.evaluate import StepEvaluator
    from pd_plugins.config import RunConfig
    from pd_plugins.pipeline.runner import Run

    run = Run(RunConfig(distiller="none", out="unused"), quiet=True)
    now = run.stage_fingerprint("eval", "data")
    monkeypatch.setattr(StepEvaluator, "protocol_revision", 0)
    assert run.stage_fingerprint("eval", "data") != now
