"""Built-in dataset loaders: ``factory(root, **options) -> DataSplits``.

Every loader returns raw pixels in ONE tensor per split (``uint8`` wherever the source is
8-bit, so full MNIST costs ~55 MB), ``index = arange(N)`` and a ``source_id`` that hashes
the split's pixels and labels. Nothing is ever downloaded: torchvision datasets are opened
with ``download=False`` from a local ``--data-root``.

Bad input of any kind (missing files, wrong keys or shapes, non-finite values, labels out of
range, empty splits, fewer than two classes) raises :class:`~pd_plugins.errors.DataError`
with a one-line message.

Loaders and their options (keyword-only, shown by the host from ``inspect.signature``):

* ``digits``: scikit-learn's 8x8 digits (1797 images, in the wheel); ``test_fraction``,
  ``split_seed`` control a stratified, seeded split. ``root`` is ignored.
* ``npz``: a ``.npz`` file with ``x_train, y_train, x_test, y_test`` (optional ``classes``);
  ``name`` (default: the file stem) and ``normalize`` (``auto``: literature statistics for
  known names, else computed from train; ``train``: always computed from train).
* ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``: torchvision's on-disk layout.
* ``imagefolder``: ``root/<train_dir>/<class>/*.png|jpg`` and ``root/<test_dir>/<class>/...`` (class
  folders searched recursively, like torchvision's ImageFolder), resized (shorter side) and
  centre-cropped to ``im_size``.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from pd_plugins.errors import DataError
from pd_plugins.paths import expect_dir, expect_file
from pd_plugins.types import DataSplits, ImageDataset, tensor_digest

__all__ = [
    "DATASET_FACTORIES",
    "KNOWN_STATS",
    "digits",
    "npz",
    "mnist",
    "fashion_mnist",
    "cifar10",
    "cifar100",
    "imagefolder",
]

Stats = tuple[tuple[float, ...], tuple[float, ...]]

#: Literature per-channel mean/std (in [0, 1] pixel units), keyed by canonical name.
KNOWN_STATS: dict[str, Stats] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2861,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}
IMAGENET_STATS: Stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
_STATS_CHUNK_ELEMENTS = 1 << 22  # elements per chunk when computing mean/std (bounded memory)


# ---------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------
def _known_stats(name: str) -> Optional[Stats]:
    """Literature statistics for a dataset name (case-insensitive, ``-`` == ``_``), or None."""
    key = name.strip().lower().replace("-", "_")
    if key in ("mnist", "fashion_mnist", "svhn"):
        return KNOWN_STATS[key]
    if key.startswith("cifar100"):
        return KNOWN_STATS["cifar100"]
    if key.startswith("cifar10"):
        return KNOWN_STATS["cifar10"]
    return None


def _allow_flip(name: str) -> bool:
    """Horizontal flips are label-preserving except for digits (MNIST, SVHN, sklearn digits)."""
    key = name.lower()
    if "mnist" in key and "fashion" not in key:
        return False
    return not ("svhn" in key or "digits" in key)


def _native(a: np.ndarray) -> np.ndarray:
    """``a`` in native byte order (torch rejects big-endian arrays), copied only if needed."""
    if a.dtype.byteorder not in ("=", "|"):
        a = a.astype(a.dtype.newbyteorder("="))
    return a


def _as_numpy(a, what: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    try:
        return np.asarray(a)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise DataError(f"{what}: cannot be read as an array ({exc})") from None


def _pixel_kind(xs: Sequence[np.ndarray], where: str) -> tuple[bool, float]:
    """Check pixel arrays' values; return ``(is_uint8, pixel_max)`` shared by all splits."""
    kinds = {a.dtype.kind for a in xs}
    if kinds - {"u", "i", "f"}:
        bad = sorted({str(a.dtype) for a in xs if a.dtype.kind not in "uif"})
        raise DataError(f"{where}: images must be numeric (uint8 or float), got dtype {', '.join(bad)}")
    if all(a.dtype == np.uint8 for a in xs):
        return True, 255.0
    if len({a.dtype.kind == "f" for a in xs}) > 1:
        raise DataError(f"{where}: train and test images mix integer and float dtypes ({', '.join(str(a.dtype) for a in xs)})")
    for a in xs:
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise DataError(f"{where}: images contain NaN or inf values")
    if any(a.size == 0 for a in xs):
        raise DataError(f"{where}: empty image array (a split has no images)")
    lo = min(float(a.min()) for a in xs)
    hi = max(float(a.max()) for a in xs)
    if lo < 0:
        raise DataError(
            f"{where}: pixel values must lie in [0, 1] or [0, 255], got minimum {lo:g} "
            "(pass raw pixels, not normalised images)"
        )
    if hi > 255:
        raise DataError(f"{where}: pixel values must lie in [0, 1] or [0, 255], got maximum {hi:g}")
    if all(a.dtype.kind in "ui" for a in xs):
        return True, 255.0  # integer pixels in 0..255: stored as uint8
    return False, (1.0 if hi <= 1.0 else 255.0)


