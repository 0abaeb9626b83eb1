"""Checks that a path holds the kind of thing a command needs, before anything is read or written.

Every check raises a one-line :class:`~pd_plugins.errors.DataError` naming the path and what is
wrong with it: missing, a broken symbolic link, a file where a folder is needed (or the reverse),
unreadable, or an output whose folder cannot be created or written. Torch-free, so the CLI can use
the click parameter type :class:`PathParam` without slowing down ``pd-run --help``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import click

from pd_plugins.errors import DataError

PathLike = Union[str, os.PathLike]


def _broken_link(path: Path) -> Optional[str]:
    """The message for a symbolic link whose target does not exist, else None."""
    if path.is_symlink() and not path.exists():
        return f"{path} is a broken symbolic link (to {os.readlink(path)})"
    return None


def _kind_word(path: Path) -> str:
    return "folder" if path.is_dir() else "file" if path.is_file() else "special file"


def _is(path: Path, want: str) -> bool:
    return path.is_file() if want == "file" else path.is_dir()


def _expect_input(path: PathLike, what: str, want: str) -> Path:
    """``path`` as an existing, readable ``want`` ("file" or "folder"); a symlink to one is fine."""
    path = Path(path).expanduser()
    broken = _broken_link(path)
    if broken:
        raise DataError(f"{what} {broken}")
    if not path.exists():
        raise DataError(f"{what} not found: {path}")
    if not _is(path, want):
        raise DataError(f"{what} {path} is a {_kind_word(path)}, not a {want}")
    if not os.access(path, os.R_OK if want == "file" else os.R_OK | os.X_OK):
        raise DataError(f"{what} {path} is not readable (permission denied)")
    return path


def _expect_output(path: PathLike, what: str, want: str, writable: bool) -> Path:
    """``path`` as an existing ``want`` ("file" or "folder") or one that can be created."""
    path = Path(path).expanduser()
    broken = _broken_link(path)
    if broken:
        raise DataError(f"{what} {broken}")
    if path.exists():
        if not _is(path, want):
            raise DataError(f"{what} {path} is a {_kind_word(path)}, not a {want}")
        if writable and want == "folder" and not os.access(path, os.R_OK | os.W_OK | os.X_OK):
            raise DataError(f"{what} {path} is not writable (permission denied)")
        return path
    for parent in path.parents:  # the nearest existing ancestor must be a (writable) folder
        broken = _broken_link(parent)
        if broken:
            raise DataError(f"{what} {path} cannot be created: {broken}")
        if parent.exists():
            if not parent.is_dir():
                raise DataError(f"{what} {path} cannot be created: {parent} is a {_kind_word(parent)}, not a folder")
            if writable and not os.access(parent, os.W_OK | os.X_OK):
                raise DataError(f"{what} {path} cannot be created: no permission to write in {parent}")
            break
    return path


def expect_file(path: PathLike, what: str) -> Path:
    """``path`` as a readable regular file (a symlink to one is fine)."""
    return _expect_input(path, what, "file")


def expect_dir(path: PathLike, what: str) -> Path:
    """``path`` as a folder whose entries can be listed and read (a symlink to one is fine)."""
    return _expect_input(path, what, "folder")


def expect_existing(path: PathLike, what: str) -> Path:
    """``path`` as an existing readable file or folder (for inputs that may be either)."""
    return _expect_input(path, what, "folder" if Path(path).expanduser().is_dir() else "file")


def expect_output_dir(path: PathLike, what: str, *, writable: bool = True) -> Path:
    """``path`` as a folder that exists and is writable, or that can be created.

    ``writable=False`` checks the kind only (for a folder that may just be read).
    """
    return _expect_output(path, what, "folder", writable)


def expect_output_file(path: PathLike, what: str) -> Path:
    """``path`` as a file target: absent (its folder creatable) or an existing regular file."""
    return _expect_output(path, what, "file", True)


CHECKS = {"file": expect_file, "dir": expect_dir, "existing": expect_existing,
          "output_dir": expect_output_dir, "output_file": expect_output_file}


class PathParam(click.ParamType):
    """A click path parameter checked with one of the ``expect_*`` functions; the value stays a string.

    A wrong path raises :class:`DataError`, which the ``pd-run`` group prints as one ``Error:`` line
    (exit 1), like the same mistake found later by the library.
    """

    name = "path"

    def __init__(self, kind: str, what: str):
        if kind not in CHECKS:
            raise ValueError(f"unknown path kind {kind!r}; use one of {', '.join(CHECKS)}")
        self.kind, self.what = kind, what

    def get_metavar(self, param, ctx=None) -> str:
        return {"file": "FILE", "dir": "DIR", "output_dir": "DIR", "output_file": "FILE"}.get(self.kind, "PATH")

    def convert(self, value, param, ctx):
        if value is None:
            return None
        CHECKS[self.kind](value, self.what)
        return os.fspath(value)
