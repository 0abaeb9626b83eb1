"""`pd-run prepare`: ImageNet subsets into one cached tensor file and Tiny ImageNet's val/ re-laid by class,
built from small fake trees in a temporary folder (no ImageNet is shipped or downloaded), then run end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pd_plugins.cli import cli
from pd_plugins.data.builtin import IMAGENET_STATS, imagefolder
from pd_plugins.data.imagenet_subsets import (FORMAT, SUBSETS, imagenette, imagewoof, load_subset, prepare_subset,
                                              prepared_file)
from pd_plugins.data.tiny_imagenet import ANNOTATIONS, MARKER, relayout_val
from pd_plugins.errors import DataError, OptionsError, StageExistsError

ROOT = Path(__file__).resolve().parents[1]
TINY_RUN = ["--distiller", "dm", "-D", "iterations=2", "-D", "batch_real=8", "--ipc", "1", "--model-option",
            "depth=2", "-E", "epochs=2", "--eval-repeats", "1", "--no-progress", "--budget", "quick", "--seed", "0"]


def _colour(label: int) -> tuple[int, int, int]:
    """A colour per class far enough apart that JPEG keeps them distinguishable."""
    return (25 * label, 250 - 20 * label, 120)


def _save(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=95)


def _imagenet_tree(root: Path, wnids, *, train=3, val=2, size=(40, 30), extra=("n09999999",)) -> Path:
    """ROOT/train/<wnid>/*.JPEG and ROOT/val/<wnid>/*.JPEG, a flat colour per class (label = list position)."""
    for label, wnid in enumerate((*wnids, *extra)):
        for split, count in (("train", train), ("val", val)):
            for j in range(count):
                rgb = np.zeros((size[1], size[0], 3), np.uint8) + np.array(_colour(label % 10), np.uint8)
                _save(root / split / wnid / f"{wnid}_{j}.JPEG", rgb)
    return root


def _one_line(exc) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


@pytest.fixture(scope="module")
def nette_root(tmp_path_factory):
    return _imagenet_tree(tmp_path_factory.mktemp("imagenet"), SUBSETS["imagenette"])


# ---------------------------------------------------------------------------------------
# class lists
# ---------------------------------------------------------------------------------------
def test_subset_class_lists_are_ten_distinct_wnids():
    assert set(SUBSETS) == {"imagenette", "imagewoof", "imagefruit", "imagemeow", "imagesquawk", "imageyellow"}
    for name, wnids in SUBSETS.items():
        assert len(wnids) == len(set(wnids)) == 10, name
        assert all(len(w) == 9 and w[0] == "n" and w[1:].isdigit() for w in wnids), name
    # fastai's Imagenette is the same ten classes (folder names of imagenette2)
    assert sorted(SUBSETS["imagenette"])[0] == "n01440764" and SUBSETS["imagenette"][-1] == "n03888257"
    # imageyellow shares banana, lemon (imagefruit) and lion (imagemeow), at MTT's positions
    yellow, fruit = SUBSETS["imageyellow"], SUBSETS["imagefruit"]
    assert yellow[2] == fruit[1] and yellow[3] == fruit[4]
    assert SUBSETS["imageyellow"][7] == SUBSETS["imagemeow"][5]


# ---------------------------------------------------------------------------------------
# preparing a subset
# ---------------------------------------------------------------------------------------
def test_prepare_writes_one_tensor_file_in_mtt_label_order(nette_root, tmp_path):
    info = prepare_subset("ImageNette", nette_root, tmp_path, resolution=32)
    path = tmp_path / "imagenette-32.pt"
    assert info["file"] == str(path) and info["reused"] is False and prepared_file(tmp_path, "imagenette", 32) == path
    obj = torch.load(path, weights_only=True)
    assert obj["format"] == FORMAT and obj["subset"] == "imagenette" and obj["resize"] == "squash"
    assert obj["wnids"] == list(SUBSETS["imagenette"]) and obj["source_root"] == str(nette_root.resolve())
    assert obj["counts"] == {"train": 30, "test": 20}  # the extra class is left out
    for split, per in (("train", 3), ("test", 2)):
        x, y = obj[f"x_{split}"], obj[f"y_{split}"]
        assert x.dtype == torch.uint8 and x.shape == (10 * per, 3, 32, 32)
        assert y.tolist() == [c for c in range(10) for _ in range(per)]
        for c in range(10):  # label c holds the colour of the c-th WNID of MTT's list
            mean = x[y == c].float().mean(dim=(0, 2, 3))
            assert torch.allclose(mean, torch.tensor(_colour(c), dtype=torch.float32), atol=3), (c, mean)
    # nothing left next to the file but its lock's absence
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imagenette-32.pt"]


def test_resize_modes_squash_and_center_crop(tmp_path):
    wnids = SUBSETS["imagewoof"]
    root = _imagenet_tree(tmp_path / "in", wnids, train=1, val=1, extra=())
    bands = np.zeros((32, 96, 3), np.uint8)
    bands[:, :32] = (255, 0, 0)
    bands[:, 32:64] = (0, 255, 0)
    bands[:, 64:] = (0, 0, 255)
    _save(root / "train" / wnids[0] / f"{wnids[0]}_0.JPEG", bands)
    squash = prepare_subset("imagewoof", root, tmp_path / "s", resolution=32, resize="squash")
    crop = prepare_subset("imagewoof", root, tmp_path / "c", resolution=32, resize="center-crop")
    xs = torch.load(squash["file"], weights_only=True)["x_train"][0].float()
    xc = torch.load(crop["file"], weights_only=True)["x_train"][0].float()
    # squash keeps all three bands side by side; the centre crop keeps the green middle only
    assert xs[:, 16, 3].argmax() == 0 and xs[:, 16, 16].argmax() == 1 and xs[:, 16, 29].argmax() == 2
    assert all(xc[:, 16, col].argmax() == 1 for col in (1, 16, 30))


def test_second_run_reuses_and_overwrite_rebuilds(nette_root, tmp_path):
    first = prepare_subset("imagenette", nette_root, tmp_path, resolution=32)
    stat = os.stat(first["file"])
    again = prepare_subset("imagenette", nette_root, tmp_path, resolution=32)
    assert again["reused"] is True and again["counts"] == first["counts"]
    assert os.stat(first["file"]).st_ino == stat.st_ino and os.stat(first["file"]).st_mtime_ns == stat.st_mtime_ns
    with pytest.raises(StageExistsError, match="resize 'squash' \\(asked 'center-crop'\\).*--overwrite") as e:
        prepare_subset("imagenette", nette_root, tmp_path, resolution=32, resize="center-crop")
    _one_line(e)
    rebuilt = prepare_subset("imagenette", nette_root, tmp_path, resolution=32, resize="center-crop", overwrite=True)
    assert rebuilt["reused"] is False and os.stat(first["file"]).st_ino != stat.st_ino
    Path(first["file"]).write_bytes(b"half a file")
    with pytest.raises(StageExistsError, match="not a readable prepared subset"):
        prepare_subset("imagenette", nette_root, tmp_path, resolution=32, resize="center-crop")


def test_a_failed_prepare_leaves_nothing_behind(tmp_path):
    root = _imagenet_tree(tmp_path / "in", SUBSETS["imagemeow"], train=2, val=1, extra=())
    (root / "val" / SUBSETS["imagemeow"][4] / "broken.JPEG").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    with pytest.raises(DataError, match="cannot read image .*broken.JPEG") as e:
        prepare_subset("imagemeow", root, out, resolution=32)
    _one_line(e)
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize("case, match", [
    ("no_train", r"has no train/ folder \(give the folder that holds train/<wnid>/ and val/<wnid>/\)"),
    ("split_given", r"has no train/ folder \(this is a split folder; give its parent"),
    ("kaggle", r"has no train/ folder \(give .*ILSVRC/Data/CLS-LOC\)"),
    ("flat_val", r"val/ is not laid out by class: it holds 3 images directly"),
    ("missing", r"3 of the 10 imagefruit classes missing from .*/train \(n07753275, n07753592, n07745940; "
                r"it has 7 class folders\)"),
    ("empty", r"class folder\(s\) n07718472 under .*/val hold no images"),
])
def test_wrong_imagenet_roots_give_one_line(tmp_path, case, match):
    wnids = SUBSETS["imagefruit"]
    root = tmp_path / "root"
    if case in ("no_train", "kaggle"):
        (root / "val").mkdir(parents=True)
        if case == "kaggle":
            (root / "ILSVRC" / "Data" / "CLS-LOC").mkdir(parents=True)
    elif case == "split_given":
        _imagenet_tree(root, wnids, train=1, val=1)
        root = root / "val"
    elif case == "flat_val":
        _imagenet_tree(root, wnids, train=1, val=0, extra=())
        for j in range(3):
            _save(root / "val" / f"ILSVRC2012_val_{j}.JPEG", np.zeros((8, 8, 3), np.uint8))
    elif case == "missing":
        _imagenet_tree(root, wnids[3:], train=1, val=1, extra=())
    else:
        _imagenet_tree(root, wnids, train=1, val=1, extra=())
        (root / "val" / wnids[8] / f"{wnids[8]}_0.JPEG").unlink()
    with pytest.raises(DataError, match=match) as e:
        prepare_subset("imagefruit", root, tmp_path / "out", resolution=32)
    _one_line(e)


