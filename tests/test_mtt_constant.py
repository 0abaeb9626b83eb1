"""TESLA constant-memory MTT gradient against the unrolled one at tiny shapes."""
from __future__ import annotations

import pytest
import torch

from pd_plugins.pipeline.context import RunContext
from pd_plugins.distillation.mtt import TrajectoryObjective
from pd_plugins.distillation.experts import ExpertRecipe


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _objective(memory, syn_steps, digits, tmp_path, augment=True, soft_labels=False, lr=0.05):
    ctx = RunContext(seed=0, device="cpu", cache_dir=tmp_path, model_options={"width": 8}, stage="distill")
    obj = TrajectoryObjective(recipe=ExpertRecipe(epochs=2), experts=1, syn_steps=syn_steps, expert_epochs=1,
                              max_start_epoch=1, batch_syn=10, lr_teacher=0.05, augment=augment,
                              soft_labels=soft_labels, memory=memory)
    labels = torch.arange(10).repeat_interleave(2)
    obj.setup_student(digits, labels, ctx)  # no experts: the trajectory is passed in directly below
    obj.syn_lr = torch.tensor(float(lr), requires_grad=True)
    return obj


def _grads(memory, syn_steps, digits, tmp_path, **kw):
    obj = _objective(memory, syn_steps, digits, tmp_path, **kw)
    torch.manual_seed(1)
    P = sum(s.numel() for s in obj.shapes)
    start = torch.cat([p.detach().reshape(-1) for p in obj.student.parameters()])
    target = start + 0.01 * torch.randn(P)
    images = digits.images(torch.arange(20), "cpu").clone().requires_grad_(True)
    g = torch.Generator().manual_seed(3)
    plan = obj._plan(images, g)
    if memory == "constant":
        loss = obj._constant_loss(images, plan, start, target)
    else:
        theta = start.clone().requires_grad_(True)
        for idx, params in plan:
            gi = torch.autograd.grad(obj._step_ce(images, theta, idx, params), theta, create_graph=True)[0]
            theta = theta - obj.syn_lr * gi
        loss = ((theta - target) ** 2).sum() / ((start - target) ** 2).sum()
    loss.backward()
    out = [float(loss.detach()), images.grad.clone(), obj.syn_lr.grad.clone()]
    if kw.get("soft_labels"):
        out.append(obj.targets.grad.clone())
    return out


@pytest.fixture(scope="module")
def digits(digits_splits):
    return digits_splits.train.subset(torch.arange(40))


def _rel(a, b):
    return float((a - b).norm() / (b.norm() + 1e-12))


def test_one_step_matches_unrolled(digits, tmp_path):
    """syn_steps = 1: no cross-step terms exist, so the two gradients agree to float32 precision."""
    lu, gu, eu, tu = _grads("unrolled", 1, digits, tmp_path, soft_labels=True)
    lc, gc, ec, tc = _grads("constant", 1, digits, tmp_path, soft_labels=True)
    assert lc == pytest.approx(lu, rel=1e-6)
    assert gu.norm() > 0
    assert _rel(gc, gu) < 1e-5
    assert _rel(ec, eu) < 1e-5
    assert _rel(tc, tu) < 1e-5


def test_several_steps_close_and_converging_in_lr(digits, tmp_path):
    """syn_steps = 5: the same loss value; the gradient drops the cross-step second-order terms
    (products of eta * Hessian), so it is close (cosine > 0.9) but not equal, and the relative
    difference shrinks as the student lr eta shrinks (measured: 0.40 at eta 0.05, 0.033 at 0.01; cosine 0.954 and 0.9995)."""
    rel = {}
    for lr in (0.05, 0.01):
        lu, gu, eu = _grads("unrolled", 5, digits, tmp_path, lr=lr)
        lc, gc, ec = _grads("constant", 5, digits, tmp_path, lr=lr)
        assert lc == pytest.approx(lu, rel=1e-5)
        cos = float((gu * gc).sum() / (gu.norm() * gc.norm()))
        assert cos > 0.9, (lr, cos)
        assert float(ec * eu) > 0  # the learned-lr gradient has the same sign
        rel[lr] = _rel(gc, gu)
        print(f"eta {lr}: cos {cos:.4f}, relative difference {rel[lr]:.4f}, eta-grad rel {_rel(ec, eu):.4f}")
    assert rel[0.05] > 1e-4  # different estimators
    assert rel[0.01] < 0.6 * rel[0.05]


def test_unknown_memory_mode(digits, tmp_path):
    from pd_plugins.errors import OptionsError

    with pytest.raises(OptionsError):
        _objective("lowmem", 1, digits, tmp_path)
