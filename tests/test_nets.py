"""Tests for the backbone zoo (pd_plugins.training.models). Fast: tiny widths, batches of 2."""
import copy
import inspect

import pytest
import torch
from torch import nn
from torch.func import functional_call

from pd_plugins.training import models as nets
from pd_plugins.training.models import MODEL_FACTORIES, convnet, count_parameters, make_norm, resnet18, vit

# Small option sets that keep every model cheap on a CPU.
TINY = {
    "convnet": {"width": 16},
    "alexnet": {},
    "vgg11": {},
    "resnet18": {"width": 8},
    "vit": {"dim": 32, "depth": 2, "heads": 4, "mlp_dim": 64},
}
SHAPES = [(1, 28, 28), (3, 32, 32), (1, 8, 8)]
NAMES = sorted(MODEL_FACTORIES)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """These tensors are tiny; extra intra-op threads only oversubscribe a busy 2-core box."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _build(name, shape, num_classes=10, **extra):
    torch.manual_seed(0)
    c, h, w = shape
    return MODEL_FACTORIES[name](c, num_classes, (h, w), **{**TINY[name], **extra})


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes(name, shape):
    model = _build(name, shape, num_classes=7)
    x = torch.randn(2, *shape)
    emb = model.embed(x)
    assert emb.shape == (2, model.feature_dim)
    assert model(x).shape == (2, 7)
    assert torch.isfinite(model(x)).all()


def test_convnet3_literature_parameter_count():
    model = convnet(3, 10, (32, 32))
    assert count_parameters(model) == 320_010
    assert model.feature_dim == 2048
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 3
    assert model.embed(torch.randn(1, 3, 32, 32)).shape == (1, 2048)


def test_convnet_mnist_pads_to_32():
    model = convnet(1, 10, (28, 28))
    assert model.feature_dim == 2048
    assert model.features[0].padding == (3, 3)
    assert model.embed(torch.randn(1, 1, 28, 28)).shape == (1, 2048)


def test_convnet_tiny_digits_skip_pool_at_1x1():
    model = convnet(1, 10, (8, 8))  # auto depth 2: 8 -> 4 -> 2, a 2x2 last map
    assert model.feature_dim == 128 * 2 * 2
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 2
    assert convnet(1, 10, (8, 8), depth=3).feature_dim == 128  # 8 -> 4 -> 2 -> 1
    deep = convnet(1, 10, (8, 8), width=8, depth=5)  # pools 4 and 5 are skipped
    assert deep.feature_dim == 8
    assert sum(isinstance(m, nn.AvgPool2d) for m in deep.modules()) == 3
    assert deep(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("side,depth", [(2, 1), (4, 1), (7, 1), (8, 2), (12, 2), (15, 2), (16, 3), (28, 3), (32, 3), (64, 4), (128, 5), (256, 6)])
def test_convnet_auto_depth(side, depth):
    model = convnet(3, 10, (side, side), width=4)
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == depth


def test_convnet_128px_auto_depth_embed():
    model = convnet(3, 10, (128, 128))
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 5
    assert model.feature_dim == 2048
    assert model.embed(torch.randn(1, 3, 128, 128)).shape == (1, 2048)


def test_instancenorm_is_groupnorm_per_channel():
    norm = make_norm("instancenorm", 24)
    assert isinstance(norm, nn.GroupNorm) and not isinstance(norm, nn.InstanceNorm2d)
    assert norm.num_groups == norm.num_channels == 24 and norm.affine
    model = convnet(3, 10, (32, 32), width=16)
    groupnorms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert len(groupnorms) == 3
    assert all(m.num_groups == m.num_channels == 16 for m in groupnorms)


@pytest.mark.parametrize(
    "name,cls,groups",
    [("batchnorm", nn.BatchNorm2d, None), ("layernorm", nn.GroupNorm, 1), ("groupnorm", nn.GroupNorm, 4),
     ("none", nn.Identity, None), ("BatchNorm", nn.BatchNorm2d, None)],
)
def test_make_norm_variants(name, cls, groups):
    norm = make_norm(name, 16)
    assert type(norm) is cls
    if groups is not None:
        assert norm.num_groups == groups


def test_batchnorm_convnet_really_has_batchnorm():
    model = convnet(3, 10, (32, 32), width=8, norm="batchnorm")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 3
    assert not any(isinstance(m, nn.GroupNorm) for m in model.modules())


@pytest.mark.parametrize(
    "factory,kwargs,word",
    [
        (convnet, {"norm": "batch"}, "batchnorm"),
        (convnet, {"act": "swish"}, "leakyrelu"),
        (convnet, {"pool": "stride"}, "maxpool"),
        (nets.alexnet, {"norm": "bn"}, "instancenorm"),
        (nets.vgg11, {"norm": "in"}, "instancenorm"),
        (resnet18, {"norm": "instance"}, "instancenorm"),
    ],
)
def test_unknown_names_raise(factory, kwargs, word):
    with pytest.raises(ValueError, match=word):
        factory(3, 10, (32, 32), **kwargs)


def test_convnet_options():
    for act in nets.ACTIVATIONS:
        for pool in nets.POOLS:
            model = convnet(1, 3, (8, 8), width=4, depth=2, act=act, pool=pool)
            assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    assert convnet(1, 3, (8, 8), width=4, depth=2, pool="none").feature_dim == 4 * 8 * 8


def test_alexnet_and_vgg_norm_option():
    alex = nets.alexnet(3, 10, (32, 32))
    assert alex.feature_dim == 192 * 4 * 4
    assert not any(isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)) for m in alex.modules())
    alex_bn = nets.alexnet(3, 10, (32, 32), norm="batchnorm")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in alex_bn.modules()) == 5
    assert nets.alexnet(1, 10, (28, 28)).feature_dim == 192 * 4 * 4
    vgg = nets.vgg11(3, 10, (32, 32))
    assert vgg.feature_dim == 512
    assert sum(isinstance(m, nn.GroupNorm) for m in vgg.modules()) == 8
    assert not any(isinstance(m, nn.GroupNorm) for m in nets.vgg11(3, 10, (32, 32), norm="none").modules())


def test_resnet18_structure():
    model = resnet18(3, 10, (32, 32))
    assert model.feature_dim == 512
    assert count_parameters(model) == 11_173_962  # CIFAR ResNet-18, same count as with BatchNorm
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert resnet18(3, 10, (32, 32), width=8).feature_dim == 64


@pytest.mark.parametrize(
    "shape,patch",
    [((3, 32, 32), 4), ((1, 8, 8), 1), ((1, 28, 28), 2), ((3, 64, 48), 4), ((3, 128, 128), 16)],
)
def test_vit_auto_patch(shape, patch):
    c, h, w = shape
    model = vit(c, 10, (h, w), dim=16, depth=1, heads=2, mlp_dim=16)
    assert model.patch_embed.kernel_size == (patch, patch)
    assert model.pos_embedding.shape == (1, (h // patch) * (w // patch) + 1, 16)


def test_vit_options():
    assert not any(isinstance(m, nn.LayerNorm) for m in vit(3, 10, (32, 32), **TINY["vit"]).modules())
    with_ln = vit(3, 10, (32, 32), layernorm=True, **TINY["vit"])
    assert sum(isinstance(m, nn.LayerNorm) for m in with_ln.modules()) == 2 * 2 + 1  # 2 per block + final
    with pytest.raises(ValueError):
        vit(3, 10, (32, 32), patch=5)
    with pytest.raises(ValueError):
        vit(3, 10, (32, 32), dim=30, heads=4)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_input(name):
    model = _build(name, (3, 32, 32))
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    model(x).square().sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_functional_call_matches_module(name):
    model = _build(name, (1, 8, 8)).eval()
    x = torch.randn(2, 1, 8, 8)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    torch.testing.assert_close(functional_call(model, params, (x,)), model(x))

    # Perturbed parameters: functional_call must use them and leave the module untouched.
    shifted = {k: v + 0.01 * torch.randn_like(v) for k, v in params.items()}
    reference = copy.deepcopy(model)
    reference.load_state_dict(shifted, strict=False)
    torch.testing.assert_close(functional_call(model, shifted, (x,)), reference(x))
    for k, v in model.named_parameters():
        assert torch.equal(v, params[k])


@pytest.mark.parametrize("name", NAMES)
def test_second_order_gradients(name):
    """MTT differentiates through an unrolled SGD step of the student."""
    model = _build(name, (1, 8, 8))
    params = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    y = torch.tensor([1, 2])
    loss = nn.functional.cross_entropy(functional_call(model, params, (x,)), y)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    stepped = {k: p - 0.1 * g for (k, p), g in zip(params.items(), grads)}
    nn.functional.cross_entropy(functional_call(model, stepped, (x,)), y).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_convnet_overfits_tiny_batch():
    torch.manual_seed(0)
    model = convnet(3, 4, (16, 16), width=16)  # depth 3: 16 -> 8 -> 4 -> 2
    x, y = torch.randn(8, 3, 16, 16), torch.arange(8) % 4
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(20):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("name", NAMES)
def test_factory_signature(name):
    factory = MODEL_FACTORIES[name]
    assert factory is getattr(nets, name)
    doc = inspect.getdoc(factory)
    assert doc and "\n" not in doc.strip()
    params = list(inspect.signature(factory).parameters.values())
    assert [p.name for p in params[:3]] == ["channels", "num_classes", "im_size"]
    for p in params[3:]:
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, p.name
        assert p.annotation in (int, float, str, bool), p.name
        assert type(p.default) is p.annotation, p.name
    assert all(p.kind is not inspect.Parameter.KEYWORD_ONLY for p in params[:3])


def test_count_parameters():
    assert count_parameters(nn.Linear(3, 2)) == 8


def test_run_model_keeps_its_options_when_named_explicitly():
    from pd_plugins.pipeline.context import RunContext

    ctx = RunContext(model="convnet", model_options={"width": 8, "depth": 2})
    own = ctx.make_model(1, 10, (8, 8), name="convnet")  # e.g. the cross-architecture table's first column
    implicit = ctx.make_model(1, 10, (8, 8))
    assert sum(p.numel() for p in own.parameters()) == sum(p.numel() for p in implicit.parameters())
    ctx2 = RunContext(model="alexnet", model_options={"width": 8})
    other = ctx2.make_model(1, 10, (8, 8), name="convnet")  # another model: its own defaults
    assert sum(p.numel() for p in other.parameters()) > sum(p.numel() for p in own.parameters())
