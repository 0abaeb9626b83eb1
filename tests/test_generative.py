"""GLaD/LD3M machinery on tiny generators (CPU, seconds)."""
from __future__ import annotations

import builtins
import json

import pytest
import torch

from pd_plugins.pipeline.context import RunContext
from pd_plugins.errors import DataError, PdPluginsError
from tests.generative_fixtures import tiny_data, tiny_ldm


def decoder_gen(data, ctx, **values):
    from pd_plugins.distillation.generative.base import make_generator

    return make_generator("decoder", {"z_dim": 8, "width": 16, **values}, data, ctx)


# -- decoder (glad) -----------------------------------------------------------------------
@pytest.mark.parametrize("layer", [0, 1, 2])
def test_decoder_grads_reach_latents_only(layer):
    data, ctx = tiny_data(), RunContext(seed=1)
    gen = decoder_gen(data, ctx, layer=layer)
    lat = {k: v.requires_grad_(True) for k, v in gen.init_latents(data, 2, ctx).items()}
    labels = torch.arange(3).repeat_interleave(2)
    img = gen.decode(lat, labels, {})
    assert img.shape == (6, 1, 8, 8)
    img.square().sum().backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in lat.values())
    assert all(not p.requires_grad and p.grad is None for m in gen.modules() for p in m.parameters())


def test_decoder_output_uses_dataset_stats():
    data, ctx = tiny_data(), RunContext(seed=1)
    gen = decoder_gen(data, ctx)
    lat = gen.init_latents(data, 1, ctx)
    img = gen.decode(lat, torch.arange(3), {})
    unit = img * 0.25 + 0.3  # undo the dataset's normalisation: must land in the sigmoid's (0, 1)
    assert unit.min() > 0 and unit.max() < 1


def test_random_decoder_seeded_from_run_seed():
    data = tiny_data()
    f = [decoder_gen(data, RunContext(seed=s)).fingerprint() for s in (0, 0, 1)]
    assert f[0] == f[1] != f[2]


def test_chunked_rerender_matches_direct_backward():
    from pd_plugins.distillation.generative.loop import chunked_step

    data, ctx = tiny_data(), RunContext(seed=2)
    gen = decoder_gen(data, ctx, layer=1)
    labels = torch.arange(3).repeat_interleave(3)
    base = gen.init_latents(data, 3, ctx)
    target = torch.randn(9, 1, 8, 8, generator=torch.Generator().manual_seed(0))

    def loss_fn(x):  # a loss coupling images across chunks
        return ((x.mean(0) - target.mean(0)) ** 2).sum() + (x * target).sum() ** 2 * 1e-3, {}

    direct = {k: v.clone().requires_grad_(True) for k, v in base.items()}
    loss_fn(gen.decode(direct, labels, {}))[0].backward()
    chunked = {k: v.clone().requires_grad_(True) for k, v in base.items()}
    chunked_step(gen.decode, chunked, labels, {}, 2, loss_fn)
    for k in base:
        torch.testing.assert_close(chunked[k].grad, direct[k].grad, rtol=1e-4, atol=1e-6)


def test_decoder_prior_round_trip_and_bad_checkpoints(tmp_path):
    from pd_plugins.distillation.generative.decoder import train_decoder

    data, ctx = tiny_data(), RunContext(seed=3)
    train_decoder(data, ctx, tmp_path / "p", epochs=2, z_dim=8, width=16)
    a = decoder_gen(data, RunContext(seed=7), weights=str(tmp_path / "p"))
    b = decoder_gen(data, RunContext(seed=8), weights=str(tmp_path / "p"))
    assert a.fingerprint() == b.fingerprint()  # weights come from the file, not the seed
    lat = a.init_latents(data, 1, ctx)
    torch.testing.assert_close(a.decode(lat, torch.arange(3), {}), b.decode(lat, torch.arange(3), {}))
    enc = decoder_gen(data, ctx, weights=str(tmp_path / "p"), init="encode", layer=0)
    assert enc.init_latents(data, 2, ctx)["z"].shape == (6, 8)
    # not a checkpoint: garbage bytes in the weights file
    (tmp_path / "p" / "vae.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="not a valid checkpoint"):
        decoder_gen(data, ctx, weights=str(tmp_path / "p"))
    # a checkpoint for another network
    torch.save({"w": torch.zeros(2)}, tmp_path / "p" / "vae.pt")
    with pytest.raises(DataError, match="does not fit"):
        decoder_gen(data, ctx, weights=str(tmp_path / "p"))
    # a different kind of prior
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "prior.json").write_text(json.dumps({"pd_prior": "ldm", "config": {}}))
    with pytest.raises(DataError, match="not a 'decoder' prior"):
        decoder_gen(data, ctx, weights=str(tmp_path / "q"))
    # a prior for another geometry
    with pytest.raises(DataError, match="trained for"):
        train_decoder(tiny_data(hw=12), ctx, tmp_path / "r", epochs=1, z_dim=8, width=16)
        decoder_gen(data, ctx, weights=str(tmp_path / "r"))