def test_bad_names_and_resolutions(nette_root, tmp_path):
    with pytest.raises(OptionsError, match="unknown ImageNet subset 'imagecat'; use one of: imagenette"):
        prepare_subset("imagecat", nette_root, tmp_path)
    with pytest.raises(OptionsError, match="resolution must be one of 32, 64, 128, got 48"):
        prepare_subset("imagenette", nette_root, tmp_path, resolution=48)
    with pytest.raises(OptionsError, match="resize must be one of"):
        prepare_subset("imagenette", nette_root, tmp_path, resize="stretch")
    with pytest.raises(DataError, match="ImageNet root not found"):
        prepare_subset("imagenette", tmp_path / "absent", tmp_path)


# ---------------------------------------------------------------------------------------
# the datasets that read the prepared file
# ---------------------------------------------------------------------------------------
def test_subset_dataset_reads_the_prepared_file(nette_root, tmp_path):
    info = prepare_subset("imagenette", nette_root, tmp_path, resolution=32)
    raw = torch.load(info["file"], weights_only=True)
    for root in (info["file"], str(tmp_path)):  # the file, or the folder holding it
        splits = imagenette(root)
        assert len(splits.train) == 30 and len(splits.test) == 20 and splits.train.num_classes == 10
        assert splits.train.class_names == SUBSETS["imagenette"] and splits.train.im_size == (32, 32)
        assert (splits.train.mean, splits.train.std) == IMAGENET_STATS and splits.train.allow_flip
        assert torch.equal(splits.train.pixels, raw["x_train"]) and torch.equal(splits.test.labels, raw["y_test"])
    assert torch.equal(load_subset(info["file"], "imagenette", resolution=32).train.pixels, raw["x_train"])


