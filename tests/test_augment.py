"""Tests for pd_plugins.training.augment (DSA on kornia)."""
from __future__ import annotations

import inspect
import json

import pytest
import torch
import torch.nn.functional as F

from pd_plugins.training.augment import DSA, VALID_TOKENS, AugParams, Augmenter, Identity, dsa, none

OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def real() -> torch.Tensor:
    return torch.randn(256, 3, 32, 32, generator=gen(123))


# --------------------------------------------------------------------------- API


def test_factories_keyword_only_with_annotations_and_docstrings():
    for fn in (dsa, none):
        sig = inspect.signature(fn)
        for p in sig.parameters.values():
            assert p.kind is inspect.Parameter.KEYWORD_ONLY
            assert p.annotation is not inspect.Parameter.empty
            assert p.default is not inspect.Parameter.empty
        doc = inspect.getdoc(fn)
        assert doc and doc.splitlines()[0].strip().endswith(".")  # a one-line summary first
    assert dsa is DSA  # the class is its own factory: one signature, no copy
    assert isinstance(dsa(), DSA) and isinstance(dsa(), Augmenter)
    assert isinstance(none(), Identity) and isinstance(none(), Augmenter)
    d = dsa()
    assert d.ops == OPS
    assert (d.scale, d.rotate, d.crop, d.cutout) == (1.2, 15.0, 0.125, 0.5)
    assert (d.brightness, d.saturation, d.contrast) == (1.0, 2.0, 0.5)


def test_describe_is_json():
    desc = dsa(allow_flip=False).describe()
    assert json.loads(json.dumps(desc)) == desc
    assert desc["name"] == "dsa" and "flip" not in desc["ops"] and desc["allow_flip"] is False
    assert json.loads(json.dumps(none().describe()))["name"] == "none"


def test_unknown_token_raises_naming_valid_tokens():
    with pytest.raises(ValueError) as e:
        DSA(strategy="color_blur")
    msg = str(e.value)
    assert "blur" in msg and all(t in msg for t in VALID_TOKENS)
    with pytest.raises(ValueError):
        dsa(strategy="")
    for bad in ({"crop": 1.0}, {"scale": 0.9}, {"cutout": 1.5}, {"rotate": -1.0}):
        with pytest.raises(ValueError):
            dsa(**bad)


def test_explicit_generator_required(real):
    with pytest.raises(TypeError):
        dsa()(real[:2], None)


def test_identity(real):
    aug = none()
    g = gen()
    assert aug(real, g) is real
    r, s = aug.pair(real, real[:3], g)
    assert r is real and torch.equal(s, real[:3])
    assert aug.sample(4, g, shared=False).op == "none"


def test_params_leading_dim(real):
    for op in OPS:
        aug = DSA(strategy=op)
        ps = aug.sample(17, gen(1), shared=True)
        pi = aug.sample(17, gen(1), shared=False)
        assert ps.op == pi.op == op
        assert all(v.shape[0] == 1 for v in ps.values.values())
        assert all(v.shape[0] == 17 for v in pi.values.values())
        with pytest.raises(ValueError):
            aug.apply(real[:5], pi)  # 17 params cannot apply to 5 images


# ------------------------------------------------------------ shapes / siamese


@pytest.mark.parametrize("op", OPS)
def test_shapes_preserved(op, real):
    aug = DSA(strategy=op)
    g = gen()
    x = real[:8]
    y = aug(x, g)
    assert y.shape == x.shape and y.dtype == x.dtype
    r, s = aug.pair(real, x, g)
    assert r.shape == real.shape and s.shape == x.shape
    x1 = torch.randn(4, 1, 28, 28, generator=gen(5))  # 1 channel, other size
    assert aug(x1, g).shape == x1.shape