def test_glad_end_to_end_with_dm_objective():
    from pd_plugins.plugins import registries

    data, ctx = tiny_data(), RunContext(seed=0, augmentation="none")
    cls = registries()["distiller"].load("glad")
    opts = cls.resolve_options({"iterations": 3, "objective_options": {"batch_real": 4}, "sg_batch": 2, "log_every": 1})
    res = cls(opts).distill(data, 2, ctx)
    assert res.images.shape == (6, 1, 8, 8) and torch.isfinite(res.images).all()
    assert set(res.latents) == {"f"} and res.generator["name"] == "decoder" and len(res.generator["fingerprint"]) == 64
    assert len(res.history) == 3
    # the stored latents re-render to the stored images
    from pd_plugins.distillation.generative.base import make_generator

    gen = make_generator("decoder", res.generator["options"], data, RunContext(seed=0))
    assert gen.fingerprint() == res.generator["fingerprint"]
    with torch.no_grad():
        torch.testing.assert_close(gen.decode(res.latents, res.labels, {}), res.images)


# -- latent diffusion (ld3m) ---------------------------------------------------------------
diffusers = pytest.importorskip("diffusers")


def ldm_gen(path, data, ctx, **values):
    from pd_plugins.distillation.generative.base import make_generator

    return make_generator("ldm", {"weights": str(path), "steps": 3, **values}, data, ctx)