def test_registered_subset_datasets_conform(host, nette_root, tmp_path):
    from pd_plugins.testing import check_dataset

    info = prepare_subset("imagenette", nette_root, tmp_path, resolution=32)
    registry = host.registries()["dataset"]
    assert all(registry.get(name).load().__name__ == name for name in SUBSETS)
    factory = registry.load("imagenette")
    assert check_dataset(factory, info["file"]).checked == ["splits", "determinism"]


def test_subset_dataset_refuses_the_wrong_file(nette_root, tmp_path):
    info = prepare_subset("imagenette", nette_root, tmp_path, resolution=32)
    with pytest.raises(DataError, match="holds 'imagenette', not 'imagewoof'") as e:
        imagewoof(info["file"])
    _one_line(e)
    with pytest.raises(DataError, match="is 32x32, asked for 64"):
        imagenette(info["file"], resolution=64)
    with pytest.raises(DataError, match="holds no imagewoof-32.pt or imagewoof-64.pt or imagewoof-128.pt"):
        imagewoof(str(tmp_path))
    with pytest.raises(DataError, match="pd-run prepare subset imagenette"):
        imagenette(None)
    prepare_subset("imagenette", nette_root, tmp_path, resolution=64)
    with pytest.raises(DataError, match="holds imagenette-32.pt, imagenette-64.pt; choose one with "
                                        "--dataset-option resolution=N"):
        imagenette(str(tmp_path))
    assert imagenette(str(tmp_path), resolution=64).train.im_size == (64, 64)
    other = tmp_path / "other.pt"
    torch.save({"x_train": torch.zeros(1)}, other)
    with pytest.raises(DataError, match="is not a prepared ImageNet subset"):
        imagenette(str(other))
    bad = dict(torch.load(info["file"], weights_only=True))
    bad["x_test"] = bad["x_test"].float()
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(DataError, match="x_test must be uint8"):
        imagenette(str(tmp_path / "bad.pt"))


# ---------------------------------------------------------------------------------------
# Tiny ImageNet
# ---------------------------------------------------------------------------------------
def _wnid(i: int) -> str:
    return f"n{1000000 + i:08d}"