@pytest.mark.device
@pytest.mark.parametrize("op", OPS)
def test_siamese_identity_bitwise(op, real, device):
    aug = DSA(strategy=op)
    g = gen(7)
    real = real.to(device)
    for _ in range(25):
        syn = real[:5].clone().requires_grad_()
        ra, sa = aug.pair(real, syn, g)
        assert torch.equal(sa.detach(), ra[:5])
        one = real[:1].clone().requires_grad_()
        ra, sa = aug.pair(real, one, g)
        assert torch.equal(sa.detach(), ra[:1])


def test_siamese_identity_default_strategy(real):
    aug = dsa()
    g = gen(11)
    seen = set()
    for _ in range(60):
        p = aug.sample(1, gen(int(torch.randint(1 << 30, (1,), generator=g))), shared=True)
        seen.add(p.op)
        syn = real[:10].clone().requires_grad_()
        ra, sa = aug.apply(real, p), aug.apply(syn, p)
        assert torch.equal(sa.detach(), ra[:10])
    assert seen == set(OPS)


def test_shared_params_broadcast_like_repeated(real):
    x = real[:6]
    for op in OPS:
        aug = DSA(strategy=op)
        p = aug.sample(1, gen(3), shared=True)
        rep = AugParams(p.op, {k: v.expand(6, *v.shape[1:]).clone() for k, v in p.values.items()})
        torch.testing.assert_close(aug.apply(x, p), aug.apply(x, rep))


@pytest.mark.device
@pytest.mark.parametrize("op", OPS)
def test_gradients_reach_syn(op, real, device):
    aug = DSA(strategy=op)
    g = gen(2)  # a host generator drives the device's augmentation
    real = real.to(device)
    w = torch.randn(5, 3, 32, 32, generator=gen(9)).to(device)
    for _ in range(5):
        syn = real[:5].clone().requires_grad_()
        _, sa = aug.pair(real, syn, g)
        (sa * w).sum().backward()
        assert syn.grad is not None
        assert torch.isfinite(syn.grad).all()
        assert syn.grad.abs().sum() > 0


def test_cutout_gradient_outside_box(real):
    aug = DSA(strategy="cutout")
    p = aug.sample(1, gen(4), shared=True)
    syn = real[:5].clone().requires_grad_()
    aug.apply(syn, p).sum().backward()
    x0, y0, x1, y1 = aug.cutout_boxes(p.values["u"], 32, 32)[0].tolist()
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[y0:y1, x0:x1] = True
    assert inside.any()
    assert (syn.grad[:, :, ~inside] == 1).all()
    assert (syn.grad[:, :, inside] == 0).all()


# ------------------------------------------------------------------ independent


@pytest.mark.parametrize("op", ["color", "crop", "cutout", "scale", "rotate"])
def test_independent_differs_per_sample(op):
    img = torch.randn(1, 3, 32, 32, generator=gen(8))
    batch = img.expand(16, -1, -1, -1).contiguous()
    out = DSA(strategy=op)(batch, gen(1))
    flat = out.flatten(1)
    distinct = {tuple(row.tolist()) for row in flat}
    assert len(distinct) > 8, op


def test_independent_flip_per_sample():
    img = torch.randn(1, 3, 8, 8, generator=gen(8))
    batch = img.expand(64, -1, -1, -1).contiguous()
    aug = DSA(strategy="flip")
    p = aug.sample(64, gen(0), shared=False)
    out = aug.apply(batch, p)
    f = p.values["flip"]
    assert 0 < int(f.sum()) < 64
    assert torch.equal(out[f], batch[f].flip(-1))
    assert torch.equal(out[~f], batch[~f])


def test_rotate_identical_images_differ():
    batch = torch.randn(1, 3, 32, 32, generator=gen(3)).repeat(8, 1, 1, 1)
    out = DSA(strategy="rotate")(batch, gen(0))
    for i in range(1, 8):
        assert not torch.allclose(out[0], out[i])


# ----------------------------------------------------------------- determinism