def test_mix_weight_schedule():
    from pd_plugins.distillation.generative.ldm import ddim_sample, mix_weight

    assert [mix_weight(i, 4) for i in (4, 3, 2, 1, 0)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    seen = []
    alphas = torch.linspace(0.99, 0.1, 1000)
    x_T = torch.randn(2, 2, 4, 4)
    out = ddim_sample(lambda x, t: torch.zeros_like(x), x_T, alphas, [900, 600, 300, 0], 1.0, 0.0,
                      torch.randn_like(x_T), None, trace=lambda k, w: seen.append(w))
    assert seen == [1.0, 2 / 3, 1 / 3, 0.0]
    # eps = 0 means pred_x0 = x / sqrt(a); the x_T skip then makes the result exactly x_T-mixed
    assert torch.isfinite(out).all()


def test_mix_forces_first_pred_x0_to_x_T():
    from pd_plugins.distillation.generative.ldm import ddim_sample

    alphas = torch.linspace(0.99, 0.1, 1000)
    x_T = torch.randn(1, 2, 4, 4)
    # one step from T=1: weight 1 at the first step, so x after it is sqrt(a_prev)*x_T + dir(eps)
    eps_val = torch.randn(1, 2, 4, 4)
    out = ddim_sample(lambda x, t: eps_val, x_T, alphas, [900, 0], 1.0, 0.0, torch.randn_like(x_T), None)
    a1 = alphas[0]
    x1 = a1.sqrt() * x_T + (1 - a1).sqrt() * eps_val  # after step k=0 (pred_x0 = x_T)
    expected = (x1 - (1 - a1).sqrt() * eps_val) / a1.sqrt()  # last step: weight 0, a_prev = 1
    torch.testing.assert_close(out, expected)


def test_ldm_grads_noise_and_rerender(tmp_path):
    path = tiny_ldm(tmp_path)
    data, ctx = tiny_data(), RunContext(seed=4)
    gen = ldm_gen(path, data, ctx)
    lat = {k: v.requires_grad_(True) for k, v in gen.init_latents(data, 2, ctx).items()}
    assert lat["x_T"].shape == (6, 2, 4, 4) and lat["cond"].shape[0] == 6
    labels = torch.arange(3).repeat_interleave(2)
    aux = gen.aux(("iter", 5), 6, ctx)
    torch.testing.assert_close(aux["noise_start"], gen.aux(("iter", 5), 6, ctx)["noise_start"])
    assert not torch.equal(aux["noise_start"], gen.aux(("iter", 6), 6, ctx)["noise_start"])
    img = gen.decode(lat, labels, aux)
    img.square().sum().backward()
    assert lat["x_T"].grad.abs().sum() > 0 and lat["cond"].grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for m in gen.modules() for p in m.parameters())
    # the re-render with grad (checkpointed) equals the no-grad render with the same noise
    from pd_plugins.distillation.generative.loop import render

    with torch.no_grad():
        again = render(gen.decode, {k: v.detach() for k, v in lat.items()}, labels, aux, 4)
    torch.testing.assert_close(img.detach(), again, rtol=1e-4, atol=1e-5)
    # chunked gradient equals the direct one
    from pd_plugins.distillation.generative.loop import chunked_step

    direct = {k: v.detach().clone().requires_grad_(True) for k, v in lat.items()}
    gen.decode(direct, labels, aux).square().sum().backward()
    chunk = {k: v.detach().clone().requires_grad_(True) for k, v in lat.items()}
    chunked_step(gen.decode, chunk, labels, aux, 4, lambda x: (x.square().sum(), {}))
    for k in lat:
        torch.testing.assert_close(chunk[k].grad, direct[k].grad, rtol=1e-3, atol=1e-6)


def test_ldm_bad_checkpoint_is_one_line(tmp_path):
    path = tiny_ldm(tmp_path)
    data, ctx = tiny_data(), RunContext()
    for f in (path / "unet").glob("*.safetensors"):
        f.write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a valid UNet2DModel checkpoint") as exc:
        ldm_gen(path, data, ctx)
    assert "\n" not in str(exc.value)
    with pytest.raises(DataError, match="needs weights=DIR"):
        ldm_gen("", data, ctx)
    (tmp_path / "x" / "unet").mkdir(parents=True)
    (tmp_path / "x" / "unet" / "config.json").write_text(json.dumps({"_class_name": "ControlNetModel"}))
    with pytest.raises(DataError, match="has no vae/config.json"):
        ldm_gen(tmp_path / "x", data, ctx)
    (tmp_path / "x" / "vae").mkdir()
    (tmp_path / "x" / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(DataError, match="expected one of"):
        ldm_gen(tmp_path / "x", data, ctx)


def test_missing_diffusers_names_the_extra(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def fake_import(name, *a, **kw):
        if name == "diffusers" or name.startswith("diffusers."):
            raise ImportError("No module named 'diffusers'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    from pd_plugins.distillation.generative.ldm import require_diffusers

    with pytest.raises(PdPluginsError, match=r"pip install 'pd-plugins\[diffusion\]'"):
        require_diffusers()
    with pytest.raises(PdPluginsError, match="diffusion"):
        ldm_gen(tmp_path, tiny_data(), RunContext())


def test_ld3m_end_to_end(tmp_path):
    from pd_plugins.plugins import registries

    path = tiny_ldm(tmp_path)
    data, ctx = tiny_data(), RunContext(seed=0, augmentation="none")
    cls = registries()["distiller"].load("ld3m")
    opts = cls.resolve_options({"weights": str(path), "steps": 2, "iterations": 2, "objective_options.batch_real": 4, "sg_batch": 4})
    res = cls(opts).distill(data, 1, ctx)
    assert res.images.shape == (3, 1, 8, 8) and set(res.latents) == {"x_T", "cond"}
    assert res.generator["name"] == "ldm" and res.generator["options"]["guidance"] == 3.0
