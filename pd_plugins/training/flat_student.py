"""A student network run functionally on one flat parameter vector (MTT's unrolled student steps).

:class:`FlatStudent` keeps a template network's parameters as one vector ``theta`` (in
``named_parameters`` order, as expert trajectories store them) and runs the network with
layer parameters that are views into ``theta``, so an unrolled SGD step is one tensor op on
``theta``. For ``FeatureClassifier`` networks whose features are a ``Sequential`` of
Conv2d / GroupNorm / ReLU / LeakyReLU / AvgPool2d / MaxPool2d / Identity (ConvNet of DC/MTT),
the forward is a fixed list of ``torch.nn.functional`` calls on those views (no per-step parameter
dictionary swap into the module). ``EXPLICIT_NORM`` writes group normalisation out in elementary ops
instead of the native kernel (its double backward is then elementwise/reduction kernels rather than
the composite double backward of ``native_group_norm``); it is off by default because it was not
measured faster. Any other network runs through :func:`torch.func.functional_call` on the same views.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


#: write group normalisation out in elementary ops (else the native kernel)
EXPLICIT_NORM = False


def group_norm(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """``F.group_norm`` in elementary ops (biased variance, as the native kernel)."""
    n, c = x.shape[:2]
    g = x.reshape(n, groups, -1)
    mean = g.mean(dim=2, keepdim=True)
    centred = g - mean
    var = (centred * centred).mean(dim=2, keepdim=True)
    y = (centred * torch.rsqrt(var + eps)).reshape(x.shape)
    shape = (1, c) + (1,) * (x.dim() - 2)
    return y * weight.view(shape) + bias.view(shape)


def _layer_fn(module: nn.Module, views: dict, prefix: str) -> Optional[Callable]:
    """``f(x)`` for one supported layer reading its parameters from ``views``; None if unsupported."""
    if isinstance(module, nn.Conv2d) and module.padding_mode == "zeros":
        w, b = f"{prefix}weight", f"{prefix}bias"
        stride, padding, dilation, groups = module.stride, module.padding, module.dilation, module.groups
        has_bias = module.bias is not None
        return lambda x: F.conv2d(x, views[w], views[b] if has_bias else None, stride, padding, dilation, groups)
    if isinstance(module, nn.GroupNorm) and module.affine:
        w, b, groups, eps = f"{prefix}weight", f"{prefix}bias", module.num_groups, module.eps
        return lambda x: (group_norm if EXPLICIT_NORM else F.group_norm)(x, groups, views[w], views[b], eps)
    if isinstance(module, nn.ReLU):
        return F.relu  # never in place: the unrolled graph keeps every activation
    if isinstance(module, nn.LeakyReLU):
        slope = module.negative_slope
        return lambda x: F.leaky_relu(x, slope)
    if isinstance(module, nn.AvgPool2d):
        k, s, p = module.kernel_size, module.stride, module.padding
        return lambda x: F.avg_pool2d(x, k, s, p, module.ceil_mode, module.count_include_pad, module.divisor_override)
    if isinstance(module, nn.MaxPool2d) and not module.return_indices:
        k, s, p, d = module.kernel_size, module.stride, module.padding, module.dilation
        return lambda x: F.max_pool2d(x, k, s, p, d, module.ceil_mode)
    if isinstance(module, nn.Identity):
        return lambda x: x
    return None


class FlatStudent:
    """``net`` as a function of one flat parameter vector: ``student(theta, x)`` -> logits."""

    def __init__(self, net: nn.Module):
        self.net = net
        named = list(net.named_parameters())
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.numel = sum(self.numels)
        self._views: dict = {}
        self._layers = self._plan(net)

    @property
    def explicit(self) -> bool:
        """Whether the forward is the hand-written layer list (else functional_call)."""
        return self._layers is not None

    def _plan(self, net: nn.Module) -> Optional[list[Callable]]:
        features, head = getattr(net, "features", None), getattr(net, "classifier", None)
        if any(True for _ in net.buffers()) or not (isinstance(features, nn.Sequential) and isinstance(head, nn.Linear)
                and type(net).forward is _feature_classifier_forward()):
            return None
        layers = []
        for name, module in features.named_children():
            fn = _layer_fn(module, self._views, f"features.{name}.")
            if fn is None:
                return None
            layers.append(fn)
        views = self._views
        has_bias = head.bias is not None
        layers.append(lambda x: F.linear(x.flatten(1), views["classifier.weight"],
                                         views["classifier.bias"] if has_bias else None))
        return layers

    def flatten(self) -> torch.Tensor:
        """The template network's parameters as one detached vector."""
        return torch.cat([p.detach().reshape(-1) for p in self.net.parameters()])

    def views(self, theta: torch.Tensor) -> dict:
        """Name -> view of ``theta`` shaped as that parameter."""
        if theta.shape != (self.numel,):
            raise ValueError(f"theta has shape {tuple(theta.shape)}; this student has {self.numel} parameters")
        return {n: t.view(s) for n, s, t in zip(self.names, self.shapes, theta.split(self.numels))}

    def __call__(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        views = self.views(theta)
        if self._layers is None:
            return functional_call(self.net, (views, dict(self.net.named_buffers())), (x,))
        self._views.clear()
        self._views.update(views)
        try:
            for fn in self._layers:
                x = fn(x)
        finally:
            self._views.clear()
        return x


def _feature_classifier_forward():
    from pd_plugins.training.models import FeatureClassifier

    return FeatureClassifier.forward
