"""The ImageNet subsets of MTT, GLaD and LD3M, prepared once from a local ImageNet and read as datasets.

``prepare_subset`` reads ``ROOT/train/<wnid>/*.JPEG`` and ``ROOT/val/<wnid>/*.JPEG`` (an ImageNet
ImageFolder; fastai's imagenette2/imagewoof2 folders have the same layout), keeps the subset's ten
classes, fits every image to ``resolution`` x ``resolution`` and writes ONE tensor file,
``<out>/<subset>-<resolution>.pt``, atomically. The datasets ``imagenette``, ``imagewoof``, ...
read that file (``--data-root FILE``, or the folder holding it). Nothing is downloaded.

The file is a ``torch.save`` dict loaded with ``weights_only=True``: ``x_train``/``x_test`` uint8
(N, 3, R, R), ``y_train``/``y_test`` int64, and the metadata ``format``, ``subset``,
``resolution``, ``resize``, ``wnids``, ``source_root`` and ``counts``.

Labels follow MTT: label ``i`` is the ``i``-th WNID of the subset's list (not sorted order).
Resizing (``resize``): ``squash`` (default) scales both sides to the resolution, which is what MTT's
``utils.get_dataset`` does for ImageNet (``transforms.Resize((r, r))`` on the image, then a
``CenterCrop((r, r))`` that no longer changes anything); ``center-crop`` scales the shorter side and
crops the centre, keeping the aspect ratio. Both use PIL's bilinear filter on the 8-bit image.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from pd_plugins.errors import DataError, OptionsError, StageExistsError
from pd_plugins.paths import expect_dir, expect_output_file
from pd_plugins.types import DataSplits

__all__ = ["SUBSETS", "RESOLUTIONS", "FORMAT", "prepared_file", "prepare_subset", "load_subset",
           "imagenette", "imagewoof", "imagefruit", "imagemeow", "imagesquawk", "imageyellow"]

FORMAT = "pd_plugins.imagenet_subset/1"
RESOLUTIONS = (32, 64, 128)

# Source: MTT, GeorgeCazenavette/mtt-distillation utils.py, class ``Config`` (commit 0c42493), which lists
# ImageNet-1k class indices; GLaD (Cazenavette et al. 2023) and LD3M (built on GLaD's code) report the same
# six subsets. Each index is mapped to its WNID through the standard ImageNet-1k order (WNIDs sorted, the
# order of torchvision's ImageNet and Keras' imagenet_class_index.json), checked entry by entry against
# that file; the imagenette and imagewoof WNIDs also equal fastai's Imagenette/Imagewoof folders.
# The comments give the index and the ImageNet class name (MTT's own comments call 282 "bengal_cat",
# 72 "garden_spider" and 948 "green_apple"; the indices are what its code uses).
SUBSETS: dict[str, tuple[str, ...]] = {
    "imagenette": (
        "n01440764",  # 0 tench
        "n02102040",  # 217 English springer
        "n02979186",  # 482 cassette player
        "n03000684",  # 491 chain saw
        "n03028079",  # 497 church
        "n03394916",  # 566 French horn
        "n03417042",  # 569 garbage truck
        "n03425413",  # 571 gas pump
        "n03445777",  # 574 golf ball
        "n03888257",  # 701 parachute
    ),
    "imagewoof": (
        "n02096294",  # 193 Australian terrier
        "n02093754",  # 182 Border terrier
        "n02111889",  # 258 Samoyed
        "n02088364",  # 162 beagle
        "n02086240",  # 155 Shih-Tzu
        "n02089973",  # 167 English foxhound
        "n02087394",  # 159 Rhodesian ridgeback
        "n02115641",  # 273 dingo
        "n02099601",  # 207 golden retriever
        "n02105641",  # 229 Old English sheepdog
    ),
    "imagefruit": (
        "n07753275",  # 953 pineapple
        "n07753592",  # 954 banana
        "n07745940",  # 949 strawberry
        "n07747607",  # 950 orange
        "n07749582",  # 951 lemon
        "n07768694",  # 957 pomegranate
        "n07753113",  # 952 fig
        "n07720875",  # 945 bell pepper
        "n07718472",  # 943 cucumber
        "n07742313",  # 948 Granny Smith
    ),
    "imagemeow": (
        "n02123045",  # 281 tabby
        "n02123159",  # 282 tiger cat
        "n02123394",  # 283 Persian cat
        "n02123597",  # 284 Siamese cat
        "n02124075",  # 285 Egyptian cat
        "n02129165",  # 291 lion
        "n02129604",  # 292 tiger
        "n02128925",  # 290 jaguar
        "n02128757",  # 289 snow leopard
        "n02127052",  # 287 lynx
    ),
    "imagesquawk": (
        "n01806143",  # 84 peacock
        "n02007558",  # 130 flamingo
        "n01818515",  # 88 macaw
        "n02051845",  # 144 pelican
        "n02056570",  # 145 king penguin
        "n01614925",  # 22 bald eagle
        "n01843383",  # 96 toucan
        "n01518878",  # 9 ostrich
        "n01860187",  # 100 black swan
        "n01819313",  # 89 sulphur-crested cockatoo
    ),
    "imageyellow": (
        "n02206856",  # 309 bee
        "n12057211",  # 986 yellow lady's slipper
        "n07753592",  # 954 banana
        "n07749582",  # 951 lemon
        "n12144580",  # 987 corn
        "n04146614",  # 779 school bus
        "n03530642",  # 599 honeycomb
        "n02129165",  # 291 lion
        "n01773157",  # 72 black and gold garden spider
        "n01531178",  # 11 goldfinch
    ),
}

_SPLITS = (("train", "train"), ("test", "val"))  # (split, folder under the ImageNet root)
_META_KEYS = ("format", "subset", "resolution", "resize", "wnids", "source_root", "counts")


def _subset_key(subset: str) -> str:
    key = str(subset).strip().lower().replace("-", "").replace("_", "")
    if key not in SUBSETS:
        raise OptionsError(f"unknown ImageNet subset {subset!r}; use one of: {', '.join(SUBSETS)}")
    return key


def _check_resolution(resolution) -> int:
    if isinstance(resolution, bool) or int(resolution) not in RESOLUTIONS:
        raise OptionsError(f"resolution must be one of {', '.join(map(str, RESOLUTIONS))}, got {resolution!r}")
    return int(resolution)


def prepared_file(out_dir, subset: str, resolution: int) -> Path:
    """Where :func:`prepare_subset` writes ``subset`` at ``resolution``: ``out_dir/<subset>-<resolution>.pt``."""
    return Path(out_dir).expanduser() / f"{_subset_key(subset)}-{_check_resolution(resolution)}.pt"


# ----------------------------------------------------------------------------------------
# checking the ImageNet root

def _folders(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _split_dirs(root: Path) -> dict[str, Path]:
    """``{"train": ROOT/train, "test": ROOT/val}``, or a one-line DataError saying what the root looks like."""
    where = f"ImageNet root {root}"
    hint = "give the folder that holds train/<wnid>/ and val/<wnid>/"
    kaggle = root / "ILSVRC" / "Data" / "CLS-LOC"
    if kaggle.is_dir():
        hint = f"give {kaggle}"
    elif root.name in ("train", "val") and (root.parent / "train").is_dir():
        hint = f"this is a split folder; give its parent {root.parent}"
    out = {}
    for split, folder in _SPLITS:
        path = root / folder
        if not path.is_dir():
            raise DataError(f"{where} has no {folder}/ folder ({hint})")
        if not _folders(path):
            flat = sum(1 for p in path.iterdir() if p.is_file() and p.suffix.lower() in (".jpeg", ".jpg", ".png"))
            detail = (f"it holds {flat} images directly; sort them into {folder}/<wnid>/ folders first "
                      "(e.g. with ILSVRC's LOC_val_solution.csv)" if flat else "it holds no class folders")
            raise DataError(f"{where}: {folder}/ is not laid out by class: {detail}")
        out[split] = path
    return out


def _check_classes(dirs: dict[str, Path], subset: str, wnids: tuple[str, ...], where: str) -> None:
    """Every WNID of the subset has a folder in train/ and val/ (the class count check)."""
    for split, path in dirs.items():
        found = set(_folders(path))
        missing = [w for w in wnids if w not in found]
        if missing:
            raise DataError(
                f"{where}: {len(missing)} of the {len(wnids)} {subset} classes missing from {path} "
                f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}; it has {len(found)} class folders)")


# ----------------------------------------------------------------------------------------
# the prepared file

def _read_prepared(path: Path) -> dict:
    """The prepared file's dict, checked for its format and keys (one-line DataError otherwise)."""
    from pd_plugins.io import safe_torch_load

    obj = safe_torch_load(path, "prepared ImageNet subset")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise DataError(f"{path} is not a prepared ImageNet subset (format {FORMAT!r}); "
                        "make one with: pd-run prepare subset")
    missing = [k for k in (*_META_KEYS, "x_train", "y_train", "x_test", "y_test") if k not in obj]
    if missing:
        raise DataError(f"{path}: prepared ImageNet subset lacks {', '.join(missing)}")
    return obj