def _tiny_tree(root: Path, classes: int, *, train=2, val=1) -> dict[str, str]:
    """tiny-imagenet-200's layout: train/<wnid>/images/, train/<wnid>/<wnid>_boxes.txt, flat val/images/ with
    val/val_annotations.txt; returns {val file: wnid}."""
    labels = {}
    lines = []
    for c in range(classes):
        wnid = _wnid(c)
        rgb = np.zeros((8, 8, 3), np.uint8) + np.array(_colour(c % 10), np.uint8)
        for j in range(train):
            _save(root / "train" / wnid / "images" / f"{wnid}_{j}.JPEG", rgb)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for j in range(val):
            name = f"val_{c * val + j}.JPEG"
            _save(root / "val" / "images" / name, rgb)
            labels[name] = wnid
            lines.append(f"{name}\t{wnid}\t0\t0\t7\t7")
    (root / "val" / ANNOTATIONS).write_text("\n".join(lines) + "\n")
    (root / "wnids.txt").write_text("\n".join(_wnid(c) for c in range(classes)) + "\n")
    return labels


def _listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_tiny_val_relaid_by_annotations_and_reused(tmp_path):
    labels = _tiny_tree(tmp_path, 3, val=2)
    inode = os.stat(tmp_path / "val" / "images" / "val_0.JPEG").st_ino
    info = relayout_val(tmp_path, expect_classes=3)
    assert info == {"val": str(tmp_path / "val"), "reused": False, "classes": 3, "images": 6}
    val = tmp_path / "val"
    assert not (val / "images").exists() and (val / ANNOTATIONS).is_file() and (val / MARKER).is_file()
    for name, wnid in labels.items():
        assert (val / wnid / name).is_file()
    assert os.stat(val / _wnid(0) / "val_0.JPEG").st_ino == inode  # hard-linked, not copied
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no build, original or lock left
    before = _listing(tmp_path)
    again = relayout_val(tmp_path, expect_classes=3)
    assert again["reused"] is True and again["images"] == 6 and _listing(tmp_path) == before
    # the imagefolder dataset now reads both splits (train/<wnid>/images/ searched recursively, hidden folders not)
    _save(tmp_path / "train" / _wnid(1) / ".thumbs" / "hidden.JPEG", np.zeros((8, 8, 3), np.uint8))
    splits = imagefolder(str(tmp_path), im_size=8)
    assert splits.train.class_names == tuple(_wnid(c) for c in range(3))
    assert splits.train.labels.tolist() == [0, 0, 1, 1, 2, 2] and splits.test.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_tiny_checks_give_one_line_and_leave_val_untouched(tmp_path):
    def fresh(name):
        root = tmp_path / name
        _tiny_tree(root, 3)
        return root

    cases = []
    root = fresh("count")
    cases.append((root, 200, r"train/ has 3 class folders; Tiny ImageNet has 200"))
    root = fresh("no_annotations")
    (root / "val" / ANNOTATIONS).unlink()
    cases.append((root, 3, r"val/val_annotations.txt is missing"))
    root = fresh("unlabelled")
    _save(root / "val" / "images" / "val_99.JPEG", np.zeros((8, 8, 3), np.uint8))
    cases.append((root, 3, r"1 image\(s\) in val/images/ without an annotation \(val_99.JPEG\)"))
    root = fresh("absent")
    (root / "val" / "images" / "val_1.JPEG").unlink()
    cases.append((root, 3, r"1 annotated file\(s\) missing from val/images/ \(val_1.JPEG\)"))
    root = fresh("unknown_class")
    with open(root / "val" / ANNOTATIONS, "a") as fh:
        fh.write("val_99.JPEG\tn99999999\t0\t0\t1\t1\n")
    _save(root / "val" / "images" / "val_99.JPEG", np.zeros((8, 8, 3), np.uint8))
    cases.append((root, 3, r"1 annotated class\(es\) with no train/ folder \(n99999999\)"))
    root = fresh("too_few")
    text = (root / "val" / ANNOTATIONS).read_text().replace(_wnid(2), _wnid(1))
    (root / "val" / ANNOTATIONS).write_text(text)
    cases.append((root, 3, r"val_annotations.txt labels 2 classes; Tiny ImageNet has 3"))
    root = fresh("malformed")
    (root / "val" / ANNOTATIONS).write_text("val_0.JPEG n01000000\n")
    cases.append((root, 3, r"val_annotations.txt line 1 is not 'file<TAB>wnid<TAB>...'"))
    root = fresh("no_train")
    import shutil

    shutil.rmtree(root / "train")
    cases.append((root, 3, r"has no train/ folder \(give the tiny-imagenet-200 folder\)"))
    for root, expect, match in cases:
        before = _listing(root)
        with pytest.raises(DataError, match=match) as e:
            relayout_val(root, expect_classes=expect)
        _one_line(e)
        assert _listing(root) == before, root.name


