"""Moving a run folder between nodes that share no filesystem: pack it to bytes, unpack it,
and install it over the driver's copy atomically (a reader sees the old folder or the new
one, never a mixture, and the old one is removed only after the new one is in place)."""
from __future__ import annotations

import io
import os
import shutil
import tarfile
import uuid
from pathlib import Path


def pack_dir(directory) -> bytes:
    """The contents of ``directory`` as an uncompressed tar archive (paths relative to it)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(Path(directory).rglob("*")):
            if path.is_file() and not path.name.endswith(".tmp"):  # never a half-written temporary
                tar.add(path, arcname=str(path.relative_to(directory)), recursive=False)
    return buf.getvalue()


def unpack_dir(data: bytes, directory) -> None:
    """Extract a :func:`pack_dir` archive into ``directory`` (created), refusing links and absolute paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(directory, filter="data")


def install_dir(data: bytes, target) -> None:
    """Replace ``target`` with the folder packed in ``data``: unpack beside it, then rename into place."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    incoming = target.with_name(f".{target.name}.incoming-{tag}")
    unpack_dir(data, incoming)
    old = target.with_name(f".{target.name}.old-{tag}")
    if target.exists():
        os.replace(target, old)
    os.replace(incoming, target)
    shutil.rmtree(old, ignore_errors=True)