def _settings(subset: str, resolution: int, resize: str, source_root: str) -> dict:
    return {"subset": subset, "resolution": resolution, "resize": resize, "source_root": source_root}


def _reuse(target: Path, wanted: dict) -> Optional[dict]:
    """The existing file's metadata when it holds what ``wanted`` asks for; StageExistsError when it differs."""
    try:
        obj = _read_prepared(target)
    except DataError as exc:
        raise StageExistsError(f"{target} exists but is not a readable prepared subset ({exc}); "
                               "use --overwrite to rebuild it") from None
    have = {k: obj[k] for k in wanted}
    if have != wanted:
        diff = ", ".join(f"{k} {have[k]!r} (asked {wanted[k]!r})" for k in wanted if have[k] != wanted[k])
        raise StageExistsError(f"{target} was prepared with {diff}; use --overwrite to rebuild it")
    return {k: obj[k] for k in _META_KEYS}


def prepare_subset(subset: str, imagenet_root, out_dir=".", *, resolution: int = 128, resize: str = "squash",
                   overwrite: bool = False, progress: bool = False) -> dict:
    """Write ``subset`` of the ImageNet ImageFolder at ``imagenet_root`` to ``out_dir/<subset>-<resolution>.pt``.

    A complete file with the same settings is reused (``"reused": True``) unless ``overwrite``; one with
    other settings is refused (:class:`StageExistsError`). Returns the file's metadata and path.
    """
    from pd_plugins.data.builtin import RESIZE_MODES

    name = _subset_key(subset)
    resolution = _check_resolution(resolution)
    if resize not in RESIZE_MODES:
        raise OptionsError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    root = expect_dir(imagenet_root, "ImageNet root").resolve()
    target = expect_output_file(prepared_file(out_dir, name, resolution), "prepared subset file")
    wanted = _settings(name, resolution, resize, str(root))
    where = f"ImageNet root {root}"
    dirs = _split_dirs(root)
    wnids = SUBSETS[name]
    _check_classes(dirs, name, wnids, where)
    from pd_plugins.io import atomic_torch_save
    from pd_plugins.locks import cache_fill

    with cache_fill(target, "prepared subset"):  # a second process waits, then reuses the file
        if target.exists() and not overwrite:
            return {"file": str(target), "reused": True, **_reuse(target, wanted)}
        arrays = _read_splits(dirs, wnids, resolution, resize, where, progress)
        meta = {"format": FORMAT, **wanted, "wnids": list(wnids),
                "counts": {split: int(arrays[f"y_{split}"].shape[0]) for split, _ in _SPLITS}}
        atomic_torch_save({**meta, **arrays}, target)
    return {"file": str(target), "reused": False, **meta}


