"""Saving and loading built-in priors: ``prior.json`` (kind + constructor config) plus one
``<part>.pt`` state dict per network, loaded with ``weights_only=True``."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch import nn

from pd_plugins.errors import DataError
from pd_plugins.paths import expect_dir
from pd_plugins.io import atomic_torch_save, atomic_write_json, read_json, safe_torch_load

FORMAT = 1


def save_prior(out: Path, kind: str, config: dict, parts: dict[str, nn.Module], extra: dict | None = None) -> None:
    """Write ``parts``' state dicts and ``prior.json`` (last, so a readable prior is complete)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, module in parts.items():
        atomic_torch_save({k: v.detach().cpu() for k, v in module.state_dict().items()}, out / f"{name}.pt")
    atomic_write_json(out / "prior.json", {"pd_prior": kind, "format": FORMAT, "config": config,
                                           "parts": sorted(parts), **(extra or {})})


def read_prior_meta(path: Path, kind: str) -> dict:
    """``prior.json`` of a saved prior of ``kind``, or a one-line DataError."""
    try:
        path = expect_dir(path, "prior")
    except DataError as exc:
        raise DataError(f"{exc} (expected a folder written by `pd-run prior train --kind {kind}`)") from None
    meta = read_json(path / "prior.json", f"prior {path}: prior.json")
    if not isinstance(meta, dict) or meta.get("pd_prior") != kind:
        got = meta.get("pd_prior") if isinstance(meta, dict) else None
        raise DataError(f"prior {path} is not a {kind!r} prior (prior.json says {got!r}); train one with `pd-run prior train --kind {kind}`")
    return meta


def load_state(module: nn.Module, path: Path, what: str) -> nn.Module:
    """Load a weights-only state dict into ``module``; any mismatch is a one-line DataError."""
    state = safe_torch_load(path, what=what)
    if not isinstance(state, dict):
        raise DataError(f"{what} {path} is not a state dict")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise DataError(f"{what} {path} does not fit this generator: {first[:200]}") from None
    return module


def load_prior(path: Path, kind: str, build: Callable[..., nn.Module], part: str | None = None):
    """Rebuild a single-network prior saved by :func:`save_prior`; returns (module, meta)."""
    meta = read_prior_meta(path, kind)
    try:
        module = build(**meta["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"prior {path}: prior.json has a bad config: {exc}") from None
    name = part or meta["parts"][0]
    return load_state(module, Path(path) / f"{name}.pt", f"prior {path} part {name!r}"), meta
