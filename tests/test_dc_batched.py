"""DC/DSA's batched synthetic-side gradients (one torch.func.vmap pass over the classes) give the
numbers of the per-class eager reference: a forward and a create_graph backward per class."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pd_plugins.pipeline.context import RunContext


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(digits_splits):
    """60 digits images (6 per class), 8x8."""
    train = digits_splits.train
    return train.subset(torch.cat([idx[:6] for idx in train.by_class()]))


MODEL_OPTIONS = {"convnet": {"width": 8}, "resnet18": {"width": 4, "norm": "layernorm"},  # instancenorm: 1x1 maps at 8x8 cut the graph
                 "vit": {"dim": 16, "depth": 1, "heads": 2, "mlp_dim": 16, "dropout": 0.0}}


def _objective(host, tiny, tmp_path, name, ipc, model, **opts):
    from pd_plugins.distillation.synthetic import class_major_labels

    ctx = RunContext(seed=0, device="cpu", work_dir=tmp_path / "run", cache_dir=tmp_path / "cache", stage="distill",
                     model=model, model_options=MODEL_OPTIONS[model])
    cls = host.registries()["distiller"].load(name)
    obj = cls(cls.resolve_options({"batch_real": 5, "outer_loop": 1, "inner_loop": 1, **opts})).objective()
    obj.setup(tiny, ipc, class_major_labels(10, ipc), ctx)
    obj.begin_iteration(3)
    return obj


def _images(ipc: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(10 * ipc, 1, 8, 8, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)


def _eager_reference(obj, images):
    """The reference loop: per class, the real and synthetic gradients and their distance."""
    from pd_plugins.distillation.dc import match_distance

    g = obj.ctx.generator("dc-iter", 0, 0)
    params = [p for p in obj.net.parameters() if p.requires_grad]
    loss = images.new_zeros(())
    for c in range(obj.data.num_classes):
        real = obj.pool.sample(c, obj.batch_real, g)
        syn = images[c * obj.ipc:(c + 1) * obj.ipc]
        if obj.aug is not None:
            real, syn = obj.aug.pair(real, syn, g)
        if obj.filter is not None:
            real = obj.filter(obj.net, real, c)
        grads = []
        for x, graph in ((real, False), (syn, True)):
            ce = F.cross_entropy(obj.net(x), torch.full((x.shape[0],), c))
            grads.append(list(torch.autograd.grad(ce, params, create_graph=graph)))
        loss = loss + match_distance([t.detach() for t in grads[0]], grads[1], obj.metric)
    return loss, torch.autograd.grad(loss, images)[0]


def _batched(obj, images):
    loss, _ = obj.loss(images, 0, 0)
    return loss, torch.autograd.grad(loss, images)[0]


@pytest.mark.parametrize("name,ipc,metric,model,extra", [
    ("dc", 1, "ours", "convnet", {}),
    ("dc", 3, "ours", "convnet", {"runtime_prune": 0.2}),
    ("dsa", 2, "ours", "convnet", {}),
    ("dc", 2, "mse", "convnet", {}),
    ("dsa", 2, "cos", "convnet", {}),
    ("dc", 2, "ours", "resnet18", {}),
    ("dc", 2, "ours", "vit", {}),
])
def test_batched_synthetic_gradients_match_the_per_class_reference(host, tiny, tmp_path, name, ipc, metric, model,
                                                                   extra):
    obj = _objective(host, tiny, tmp_path, name, ipc, model, metric=metric, **extra)
    images = _images(ipc)
    ref_loss, ref_grad = _eager_reference(obj, images)
    loss, grad = _batched(obj, images)
    assert ref_grad.abs().sum() > 0
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-5 * float(ref_grad.abs().max()))


def test_batched_synthetic_gradients_are_deterministic(host, tiny, tmp_path):
    grads = []
    for _ in range(2):
        obj = _objective(host, tiny, tmp_path, "dsa", 2, "convnet")
        grads.append(_batched(obj, _images(2)))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


def test_dropout_draws_masks_per_class(host, tiny, tmp_path):
    """A ViT with dropout runs batched (independent masks per class) and its gradients reach the images."""
    obj = _objective(host, tiny, tmp_path, "dc", 2, "vit")
    from pd_plugins.training.models import vit

    obj.net = vit(1, 10, (8, 8), dim=16, depth=1, heads=2, mlp_dim=16, dropout=0.5)
    loss, grad = _batched(obj, _images(2))
    assert torch.isfinite(loss) and grad.abs().sum() > 0