def _to_nchw(x: np.ndarray, as_uint8: bool, what: str) -> torch.Tensor:
    """(N,H,W) or (N,H,W,C) [or already (N,C,H,W)] array -> ONE contiguous (N,C,H,W) tensor.

    ``uint8`` stays ``uint8`` (other integer dtypes with values 0..255 become ``uint8``);
    float arrays become ``float32``. At most one copy is made.
    """
    if x.ndim == 3:
        channels_last = None
    elif x.ndim == 4:
        if x.shape[-1] in (1, 3, 4):
            channels_last = True
        elif x.shape[1] in (1, 3, 4):
            channels_last = False
        else:
            raise DataError(f"{what}: expected (N,H,W) or (N,H,W,C) with C in 1/3/4, got shape {tuple(x.shape)}")
    else:
        raise DataError(f"{what}: expected (N,H,W) or (N,H,W,C) images, got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or 0 in x.shape[1:]:
        raise DataError(f"{what}: empty image array, shape {tuple(x.shape)}")
    target = np.uint8 if as_uint8 else np.float32
    if x.dtype != target:
        x = x.astype(target)
    x = _native(x)
    if not x.flags.writeable:
        x = x.copy()
    t = torch.from_numpy(x)
    if channels_last is None:
        return t.unsqueeze(1).contiguous()
    if channels_last:
        return t.permute(0, 3, 1, 2).contiguous()
    return t.contiguous()


def _to_labels(y, n: int, what: str) -> torch.Tensor:
    """Integer labels (N,) -> int64 tensor; float labels must be integral."""
    y = _as_numpy(y, what)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{what}: labels must be a 1-D array of class indices, got shape {tuple(y.shape)}")
    if y.shape[0] != n:
        raise DataError(f"{what}: {y.shape[0]} labels for {n} images (lengths must match)")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise DataError(f"{what}: labels contain NaN or inf values")
        if not np.array_equal(y, np.round(y)):
            raise DataError(f"{what}: labels must be integer class indices, got non-integral floats")
    elif y.dtype.kind not in "ui":
        raise DataError(f"{what}: labels must be integer class indices, got dtype {y.dtype}")
    if y.size and float(y.min()) < 0:
        raise DataError(f"{what}: labels must be >= 0, got minimum {y.min()}")
    return torch.from_numpy(_native(y.astype(np.int64))).contiguous()


def _split_tensors(x, y, what: str, *, as_uint8: bool) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = _to_nchw(_as_numpy(x, what), as_uint8, what)
    labels = _to_labels(y, int(pixels.shape[0]), what)
    return pixels, labels


def _channel_stats(pixels: torch.Tensor, pixel_max: float) -> Stats:
    """Per-channel mean/std (population) in [0, 1] units, in bounded-memory chunks."""
    n, c = int(pixels.shape[0]), int(pixels.shape[1])
    per_image = max(1, pixels[0].numel())
    step = max(1, _STATS_CHUNK_ELEMENTS // per_image)
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for i in range(0, n, step):
        chunk = pixels[i : i + step].to(torch.float64)
        s += chunk.sum(dim=(0, 2, 3))
        s2 += chunk.square().sum(dim=(0, 2, 3))
    count = n * per_image / c
    mean = s / count
    var = (s2 / count - mean.square()).clamp_min(0.0)
    std = var.sqrt()
    mean, std = mean / pixel_max, std / pixel_max
    # a constant channel would divide by zero when normalising
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def _source_id(pixels: torch.Tensor, labels: torch.Tensor) -> str:
    """sha256 over the split's pixel and label digests."""
    h = hashlib.sha256()
    h.update(tensor_digest(pixels).encode())
    h.update(tensor_digest(labels).encode())
    return h.hexdigest()


def _class_names(classes, num_classes: int, where: str) -> tuple[str, ...]:
    if classes is None:
        return tuple(str(i) for i in range(num_classes))
    names = tuple(
        c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c)
        for c in np.asarray(classes).reshape(-1).tolist()
    )
    if len(names) != num_classes:
        raise DataError(f"{where}: {len(names)} class names for {num_classes} classes")
    return names


def _make_splits(
    where: str,
    name: str,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    pixel_max: float,
    stats: Optional[Stats] = None,
    classes=None,
    num_classes: Optional[int] = None,
    allow_flip: Optional[bool] = None,
    train_index: Optional[torch.Tensor] = None,
) -> DataSplits:
    """Validate a (pixels, labels) pair per split and wrap them as :class:`DataSplits`.

    ``stats=None`` computes mean/std from the train split. ``num_classes`` defaults to
    ``len(classes)`` or the largest label + 1 over both splits. ``train_index`` gives the
    train images' positions in the source (default ``0..n-1``).
    """
    (xtr, ytr), (xte, yte) = train, test
    for split, (x, y) in (("train", train), ("test", test)):
        if x.shape[0] == 0:
            raise DataError(f"{where}: the {split} split is empty")
        if x.shape[0] != y.shape[0]:
            raise DataError(f"{where}: {split} has {x.shape[0]} images but {y.shape[0]} labels")
    if xtr.shape[1:] != xte.shape[1:]:
        raise DataError(
            f"{where}: train images are {tuple(xtr.shape[1:])} (C,H,W) but test images are {tuple(xte.shape[1:])}"
        )
    max_label = int(max(ytr.max(), yte.max()))
    if num_classes is None:
        num_classes = len(np.asarray(classes).reshape(-1)) if classes is not None else max_label + 1
    if max_label >= num_classes:
        raise DataError(f"{where}: label {max_label} out of range for {num_classes} classes (labels are 0..{num_classes - 1})")
    present = int(torch.unique(ytr).numel())
    if present < 2:
        raise DataError(f"{where}: the train split has {present} class(es); at least 2 are needed")
    names = _class_names(classes, num_classes, where)
    channels = int(xtr.shape[1])
    if stats is None or len(stats[0]) != channels:
        stats = _channel_stats(xtr, pixel_max)
    mean, std = tuple(float(v) for v in stats[0]), tuple(float(v) for v in stats[1])
    flip = _allow_flip(name) if allow_flip is None else allow_flip

    def build(x: torch.Tensor, y: torch.Tensor, index: Optional[torch.Tensor] = None) -> ImageDataset:
        return ImageDataset(
            pixels=x,
            labels=y,
            num_classes=num_classes,
            mean=mean,
            std=std,
            name=name,
            index=torch.arange(int(x.shape[0]), dtype=torch.long) if index is None else index,
            source_id=_source_id(x, y),
            class_names=names,
            pixel_max=float(pixel_max),
            normalized=False,
            allow_flip=flip,
        )

    return DataSplits(train=build(xtr, ytr, train_index), test=build(xte, yte))


def make_splits(
    name: str,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    pixel_max: float = 255.0,
    stats: Optional[Stats] = None,
    classes=None,
    num_classes: Optional[int] = None,
    allow_flip: bool = True,
) -> DataSplits:
    """:class:`DataSplits` from ``(pixels, labels)`` per split, checked (one-line DataError).

    ``pixels`` are (N, C, H, W) ``uint8`` (``pixel_max`` 255) or floats in ``[0, pixel_max]``;
    ``labels`` (N,) integers. ``stats`` = ``(mean, std)`` per channel in ``[0, 1]`` units (default:
    computed from the train split); ``classes`` names the classes; ``allow_flip=False`` for data
    whose meaning changes when mirrored (digits, text).
    """
    return _make_splits(name, name, train, test, pixel_max=pixel_max, stats=stats, classes=classes,
                        num_classes=num_classes, allow_flip=allow_flip)


# ---------------------------------------------------------------------------------------
# loaders
# ---------------------------------------------------------------------------------------
def _stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) positions with ~``test_fraction`` of every class in test."""
    rng = np.random.default_rng(int(seed) % (1 << 64))  # local generator; negative seeds allowed
    test_parts = []
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        if pos.size < 2:
            raise DataError(f"dataset 'digits': class {c} has {pos.size} sample(s); a stratified split needs 2")
        n_test = min(max(int(round(test_fraction * pos.size)), 1), pos.size - 1)
        test_parts.append(rng.permutation(pos)[:n_test])
    test_pos = np.sort(np.concatenate(test_parts))
    mask = np.ones(labels.shape[0], dtype=bool)
    mask[test_pos] = False
    return np.flatnonzero(mask), test_pos


def digits(root: Optional[str] = None, *, test_fraction: float = 0.2, split_seed: int = 0) -> DataSplits:
    """scikit-learn 8x8 digits (1797 images, ships in the wheel), stratified seeded train/test split."""
    from sklearn.datasets import load_digits

    where = "dataset 'digits'"
    if not (0.0 < float(test_fraction) < 1.0):
        raise DataError(f"{where}: test_fraction must be in (0, 1), got {test_fraction}")
    bunch = load_digits()
    images = np.asarray(bunch.images)  # (1797, 8, 8) float64, values 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    x = np.rint(images).astype(np.uint8)
    tr, te = _stratified_split(labels, float(test_fraction), int(split_seed))
    train = _split_tensors(x[tr], labels[tr], f"{where} train", as_uint8=True)
    test = _split_tensors(x[te], labels[te], f"{where} test", as_uint8=True)
    return _make_splits(
        where, "digits", train, test, pixel_max=16.0, stats=None, num_classes=10, allow_flip=False,
        classes=[str(i) for i in range(10)],
    )


def first_per_class(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Sorted positions of the first ``n`` samples of every class, in source order."""
    keep = torch.zeros(labels.shape[0], dtype=torch.bool)
    for c in torch.unique(labels):
        keep[torch.nonzero(labels == c).flatten()[:n]] = True
    return torch.nonzero(keep).flatten()


