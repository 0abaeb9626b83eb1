"""Precision resolution, compiled-forward caching / fallback, and bf16 / compiled quality at tiny shapes."""
from __future__ import annotations

import pytest
import torch

from pd_plugins.training import accel
from pd_plugins.pipeline.context import RunContext


@pytest.fixture(autouse=True)
def _fresh_cache():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    accel.clear_cache()
    torch._dynamo.reset()
    yield
    accel.clear_cache()
    torch._dynamo.reset()
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny(digits_splits):
    train = digits_splits.train
    return train.subset(torch.cat([idx[:6] for idx in train.by_class()]))


def _ctx(tmp_path, **kw):
    kw.setdefault("device", "cpu")
    return RunContext(seed=0, work_dir=tmp_path / "run", cache_dir=tmp_path / "cache",
                      model_options={"width": 8}, stage="distill", **kw)


def test_resolve_precision(monkeypatch):
    assert accel.resolve_precision("fp32", "cpu") == ("fp32", None)
    monkeypatch.setattr(accel, "cpu_supports_bf16", lambda: False)
    prec, note = accel.resolve_precision("bf16", "cpu")
    assert prec == "fp32" and "bf16" in note and "\n" not in note
    monkeypatch.setattr(accel, "cpu_supports_bf16", lambda: True)
    assert accel.resolve_precision("bf16", "cpu") == ("bf16", None)


def test_runner_records_effective_precision(monkeypatch, capsys, host, tmp_path):
    from pd_plugins.config import RunConfig
    from pd_plugins.pipeline.runner import Run

    monkeypatch.setattr(accel, "cpu_supports_bf16", lambda: False)
    cfg = RunConfig(dataset="digits", pruner="none", distiller="none", evaluator="none", precision="bf16",
                    out=str(tmp_path / "r"))
    runner = Run(cfg, host=host)
    assert runner.resolved["precision"] == "fp32"
    assert runner.config_json()["precision"] == "bf16"  # what was asked stays recorded beside it
    assert "running fp32" in capsys.readouterr().out
    assert runner.context("distill").precision == "fp32"
    monkeypatch.setattr(accel, "cpu_supports_bf16", lambda: True)
    assert Run(cfg, host=host).context("distill").precision == "bf16"


def test_autocast_applies_to_scoring_and_training(tiny, tmp_path):
    """bf16 changes the numbers of every stage that goes through accel.forward (training, scoring)."""
    if not accel.cpu_supports_bf16():
        pytest.skip("no bf16 on this CPU")
    from pd_plugins.pruning.scoring import ScorerRecipe, sample_statistic, train_scorer

    out = {}
    for prec in ("fp32", "bf16"):
        ctx = _ctx(tmp_path, precision=prec)
        net = train_scorer(tiny, ctx, ScorerRecipe(model_options={"width": 8}, epochs=1, batch=16), ("t",))
        assert all(p.dtype == torch.float32 for p in net.parameters())  # weights stay fp32
        out[prec] = sample_statistic(net, tiny, ctx, "loss")
    assert out["bf16"].dtype == torch.float32
    diff = (out["bf16"] - out["fp32"]).abs().max()
    assert 0 < diff < 0.05 * out["fp32"].abs().max() + 0.05


def _counting_backend(counter):
    def backend(gm, example_inputs):
        counter.append(len(example_inputs))
        return gm.forward
    return backend


def test_compiles_once_across_fresh_networks(monkeypatch, tmp_path):
    """DM draws a fresh network per iteration; the cached functional forward compiles once."""
    calls: list = []
    monkeypatch.setattr(accel, "BACKEND", _counting_backend(calls))
    ctx = _ctx(tmp_path, compile=True)
    x = torch.randn(5, 1, 8, 8)
    outs = []
    for it in range(4):
        with ctx.fork_rng("net", it):
            net = ctx.make_model(1, 10, (8, 8))
        for p in net.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            out = accel.forward(net, x, ctx, "embed")
        with torch.no_grad():
            ref = net.embed(x)
        assert torch.allclose(out, ref, atol=1e-6)  # each fresh net's own weights are used
        outs.append(out)
    assert len(calls) == 1
    assert not torch.allclose(outs[0], outs[1])


def test_compile_failure_falls_back_to_eager_loudly(monkeypatch, capsys, tmp_path):
    def broken(gm, example_inputs):
        raise RuntimeError("backend exploded")

    monkeypatch.setattr(accel, "BACKEND", broken)
    ctx = _ctx(tmp_path, compile=True)
    net = ctx.make_model(1, 10, (8, 8))
    x = torch.randn(3, 1, 8, 8, requires_grad=True)
    out = accel.forward(net, x, ctx)
    out.sum().backward()
    assert torch.allclose(out, net(x), atol=1e-6)
    assert x.grad is not None
    err = capsys.readouterr().err
    assert err.count("torch.compile failed") == 1 and "running eager" in err
    accel.forward(net, x, ctx)  # the failed key stays eager, without a second message
    assert "torch.compile failed" not in capsys.readouterr().err


def _dm_curve(tiny, tmp_path, host, **ctx_kw):
    cls = host.registries()["distiller"].load("dm")
    dm = cls(cls.resolve_options({"iterations": 5, "batch_real": 6, "log_every": 1}))
    losses = []
    ctx = _ctx(tmp_path, **ctx_kw)
    ctx.on_log = lambda step, m: losses.append(m["loss"])
    res = dm.distill(tiny, 2, ctx)
    return torch.tensor(losses), res.images


@pytest.mark.device
def test_dm_bf16_and_compiled_follow_fp32(monkeypatch, tiny, tmp_path, host, device):
    """DM loss curve over 5 iterations: compiled (aot_eager) within 1e-4 relative of fp32 eager, bf16
    (CUDA autocast on a GPU) within 10% relative per iteration; the synthetic images stay fp32."""
    ref, img = _dm_curve(tiny, tmp_path / "a", host, device=device)
    assert len(ref) == 5 and img.dtype == torch.float32
    monkeypatch.setattr(accel, "BACKEND", "aot_eager")
    comp, _ = _dm_curve(tiny, tmp_path / "b", host, compile=True, device=device)
    assert torch.allclose(comp, ref, rtol=1e-4)
    if accel.resolve_precision("bf16", device)[0] == "bf16":
        bf, img_bf = _dm_curve(tiny, tmp_path / "c", host, precision="bf16", device=device)
        assert img_bf.dtype == torch.float32
        rel = ((bf - ref).abs() / ref.abs()).max()
        assert 0 < rel < 0.10, rel


@pytest.mark.slow
def test_inductor_dm_follows_fp32(tiny, tmp_path, host):
    """The real inductor backend (compile time ~20-60 s): same DM curve as eager within 1e-3."""
    ref, _ = _dm_curve(tiny, tmp_path / "a", host)
    comp, _ = _dm_curve(tiny, tmp_path / "b", host, compile=True, precision="fp32")
    assert torch.allclose(comp, ref, rtol=1e-3)
