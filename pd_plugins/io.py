"""Artifact I/O: atomic writes, safe loads, and the run-directory manifest.

Every artifact is written to a temporary file in the target directory, flushed, fsynced
and then ``os.replace``d onto its final name, so a reader never sees half a file. Tensors
are stored with ``torch.save`` and read back with ``weights_only=True`` only.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Union

from pd_plugins.errors import DataError
from pd_plugins.paths import expect_file

PathLike = Union[str, os.PathLike]


@contextmanager
def atomic_path(path: PathLike, suffix: str = ""):
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def atomic_write_json(path: PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def safe_torch_load(path: PathLike, what: str = "file", map_location="cpu") -> Any:
    """``torch.load(weights_only=True)``; any failure becomes a one-line :class:`DataError`."""
    import torch

    path = expect_file(path, what)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{what} {path} is not a valid checkpoint (loaded with weights_only=True): {first[:200]}") from exc


def read_json(path: PathLike, what: str = "file") -> Any:
    path = expect_file(path, what)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{what} {path} is not valid JSON: {exc}") from exc


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    try:
        import torch

        if isinstance(obj, torch.Tensor):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def file_sha256(path: PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
