"""Dataset loaders: digits, npz, torchvision layouts and image folders (all offline)."""
from __future__ import annotations

import inspect
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from pd_plugins.data.builtin import (
    DATASET_FACTORIES,
    cifar10,
    cifar100,
    digits,
    fashion_mnist,
    imagefolder,
    mnist,
    npz,
)
from pd_plugins.errors import DataError
from pd_plugins.types import DataSplits

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
def _write_npz(path: Path, *, rgb=False, dtype=np.uint8, n_train=20, n_test=10, hw=6, num_classes=3, seed=0, **extra):
    rng = np.random.default_rng(seed)
    shape = (hw, hw, 3) if rgb else (hw, hw)
    x_train = rng.integers(0, 256, size=(n_train,) + shape)
    x_test = rng.integers(0, 256, size=(n_test,) + shape)
    if np.dtype(dtype).kind == "f":
        x_train, x_test = x_train / 255.0, x_test / 255.0
    arrays = {
        "x_train": x_train.astype(dtype),
        "y_train": np.arange(n_train) % num_classes,
        "x_test": x_test.astype(dtype),
        "y_test": np.arange(n_test) % num_classes,
    }
    arrays.update(extra)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return arrays


def _check_split_invariants(ds):
    n = len(ds)
    assert ds.pixels.dim() == 4 and ds.pixels.shape[0] == n
    assert ds.labels.dtype == torch.int64 and ds.labels.shape == (n,)
    assert torch.equal(ds.index, torch.arange(n))
    assert len(ds.mean) == len(ds.std) == ds.channels
    assert len(ds.class_names) == ds.num_classes
    assert isinstance(ds.source_id, str) and len(ds.source_id) == 64
    assert int(ds.labels.min()) >= 0 and int(ds.labels.max()) < ds.num_classes


# ---------------------------------------------------------------------------------------
# registry / signatures
# ---------------------------------------------------------------------------------------
def test_factories_table_and_signatures():
    assert set(DATASET_FACTORIES) == {"digits", "npz", "mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder"}
    for name, fn in DATASET_FACTORIES.items():
        params = list(inspect.signature(fn).parameters.values())
        assert params[0].name == "root", name
        assert fn.__doc__ and "\n" not in fn.__doc__.strip(), name
        for p in params[1:]:
            assert p.kind is inspect.Parameter.KEYWORD_ONLY, (name, p.name)
            assert p.default is not inspect.Parameter.empty, (name, p.name)
            assert p.annotation is not inspect.Parameter.empty, (name, p.name)


# ---------------------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------------------
def test_digits_shapes_split_and_stats():
    s = digits()
    assert isinstance(s, DataSplits)
    tr, te = s.train, s.test
    for ds in (tr, te):
        _check_split_invariants(ds)
        assert ds.pixels.shape[1:] == (1, 8, 8) and ds.pixels.dtype == torch.uint8
        assert ds.pixel_max == 16.0 and ds.num_classes == 10 and ds.allow_flip is False
        assert ds.class_names == tuple(str(i) for i in range(10))
    assert len(tr) + len(te) == 1797
    assert abs(len(te) - 0.2 * 1797) < 10
    assert all(c > 0 for c in tr.class_counts()) and all(c > 0 for c in te.class_counts())
    assert int(tr.pixels.max()) <= 16
    x = tr.images()
    assert x.dtype == torch.float32
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1.0) < 1e-3
    # the recorded statistics are the train split's, not the test split's
    assert tr.mean == te.mean and tr.std == te.std


def test_digits_split_deterministic_and_seeded():
    a, b, c = digits(), digits(split_seed=0), digits(split_seed=1)
    assert torch.equal(a.train.pixels, b.train.pixels) and torch.equal(a.test.labels, b.test.labels)
    assert a.train.source_id == b.train.source_id
    assert a.train.source_id != c.train.source_id
    assert not torch.equal(a.test.pixels, c.test.pixels)
    small = digits(test_fraction=0.5)
    assert abs(len(small.test) - 1797 / 2) < 10


@pytest.mark.parametrize("frac", [0.0, 1.0, -0.1, 1.5])
def test_digits_bad_fraction(frac):
    with pytest.raises(DataError, match="test_fraction"):
        digits(test_fraction=frac)


