"""Interoperability: distilled sets and pruned subsets in the formats other tools read.

A distilled set leaves or enters pd_plugins as one of

* ``imagefolder`` -- ``ROOT/<class name>/<n>.png`` (8-bit, lossless, de-normalised to
  the dataset's pixel range) plus ``ROOT/dataset.json`` (class names, image size,
  channels, mean, std); what ``torchvision.datasets.ImageFolder`` and DD-Ranking's
  ``image_path`` read;
* ``pt`` -- a ``torch.save`` dict of ``images`` (float32 NCHW, normalised with the
  dataset's mean/std), ``labels`` (int64, or float soft labels), ``mean``, ``std``,
  ``class_names`` and ``syn_lr`` when there is one; loads with ``weights_only=True``;
* ``safetensors`` -- the same tensors, the rest as string metadata.

A set distilled in ZCA space (``mtt`` with ``zca=true``) carries its transform: ``zca_mean``
(D,) and ``zca_matrix`` (D, D) tensors plus ``zca_eps``; readers re-apply it to the test set.
An imagefolder cannot hold ZCA-space values, so such a set exports as pt or safetensors only.

A pruned subset leaves as CSV/JSON of source indices, labels and scores and enters
through :mod:`pd_plugins.data.subset`. Every output is staged next to its target and renamed
into place, so a failure leaves nothing behind. torch is imported inside functions only.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

from pd_plugins.errors import DataError, OptionsError, StageExistsError
from pd_plugins.paths import expect_existing, expect_output_dir, expect_output_file

FORMATS = ("imagefolder", "pt", "safetensors")
# file/folder name of each format when several are written into one directory
OUTPUT_NAMES = {"imagefolder": "imagefolder", "pt": "distilled.pt", "safetensors": "distilled.safetensors"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
PIL_MODES = {"L": 1, "RGB": 3}
SAFETENSORS_FORMAT = "pd_plugins.distilled/1"


@dataclass
class SyntheticSet:
    """A distilled set in a dataset's normalised space, detached from any run directory."""

    images: "object"  # torch.Tensor (N, C, H, W) float32, normalised with mean/std
    labels: "object"  # torch.Tensor (N,) int64 or (N, K) float soft labels
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()
    lr: Optional[float] = None
    zca: Optional[dict] = None  # ZCA state (pd_plugins.data.zca) when the images live in ZCA space

    @property
    def soft(self) -> bool:
        return self.labels.dim() == 2

    def as_dataset(self, like):
        """An :class:`ImageDataset` for training, checked against and normalised like ``like``
        (ZCA-space images are used as they are; evaluate them on ``in_set_space(test, zca)``)."""
        from pd_plugins.types import DistillResult

        check_compatible(self, like)
        images = self.images
        if self.zca is None and (tuple(self.mean) != tuple(like.mean) or tuple(self.std) != tuple(like.std)):
            images = renormalize(images, self.mean, self.std, like.mean, like.std)
        return DistillResult(images=images, labels=self.labels, ipc=0, distiller="imported",
                             lr=self.lr).as_dataset(like)


# ----------------------------------------------------------------------------------------
# checks shared by every reader

def renormalize(images, mean_from, std_from, mean_to, std_to):
    """Map images normalised with (mean_from, std_from) to (mean_to, std_to)."""
    import torch

    def col(v):
        return torch.tensor(v, dtype=torch.float64).view(1, -1, 1, 1)

    unit = images.double() * col(std_from) + col(mean_from)
    return ((unit - col(mean_to)) / col(std_to)).float()