def npz(root: Optional[str], *, name: str = "", normalize: str = "auto", train_per_class: int = 0,
        test_per_class: int = 0) -> DataSplits:
    """A .npz file with x_train, y_train, x_test, y_test (optional classes); root is the file path."""
    # train_per_class / test_per_class > 0 keep only the first N images of every class of that
    # split, in file order (CPU-scale options, recorded in the run config; `index` keeps the
    # source positions). Normalisation statistics follow the name, else the kept train images.
    if normalize not in ("auto", "train"):
        raise DataError(f"dataset 'npz': normalize must be 'auto' or 'train', got {normalize!r}")
    for opt, value in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        if int(value) < 0:
            raise DataError(f"dataset 'npz': {opt} must be >= 0 (0 keeps all), got {value}")
    if root is None or str(root).strip() == "":
        raise DataError("dataset 'npz' needs --data-root pointing at a .npz file with x_train, y_train, x_test, y_test")
    path = expect_file(root, "dataset 'npz' file")
    where = f"dataset 'npz' ({path})"
    import zipfile

    if not zipfile.is_zipfile(path):
        raise DataError(f"{where}: not a .npz (zip) archive")
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            missing = [k for k in _NPZ_KEYS if k not in keys]
            if missing:
                raise DataError(
                    f"{where}: missing key(s) {', '.join(missing)}; found {', '.join(sorted(keys)) or '(none)'}"
                )
            arrays = {k: f[k] for k in _NPZ_KEYS}
            classes = f["classes"] if "classes" in keys else None
    except DataError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(f"{where}: contains object (pickled) arrays; only plain numeric arrays are accepted") from None
        raise DataError(f"{where}: not a readable .npz file ({exc})") from None
    except Exception as exc:  # BadZipFile, OSError, EOFError, lzma errors, ...
        raise DataError(f"{where}: not a readable .npz file ({type(exc).__name__}: {exc})") from None

    as_uint8, pixel_max = _pixel_kind([arrays["x_train"], arrays["x_test"]], where)
    train = _split_tensors(arrays["x_train"], arrays["y_train"], f"{where} x_train/y_train", as_uint8=as_uint8)
    del arrays["x_train"]
    test = _split_tensors(arrays["x_test"], arrays["y_test"], f"{where} x_test/y_test", as_uint8=as_uint8)
    del arrays
    train_index = None
    if int(train_per_class) > 0:
        train_index = first_per_class(train[1], int(train_per_class))
        train = (train[0][train_index].contiguous(), train[1][train_index])
    if int(test_per_class) > 0:
        test_index = first_per_class(test[1], int(test_per_class))
        test = (test[0][test_index].contiguous(), test[1][test_index])
    ds_name = name.strip() or path.stem
    stats = _known_stats(ds_name) if normalize == "auto" else None
    return _make_splits(where, ds_name, train, test, pixel_max=pixel_max, stats=stats, classes=classes,
                        train_index=train_index)