# ---------------------------------------------------------------------------------------
# npz round trips
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("rgb", [False, True])
def test_npz_uint8_round_trip(tmp_path, rgb):
    path = tmp_path / ("rgb_set.npz" if rgb else "gray_set.npz")
    arrays = _write_npz(path, rgb=rgb, classes=np.array(["a", "b", "c"]))
    s = npz(str(path))
    c = 3 if rgb else 1
    for ds, key in ((s.train, "x_train"), (s.test, "x_test")):
        _check_split_invariants(ds)
        assert ds.pixels.dtype == torch.uint8 and ds.pixels.shape[1:] == (c, 6, 6)
        assert ds.pixels.is_contiguous() and ds.pixel_max == 255.0
        back = ds.pixels.permute(0, 2, 3, 1).numpy()
        expected = arrays[key] if rgb else arrays[key][..., None]
        assert np.array_equal(back, expected)
        assert ds.class_names == ("a", "b", "c") and ds.num_classes == 3
        assert ds.name == path.stem and ds.allow_flip is True
    assert torch.equal(s.train.labels, torch.from_numpy(arrays["y_train"]))
    # unknown name -> statistics computed from train
    x = s.train.images()
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(c), atol=1e-3)
    assert torch.allclose(x.std(dim=(0, 2, 3), unbiased=False), torch.ones(c), atol=1e-3)


def test_npz_float_inputs(tmp_path):
    unit = tmp_path / "unit.npz"
    _write_npz(unit, dtype=np.float32)
    s = npz(str(unit))
    assert s.train.pixels.dtype == torch.float32 and s.train.pixel_max == 1.0
    assert s.train.num_classes == 3 and s.train.class_names == ("0", "1", "2")
    wide = tmp_path / "wide.npz"
    rng = np.random.default_rng(1)
    np.savez(
        wide,
        x_train=rng.uniform(0, 255, size=(12, 5, 5, 3)),
        y_train=np.arange(12) % 4,
        x_test=rng.uniform(0, 255, size=(4, 5, 5, 3)),
        y_test=np.arange(4) % 4,
    )
    s = npz(str(wide))
    assert s.train.pixels.dtype == torch.float32 and s.train.pixel_max == 255.0
    assert s.train.pixels.shape == (12, 3, 5, 5) and s.test.num_classes == 4


def test_npz_names_stats_and_flip(tmp_path):
    path = tmp_path / "whatever.npz"
    _write_npz(path)
    s = npz(str(path), name="mnist")
    assert s.train.mean == (0.1307,) and s.train.std == (0.3081,) and s.train.allow_flip is False
    assert s.train.name == "mnist"
    s = npz(str(path), name="fashion-mnist")
    assert s.train.mean == (0.2861,) and s.train.allow_flip is True
    s = npz(str(path), name="mnist", normalize="train")
    assert s.train.mean != (0.1307,)
    s = npz(str(path), name="svhn_gray")  # unknown name, but no flips for digits
    assert s.train.allow_flip is False
    rgb = tmp_path / "cifar10_mini.npz"
    _write_npz(rgb, rgb=True)
    s = npz(str(rgb))
    assert s.train.mean == (0.4914, 0.4822, 0.4465) and s.train.allow_flip is True
    s = npz(str(rgb), name="cifar100")
    assert s.train.std == (0.2673, 0.2564, 0.2762)
    # a known RGB name on grayscale data falls back to train statistics
    s = npz(str(path), name="cifar10")
    assert len(s.train.mean) == 1
    with pytest.raises(DataError, match="normalize"):
        npz(str(path), normalize="imagenet")


def test_npz_source_id_tracks_content(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    _write_npz(a, seed=0)
    _write_npz(b, seed=0)
    sa, sb = npz(str(a)), npz(str(b))
    assert sa.train.source_id == sb.train.source_id
    assert sa.train.source_id != sa.test.source_id
    _write_npz(b, seed=1)
    assert npz(str(b)).train.source_id != sa.train.source_id
    # same pixels, different labels -> different id
    arrays = dict(np.load(a))
    arrays["y_train"] = (arrays["y_train"] + 1) % 3
    np.savez(b, **arrays)
    assert npz(str(b)).train.source_id != sa.train.source_id


# ---------------------------------------------------------------------------------------
# npz bad inputs
# ---------------------------------------------------------------------------------------
def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


def test_npz_missing_file_and_root(tmp_path):
    with pytest.raises(DataError, match="not found") as e:
        npz(str(tmp_path / "nope.npz"))
    _one_line(e)
    with pytest.raises(DataError, match="--data-root"):
        npz(None)
    bad = tmp_path / "garbage.npz"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match="zip"):
        npz(str(bad))


