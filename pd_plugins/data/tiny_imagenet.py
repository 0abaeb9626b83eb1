"""Tiny ImageNet's validation folder re-laid by class, so the ``imagefolder`` dataset reads it.

Tiny ImageNet (``tiny-imagenet-200``) ships ``train/<wnid>/images/*.JPEG`` but keeps its validation
images flat in ``val/images/``, labelled by ``val/val_annotations.txt`` (tab-separated: file name,
WNID, then a bounding box). :func:`relayout_val` turns ``val/`` into ``val/<wnid>/<file>.JPEG`` (with
``val_annotations.txt`` kept beside the class folders), after which::

    pd-run run --dataset imagefolder --data-root tiny-imagenet-200 --dataset-option im_size=64

reads both splits (class folders are searched recursively, so ``train/<wnid>/images/`` is found).
MTT instead reads ``val/images/<wnid>/``; this layout is the one torchvision's ImageFolder and
pd_plugins' imagefolder read with ``val`` as the test folder.

The new folder is built beside the old one under a hidden name (hard links, copies where the file
system has none), then swapped in with two renames; the old folder is removed only after the swap.
A swap interrupted between its renames is undone on the next run, and a folder already laid out by
class is left as it is.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from pd_plugins.errors import DataError
from pd_plugins.paths import expect_dir

__all__ = ["TINY_IMAGENET_CLASSES", "relayout_val"]

TINY_IMAGENET_CLASSES = 200
ANNOTATIONS = "val_annotations.txt"
MARKER = ".pd_relayout.json"  # written into the re-laid val/ folder
_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
_BUILDING, _ORIGINAL = ".val.relayout-", ".val.original-"


def _folders(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in _IMAGE_SUFFIXES)


def _read_annotations(path: Path, where: str) -> dict[str, str]:
    """``{file name: wnid}`` from ``val_annotations.txt``; a malformed or repeated line is a DataError."""
    labels: dict[str, str] = {}
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}: cannot read {path} ({type(exc).__name__})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or not fields[0].strip() or not fields[1].strip():
            raise DataError(f"{where}: {path.name} line {number} is not 'file<TAB>wnid<TAB>...': {line[:60]!r}")
        name, wnid = fields[0].strip(), fields[1].strip()
        if name in labels:
            raise DataError(f"{where}: {path.name} labels {name} twice (lines with {labels[name]} and {wnid})")
        labels[name] = wnid
    if not labels:
        raise DataError(f"{where}: {path} is empty")
    return labels


def _check_labels(labels: dict[str, str], files: list[str], classes: list[str], expect: int, where: str) -> None:
    """Every image labelled, every label an image of a train class, and ``expect`` classes in all."""
    on_disk = set(files)
    unlabelled = [f for f in files if f not in labels]
    absent = sorted(f for f in labels if f not in on_disk)
    unknown = sorted({w for w in labels.values()} - set(classes))
    problems = [(unlabelled, "image(s) in val/images/ without an annotation"),
                (absent, "annotated file(s) missing from val/images/"),
                (unknown, "annotated class(es) with no train/ folder")]
    for items, what in problems:
        if items:
            raise DataError(f"{where}: {len(items)} {what} ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})")
    used = len(set(labels.values()))
    if used != expect:
        raise DataError(f"{where}: {ANNOTATIONS} labels {used} classes; Tiny ImageNet has {expect}")


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # no hard links on this file system
        shutil.copy2(src, dst)


def _recover(root: Path) -> None:
    """Finish or undo what an interrupted run left: restore the original val/ when the swap stopped
    half-way, drop the original once the new val/ is in place, and remove unfinished builds."""
    originals = sorted(p for p in root.glob(_ORIGINAL + "*") if p.is_dir())
    val = root / "val"
    if originals and not val.exists():
        os.rename(originals.pop(), val)
    if (val / MARKER).is_file():
        for leftover in originals:
            shutil.rmtree(leftover)
    for build in root.glob(_BUILDING + "*"):
        shutil.rmtree(build, ignore_errors=True)


def _already_by_class(val: Path, classes: list[str], expect: int, where: str) -> bool:
    """Whether ``val`` is laid out by class already (by this command or another tool)."""
    if (val / "images").is_dir():
        return False
    folders = _folders(val)
    if not folders:
        raise DataError(f"{where}: val/ has neither images/ nor class folders")
    stray = [f for f in folders if f not in classes]
    if stray or len(folders) != expect:
        detail = f"unknown: {', '.join(stray[:3])}" if stray else f"train/ has {len(classes)}"
        raise DataError(f"{where}: val/ has {len(folders)} class folders, expected {expect} ({detail})")
    return True


def relayout_val(root, *, expect_classes: int = TINY_IMAGENET_CLASSES) -> dict:
    """Re-lay ``root/val/images/`` into ``root/val/<wnid>/`` by ``val_annotations.txt``; returns a summary.

    ``expect_classes`` is the class count checked in train/ and in the annotations (Tiny ImageNet: 200;
    a smaller value is for cut-down copies and tests). A folder already laid out by class is reused.
    """
    from pd_plugins.locks import FileLock

    root = expect_dir(root, "Tiny ImageNet root").resolve()
    where = f"Tiny ImageNet root {root}"
    train = root / "train"
    if not train.is_dir():
        raise DataError(f"{where} has no train/ folder (give the tiny-imagenet-200 folder)")
    classes = _folders(train)
    if len(classes) != int(expect_classes):
        raise DataError(f"{where}: train/ has {len(classes)} class folders; Tiny ImageNet has {expect_classes}")
    with FileLock(root / ".val.relayout.lock", what=f"re-laying {root}/val", wait=0):
        _recover(root)
        val = root / "val"
        if not val.is_dir():
            raise DataError(f"{where} has no val/ folder")
        if _already_by_class(val, classes, int(expect_classes), where):
            count = sum(1 for p in val.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
            return {"val": str(val), "reused": True, "classes": len(classes), "images": count}
        annotations = val / ANNOTATIONS
        if not annotations.is_file():
            raise DataError(f"{where}: val/{ANNOTATIONS} is missing (it labels val/images/)")
        labels = _read_annotations(annotations, where)
        files = _images(val / "images")
        _check_labels(labels, files, classes, int(expect_classes), where)
        _swap_in(root, val, files, labels)
    return {"val": str(val), "reused": False, "classes": len(set(labels.values())), "images": len(files)}


def _swap_in(root: Path, val: Path, files: list[str], labels: dict[str, str]) -> None:
    """Build the class-folder val/ beside the old one, then swap it in (old one removed after the swap)."""
    build = Path(tempfile.mkdtemp(prefix=_BUILDING, dir=root))
    original = root / (_ORIGINAL + build.name[len(_BUILDING):])
    try:
        os.chmod(build, val.stat().st_mode & 0o7777)  # mkdtemp's 0700 would hide val/ from other users
        for name in files:
            folder = build / labels[name]
            folder.mkdir(exist_ok=True)
            _link_or_copy(val / "images" / name, folder / name)
        for extra in val.iterdir():  # val_annotations.txt and any other file beside images/
            if extra.is_file():
                shutil.copy2(extra, build / extra.name)
        (build / MARKER).write_text(json.dumps({"from": f"val/images + val/{ANNOTATIONS}", "images": len(files),
                                                "classes": len(set(labels.values()))}) + "\n")
        os.rename(val, original)
        try:
            os.rename(build, val)
        except BaseException:
            os.rename(original, val)
            raise
    finally:
        shutil.rmtree(build, ignore_errors=True)
    shutil.rmtree(original)