def _torchvision(key: str, cls_name: str, folder: str, root: Optional[str]) -> DataSplits:
    """Load a torchvision dataset's train/test ``.data``/``.targets`` from ``root`` (no download)."""
    hint = (
        f"dataset '{key}' needs --data-root pointing at a local copy "
        f"(torchvision layout, nothing is downloaded): {root}"
    )
    if root is None or str(root).strip() == "":
        raise DataError(hint + f" (give the folder that contains {folder}/)")
    try:
        path = expect_dir(root, f"dataset '{key}' --data-root")
    except DataError as exc:
        raise DataError(f"{exc} (give the folder that contains {folder}/; nothing is downloaded)") from None
    candidates = [path]
    if path.name == folder:  # the dataset's own folder was given: torchvision wants its parent
        candidates.append(path.parent)
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    splits, reason = None, ""
    for cand in candidates:
        try:
            splits = [cls(str(cand), train=flag, download=False) for flag in (True, False)]
            break
        except Exception as exc:  # RuntimeError "Dataset not found", corrupt files, ...
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if splits is None:
        raise DataError(hint + f" has no usable {folder}/ ({reason})")
    where = f"dataset '{key}' ({path})"
    tensors = [
        _split_tensors(ds.data, np.asarray(ds.targets), f"{where} {s}", as_uint8=True)
        for s, ds in zip(("train", "test"), splits)
    ]
    classes = list(getattr(splits[0], "classes", []) or []) or None
    return _make_splits(where, key, tensors[0], tensors[1], pixel_max=255.0, stats=_known_stats(key), classes=classes)


