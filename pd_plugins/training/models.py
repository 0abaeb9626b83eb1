"""Backbone zoo: ConvNet, AlexNet, VGG-11, ResNet-18 and a small ViT.

These follow the networks used by the dataset-distillation literature (DC, DSA, DM,
MTT, GLaD). Every model is an ``nn.Module`` with

* ``embed(x) -> (B, feature_dim)``: flattened features before the classifier;
* ``forward(x) = classifier(embed(x))``;
* an integer attribute ``feature_dim``.

Each public factory has the signature
``factory(channels, num_classes, im_size, *, <options>) -> nn.Module``; the
keyword-only options carry ``int``/``float``/``str``/``bool`` annotations because
the plugin host builds option tables from :func:`inspect.signature`. (For that
reason this module deliberately does not use ``from __future__ import annotations``.)

All models use PyTorch's default initialisation (except the ViT's class token and
position embedding, which are drawn from a standard normal) and are pure functions
of their parameters and buffers, so they work with
:func:`torch.func.functional_call`, including second-order gradients (MTT).
"""
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "NORMS",
    "ACTIVATIONS",
    "POOLS",
    "make_norm",
    "make_act",
    "make_pool",
    "convnet",
    "alexnet",
    "vgg11",
    "resnet18",
    "vit",
    "MODEL_FACTORIES",
    "count_parameters",
]

NORMS = ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")
ACTIVATIONS = ("relu", "leakyrelu", "sigmoid", "gelu")
POOLS = ("avgpool", "maxpool", "none")

# Inputs of this size (the MNIST family) get extra padding on the first convolution
# so that the feature maps are 32x32, as in the DC/MTT reference networks.
_MNIST_SIZE = (28, 28)


# --------------------------------------------------------------------------- helpers


def _choose(kind: str, name: str, valid: Sequence[str]) -> str:
    """Normalise ``name`` (case-insensitive) and reject anything not in ``valid``."""
    key = str(name).strip().lower()
    if key not in valid:
        raise ValueError(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(valid)}")
    return key


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")


def _as_hw(im_size) -> tuple[int, int]:
    if isinstance(im_size, int):
        im_size = (im_size, im_size)
    h, w = (int(s) for s in im_size)
    if h < 1 or w < 1:
        raise ValueError(f"im_size must be positive, got {tuple(im_size)!r}")
    return h, w


def make_norm(name: str, channels: int) -> nn.Module:
    """A normalisation layer for ``channels`` feature maps.

    ``instancenorm`` is ``GroupNorm(C, C)`` with affine parameters (as in DC/MTT;
    unlike ``nn.InstanceNorm2d`` it has learnable per-channel scale and shift),
    ``layernorm`` is ``GroupNorm(1, C)``, ``groupnorm`` is ``GroupNorm(4, C)``,
    ``batchnorm`` is ``BatchNorm2d(C)`` and ``none`` is the identity.
    """
    key = _choose("norm", name, NORMS)
    if key == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if key == "batchnorm":
        return nn.BatchNorm2d(channels)
    if key == "layernorm":
        return nn.GroupNorm(1, channels, affine=True)
    if key == "groupnorm":
        if channels % 4:
            raise ValueError(f"groupnorm uses 4 groups; {channels} channels is not divisible by 4")
        return nn.GroupNorm(4, channels, affine=True)
    return nn.Identity()


def make_act(name: str) -> nn.Module:
    """An activation layer: relu, leakyrelu (slope 0.01), sigmoid or gelu."""
    key = _choose("activation", name, ACTIVATIONS)
    # in place, as in the reference ConvNet: saves one activation-sized allocation per layer
    # (-17% on a no-grad ConvNet-3 forward at batch 256, the whole of a DM iteration)
    return {
        "relu": lambda: nn.ReLU(inplace=True),
        "leakyrelu": lambda: nn.LeakyReLU(inplace=True),
        "sigmoid": nn.Sigmoid,
        "gelu": nn.GELU,
    }[key]()


def make_pool(name: str) -> nn.Module | None:
    """A 2x2 stride-2 pooling layer (avgpool/maxpool), or ``None`` for ``none``."""
    key = _choose("pool", name, POOLS)
    if key == "avgpool":
        return nn.AvgPool2d(kernel_size=2, stride=2)
    if key == "maxpool":
        return nn.MaxPool2d(kernel_size=2, stride=2)
    return None


