"""ZCA whitening: the transform itself, mtt in ZCA space, storage and re-use in export/eval, expert cache."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pd_plugins.pipeline.context import RunContext
from pd_plugins.errors import DataError, OptionsError
from pd_plugins.data.zca import EPS, ZCA, in_set_space, unit_images


@pytest.fixture(scope="module")
def pool(digits_splits):
    return digits_splits.train


def _cov(x: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1).double()
    x = x - x.mean(0)
    return x.T @ x / (x.shape[0] - 1)


def test_whitened_covariance_is_identity_up_to_the_regularisation(pool):
    z = ZCA.fit(pool)
    unit = pool.to_unit(pool.images())
    lam, vec = torch.linalg.eigh(_cov(unit))  # independent of kornia: the pool's own spectrum
    lam = lam.clamp_min(0)
    expected = vec @ torch.diag(lam / (lam + EPS)) @ vec.T  # whitening with eps shrinks each direction
    got = _cov(z.whiten(unit))
    assert torch.allclose(got, expected, atol=2e-4)
    assert z.whiten(unit).flatten(1).mean(0).abs().max() < 1e-4
    assert not torch.allclose(expected, torch.eye(64, dtype=torch.float64), atol=0.1)  # eps 0.1 matters here
    # with a negligible eps every direction the pool varies in comes out at unit variance
    tiny = ZCA.fit(pool, eps=1e-6)
    var = torch.einsum("ij,jk,ki->i", vec.T, _cov(tiny.whiten(unit)), vec)
    strong = lam > 1e-3
    assert strong.sum() > 40
    assert torch.allclose(var[strong], torch.ones(int(strong.sum()), dtype=torch.float64), atol=2e-3)


def test_fit_uses_pixel_scale_not_mean_std(pool):
    z = ZCA.fit(pool)
    raw = pool.pixels.flatten(1).double() / pool.pixel_max  # [0, 1] scale, before any mean/std
    assert torch.allclose(z.mean.double(), raw.mean(0), atol=1e-6)


def test_state_round_trip_and_inverse(pool):
    z = ZCA.fit(pool)
    z2 = ZCA.from_state(z.state())
    unit = pool.to_unit(pool.images(torch.arange(50)))
    assert torch.equal(z.whiten(unit), z2.whiten(unit)) and z2.identity() == z.identity()
    assert torch.allclose(z.unwhiten(z.whiten(unit)), unit, atol=1e-4)
    assert torch.allclose(unit_images(z.whiten(unit), pool, z.state()), unit, atol=1e-4)
    with pytest.raises(DataError):
        ZCA.from_state({"mean": z.mean, "matrix": z.matrix[:5], "eps": 0.1})
    with pytest.raises(DataError, match="C\\*H\\*W"):
        z.whiten(torch.zeros(2, 1, 4, 4))


def test_apply_gives_a_distinct_normalised_dataset(pool):
    z = ZCA.fit(pool)
    w = z.apply(pool)
    assert w.normalized and torch.equal(w.index, pool.index) and w.fingerprint() != pool.fingerprint()
    assert torch.allclose(w.images(), z.whiten(pool.to_unit(pool.images())))
    z_eps = ZCA.fit(pool, eps=0.01)
    assert z_eps.apply(pool).fingerprint() != w.fingerprint()
    assert in_set_space(pool, None) is pool


def _mtt(host, **opts):
    cls = host.registries()["distiller"].load("mtt")
    base = dict(experts=1, train_epochs=2, expert_epochs=1, max_start_epoch=1, syn_steps=2, iterations=2,
                expert_batch=64, lr_img=1.0, lr_lr=1e-7)
    return cls(cls.resolve_options({**base, **opts}))


@pytest.fixture(scope="module")
def tiny(pool):
    return pool.subset(torch.cat([idx[:6] for idx in pool.by_class()]))


def _ctx(tmp_path):
    return RunContext(seed=0, device="cpu", work_dir=tmp_path / "run", cache_dir=tmp_path / "cache",
                      stage="distill", model_options={"width": 8})


def test_expert_cache_is_keyed_on_zca(host, tiny, tmp_path):
    from pd_plugins.distillation.experts import expert_dir

    ctx = _ctx(tmp_path)
    plain = _mtt(host)
    whitened = _mtt(host, zca=True)
    recipe = plain.recipe()
    z, z2 = ZCA.fit(tiny), ZCA.fit(tiny, eps=0.5)
    dirs = {expert_dir(tiny, ctx, recipe), expert_dir(z.apply(tiny), ctx, recipe, z),
            expert_dir(z2.apply(tiny), ctx, recipe, z2), expert_dir(tiny, ctx, recipe, z)}
    assert len(dirs) == 4  # the key names the transform, not only the data it saw
    # the CLI's `pd-run experts` path and the distiller share the whitened experts
    d_cli, _ = whitened.experts(tiny, ctx)
    res = whitened.distill(tiny, 1, ctx)
    assert Path(res.meta["experts_dir"]) == d_cli
    assert json.loads((d_cli / "key.json").read_text())["zca"]["eps"] == EPS
    d_plain, _ = plain.experts(tiny, ctx)
    assert d_plain != d_cli and "zca" not in json.loads((d_plain / "key.json").read_text())


def test_mtt_zca_distills_in_zca_space(host, tiny, tmp_path):
    res = _mtt(host, zca=True, iterations=1, lr_img=0.0, lr_lr=0.0).distill(tiny, 2, _ctx(tmp_path))
    z = ZCA.from_state(res.zca)
    assert z.fitted_on == tiny.fingerprint() and res.meta["zca"]["eps"] == EPS
    # lr 0: the synthetic set is still its real initialisation, which must be whitened real images
    whitened = z.apply(tiny).images()
    for img in res.images:
        assert min(float((img - w).abs().max()) for w in whitened) < 1e-5
    with pytest.raises(OptionsError, match="zca"):
        _mtt(host, zca=True).objective()


def test_zca_run_stores_exports_and_re_applies_the_transform(host, tmp_path):
    from pd_plugins.data.interop import evaluate_images, export_distilled, read_synthetic
    from pd_plugins.io import safe_torch_load
    from pd_plugins.config import RunConfig
    from pd_plugins.pipeline.runner import Run

    common = dict(evaluator_options={"epochs": 3}, eval_repeats=1, progress=False, device="cpu",
                  model_options={"width": 8})
    cfg = RunConfig(distiller="mtt", ipc=1, distiller_options={"zca": True, "experts": 1, "train_epochs": 2,
                    "expert_epochs": 1, "max_start_epoch": 1, "syn_steps": 2, "iterations": 2,
                    "lr_img": 1.0, "lr_lr": 1e-7},
                    out=str(tmp_path / "run"), **common)
    run = Run(cfg, host=host)
    summary = run.execute()
    saved = safe_torch_load(tmp_path / "run" / "distill.pt", "distill")
    z = ZCA.from_state(saved["zca"])
    splits = run.data()
    assert z.fitted_on == splits.train.fingerprint()  # pool mode without a pruner: the whole train split
    # the run's evaluation tested on whitened test images: redo it by hand
    train_set = Run(cfg, host=host).run_distill(splits.train.fingerprint(), run.run_prune(splits.train.fingerprint()))
    manual = run.evaluator.evaluate(train_set.as_dataset(splits.train), z.apply(splits.test), run.context("eval"))
    assert manual.accs[0] == summary["acc_mean"]
    for fmt, name in (("pt", "set.pt"), ("safetensors", "set.safetensors")):
        if fmt == "safetensors":
            pytest.importorskip("safetensors")
        export_distilled(tmp_path / "run", [fmt], tmp_path / name)
        syn, _ = read_synthetic(tmp_path / name, splits.train)
        assert torch.equal(syn.zca["matrix"], saved["zca"]["matrix"]) and syn.zca["eps"] == EPS
        out = evaluate_images(tmp_path / name, RunConfig(pruner="none", distiller="none", out=str(tmp_path / f"ev-{fmt}"),
                                                         **common))
        assert out["acc_mean"] == summary["acc_mean"]  # same set, same transform, same seed
    with pytest.raises(DataError, match="ZCA"):
        export_distilled(tmp_path / "run", ["imagefolder"], tmp_path / "folder")
    assert not (tmp_path / "folder").exists()


def test_a_half_stored_transform_is_refused(tmp_path, pool):
    from pd_plugins.data.interop import read_synthetic

    imgs = pool.images(torch.arange(20))
    labels = torch.arange(10).repeat(2)
    torch.save({"images": imgs, "labels": labels, "zca_mean": torch.zeros(64)}, tmp_path / "bad.pt")
    with pytest.raises(DataError, match="zca_matrix"):
        read_synthetic(tmp_path / "bad.pt", pool)