def mnist(root: Optional[str]) -> DataSplits:
    """MNIST from a local torchvision copy (root/MNIST/raw/*-ubyte); nothing is downloaded."""
    return _torchvision("mnist", "MNIST", "MNIST", root)


def fashion_mnist(root: Optional[str]) -> DataSplits:
    """Fashion-MNIST from a local torchvision copy (root/FashionMNIST/raw/*-ubyte); nothing is downloaded."""
    return _torchvision("fashion-mnist", "FashionMNIST", "FashionMNIST", root)


def cifar10(root: Optional[str]) -> DataSplits:
    """CIFAR-10 from a local torchvision copy (root/cifar-10-batches-py); nothing is downloaded."""
    return _torchvision("cifar10", "CIFAR10", "cifar-10-batches-py", root)


def cifar100(root: Optional[str]) -> DataSplits:
    """CIFAR-100 from a local torchvision copy (root/cifar-100-python); nothing is downloaded."""
    return _torchvision("cifar100", "CIFAR100", "cifar-100-python", root)


def _image_files(split_dir: Path, classes: Sequence[str]) -> list[tuple[Path, int]]:
    """(file, label) in sorted (class, path) order, searching each class folder recursively (as
    torchvision's ImageFolder does, so Tiny ImageNet's ``train/<wnid>/images/`` is read); hidden files and
    folders and non-image files are skipped."""
    out = []
    for label, cls in enumerate(classes):
        top = split_dir / cls
        files = sorted(
            p.relative_to(top) for p in top.rglob("*")
            if p.is_file() and p.suffix.lower() in _IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in p.relative_to(top).parts)
        )
        out.extend((top / f, label) for f in files)
    return out


RESIZE_MODES = ("center-crop", "squash")