def _read_splits(dirs: dict[str, Path], wnids, resolution: int, resize: str, where: str, progress: bool) -> dict:
    """``x_train, y_train, x_test, y_test``: every image of the subset's classes, fitted to the resolution."""
    from pd_plugins.data.builtin import _image_files, _load_resized

    arrays = {}
    for split, path in dirs.items():
        files = _image_files(path, wnids)
        counts = [0] * len(wnids)
        for _, label in files:
            counts[label] += 1
        empty = [w for w, c in zip(wnids, counts) if c == 0]
        if empty:
            raise DataError(f"{where}: class folder(s) {', '.join(empty[:4])} under {path} hold no images")
        x, y = _load_resized(files, resolution, where, resize=resize, progress=progress)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    return arrays


# ----------------------------------------------------------------------------------------
# the datasets

def _locate(root: Optional[str], name: str, resolution: int) -> Path:
    """The prepared file for ``name``: ``root`` itself, or ``root/<name>-<resolution>.pt`` in a folder."""
    hint = (f"dataset {name!r} reads the file `pd-run prepare subset {name} --imagenet-root DIR` writes; "
            "give it (or its folder) as --data-root")
    if root is None or str(root).strip() == "":
        raise DataError(hint)
    path = Path(root).expanduser()
    if not path.is_dir():
        from pd_plugins.paths import expect_file

        return expect_file(path, f"dataset {name!r} file")
    if resolution:
        candidates = [path / f"{name}-{resolution}.pt"]
    else:
        candidates = [path / f"{name}-{r}.pt" for r in RESOLUTIONS]
    found = [p for p in candidates if p.is_file()]
    if not found:
        raise DataError(f"{path} holds no {' or '.join(p.name for p in candidates)} ({hint})")
    if len(found) > 1:
        raise DataError(f"{path} holds {', '.join(p.name for p in found)}; choose one with "
                        "--dataset-option resolution=N")
    return found[0]