def check_tensors(images, labels, where: str) -> None:
    """Shape, dtype and finiteness of an images/labels pair (no dataset needed)."""
    import torch

    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise DataError(f"{where}: 'images' and 'labels' must be tensors")
    if images.dim() != 4 or not images.is_floating_point():
        raise DataError(f"{where}: images must be a float (N, C, H, W) tensor, got {str(images.dtype)} {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        bad = int((~torch.isfinite(images)).sum())
        raise DataError(f"{where}: images hold {bad} NaN or inf values")
    n = images.shape[0]
    if n == 0:
        raise DataError(f"{where}: holds no images")
    if labels.dim() == 1:
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise DataError(f"{where}: 1-D labels must be integers, got {labels.dtype}")
    elif labels.dim() == 2:
        if not labels.is_floating_point():
            raise DataError(f"{where}: 2-D (soft) labels must be floats, got {labels.dtype}")
        if not torch.isfinite(labels).all():
            raise DataError(f"{where}: soft labels hold NaN or inf values")
    else:
        raise DataError(f"{where}: labels must be (N,) class indices or (N, K) soft labels, got {tuple(labels.shape)}")
    if labels.shape[0] != n:
        raise DataError(f"{where}: {n} images but {labels.shape[0]} labels")


def check_compatible(syn: SyntheticSet, like, where: str = "distilled set") -> None:
    """The set fits dataset ``like``: class names, image shape, label range, no empty class."""
    import torch

    if syn.class_names and tuple(syn.class_names) != tuple(like.class_names):
        raise DataError(f"{where}: class names {list(syn.class_names)[:5]}... do not match dataset "
                        f"{like.name!r} ({list(like.class_names)[:5]}...)")
    c, h, w = (int(s) for s in syn.images.shape[1:])
    if (c, (h, w)) != (like.channels, like.im_size):
        raise DataError(f"{where}: images are {c}x{h}x{w} (CxHxW); dataset {like.name!r} has "
                        f"{like.channels}x{like.im_size[0]}x{like.im_size[1]}")
    if len(syn.mean) != c or len(syn.std) != c:
        raise DataError(f"{where}: mean/std have {len(syn.mean)}/{len(syn.std)} values for {c} channels")
    k = like.num_classes
    if syn.soft:
        if syn.labels.shape[1] != k:
            raise DataError(f"{where}: soft labels have {syn.labels.shape[1]} classes; dataset {like.name!r} has {k}")
        hard = syn.labels.argmax(1)
    else:
        hard = syn.labels
        lo, hi = int(hard.min()), int(hard.max())
        if lo < 0 or hi >= k:
            raise DataError(f"{where}: labels out of range [{lo}, {hi}]; dataset {like.name!r} has classes 0..{k - 1}")
    counts = torch.bincount(hard.long(), minlength=k)
    if (counts == 0).any():
        empty = [like.class_names[i] if like.class_names else str(i) for i in torch.nonzero(counts == 0).flatten().tolist()]
        raise DataError(f"{where}: class(es) {', '.join(empty[:5])} have no images")


# ----------------------------------------------------------------------------------------
# staging: outputs appear whole or not at all

def check_target(target: Path, overwrite: bool, kind: str = "file") -> None:
    """``target`` must be the right ``kind`` ("file" or "dir") where it exists, creatable where it does not,
    and is only replaced with ``overwrite``."""
    (expect_output_file if kind == "file" else expect_output_dir)(target, "export target")
    if target.exists() and not overwrite:
        raise StageExistsError(f"export target {target} exists; use --overwrite or another --to")


@contextmanager
def staged(target: Path, overwrite: bool, kind: str = "file"):
    """Yield a temporary path; on success it replaces ``target`` (file or folder) in one rename."""
    target = Path(target)
    check_target(target, overwrite, kind)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        payload = work / "payload"
        yield payload
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(payload, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------------------
# writers

def _unit8(images, like):
    """Normalised images -> uint8 (N, H, W, C) in the dataset's pixel range."""
    import torch

    unit = like.to_unit(images.detach().cpu().float())
    return (unit * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def write_imagefolder(syn: SyntheticSet, like, path: Path) -> None:
    """``path/<class name>/<n>.png`` plus ``path/dataset.json``."""
    from PIL import Image

    if syn.soft:
        raise DataError("an imagefolder holds hard labels only; export soft labels with --format pt or safetensors")
    if syn.zca is not None:
        raise DataError("this set lives in ZCA space, which 8-bit PNGs cannot hold; export it with --format pt or "
                        "safetensors (they carry the ZCA transform)")
    if like.channels not in PIL_MODES.values():
        raise DataError(f"PNG export supports 1 or 3 channels, dataset {like.name!r} has {like.channels}")
    for name in like.class_names:
        if not name or name in (".", "..") or "/" in name or os.sep in name or name.startswith("."):
            raise DataError(f"class name {name!r} cannot be a folder name")
    pixels = _unit8(syn.images, like).numpy()
    path.mkdir(parents=True)
    width = max(5, len(str(len(pixels))))
    for i, (arr, y) in enumerate(zip(pixels, syn.labels.tolist())):
        folder = path / like.class_names[y]
        folder.mkdir(exist_ok=True)
        Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(folder / f"{i:0{width}d}.png", format="PNG")
    meta = {"format": "imagefolder", "class_names": list(like.class_names), "im_size": list(like.im_size),
            "channels": like.channels, "mean": list(like.mean), "std": list(like.std),
            "pixel_range": [0, 255], "num_images": int(len(pixels))}
    if syn.lr is not None:
        meta["syn_lr"] = float(syn.lr)
    (path / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")


def _tensor_payload(syn: SyntheticSet) -> dict:
    import torch

    out = {"images": syn.images.detach().cpu().float().contiguous(), "labels": syn.labels.detach().cpu().contiguous(),
           "mean": torch.tensor(syn.mean, dtype=torch.float64), "std": torch.tensor(syn.std, dtype=torch.float64)}
    if syn.zca is not None:
        out.update(zca_mean=syn.zca["mean"].contiguous(), zca_matrix=syn.zca["matrix"].contiguous())
    return out


def write_pt(syn: SyntheticSet, like, path: Path) -> None:
    import torch

    obj = {**_tensor_payload(syn), "class_names": list(syn.class_names)}
    if syn.lr is not None:
        obj["syn_lr"] = float(syn.lr)
    if syn.zca is not None:
        obj.update(zca_eps=float(syn.zca["eps"]), zca_fitted_on=str(syn.zca.get("fitted_on", "")))
    torch.save(obj, path)


def _safetensors():
    try:
        import safetensors.torch as st
    except ImportError:
        raise DataError("the safetensors format needs the 'safetensors' package: pip install 'pd-plugins[export]'") from None
    return st


def write_safetensors(syn: SyntheticSet, like, path: Path) -> None:
    st = _safetensors()
    meta = {"format": SAFETENSORS_FORMAT, "class_names": json.dumps(list(syn.class_names))}
    if syn.lr is not None:
        meta["syn_lr"] = repr(float(syn.lr))
    if syn.zca is not None:
        meta.update(zca_eps=repr(float(syn.zca["eps"])), zca_fitted_on=str(syn.zca.get("fitted_on", "")))
    st.save_file(_tensor_payload(syn), str(path), metadata=meta)


WRITERS = {"imagefolder": write_imagefolder, "pt": write_pt, "safetensors": write_safetensors}


# ----------------------------------------------------------------------------------------
# readers

def read_pt(path: Path) -> SyntheticSet:
    from pd_plugins.io import safe_torch_load

    obj = safe_torch_load(path, "distilled set")
    if not isinstance(obj, dict) or "images" not in obj or "labels" not in obj:
        raise DataError(f"{path}: expected a dict with 'images' and 'labels'")
    return _from_mapping(obj, obj.get("class_names") or (), obj.get("syn_lr"), path,
                         (obj.get("zca_eps"), obj.get("zca_fitted_on")))


def read_safetensors(path: Path) -> SyntheticSet:
    st = _safetensors()
    from safetensors import safe_open

    try:
        tensors = st.load_file(str(path))
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:
        raise DataError(f"{path} is not a valid safetensors file: {str(exc).splitlines()[0][:200]}") from None
    if "images" not in tensors or "labels" not in tensors:
        raise DataError(f"{path}: expected tensors 'images' and 'labels'")
    try:
        names = json.loads(meta["class_names"]) if "class_names" in meta else ()
        lr = float(meta["syn_lr"]) if "syn_lr" in meta else None
        zca_eps = float(meta["zca_eps"]) if "zca_eps" in meta else None
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: malformed metadata: {exc}") from None
    return _from_mapping(tensors, names, lr, path, (zca_eps, meta.get("zca_fitted_on")))


def _stats(value, what: str, path: Path) -> Optional[tuple[float, ...]]:
    if value is None:
        return None
    try:
        import torch

        seq = value.tolist() if isinstance(value, torch.Tensor) else list(value)
        return tuple(float(v) for v in seq)
    except (TypeError, ValueError):
        raise DataError(f"{path}: '{what}' must be a list of numbers") from None


def _zca_state(obj, eps_and_fit, path: Path) -> Optional[dict]:
    """The ZCA state stored with a set (``zca_mean``, ``zca_matrix``, eps), checked; None without one."""
    has = [k for k in ("zca_mean", "zca_matrix") if k in obj]
    if not has and eps_and_fit[0] is None:
        return None
    if len(has) < 2 or eps_and_fit[0] is None:
        raise DataError(f"{path}: a ZCA transform needs 'zca_mean', 'zca_matrix' and 'zca_eps'")
    from pd_plugins.data.zca import ZCA

    state = {"mean": obj["zca_mean"], "matrix": obj["zca_matrix"], "eps": eps_and_fit[0],
             "fitted_on": eps_and_fit[1] or ""}
    return ZCA.from_state(state, where=str(path)).state()


def _from_mapping(obj, names, lr, path: Path, zca=(None, None)) -> SyntheticSet:
    images, labels = obj["images"], obj["labels"]
    check_tensors(images, labels, str(path))
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise DataError(f"{path}: 'class_names' must be a list of strings")
    lr = _syn_lr(lr, path)
    mean, std = _stats(obj.get("mean"), "mean", path), _stats(obj.get("std"), "std", path)
    if (mean is None) != (std is None):
        raise DataError(f"{path}: give both 'mean' and 'std' or neither")
    if std is not None and any(s <= 0 or not math.isfinite(s) for s in std):
        raise DataError(f"{path}: 'std' must be positive")
    state = _zca_state(obj, zca, path)
    if state is not None and state["mean"].numel() != images[0].numel():
        raise DataError(f"{path}: the ZCA transform has {state['mean'].numel()} values per image, "
                        f"the images {images[0].numel()}")
    return SyntheticSet(images=images.float(), labels=labels.long() if labels.dim() == 1 else labels,
                        mean=mean or (), std=std or (), class_names=tuple(names),
                        lr=lr, zca=state)


def _syn_lr(value, path) -> Optional[float]:
    """A learned lr (number or one-element tensor) as a positive float, or None."""
    import torch

    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise DataError(f"{path}: 'syn_lr' must be a positive finite number, got {value!r}")
    return float(value)


def read_imagefolder(root: Path, like) -> SyntheticSet:
    """Class folders matched to ``like.class_names``; images ordered by class index, then file name."""
    import numpy as np
    import torch
    from PIL import Image

    meta = {}
    if (root / "dataset.json").exists():
        from pd_plugins.io import read_json

        meta = read_json(root / "dataset.json", "imagefolder metadata")
        if not isinstance(meta, dict):
            raise DataError(f"{root}/dataset.json must hold an object")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    wanted = list(like.class_names)
    unknown = [f for f in folders if f not in wanted]
    missing = [c for c in wanted if c not in folders]
    if unknown or missing:
        raise DataError(f"{root}: class folders do not match dataset {like.name!r}"
                        + (f"; unknown: {', '.join(unknown[:5])}" if unknown else "")
                        + (f"; missing: {', '.join(missing[:5])}" if missing else ""))
    if meta.get("class_names") is not None and sorted(meta["class_names"]) != sorted(wanted):
        raise DataError(f"{root}/dataset.json: class names do not match dataset {like.name!r}")
    arrays, labels, shapes = [], [], {}
    for y, name in enumerate(wanted):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not files:
            raise DataError(f"{root}: class folder {name!r} holds no images")
        for f in files:
            try:
                with Image.open(f) as img:
                    img.load()
                    mode, arr = img.mode, np.asarray(img)
            except Exception as exc:
                raise DataError(f"{f}: not a readable image ({type(exc).__name__})") from None
            if mode not in PIL_MODES:
                raise DataError(f"{f}: image mode {mode!r} is not supported; use 8-bit L (grey) or RGB")
            arr = arr[:, :, None] if arr.ndim == 2 else arr
            shapes.setdefault(arr.shape, f)
            if len(shapes) > 1:
                (s0, f0), (s1, f1) = list(shapes.items())[:2]
                raise DataError(f"{root}: mixed image sizes or channel counts ({f0.name}: {s0[0]}x{s0[1]}x{s0[2]}, "
                                f"{f1.name}: {s1[0]}x{s1[1]}x{s1[2]}, HxWxC)")
            arrays.append(arr)
            labels.append(y)
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
    c = pixels.shape[1]
    mean = tuple(like.mean) if c == like.channels else tuple([0.0] * c)
    std = tuple(like.std) if c == like.channels else tuple([1.0] * c)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return SyntheticSet(images=(pixels - m) / s, labels=torch.tensor(labels, dtype=torch.long), mean=mean, std=std,
                        class_names=tuple(like.class_names), lr=_syn_lr(meta.get("syn_lr"), root / "dataset.json"))


def detect_format(path: Path) -> str:
    expect_existing(path, "distilled set")
    if path.is_dir():
        return "imagefolder"
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        return "pt"
    if suffix == ".safetensors":
        return "safetensors"
    raise DataError(f"{path}: unknown format; give an image folder, a .pt or a .safetensors file")


def read_synthetic(path, like) -> tuple[SyntheticSet, str]:
    """Read an outside distilled set for dataset split ``like``; returns the set and its format."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "imagefolder":
        syn = read_imagefolder(path, like)
    else:
        syn = read_pt(path) if fmt == "pt" else read_safetensors(path)
        if not syn.mean:  # a bare tensor file: assume the dataset's normalisation
            syn = replace(syn, mean=tuple(like.mean), std=tuple(like.std))
    check_compatible(syn, like, str(path))
    return syn, fmt


# ----------------------------------------------------------------------------------------
# export from a run directory

def _run_and_data(run_dir: Path):
    from pd_plugins.pipeline.runner import Run, load_run_config

    cfg = load_run_config(run_dir)
    cfg.out = str(run_dir)
    cfg.progress = False
    run = Run(cfg, quiet=True)
    return run, run.data()


def run_synthetic(run_dir) -> tuple[SyntheticSet, "object"]:
    """The distilled set of a run directory and its dataset's train split."""
    from pd_plugins.io import safe_torch_load

    run_dir = Path(run_dir)
    path = run_dir / "distill.pt"
    if not path.exists():
        raise DataError(f"{run_dir} has no distilled set (distill.pt); use --what subset for a pruned run")
    _, splits = _run_and_data(run_dir)
    saved = safe_torch_load(path, "distill result")
    train = splits.train
    syn = SyntheticSet(images=saved["images"].float(), labels=saved["labels"], mean=tuple(train.mean),
                       std=tuple(train.std), class_names=tuple(train.class_names), lr=saved.get("lr"),
                       zca=saved.get("zca"))
    check_compatible(syn, train, str(path))
    return syn, train


def export_distilled(run_dir, formats: Sequence[str], to, *, overwrite: bool = False) -> dict:
    """Write a run's distilled set in each of ``formats``; several formats go into directory ``to``."""
    formats = list(dict.fromkeys(formats))
    if not formats:
        raise OptionsError("give at least one --format (imagefolder, pt or safetensors)")
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise OptionsError(f"unknown format {bad[0]!r}; use {', '.join(FORMATS)}")
    to = Path(to)
    kind = "dir" if formats == ["imagefolder"] or len(formats) > 1 else "file"
    check_target(to, overwrite, kind)
    if "safetensors" in formats:
        _safetensors()
    syn, train = run_synthetic(run_dir)
    if syn.soft and "imagefolder" in formats:
        raise DataError("an imagefolder holds hard labels only; export soft labels with --format pt or safetensors")
    if syn.zca is not None and "imagefolder" in formats:
        raise DataError("this set lives in ZCA space, which 8-bit PNGs cannot hold; export it with --format pt or "
                        "safetensors (they carry the ZCA transform)")
    with staged(to, overwrite, kind) as tmp:
        if len(formats) == 1:
            WRITERS[formats[0]](syn, train, tmp)
            written = {formats[0]: str(to)}
        else:
            tmp.mkdir()
            for fmt in formats:
                WRITERS[fmt](syn, train, tmp / OUTPUT_NAMES[fmt])
            written = {fmt: str(to / OUTPUT_NAMES[fmt]) for fmt in formats}
    return {"exported": "distilled", "images": int(syn.images.shape[0]), "soft_labels": syn.soft,
            "syn_lr": syn.lr, **written}


def export_subset(run_dir, to, *, overwrite: bool = False) -> dict:
    """Write a run's pruned subset (source indices, labels, scores) as CSV or JSON."""
    import csv
    import io as _io

    from pd_plugins.types import PruneResult

    run_dir, to = Path(run_dir), Path(to)
    suffix = to.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise OptionsError(f"subset export writes .csv or .json, got {to.name!r}")
    check_target(to, overwrite)
    saved = PruneResult.load(run_dir / "prune.pt")
    _, splits = _run_and_data(run_dir)
    train = splits.train
    keep = saved.keep
    source = (saved.source_index if saved.source_index is not None else train.index[keep]).tolist()
    labels = train.hard_labels[keep].tolist()
    scores = saved.scores
    if scores is not None:
        scores = scores[keep] if scores.shape[0] == len(train) else scores
        scores = [None if not math.isfinite(float(s)) else float(s) for s in scores.tolist()]
    if suffix == ".json":
        text = json.dumps({"dataset": train.name, "pruner": saved.pruner, "source_index": source,
                           "labels": labels, "scores": scores}) + "\n"
    else:
        buf = _io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["source_index", "label", "score"])
        for i, (s, y) in enumerate(zip(source, labels)):
            w.writerow([s, y, "" if scores is None or scores[i] is None else repr(scores[i])])
        text = buf.getvalue()
    with staged(to, overwrite) as tmp:
        tmp.write_text(text)
    return {"exported": "subset", "samples": len(source), "of": len(train), "file": str(to)}


# ----------------------------------------------------------------------------------------
# evaluate an outside distilled set

def evaluate_images(images, cfg, *, overwrite: bool = False) -> dict:
    """Evaluate the distilled set at ``images`` with ``cfg``'s dataset, evaluator, model and seed.

    ``cfg`` is a :class:`RunConfig` (its pruner and distiller must be ``none``); the result
    goes to ``cfg.out/eval.json``. Returns the summary dict.
    """
    import time

    from pd_plugins.io import atomic_write_json, file_sha256
    from pd_plugins.pipeline.runner import Run

    if cfg.evaluator == "none":
        raise OptionsError("--images needs an evaluator")
    images = Path(images)
    run = Run(cfg, quiet=True)
    out = run.out
    target = out / "eval.json"
    check_target(target, overwrite)
    t0 = time.perf_counter()
    splits = run.data()
    syn, fmt = read_synthetic(images, splits.train)
    train_set = syn.as_dataset(splits.train)
    from pd_plugins.data.zca import in_set_space

    test = in_set_space(splits.test, syn.zca)
    out.mkdir(parents=True, exist_ok=True)
    ctx = run.context("eval")
    result = run._call("evaluator", cfg.evaluator, run.evaluator.evaluate, train_set, test, ctx, lr=syn.lr)
    digest = file_sha256(images) if images.is_file() else None
    atomic_write_json(target, {
        "evaluated": "imported", "images": str(images), "format": fmt, "sha256": digest,
        "train_size": len(train_set), "soft_labels": syn.soft, "syn_lr": syn.lr,
        "zca": None if syn.zca is None else {"eps": syn.zca["eps"], "fitted_on": syn.zca["fitted_on"]},
        "results": [result.to_json()], "config": run.config_json(),
    })
    return {"out": str(out), "dataset": cfg.dataset, "images": str(images), "format": fmt,
            "train_size": len(train_set), "test_size": len(splits.test), "evaluated": "imported",
            "model": result.model, "acc_mean": result.mean, "acc_std": result.std, "repeats": len(result.accs),
            "seconds": {"total": round(time.perf_counter() - t0, 2)}}
