"""The flat-parameter student against the reference functional_call path (values and gradients)."""
from __future__ import annotations

import pytest
import torch

from pd_plugins.distillation.experts import ExpertRecipe
from pd_plugins.distillation.mtt import TrajectoryObjective
from pd_plugins.pipeline.context import RunContext
from pd_plugins.training import accel
from pd_plugins.training import flat_student
from pd_plugins.training.accel import cpu_supports_bf16
from pd_plugins.training.flat_student import FlatStudent


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def digits(digits_splits):
    return digits_splits.train.subset(torch.arange(40))


def _objective(digits, tmp_path, precision="fp32", augment=True):
    ctx = RunContext(seed=0, device="cpu", cache_dir=tmp_path, model_options={"width": 8}, stage="distill",
                     precision=precision)
    obj = TrajectoryObjective(recipe=ExpertRecipe(epochs=2), experts=1, syn_steps=4, expert_epochs=1,
                              max_start_epoch=1, batch_syn=10, lr_teacher=0.05, augment=augment)
    obj.setup_student(digits, torch.arange(10).repeat_interleave(2), ctx)
    return obj


def _reference_step(obj, images, theta, idx, params):
    """The pre-flat path: functional_call on per-parameter views of theta."""
    x = images[idx]
    if params is not None:
        x = obj.aug.apply(x, params)
    with obj.ctx.autocast():
        logits = accel.functional_forward(obj.student, obj.unflatten(theta), x, compile=False)
    return torch.nn.functional.cross_entropy(logits.float(), obj.targets[idx])


def _unrolled(obj, digits, step):
    """Loss and gradients (images, lr) of one MTT unroll with ``step(images, theta, idx, params)``."""
    torch.manual_seed(1)
    start = obj.flat.flatten()
    target = start + 0.01 * torch.randn(start.numel())
    images = digits.images(torch.arange(20), "cpu").clone().requires_grad_(True)
    syn_lr = torch.tensor(0.05, requires_grad=True)
    theta = start.clone().requires_grad_(True)
    for idx, params in obj._plan(images, torch.Generator().manual_seed(3)):
        g = torch.autograd.grad(step(images, theta, idx, params), theta, create_graph=True)[0]
        theta = theta - syn_lr * g
    loss = ((theta - target) ** 2).sum() / ((start - target) ** 2).sum()
    loss.backward()
    return float(loss.detach()), images.grad.clone(), syn_lr.grad.clone()


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def test_flat_student_uses_the_layer_list_and_matches_the_module(digits, tmp_path):
    obj = _objective(digits, tmp_path)
    assert obj.flat.explicit  # ConvNet runs the hand-written layer list, not functional_call
    x = digits.images(torch.arange(8), "cpu")
    theta = obj.flat.flatten() + 0.1  # not the module's own weights: the views must be what is used
    ref = accel.functional_forward(obj.student, obj.unflatten(theta), x, compile=False)
    out = obj.flat(theta, x)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out, obj.student(x), atol=1e-3)
    with pytest.raises(ValueError, match="parameters"):
        obj.flat(theta[:-1], x)


@pytest.mark.parametrize("explicit_norm", [False, True])
def test_flat_unroll_same_loss_and_gradients_as_functional_call(digits, tmp_path, monkeypatch, explicit_norm):
    monkeypatch.setattr(flat_student, "EXPLICIT_NORM", explicit_norm)
    obj = _objective(digits, tmp_path)
    lr_, gr, er = _unrolled(obj, digits, lambda *a: _reference_step(obj, *a))
    lf, gf, ef = _unrolled(obj, digits, obj._step_ce)
    assert gr.norm() > 0 and er.abs() > 0
    assert lf == pytest.approx(lr_, rel=1e-5)
    assert torch.allclose(gf, gr, rtol=1e-4, atol=1e-6 * float(gr.abs().max()))
    assert torch.allclose(ef, er, rtol=1e-4)


def test_fallback_network_runs_through_functional_call(digits, tmp_path):
    x = digits.images(torch.arange(4), "cpu")
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(x[0].numel(), 10))
    fs = FlatStudent(net)
    assert not fs.explicit
    theta = fs.flatten() * 2
    assert torch.allclose(fs(theta, x), x.flatten(1) @ (2 * net[1].weight).T + 2 * net[1].bias, atol=1e-5)


@pytest.mark.skipif(not cpu_supports_bf16(), reason="CPU without AVX512-BF16/AMX runs bf16 as fp32")
def test_bf16_unroll_gradients_close_to_fp32(digits, tmp_path):
    l32, g32, e32 = _unrolled(obj32 := _objective(digits, tmp_path), digits, lambda *a: obj32._step_ce(*a))
    obj16 = _objective(digits, tmp_path, precision="bf16")
    l16, g16, e16 = _unrolled(obj16, digits, obj16._step_ce)
    assert l16 == pytest.approx(l32, rel=0.05)
    assert l16 != l32  # bf16 really ran
    cos = float(torch.nn.functional.cosine_similarity(g16.flatten(), g32.flatten(), dim=0))
    assert cos > 0.95
    assert _rel(g16, g32) < 0.3
    assert float(e16) == pytest.approx(float(e32), rel=0.1)