def test_npz_missing_key(tmp_path):
    path = tmp_path / "m.npz"
    _write_npz(path, y_test=None)
    with pytest.raises(DataError, match="y_test") as e:
        npz(str(path))
    _one_line(e)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_npz_non_finite(tmp_path, bad):
    path = tmp_path / "f.npz"
    arrays = _write_npz(path, dtype=np.float32)
    arrays["x_test"][0, 0, 0] = bad
    np.savez(path, **arrays)
    with pytest.raises(DataError, match="NaN or inf") as e:
        npz(str(path))
    _one_line(e)


def test_npz_negative_or_too_large_pixels(tmp_path):
    path = tmp_path / "n.npz"
    arrays = _write_npz(path, dtype=np.float32)
    arrays["x_train"][0, 0, 0] = -0.5
    np.savez(path, **arrays)
    with pytest.raises(DataError, match="minimum"):
        npz(str(path))
    arrays["x_train"][0, 0, 0] = 300.0
    np.savez(path, **arrays)
    with pytest.raises(DataError, match="maximum"):
        npz(str(path))


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("y_train", lambda y: y - 1, ">= 0"),
        ("y_test", lambda y: np.where(np.arange(len(y)) == 0, 7, y), "out of range"),
        ("y_train", lambda y: y[:-1], "lengths must match"),
        ("y_train", lambda y: y.reshape(-1, 2), "1-D"),
        ("y_train", lambda y: y + 0.5, "integer"),
        ("y_train", lambda y: np.zeros_like(y), "at least 2"),
        ("x_train", lambda x: x[:, :, :4], "train images are"),
        ("x_train", lambda x: x[..., None, None], "shape"),
        ("x_test", lambda x: x[:0], "empty"),
    ],
)
def test_npz_bad_arrays(tmp_path, key, value, match):
    path = tmp_path / "bad.npz"
    arrays = _write_npz(path, classes=np.array(["a", "b", "c"]))
    arrays[key] = value(arrays[key])
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=match) as e:
        npz(str(path))
    _one_line(e)


def test_npz_labels_beyond_classes(tmp_path):
    path = tmp_path / "c.npz"
    _write_npz(path, classes=np.array(["a", "b"]))  # labels go up to 2
    with pytest.raises(DataError, match="out of range"):
        npz(str(path))


def test_npz_object_array_needs_pickle(tmp_path):
    path = tmp_path / "obj.npz"
    arrays = _write_npz(path)
    arrays["x_train"] = np.array([arrays["x_train"][i] for i in range(len(arrays["x_train"]))] + [None], dtype=object)
    np.savez(path, **arrays)
    with pytest.raises(DataError, match="pickle") as e:
        npz(str(path))
    _one_line(e)


# ---------------------------------------------------------------------------------------
# torchvision layouts
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn, key", [(mnist, "mnist"), (fashion_mnist, "fashion-mnist"), (cifar10, "cifar10"), (cifar100, "cifar100")])
def test_torchvision_missing_root(tmp_path, fn, key):
    for root in (None, str(tmp_path / "absent"), str(tmp_path)):
        with pytest.raises(DataError, match="--data-root") as e:
            fn(root)
        msg = _one_line(e)
        assert f"'{key}'" in msg and "nothing is downloaded" in msg