@pytest.mark.device
def test_same_seed_same_output_different_seed_differs(real, device):
    aug = dsa()
    x = real[:32].to(device)

    def run(seed):
        g = gen(seed)
        outs = [aug(x, g) for _ in range(6)]
        outs += list(aug.pair(x, x[:4], g))
        return outs

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a, c))


def test_global_rng_untouched(real):
    state = torch.get_rng_state()
    g = gen(5)
    for op in OPS + ("color_crop_cutout_flip_scale_rotate",):
        aug = DSA(strategy=op)
        for _ in range(3):
            aug(real[:16], g)
            syn = real[:2].clone().requires_grad_()
            _, s = aug.pair(real[:16], syn, g)
            s.sum().backward()
    none()(real, g)
    assert torch.equal(torch.get_rng_state(), state)


def test_allow_flip_false_never_flips(real):
    aug = dsa(allow_flip=False)
    assert "flip" not in aug.ops
    g = gen(0)
    ops = {aug.sample(1, g, shared=True).op for _ in range(400)}
    assert ops == set(OPS) - {"flip"}
    only_flip = dsa(strategy="flip", allow_flip=False)
    x = real[:4]
    assert torch.equal(only_flip(x, g), x)
    assert only_flip.sample(1, g, shared=True).op == "none"


# ------------------------------------------------------------------- formulas


def _color_reference(x, v):
    b = v["brightness"].view(-1, 1, 1, 1)
    s = v["saturation"].view(-1, 1, 1, 1)
    c = v["contrast"].view(-1, 1, 1, 1)
    x = x + b
    m = x.mean(dim=1, keepdim=True)
    x = (x - m) * s + m
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - m) * c + m


@pytest.mark.parametrize("shared", [True, False])
def test_color_matches_formula(shared, real):
    aug = DSA(strategy="color")
    x = real[:12] * 3
    g = gen(6)
    for _ in range(5):
        p = aug.sample(12, g, shared=shared)
        v = p.values
        assert ((v["brightness"] >= -0.5) & (v["brightness"] < 0.5)).all()
        assert ((v["saturation"] >= 0) & (v["saturation"] < 2)).all()
        assert ((v["contrast"] >= 0.5) & (v["contrast"] < 1.5)).all()
        torch.testing.assert_close(aug.apply(x, p), _color_reference(x, v))


def _color_params(n, b=0.0, s=1.0, c=1.0):
    return {
        "brightness": torch.full((n,), b) if not torch.is_tensor(b) else b,
        "saturation": torch.full((n,), s) if not torch.is_tensor(s) else s,
        "contrast": torch.full((n,), c) if not torch.is_tensor(c) else c,
    }


def test_color_components(real):
    aug = DSA(strategy="color")
    x = real[:8]
    g = gen(1)
    drawn = aug.sample(8, g, shared=False).values
    # brightness alone: adds (U - 0.5)
    b = drawn["brightness"]
    out = aug.apply(x, AugParams("color", _color_params(8, b=b)))
    torch.testing.assert_close(out, x + b.view(-1, 1, 1, 1))
    # saturation alone: keeps the per-pixel channel mean, scales the deviation
    s = drawn["saturation"]
    out = aug.apply(x, AugParams("color", _color_params(8, s=s)))
    m = x.mean(dim=1, keepdim=True)
    torch.testing.assert_close(out.mean(dim=1, keepdim=True), m)
    torch.testing.assert_close(out - out.mean(dim=1, keepdim=True), (x - m) * s.view(-1, 1, 1, 1))
    # contrast alone: keeps the per-sample mean, scales the deviation
    c = drawn["contrast"]
    out = aug.apply(x, AugParams("color", _color_params(8, c=c)))
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(out.mean(dim=(1, 2, 3), keepdim=True), m)
    torch.testing.assert_close(out - m, (x - m) * c.view(-1, 1, 1, 1))


def _shift_reference(x, dx, dy):
    out = torch.zeros_like(x)
    _, _, h, w = x.shape
    for yy in range(h):
        for xx in range(w):
            sy, sx = yy - dy, xx - dx
            if 0 <= sy < h and 0 <= sx < w:
                out[:, :, yy, xx] = x[:, :, sy, sx]
    return out


