"""Differentiable Siamese Augmentation (DSA) on top of kornia's functional ops.

DSA (Zhao & Bilen, ICML 2021) augments the real and the synthetic batch of one
matching computation with the *same* randomly drawn transform, and keeps every
transform differentiable so that gradients reach the synthetic images.

Design
------
* Parameters are never drawn by kornia (its ``Random*`` modules use torch's
  global RNG). :meth:`Augmenter.sample` draws them from an explicit
  :class:`torch.Generator`; :meth:`Augmenter.apply` applies them with kornia's
  functional ops. The global RNG is never consumed.
* A draw is an :class:`AugParams`: the op name plus tensors whose leading
  dimension is ``1`` (shared: one transform broadcast to any batch size, the
  siamese case) or ``B`` (independent: one transform per sample).
* Everything runs in normalised pixel space and nothing is clamped.
* Geometric params that depend on the image size (crop shift, cutout centre)
  are stored as unit uniforms ``u`` in ``[0, 1)`` and turned into integer pixel
  offsets at apply time (see :meth:`DSA.crop_shifts`, :meth:`DSA.cutout_boxes`),
  so one draw applies to images of any size.

Parameters stored in ``AugParams.values`` per op (``P`` = 1 or ``B``):

========== =====================================================================
op         values
========== =====================================================================
color      ``brightness`` (P,) additive shift ``(U-0.5)*brightness``;
           ``saturation`` (P,) factor ``U*saturation``;
           ``contrast`` (P,) factor ``U+contrast``
crop       ``u`` (P, 2) unit uniforms for the (x, y) integer shift
cutout     ``u`` (P, 2) unit uniforms for the (x, y) box centre
flip       ``flip`` (P,) bool, horizontal flip where True (``U < 0.5``)
scale      ``scale`` (P, 2) ``(sx, sy)`` ~ U[1/scale, scale]; the sampling grid
           is multiplied by them (as the ``theta`` of DSA's ``affine_grid``)
rotate     ``angle`` (P,) degrees ~ U[-rotate, rotate]
none       (empty)
========== =====================================================================
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from kornia.enhance import adjust_brightness
from kornia.geometry.transform import get_rotation_matrix2d, hflip, warp_affine

__all__ = ["AugParams", "Augmenter", "DSA", "Identity", "dsa", "none", "VALID_TOKENS"]

#: Tokens a DSA strategy string may contain, joined by ``_``.
VALID_TOKENS: tuple[str, ...] = ("color", "crop", "cutout", "flip", "scale", "rotate")

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"


@dataclass(frozen=True)
class AugParams:
    """One draw: the op and its parameter tensors (leading dim 1 = shared, B = per sample)."""

    op: str
    values: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def batch(self) -> int:
        """Leading dimension of the parameters (1 for a shared draw, 0 for ``none``)."""
        for v in self.values.values():
            return int(v.shape[0])
        return 0

    def to(self, device: torch.device | str) -> "AugParams":
        return AugParams(self.op, {k: v.to(device, non_blocking=True) for k, v in self.values.items()})


def _check_generator(generator: torch.Generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            "an explicit torch.Generator is required (the global torch RNG is never used); "
            f"got {type(generator).__name__}"
        )


def _check_image(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected an image batch of shape (B, C, H, W), got {shape}")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating point image batch, got {x.dtype}")


class Augmenter:
    """Base class: ``sample`` draws params from a generator, ``apply`` applies them.

    Subclasses implement :meth:`sample`, :meth:`apply` and :meth:`describe`;
    :meth:`pair` (siamese) and :meth:`__call__` (independent) are built on them.
    """

    name: str = "augmenter"

    def sample(self, batch: int, generator: torch.Generator, shared: bool = False) -> AugParams:
        raise NotImplementedError

    def apply(self, x: torch.Tensor, params: AugParams) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name}

    def pair(
        self, real: torch.Tensor, syn: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Siamese augmentation: one shared draw applied identically to both batches."""
        params = self.sample(1, generator, shared=True)
        return self.apply(real, params), self.apply(syn, params)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Independent augmentation: one op for the call, per-sample parameters."""
        _check_image(x)
        return self.apply(x, self.sample(int(x.shape[0]), generator, shared=False))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "name")
        return f"{type(self).__name__}({args})"


class Identity(Augmenter):
    """No augmentation: op ``"none"``, returns its input unchanged."""

    name = "none"

    def __init__(self, allow_flip: bool = True):
        self.allow_flip = bool(allow_flip)

    def sample(self, batch: int, generator: torch.Generator, shared: bool = False) -> AugParams:
        _check_generator(generator)
        return AugParams("none", {})

    def apply(self, x: torch.Tensor, params: AugParams) -> torch.Tensor:
        if params.op != "none":
            raise ValueError(f"Identity cannot apply op {params.op!r}")
        return x

    def describe(self) -> dict:
        return {"name": self.name, "allow_flip": self.allow_flip}


def _half_round(v: float) -> int:
    """Round half up (DSA's ``int(v + 0.5)``), not Python's banker's rounding."""
    return int(math.floor(v + 0.5))


def _unit_to_int(u: torch.Tensor, n: int) -> torch.Tensor:
    """Map unit uniforms in [0, 1) to integers uniform in {0, ..., n-1}."""
    return torch.clamp(torch.floor(u.double() * n).long(), 0, n - 1)


class DSA(Augmenter):
    """Differentiable Siamese Augmentation: each call applies ONE op of the strategy.

    ``strategy`` is a ``_``-joined list of tokens from :data:`VALID_TOKENS`; each
    call picks one token uniformly (``color`` = brightness -> saturation ->
    contrast). ``allow_flip=False`` drops ``flip`` (digits). A strategy left
    empty (e.g. ``"flip"`` without flips) applies op ``"none"``.
    """

    name = "dsa"

    def __init__(
        self,
        *,
        strategy: str = DEFAULT_STRATEGY,
        allow_flip: bool = True,
        scale: float = 1.2,
        rotate: float = 15.0,
        crop: float = 0.125,
        cutout: float = 0.5,
        brightness: float = 1.0,
        saturation: float = 2.0,
        contrast: float = 0.5,
    ):
        if not isinstance(strategy, str):
            raise TypeError(f"strategy must be a string, got {type(strategy).__name__}")
        tokens = [t for t in strategy.strip().split("_") if t]
        unknown = [t for t in tokens if t not in VALID_TOKENS]
        if unknown:
            raise ValueError(
                f"unknown DSA strategy token(s) {unknown} in {strategy!r}; "
                f"valid tokens: {', '.join(VALID_TOKENS)}"
            )
        if not tokens:
            raise ValueError(f"empty DSA strategy {strategy!r}; valid tokens: {', '.join(VALID_TOKENS)}")
        if not 1.0 <= scale < math.inf:
            raise ValueError(f"scale must be finite and >= 1, got {scale}")
        if not 0.0 <= crop < 1.0:
            raise ValueError(f"crop must be in [0, 1), got {crop}")
        if not 0.0 <= cutout <= 1.0:
            raise ValueError(f"cutout must be in [0, 1], got {cutout}")
        for k, v in (("rotate", rotate), ("crop", crop), ("cutout", cutout), ("brightness", brightness),
                     ("saturation", saturation), ("contrast", contrast)):
            if v < 0 or not math.isfinite(v):
                raise ValueError(f"{k} must be finite and >= 0, got {v}")
        self.strategy = strategy
        self.allow_flip = bool(allow_flip)
        self.ops: tuple[str, ...] = tuple(t for t in tokens if self.allow_flip or t != "flip")
        self.scale = float(scale)
        self.rotate = float(rotate)
        self.crop = float(crop)
        self.cutout = float(cutout)
        self.brightness = float(brightness)
        self.saturation = float(saturation)
        self.contrast = float(contrast)

    # ------------------------------------------------------------------ config
    def describe(self) -> dict:
        return {
            "name": self.name,
            "strategy": self.strategy,
            "ops": list(self.ops),
            "allow_flip": self.allow_flip,
            "scale": self.scale,
            "rotate": self.rotate,
            "crop": self.crop,
            "cutout": self.cutout,
            "brightness": self.brightness,
            "saturation": self.saturation,
            "contrast": self.contrast,
        }

    # ---------------------------------------------------------------- sampling
    def sample(self, batch: int, generator: torch.Generator, shared: bool = False) -> AugParams:
        """Draw one op (uniform over the strategy) and its params from ``generator``.

        ``shared=True`` gives leading dim 1 (one transform for every sample);
        otherwise leading dim ``batch``.
        """
        _check_generator(generator)
        if not self.ops:
            return AugParams("none", {})
        n = 1 if shared else int(batch)
        if n < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        dev = generator.device
        idx = int(torch.randint(len(self.ops), (1,), generator=generator, device=dev).item())
        op = self.ops[idx]

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator, device=dev, dtype=torch.float32)

        if op == "color":
            values = {
                "brightness": (rand(n) - 0.5) * self.brightness,
                "saturation": rand(n) * self.saturation,
                "contrast": rand(n) + self.contrast,
            }
        elif op == "crop":
            values = {"u": rand(n, 2)}
        elif op == "cutout":
            values = {"u": rand(n, 2)}
        elif op == "flip":
            values = {"flip": rand(n) < 0.5}
        elif op == "scale":
            lo = 1.0 / self.scale
            values = {"scale": rand(n, 2) * (self.scale - lo) + lo}
        elif op == "rotate":
            values = {"angle": (rand(n) - 0.5) * (2.0 * self.rotate)}
        else:  # pragma: no cover - guarded in __init__
            raise AssertionError(op)
        return AugParams(op, values)

    # -------------------------------------------------- size-dependent helpers
    def crop_shifts(self, u: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Integer (dx, dy) shifts, (P, 2) long, uniform in [-round(crop*W), round(crop*W)] x [.. H ..]."""
        sx, sy = _half_round(self.crop * width), _half_round(self.crop * height)
        dx = _unit_to_int(u[:, 0], 2 * sx + 1) - sx
        dy = _unit_to_int(u[:, 1], 2 * sy + 1) - sy
        return torch.stack([dx, dy], dim=1)

    def cutout_boxes(self, u: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Cutout boxes (x0, y0, x1, y1), (P, 4) long, half-open and already clipped to the image.

        The box is ``round(cutout*W) x round(cutout*H)``; its centre ``c`` is an integer
        uniform in ``{0, ..., W - (w % 2)}`` (same for y), the box spans ``[c - w//2, c - w//2 + w)``
        and is clipped to the image (as in the DSA reference).
        """
        cw, ch = _half_round(self.cutout * width), _half_round(self.cutout * height)
        cx = _unit_to_int(u[:, 0], width + 1 - cw % 2)
        cy = _unit_to_int(u[:, 1], height + 1 - ch % 2)
        x0, y0 = cx - cw // 2, cy - ch // 2
        return torch.stack(
            [x0.clamp(0, width), y0.clamp(0, height), (x0 + cw).clamp(0, width), (y0 + ch).clamp(0, height)], dim=1
        )

    # ----------------------------------------------------------------- apply
    def apply(self, x: torch.Tensor, params: AugParams) -> torch.Tensor:
        """Apply one draw to ``x`` (B, C, H, W); params of leading dim 1 broadcast to B."""
        _check_image(x)
        op = params.op
        if op == "none":
            return x
        p = params.batch
        if p not in (1, x.shape[0]):
            raise ValueError(f"params for batch {p} cannot apply to a batch of {x.shape[0]}")
        # crop/cutout/flip decide on the (CPU) params without a device sync; the rest move them
        v = params.values
        if op == "color":
            return self._color(x, v)
        if op == "crop":
            return self._crop(x, v["u"])
        if op == "cutout":
            return self._cutout(x, v["u"])
        if op == "flip":
            return self._flip(x, v["flip"])
        if op == "scale":
            return self._scale(x, v["scale"])
        if op == "rotate":
            return self._rotate(x, v["angle"])
        raise ValueError(f"unknown op {op!r}; valid ops: {', '.join(VALID_TOKENS)}, none")

    @staticmethod
    def _color(x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
        dev, dt = x.device, x.dtype
        s = v["saturation"].to(dev, dt, non_blocking=True).view(-1, 1, 1, 1)
        c = v["contrast"].to(dev, dt, non_blocking=True).view(-1, 1, 1, 1)
        # brightness: x + (U - 0.5) * brightness  (kornia, no clipping)
        x = adjust_brightness(x, v["brightness"].to(dev, dt, non_blocking=True), clip_output=False)
        # saturation (x - m) * s + m, m = per-pixel mean over channels, written as
        # x * s + m * (1 - s) so only one full-size tensor is allocated
        m = x.mean(dim=1, keepdim=True)
        x = torch.addcmul(m * (1 - s), x, s)
        # contrast (x - m) * c + m, m = per-sample mean over C, H, W. Reduced one axis at a
        # time so the summation order never depends on the batch size (a single (1, 2, 3)
        # reduction of a batch of one large image is split across threads, which would
        # break siamese bit-identity).
        m = x.mean(dim=-1).mean(dim=-1).mean(dim=-1).view(-1, 1, 1, 1)
        return torch.addcmul(m * (1 - c), x, c)

    def _crop(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        shifts = self.crop_shifts(u, h, w)  # (P, 2) long: (dx, dy)
        if shifts.shape[0] == 1:
            # shared: constant padding with negative amounts = exact integer shift, zero fill
            dx, dy = (int(t) for t in shifts[0].tolist())
            if dx == 0 and dy == 0:
                return x
            return F.pad(x, (dx, -dx, dy, -dy))
        # per sample: zero-pad by the largest shift, then gather each sample's window
        sx, sy = _half_round(self.crop * w), _half_round(self.crop * h)
        wp = w + 2 * sx
        padded = F.pad(x, (sx, sx, sy, sy)).flatten(2)  # (B, C, (H+2sy)*(W+2sx))
        shifts = shifts.to(x.device, non_blocking=True)
        rows = torch.arange(h, device=x.device) + sy - shifts[:, 1:2]  # (B, H)
        cols = torch.arange(w, device=x.device) + sx - shifts[:, 0:1]  # (B, W)
        idx = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
        return torch.gather(padded, 2, idx).view(b, c, h, w)

    def _cutout(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        box = self.cutout_boxes(u, h, w).to(x.device, non_blocking=True)  # (P, 4)
        ys = torch.arange(h, device=x.device)
        xs = torch.arange(w, device=x.device)
        in_y = (ys >= box[:, 1:2]) & (ys < box[:, 3:4])  # (P, H)
        in_x = (xs >= box[:, 0:1]) & (xs < box[:, 2:3])  # (P, W)
        keep = ~(in_y[:, :, None] & in_x[:, None, :])  # (P, H, W)
        return x * keep[:, None].to(x.dtype)

    @staticmethod
    def _flip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        if flip.shape[0] == 1:  # shared: one decision for the whole batch
            return hflip(x) if bool(flip[0]) else x
        return torch.where(flip.to(x.device, non_blocking=True).view(-1, 1, 1, 1), hflip(x), x)

    @staticmethod
    def _warp(x: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Affine warp about the image centre; ``scale`` is the forward (src->dst) scale."""
        _, _, h, w = x.shape
        dt = x.dtype
        p = angle.shape[0]
        # the parameters come from a host generator: copied without waiting for the device
        center = torch.tensor([(w - 1) / 2.0, (h - 1) / 2.0], dtype=dt).to(x.device, non_blocking=True).expand(p, 2)
        angle, scale = angle.to(x.device, dt, non_blocking=True), scale.to(x.device, dt, non_blocking=True)
        m = get_rotation_matrix2d(center, angle, scale)  # (P, 2, 3), pixel coords
        return warp_affine(x, m, (h, w), mode="bilinear", padding_mode="zeros", align_corners=True)

    def _scale(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        # DSA multiplies the *sampling grid* by (sx, sy); the forward map is its inverse
        angle = torch.zeros(s.shape[0], device=s.device, dtype=s.dtype)
        return self._warp(x, angle, 1.0 / s)

    def _rotate(self, x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
        return self._warp(x, angle, torch.ones(angle.shape[0], 2, device=angle.device, dtype=angle.dtype))


#: the registered factory: its options are DSA.__init__'s keyword-only parameters
dsa = DSA


def none(*, allow_flip: bool = True) -> Identity:
    """No augmentation."""
    return Identity(allow_flip=allow_flip)