def load_subset(root: Optional[str], subset: str, *, resolution: int = 0) -> DataSplits:
    """The prepared ImageNet subset at ``root`` (a file, or the folder :func:`prepare_subset` wrote it to)."""
    import torch

    from pd_plugins.data.builtin import IMAGENET_STATS, make_splits

    name = _subset_key(subset)
    if resolution:
        _check_resolution(resolution)
    path = _locate(root, name, int(resolution))
    obj = _read_prepared(path)
    where = f"dataset {name!r} ({path})"
    if obj["subset"] != name:
        raise DataError(f"{where}: the file holds {obj['subset']!r}, not {name!r}")
    if resolution and obj["resolution"] != int(resolution):
        raise DataError(f"{where}: the file is {obj['resolution']}x{obj['resolution']}, asked for {resolution}")
    res = int(obj["resolution"])
    splits = {}
    for split, _ in _SPLITS:
        x, y = obj[f"x_{split}"], obj[f"y_{split}"]
        if not (isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and tuple(x.shape[1:]) == (3, res, res)):
            raise DataError(f"{where}: x_{split} must be uint8 (N, 3, {res}, {res})")
        if not (isinstance(y, torch.Tensor) and y.dtype == torch.int64 and y.dim() == 1):
            raise DataError(f"{where}: y_{split} must be int64 (N,)")
        splits[split] = (x, y)
    return make_splits(name, splits["train"], splits["test"], pixel_max=255.0, stats=IMAGENET_STATS,
                       classes=list(obj["wnids"]), allow_flip=True)


def _subset_dataset(name: str):
    """The dataset factory for one subset (what ``register_datasets`` registers under ``name``)."""

    def load(root: Optional[str], *, resolution: int = 0) -> DataSplits:
        return load_subset(root, name, resolution=resolution)

    load.__name__ = load.__qualname__ = name
    load.__doc__ = (f"{name} ({len(SUBSETS[name])} ImageNet classes of MTT/GLaD) from the file `pd-run prepare "
                    f"subset {name}` writes; --data-root is that file or its folder, resolution (0: the one "
                    "file there) picks 32, 64 or 128.")
    return load


imagenette = _subset_dataset("imagenette")
imagewoof = _subset_dataset("imagewoof")
imagefruit = _subset_dataset("imagefruit")
imagemeow = _subset_dataset("imagemeow")
imagesquawk = _subset_dataset("imagesquawk")
imageyellow = _subset_dataset("imageyellow")