def _pool_unless_1x1(pool: str, hw: tuple[int, int]) -> tuple[list[nn.Module], tuple[int, int]]:
    """The pooling layer (as a 0/1-element list) and the map size after it.

    The pool is skipped when a spatial dimension is already 1, so that small inputs
    (e.g. 8x8 digits) never shrink to an empty map.
    """
    layer = make_pool(pool)
    if layer is None or min(hw) <= 1:
        return [], hw
    return [layer], (hw[0] // 2, hw[1] // 2)


def _conv_out(hw: tuple[int, int], kernel: int, padding: int, stride: int = 1) -> tuple[int, int]:
    return tuple((s + 2 * padding - kernel) // stride + 1 for s in hw)  # type: ignore[return-value]


def _conv_stack(
    in_channels: int,
    plan: Sequence,
    hw: tuple[int, int],
    *,
    norm: str,
    act: str,
    pool: str,
) -> tuple[nn.Sequential, int, tuple[int, int]]:
    """Build ``conv -> norm -> act`` blocks and pools from ``plan``.

    ``plan`` entries are ``(out_channels, kernel, padding)`` for a convolution or
    ``"M"`` for a pool (skipped when the map is already 1 pixel in some dimension).
    Returns the layers, the final channel count and the final map size.
    """
    layers: list[nn.Module] = []
    c = in_channels
    for item in plan:
        if item == "M":
            pooled, hw = _pool_unless_1x1(pool, hw)
            layers += pooled
            continue
        out, kernel, padding = item
        conv = nn.Conv2d(c, out, kernel_size=kernel, padding=padding)
        layers += [conv, make_norm(norm, out), make_act(act)]
        c = out
        hw = _conv_out(hw, kernel, padding)
        if min(hw) < 1:
            raise ValueError(f"input too small: a {kernel}x{kernel} convolution leaves an empty map")
    return nn.Sequential(*layers), c, hw


class FeatureClassifier(nn.Module):
    """A feature extractor followed by ``Flatten`` and a linear classifier."""

    def __init__(self, features: nn.Module, feature_dim: int, num_classes: int):
        super().__init__()
        self.features = features
        self.feature_dim = int(feature_dim)
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


# --------------------------------------------------------------------------- ConvNet / AlexNet / VGG


def _auto_depth(hw: tuple[int, int]) -> int:
    """Smallest depth ``d >= 3`` with ``32 * 2**(d-3) >= max(H, W)``; below 16 px, fewer
    blocks so the last map stays at least 2x2 (8x8 digits: depth 2, a 512-d embedding --
    depth 3 pools them to 1x1 and trains markedly worse)."""
    side, depth = max(hw), 3
    if side < 16:
        return max(1, min(3, side.bit_length() - 2))  # floor(log2(side)) - 1
    while 32 * 2 ** (depth - 3) < side:
        depth += 1
    return depth


def _first_padding(hw: tuple[int, int], kernel: int) -> int:
    """'Same' padding, widened so that 28x28 inputs produce 32x32 maps.

    DC/MTT widen it for 1-channel (MNIST-family) inputs; we key on the 28x28 size
    alone so that every 28 px input, whatever its channel count, is handled alike.
    """
    same = kernel // 2
    return same + 2 if hw == _MNIST_SIZE else same


def convnet(
    channels: int,
    num_classes: int,
    im_size: tuple[int, int],
    *,
    width: int = 128,
    depth: int = 0,
    norm: str = "instancenorm",
    act: str = "relu",
    pool: str = "avgpool",
) -> nn.Module:
    """ConvNet-D of DC/MTT: D x [conv3x3 -> norm -> act -> pool2], linear head (depth 0 = auto by size)."""
    hw = _as_hw(im_size)
    _check_positive(width=width)
    if depth < 0 or int(depth) != depth:
        raise ValueError(f"depth must be >= 0 (0 = auto), got {depth!r}")
    depth = int(depth) or _auto_depth(hw)
    plan: list = []
    for i in range(depth):
        plan += [(width, 3, _first_padding(hw, 3) if i == 0 else 1), "M"]
    features, c, (h, w) = _conv_stack(channels, plan, hw, norm=norm, act=act, pool=pool)
    return FeatureClassifier(features, c * h * w, num_classes)


def alexnet(
    channels: int,
    num_classes: int,
    im_size: tuple[int, int],
    *,
    norm: str = "none",
) -> nn.Module:
    """AlexNet of DC/MTT for 32 px: 5 convs (128-192-256-192-192), 3 max-pools, linear head."""
    hw = _as_hw(im_size)
    plan = [
        (128, 5, _first_padding(hw, 5)), "M",
        (192, 5, 2), "M",
        (256, 3, 1),
        (192, 3, 1),
        (192, 3, 1), "M",
    ]  # fmt: skip
    features, c, (h, w) = _conv_stack(channels, plan, hw, norm=norm, act="relu", pool="maxpool")
    return FeatureClassifier(features, c * h * w, num_classes)


_VGG11_PLAN = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def vgg11(
    channels: int,
    num_classes: int,
    im_size: tuple[int, int],
    *,
    norm: str = "instancenorm",
) -> nn.Module:
    """VGG-11 of DC/MTT: 8 conv3x3 -> norm -> ReLU layers, 5 max-pools, linear head."""
    hw = _as_hw(im_size)
    plan = [v if v == "M" else (v, 3, 1) for v in _VGG11_PLAN]
    plan[0] = (64, 3, _first_padding(hw, 3))
    features, c, (h, w) = _conv_stack(channels, plan, hw, norm=norm, act="relu", pool="maxpool")
    return FeatureClassifier(features, c * h * w, num_classes)


# --------------------------------------------------------------------------- ResNet-18


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (1x1 projection when the shape changes)."""

    def __init__(self, in_planes: int, planes: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.norm1 = make_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.norm2 = make_norm(norm, planes)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), make_norm(norm, planes)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stem without max-pool, BasicBlock stages, global average pool."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        blocks: Sequence[int] = (2, 2, 2, 2),
        width: int = 64,
        norm: str = "instancenorm",
    ):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=1, padding=1, bias=False), make_norm(norm, width), nn.ReLU()
        )
        stages, in_planes = [], width
        for i, n in enumerate(blocks):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            stage = []
            for j in range(n):
                stage.append(BasicBlock(in_planes, planes, stride if j == 0 else 1, norm))
                in_planes = planes
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = in_planes
        self.classifier = nn.Linear(in_planes, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def resnet18(
    channels: int,
    num_classes: int,
    im_size: tuple[int, int],
    *,
    norm: str = "instancenorm",
    width: int = 64,
) -> nn.Module:
    """ResNet-18, CIFAR style (3x3 stem, no max-pool, global average pool), base width 64."""
    _as_hw(im_size)
    _check_positive(width=width)
    return ResNet(channels, num_classes, (2, 2, 2, 2), width=width, norm=norm)


# --------------------------------------------------------------------------- ViT


def _auto_patch(hw: tuple[int, int]) -> int:
    """Largest common divisor of H and W not above ``max(1, min(H, W) // 8)``."""
    limit = max(1, min(hw) // 8)
    g = math.gcd(*hw)
    return max(p for p in range(1, limit + 1) if g % p == 0)


class _Attention(nn.Module):
    """Multi-head self-attention written with plain tensor ops (twice differentiable)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_drop = nn.Dropout(dropout)
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = self.attn_drop(torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1))
        return self.out((attn @ v).transpose(1, 2).reshape(b, n, d))


class _TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float, layernorm: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim) if layernorm else nn.Identity()
        self.attn = _Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim) if layernorm else nn.Identity()
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Vision transformer: patch embedding, CLS token, learned positions, pre-norm blocks."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        hw: tuple[int, int],
        patch: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_dim: int,
        dropout: float,
        layernorm: bool,
    ):
        super().__init__()
        num_patches = (hw[0] // patch) * (hw[1] // patch)
        self.patch_embed = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, num_patches + 1, dim))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(
            *(_TransformerBlock(dim, heads, mlp_dim, dropout, layernorm) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(dim) if layernorm else nn.Identity()
        self.feature_dim = dim
        self.classifier = nn.Linear(dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = self.drop(torch.cat([cls, tokens], dim=1) + self.pos_embedding)
        return self.norm(self.blocks(tokens))[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def vit(
    channels: int,
    num_classes: int,
    im_size: tuple[int, int],
    *,
    patch: int = 0,
    dim: int = 256,
    depth: int = 6,
    heads: int = 8,
    mlp_dim: int = 512,
    dropout: float = 0.1,
    layernorm: bool = False,
) -> nn.Module:
    """Small ViT (GLaD): CLS token, learned positions, GELU MLP; patch 0 = auto (~min side / 8)."""
    hw = _as_hw(im_size)
    _check_positive(dim=dim, depth=depth, heads=heads, mlp_dim=mlp_dim)
    if patch < 0 or int(patch) != patch:
        raise ValueError(f"patch must be >= 0 (0 = auto), got {patch!r}")
    patch = int(patch) or _auto_patch(hw)
    if hw[0] % patch or hw[1] % patch:
        raise ValueError(f"patch {patch} does not divide the image size {hw[0]}x{hw[1]}")
    if dim % heads:
        raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    return ViT(channels, num_classes, hw, patch, dim, depth, heads, mlp_dim, float(dropout), bool(layernorm))


# --------------------------------------------------------------------------- registry


MODEL_FACTORIES = {
    "convnet": convnet,
    "alexnet": alexnet,
    "vgg11": vgg11,
    "resnet18": resnet18,
    "vit": vit,
}


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters of ``model`` (buffers not included)."""
    return sum(p.numel() for p in model.parameters())