def test_crop_integer_shift_zero_fill(real):
    aug = DSA(strategy="crop")
    x = real[:6] * 3
    p = aug.sample(6, gen(2), shared=False)
    out = aug.apply(x, p)
    shifts = aug.crop_shifts(p.values["u"], 32, 32)
    assert shifts.dtype == torch.long
    for i in range(6):
        dx, dy = shifts[i].tolist()
        assert torch.equal(out[i : i + 1], _shift_reference(x[i : i + 1], dx, dy))
    # shift range is exactly [-4, 4] per axis at 32 px, all values reachable
    many = aug.crop_shifts(aug.sample(4000, gen(3), shared=False).values["u"], 32, 32)
    assert set(many[:, 0].tolist()) == set(range(-4, 5)) == set(many[:, 1].tolist())
    # a non-zero shift leaves a band of exact zeros
    i = int(torch.nonzero(shifts[:, 0] != 0)[0])
    dx = int(shifts[i, 0])
    band = out[i, :, :, :dx] if dx > 0 else out[i, :, :, dx:]
    assert (band == 0).all()


def test_cutout_box(real):
    aug = DSA(strategy="cutout")
    x = real[:6] * 3
    p = aug.sample(6, gen(4), shared=False)
    out = aug.apply(x, p)
    boxes = aug.cutout_boxes(p.values["u"], 32, 32)
    for i in range(6):
        x0, y0, x1, y1 = boxes[i].tolist()
        assert 0 <= x0 <= x1 <= 32 and 0 <= y0 <= y1 <= 32
        assert 8 <= x1 - x0 <= 16 and 8 <= y1 - y0 <= 16  # 16 px box, clipped to at least half
        inside = torch.zeros(32, 32, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert (out[i][:, inside] == 0).all()
        assert torch.equal(out[i][:, ~inside], x[i][:, ~inside])
    sizes = aug.cutout_boxes(aug.sample(2000, gen(5), shared=False).values["u"], 32, 32)
    assert ((sizes[:, 2] - sizes[:, 0]) == 16).any() and ((sizes[:, 2] - sizes[:, 0]) < 16).any()


def test_scale_matches_dsa_affine_grid(real):
    aug = DSA(strategy="scale")
    x = real[:4]
    p = aug.sample(4, gen(0), shared=False)
    s = p.values["scale"]
    assert ((s >= 1 / 1.2 - 1e-6) & (s <= 1.2 + 1e-6)).all()
    theta = torch.zeros(4, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = s[:, 0], s[:, 1]
    ref = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=True), align_corners=True)
    torch.testing.assert_close(aug.apply(x, p), ref, atol=1e-4, rtol=1e-4)


def test_rotate_matches_affine_grid_and_rot90(real):
    aug = DSA(strategy="rotate")
    x = real[:4]
    p = aug.sample(4, gen(0), shared=False)
    a = p.values["angle"]
    assert ((a >= -15) & (a <= 15)).all()
    t = torch.deg2rad(a)
    theta = torch.zeros(4, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(t), -torch.sin(t)
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(t), torch.cos(t)
    ref = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=True), align_corners=True)
    torch.testing.assert_close(aug.apply(x, p), ref, atol=1e-4, rtol=1e-4)
    out = aug.apply(x, AugParams("rotate", {"angle": torch.tensor([90.0])}))
    torch.testing.assert_close(out, torch.rot90(x, 1, (2, 3)), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("op", OPS)
def test_no_clamping(op):
    x = torch.full((8, 3, 32, 32), -4.0)
    x[..., 16:] = 4.0
    aug = DSA(strategy=op)
    g = gen(0)
    for _ in range(5):
        for out in (aug(x, g), aug.pair(x, x[:2], g)[1]):
            assert out.min() < -1.0 and out.max() > 2.0