def _fit(img, im_size: int, resize: str):
    """``img`` (PIL, RGB) as ``im_size`` x ``im_size``: ``center-crop`` scales the shorter side to ``im_size``
    and crops the centre; ``squash`` scales both sides to ``im_size`` (aspect ratio not kept)."""
    from PIL import Image

    w, h = img.size
    if resize == "squash":
        return img if (w, h) == (im_size, im_size) else img.resize((im_size, im_size), Image.BILINEAR)
    scale = im_size / min(w, h)
    nw, nh = max(im_size, int(round(w * scale))), max(im_size, int(round(h * scale)))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BILINEAR)
    left, top = int(round((nw - im_size) / 2.0)), int(round((nh - im_size) / 2.0))
    return img.crop((left, top, left + im_size, top + im_size))


def _load_resized(files: Sequence[tuple[Path, int]], im_size: int, where: str, *, resize: str = "center-crop",
                  progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode images into ONE preallocated (N,3,S,S) uint8 tensor, fitted by :func:`_fit` (``resize``)."""
    from PIL import Image
    from tqdm.auto import tqdm

    if resize not in RESIZE_MODES:
        raise DataError(f"{where}: resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    n = len(files)
    pixels = torch.empty((n, 3, im_size, im_size), dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.long)
    for i, (path, label) in enumerate(tqdm(files, desc="images", unit="img", leave=False, disable=not progress)):
        try:
            with Image.open(path) as img:
                arr = np.array(_fit(img.convert("RGB"), im_size, resize), dtype=np.uint8)  # writable copy
        except Exception as exc:
            raise DataError(f"{where}: cannot read image {path} ({type(exc).__name__}: {exc})") from None
        pixels[i] = torch.from_numpy(arr).permute(2, 0, 1)
        labels[i] = label
    return pixels, labels


def imagefolder(root: Optional[str], *, im_size: int = 32, train_dir: str = "train", test_dir: str = "val") -> DataSplits:
    """ImageNet-style folders root/<train_dir>/<class>/*.png|jpg and root/<test_dir>/<class>/..., resized and centre-cropped."""
    if root is None or str(root).strip() == "":
        raise DataError("dataset 'imagefolder' needs --data-root pointing at a folder with train/<class>/ and val/<class>/ images")
    path = Path(root).expanduser()
    where = f"dataset 'imagefolder' ({path})"
    if int(im_size) < 1:
        raise DataError(f"{where}: im_size must be >= 1, got {im_size}")
    im_size = int(im_size)
    expect_dir(path, "dataset 'imagefolder' folder")
    train_path = path / train_dir
    test_path = path / test_dir
    if not test_path.is_dir() and test_dir == "val" and (path / "test").is_dir():
        test_path = path / "test"
    for split, p in (("train", train_path), ("test", test_path)):
        expect_dir(p, f"{where}: {split} folder")

    def class_dirs(p: Path) -> list[str]:
        return sorted(d.name for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))

    classes = class_dirs(train_path)
    test_classes = class_dirs(test_path)
    missing = [c for c in classes if c not in test_classes]
    extra = [c for c in test_classes if c not in classes]
    if missing:
        raise DataError(f"{where}: class folder(s) {', '.join(missing[:5])} missing from {test_path}")
    if extra:
        raise DataError(f"{where}: class folder(s) {', '.join(extra[:5])} in {test_path} but not in {train_path}")
    if len(classes) < 2:
        raise DataError(f"{where}: {train_path} has {len(classes)} class folder(s); at least 2 are needed")
    splits = []
    for split, p in (("train", train_path), ("test", test_path)):
        files = _image_files(p, classes)
        if not files:
            raise DataError(f"{where}: no images (.png/.jpg/...) under {p}/<class>/")
        splits.append(_load_resized(files, im_size, where))
    name = path.resolve().name or "imagefolder"
    return _make_splits(
        where, name, splits[0], splits[1], pixel_max=255.0, stats=IMAGENET_STATS, classes=classes, allow_flip=True
    )


DATASET_FACTORIES = {
    "digits": digits,
    "npz": npz,
    "mnist": mnist,
    "fashion-mnist": fashion_mnist,
    "cifar10": cifar10,
    "cifar100": cifar100,
    "imagefolder": imagefolder,
}