def test_tiny_interrupted_swap_is_undone_and_finished(tmp_path):
    labels = _tiny_tree(tmp_path, 3)
    os.rename(tmp_path / "val", tmp_path / ".val.original-abc")  # stopped between the two renames
    (tmp_path / ".val.relayout-def").mkdir()  # an unfinished build
    info = relayout_val(tmp_path, expect_classes=3)
    assert info["reused"] is False and info["images"] == 3
    assert all((tmp_path / "val" / w / n).is_file() for n, w in labels.items())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_tiny_val_with_stray_class_folders_is_refused(tmp_path):
    _tiny_tree(tmp_path, 3)
    relayout_val(tmp_path, expect_classes=3)
    (tmp_path / "val" / "n55555555").mkdir()
    with pytest.raises(DataError, match=r"val/ has 4 class folders, expected 3 \(unknown: n55555555\)"):
        relayout_val(tmp_path, expect_classes=3)


# ---------------------------------------------------------------------------------------
# the command line, end to end
# ---------------------------------------------------------------------------------------
def _invoke(args):
    return CliRunner().invoke(cli, args)


def test_cli_prepares_a_subset_and_runs_on_it(nette_root, tmp_path):
    out = tmp_path / "prepared"
    args = ["prepare", "subset", "imagenette", "--imagenet-root", str(nette_root), "--resolution", "32",
            "--out", str(out), "--no-progress"]
    res = _invoke(args)
    assert res.exit_code == 0, res.output
    assert f"wrote {out / 'imagenette-32.pt'}" in res.output
    res = _invoke([*args, "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["reused"] is True and summary["train"] == 30 and summary["test"] == 20
    run = tmp_path / "run"
    res = _invoke(["run", "--dataset", "imagenette", "--data-root", str(out), "--out", str(run), "--json",
                   *TINY_RUN])
    assert res.exit_code == 0, res.output
    result = json.loads(res.output[res.output.index("{"):])
    assert result["dataset"] == "imagenette" and result["train_size"] == 30 and result["test_size"] == 20
    assert result["synthetic"] == 10 and result["acc_mean"] > 0.1  # a colour per class: above chance (10 %)
    assert json.loads((run / "config.json").read_text())["data_root"] == str(out)


def test_cli_wrong_root_is_one_error_line(tmp_path):
    res = _invoke(["prepare", "subset", "imagewoof", "--imagenet-root", str(tmp_path), "--out", str(tmp_path)])
    assert res.exit_code != 0
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ImageNet root") and "has no train/ folder" in lines[0]
    res = _invoke(["prepare", "tiny-imagenet", str(tmp_path)])
    assert res.exit_code != 0 and res.output.count("\n") == 1 and "has no train/ folder" in res.output


def test_cli_relays_tiny_imagenet_with_200_classes_and_runs_on_it(tmp_path):
    labels = _tiny_tree(tmp_path / "tiny", 200, train=1, val=1)
    root = tmp_path / "tiny"
    res = _invoke(["prepare", "tiny-imagenet", str(root)])
    assert res.exit_code == 0, res.output
    assert "re-laid by class" in res.output
    res = _invoke(["prepare", "tiny-imagenet", str(root), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["reused"] is True
    splits = imagefolder(str(root), im_size=8)
    assert splits.test.num_classes == 200 and len(splits.test) == 200
    names = splits.test.class_names
    assert [names[y] for y in splits.test.labels.tolist()] == [labels[f"val_{c}.JPEG"] for c in range(200)]
    run = tmp_path / "run"
    res = _invoke(["run", "--dataset", "imagefolder", "--data-root", str(root), "--dataset-option", "im_size=8",
                   "--out", str(run), "--json", *TINY_RUN])
    assert res.exit_code == 0, res.output


def test_prepare_help_and_dataset_list_do_not_import_torch():
    code = ("import sys, json\nfrom click.testing import CliRunner\nfrom pd_plugins.cli import cli\n"
            "for argv in (['prepare', '--help'], ['prepare', 'subset', '--help'], ['list', 'datasets']):\n"
            "    res = CliRunner().invoke(cli, argv)\n    assert res.exit_code == 0, res.output\n"
            "    assert argv[0] != 'list' or 'imagenette' in res.output\n"
            "print(json.dumps('torch' in sys.modules))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PD_LOAD_PLUGINS": ""}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) is False