def _write_idx(path: Path, array: np.ndarray) -> None:
    code = 0x08  # unsigned byte
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_torchvision_layout(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    xtr, xte = rng.integers(0, 256, (30, 28, 28)), rng.integers(0, 256, (10, 28, 28))
    ytr, yte = np.arange(30) % 10, np.arange(10) % 10
    _write_idx(raw / "train-images-idx3-ubyte", xtr)
    _write_idx(raw / "train-labels-idx1-ubyte", ytr)
    _write_idx(raw / "t10k-images-idx3-ubyte", xte)
    _write_idx(raw / "t10k-labels-idx1-ubyte", yte)
    for root in (tmp_path, tmp_path / "MNIST"):  # the parent or the dataset folder itself
        s = mnist(str(root))
        _check_split_invariants(s.train)
        assert s.train.pixels.shape == (30, 1, 28, 28) and s.train.pixels.dtype == torch.uint8
        assert np.array_equal(s.test.pixels[:, 0].numpy(), xte)
        assert s.train.labels.tolist() == ytr.tolist()
        assert s.train.mean == (0.1307,) and s.train.allow_flip is False and s.train.name == "mnist"
        assert s.train.num_classes == 10 and s.train.class_names[0].startswith("0")


# ---------------------------------------------------------------------------------------
# image folders
# ---------------------------------------------------------------------------------------
def _png_tree(root: Path, splits=("train", "val"), classes=("zebra", "apple"), per_class=3, size=(20, 12)):
    from PIL import Image

    for split in splits:
        for ci, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for j in range(per_class):
                arr = np.full((size[1], size[0], 3), 40 * ci + 10 * j, dtype=np.uint8)
                Image.fromarray(arr).save(d / f"img{j}.png")
    (root / splits[0] / classes[0] / "notes.txt").write_text("ignored")


def test_imagefolder_tree(tmp_path):
    _png_tree(tmp_path)
    s = imagefolder(str(tmp_path), im_size=8)
    for ds in (s.train, s.test):
        _check_split_invariants(ds)
        assert ds.pixels.shape == (6, 3, 8, 8) and ds.pixels.dtype == torch.uint8
        assert ds.class_names == ("apple", "zebra")  # sorted folder names
        assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
        assert ds.mean == (0.485, 0.456, 0.406) and ds.allow_flip is True
    # sorted (class, filename): apple img0..img2 (value 40+10j), then zebra (10j)
    assert s.train.pixels[:, 0, 0, 0].tolist() == [40, 50, 60, 0, 10, 20]


def test_imagefolder_test_fallback_and_errors(tmp_path):
    _png_tree(tmp_path, splits=("train", "test"))
    s = imagefolder(str(tmp_path), im_size=4)
    assert len(s.test) == 6 and s.test.pixels.shape[2:] == (4, 4)

    missing = tmp_path / "missing_class"
    _png_tree(missing)
    import shutil

    shutil.rmtree(missing / "val" / "zebra")
    with pytest.raises(DataError, match="zebra") as e:
        imagefolder(str(missing))
    _one_line(e)

    with pytest.raises(DataError, match="not found"):
        imagefolder(str(tmp_path / "absent"))
    with pytest.raises(DataError, match="--data-root"):
        imagefolder(None)

    one = tmp_path / "one_class"
    _png_tree(one, classes=("only",))
    with pytest.raises(DataError, match="at least 2"):
        imagefolder(str(one))

    broken = tmp_path / "broken"
    _png_tree(broken)
    (broken / "train" / "apple" / "img9.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image"):
        imagefolder(str(broken))


# ---------------------------------------------------------------------------------------
# shared real data (slow)
# ---------------------------------------------------------------------------------------
def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return path


@pytest.mark.slow
@pytest.mark.real_data
def test_shared_mnist_npz():
    s = npz(str(_shared("mnist.npz")))
    tr, te = s.train, s.test
    assert len(tr) == 60000 and len(te) == 10000
    assert tr.pixels.shape == (60000, 1, 28, 28) and tr.pixels.dtype == torch.uint8
    assert tr.class_counts()[:3] == [5923, 6742, 5958]
    mean = float(tr.pixels.double().mean()) / 255.0
    assert abs(mean - 0.1307) < 5e-4
    assert tr.mean == (0.1307,) and tr.allow_flip is False
    assert tr.pixels.nbytes + te.pixels.nbytes < 0.2e9
    assert tr.class_names == tuple(str(i) for i in range(10))


@pytest.mark.slow
@pytest.mark.real_data
def test_shared_fashion_and_cifar_npz():
    s = npz(str(_shared("fashion_mnist.npz")))
    assert len(s.train) == 60000 and s.train.class_counts() == [6000] * 10 and s.train.allow_flip is True
    assert s.train.mean == (0.2861,)
    s = npz(str(_shared("cifar10_exact_subset.npz")))
    assert s.train.pixels.shape == (4000, 3, 32, 32) and len(s.test) == 1000
    assert s.train.mean == (0.4914, 0.4822, 0.4465) and s.train.class_names[0] == "airplane"


def test_npz_per_class_limits_keep_first_images_and_source_positions(tmp_path):
    path = tmp_path / "set.npz"
    arrays = _write_npz(path, n_train=30, n_test=12, num_classes=3)
    s = npz(str(path), train_per_class=4, test_per_class=2)
    assert len(s.train) == 12 and len(s.test) == 6
    for c in range(3):
        want = np.flatnonzero(arrays["y_train"] == c)[:4]
        got = s.train.index[s.train.labels == c].numpy()
        assert np.array_equal(got, want)  # source positions, first four of the class
    back = s.train.pixels[:, 0].numpy()
    assert np.array_equal(back, arrays["x_train"][s.train.index.numpy()])
    assert torch.equal(s.test.labels.bincount(), torch.full((3,), 2))
    full = npz(str(path))
    assert torch.equal(full.train.index, torch.arange(30))
    assert s.train.fingerprint() != full.train.fingerprint()
    with pytest.raises(DataError, match="train_per_class must be >= 0"):
        npz(str(path), train_per_class=-1)
