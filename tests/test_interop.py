"""Format round trips and every bad-input case of export / eval --images / run --subset.

No distillation runs here (see test_interop_run.py); sets are built from the digits split.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from pd_plugins.cli import cli
from pd_plugins.data.interop import (SyntheticSet, read_synthetic, write_imagefolder, write_pt, write_safetensors,
                                export_distilled)


@pytest.fixture(scope="module")
def train():
    from pd_plugins.data.builtin import digits

    return digits(None).train


def make_set(train, per_class=2, soft=False, lr=0.0123) -> SyntheticSet:
    g = torch.Generator().manual_seed(1)
    pos = torch.cat([p[:per_class] for p in train.by_class()])
    images = train.images(pos) + 0.3 * torch.randn(len(pos), *train.pixels.shape[1:], generator=g)
    labels = train.labels[pos]
    if soft:
        labels = torch.softmax(torch.randn(len(pos), train.num_classes, generator=g) + 5 * torch.nn.functional.one_hot(labels, train.num_classes), 1)
    return SyntheticSet(images=images, labels=labels, mean=train.mean, std=train.std,
                        class_names=train.class_names, lr=lr)


@pytest.mark.parametrize("writer,name", [(write_pt, "s.pt"), (write_safetensors, "s.safetensors")])
@pytest.mark.parametrize("soft", [False, True])
def test_tensor_formats_round_trip_bit_exactly(tmp_path, train, writer, name, soft):
    syn = make_set(train, soft=soft)
    writer(syn, train, tmp_path / name)
    back, fmt = read_synthetic(tmp_path / name, train)
    assert fmt == Path(name).suffix[1:]
    assert torch.equal(back.images, syn.images) and back.images.dtype == torch.float32
    assert torch.equal(back.labels, syn.labels) and back.labels.dtype == syn.labels.dtype
    assert back.mean == tuple(train.mean) and back.std == tuple(train.std)
    assert back.class_names == tuple(train.class_names) and back.lr == syn.lr
    ds = back.as_dataset(train)
    assert torch.equal(ds.images(), syn.images)


def test_pt_loads_with_weights_only(tmp_path, train):
    write_pt(make_set(train), train, tmp_path / "s.pt")
    obj = torch.load(tmp_path / "s.pt", weights_only=True)
    assert set(obj) == {"images", "labels", "mean", "std", "class_names", "syn_lr"}
    assert obj["labels"].dtype == torch.int64 and obj["images"].shape[1:] == train.pixels.shape[1:]


def test_imagefolder_round_trip_within_one_quantisation_step(tmp_path, train):
    from PIL import Image

    syn = make_set(train, per_class=3)
    write_imagefolder(syn, train, tmp_path / "f")
    folders = sorted(p.name for p in (tmp_path / "f").iterdir() if p.is_dir())
    assert folders == sorted(train.class_names)
    meta = json.loads((tmp_path / "f" / "dataset.json").read_text())
    assert meta["class_names"] == list(train.class_names) and meta["channels"] == 1
    assert meta["im_size"] == [8, 8] and meta["mean"] == list(train.mean) and meta["std"] == list(train.std)
    png = next((tmp_path / "f" / "3").iterdir())
    with Image.open(png) as img:
        assert img.format == "PNG" and img.mode == "L" and img.size == (8, 8)
    back, _ = read_synthetic(tmp_path / "f", train)
    assert torch.equal(back.labels, syn.labels)  # class-ordered input keeps its order
    a = train.to_unit(syn.images).clamp(0, 1)
    b = train.to_unit(back.images)
    assert float((a - b).abs().max()) <= 0.5 / 255 + 1e-6
    # without dataset.json the folder still reads (class folders matched by name)
    (tmp_path / "f" / "dataset.json").unlink()
    again, _ = read_synthetic(tmp_path / "f", train)
    assert torch.equal(again.images, back.images)


def test_renormalises_a_set_saved_with_other_statistics(tmp_path, train):
    syn = make_set(train)
    other = SyntheticSet(images=(train.to_unit(syn.images) - 0.5) / 0.25, labels=syn.labels, mean=(0.5,), std=(0.25,))
    write_pt(other, train, tmp_path / "o.pt")
    back, _ = read_synthetic(tmp_path / "o.pt", train)
    assert torch.allclose(back.as_dataset(train).images(), syn.images, atol=1e-5)


# ----------------------------------------------------------------------------------------
# bad input through the CLI: exit code 1, one line, nothing written

def invoke(args):
    res = CliRunner().invoke(cli, args)
    return res.exit_code, res.output.strip().splitlines()


def eval_args(path, out):
    return ["eval", "--images", str(path), "--dataset", "digits", "--out", str(out), "--eval-repeats", "1",
            "-E", "epochs=1", "--no-progress"]


def assert_rejected(args, out, words):
    code, lines = invoke(args)
    assert code == 1, lines
    assert len(lines) == 1 and lines[0].startswith("Error:"), lines
    assert all(w in lines[0] for w in words), lines
    assert not Path(out).exists()
    assert not [p for p in Path(out).parent.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


def folder(tmp_path, train, name="f"):
    write_imagefolder(make_set(train), train, tmp_path / name)
    return tmp_path / name


def test_rejects_class_folders_not_matching_the_dataset(tmp_path, train):
    f = folder(tmp_path, train)
    (f / "3").rename(f / "three")
    assert_rejected(eval_args(f, tmp_path / "out"), tmp_path / "out", ["do not match", "three"])


def test_rejects_mixed_sizes_and_channel_counts(tmp_path, train):
    from PIL import Image

    f = folder(tmp_path, train)
    Image.new("L", (9, 8)).save(f / "2" / "zz.png")
    assert_rejected(eval_args(f, tmp_path / "out"), tmp_path / "out", ["mixed image sizes"])
    (f / "2" / "zz.png").unlink()
    Image.new("RGB", (8, 8)).save(f / "2" / "zz.png")
    assert_rejected(eval_args(f, tmp_path / "out"), tmp_path / "out", ["mixed"])


def test_rejects_an_empty_class(tmp_path, train):
    f = folder(tmp_path, train)
    for p in (f / "5").iterdir():
        p.unlink()
    assert_rejected(eval_args(f, tmp_path / "out"), tmp_path / "out", ["'5'", "no images"])
    syn = make_set(train)
    keep = syn.labels != 5
    write_pt(SyntheticSet(syn.images[keep], syn.labels[keep], syn.mean, syn.std), train, tmp_path / "e.pt")
    assert_rejected(eval_args(tmp_path / "e.pt", tmp_path / "out"), tmp_path / "out", ["5", "no images"])


def test_rejects_labels_out_of_range(tmp_path, train):
    syn = make_set(train)
    labels = syn.labels.clone()
    labels[0] = train.num_classes
    write_pt(SyntheticSet(syn.images, labels, syn.mean, syn.std), train, tmp_path / "l.pt")
    assert_rejected(eval_args(tmp_path / "l.pt", tmp_path / "out"), tmp_path / "out", ["out of range"])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("writer,name", [(write_pt, "n.pt"), (write_safetensors, "n.safetensors")])
def test_rejects_non_finite_pixels(tmp_path, train, bad, writer, name):
    syn = make_set(train)
    syn.images[3, 0, 2, 2] = bad
    writer(syn, train, tmp_path / name)
    assert_rejected(eval_args(tmp_path / name, tmp_path / "out"), tmp_path / "out", ["NaN or inf"])


def test_rejects_a_pt_that_needs_pickle(tmp_path, train):
    import argparse

    syn = make_set(train)  # a Namespace is an arbitrary object only the full pickle loader rebuilds
    torch.save({"images": syn.images, "labels": syn.labels, "extra": argparse.Namespace(a=1)}, tmp_path / "p.pt")
    assert_rejected(eval_args(tmp_path / "p.pt", tmp_path / "out"), tmp_path / "out", ["weights_only=True"])


def test_rejects_wrong_image_shape(tmp_path, train):
    syn = make_set(train)
    write_pt(SyntheticSet(syn.images[:, :, :4, :4].contiguous(), syn.labels, syn.mean, syn.std), train, tmp_path / "s.pt")
    assert_rejected(eval_args(tmp_path / "s.pt", tmp_path / "out"), tmp_path / "out", ["1x4x4"])


def test_rejects_existing_eval_without_overwrite(tmp_path, train):
    write_pt(make_set(train), train, tmp_path / "s.pt")
    out = tmp_path / "out"
    out.mkdir()
    (out / "eval.json").write_text("{}")
    code, lines = invoke(eval_args(tmp_path / "s.pt", out))
    assert code == 1 and len(lines) == 1 and "exists" in lines[0]
    assert (out / "eval.json").read_text() == "{}"


def test_eval_needs_run_dir_or_images(tmp_path):
    code, lines = invoke(["eval"])
    assert code == 2
    code, lines = invoke(["eval", str(tmp_path), "--seed", "3"])
    assert code == 2 and any("--images only" in line for line in lines)


@pytest.mark.parametrize("content,words", [
    ("source_index\n0\n5\n5\n", ["duplicated", "5"]),
    ("source_index\n0\n99999\n", ["outside the dataset", "99999"]),
    ("source_index\n0\n-1\n", ["outside the dataset"]),
    ("source_index\n0\nabc\n", ["malformed"]),
])
def test_rejects_bad_subset_files(tmp_path, content, words):
    sub = tmp_path / "s.csv"
    sub.write_text(content)
    out = tmp_path / "run"
    assert_rejected(["run", "--subset", str(sub), "--distiller", "none", "--evaluator", "none", "--out", str(out),
                     "--budget", "paper",
                     "--no-progress"], out, words)


def test_rejects_json_subset_with_non_integers(tmp_path):
    sub = tmp_path / "s.json"
    sub.write_text(json.dumps({"source_index": [0, 1.5]}))
    out = tmp_path / "run"
    assert_rejected(["run", "--subset", str(sub), "--distiller", "none", "--evaluator", "none", "--out", str(out), "--budget", "paper"],
                    out, ["integers"])


def test_subset_with_keep_is_refused(tmp_path):
    sub = tmp_path / "s.json"
    sub.write_text("[0, 1, 2]")
    code, lines = invoke(["run", "--subset", str(sub), "--keep", "0.5", "--distiller", "none", "--out", str(tmp_path / "r")])
    assert code == 1 and len(lines) == 1 and "--keep" in lines[0]


@pytest.fixture
def fake_run(tmp_path, train):
    """A run directory holding only what export reads: config.json and distill.pt."""
    from pd_plugins.config import RunConfig
    from pd_plugins.pipeline.runner import Run

    run_dir = tmp_path / "run"
    run = Run(RunConfig(out=str(run_dir), distiller="dm", evaluator="none"))
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(run.config_json(), default=str))
    syn = make_set(train)
    torch.save({"images": syn.images, "labels": syn.labels, "lr": None}, run_dir / "distill.pt")
    return run_dir


def test_export_refuses_an_existing_target(tmp_path, fake_run):
    target = tmp_path / "x.pt"
    target.write_text("keep me")
    code, lines = invoke(["export", str(fake_run), "--format", "pt", "--to", str(target)])
    assert code == 1 and len(lines) == 1 and "--overwrite" in lines[0]
    assert target.read_text() == "keep me"
    code, lines = invoke(["export", str(fake_run), "--format", "pt", "--to", str(target), "--overwrite"])
    assert code == 0, lines
    assert torch.load(target, weights_only=True)["images"].shape[0] == 20


def test_export_soft_labels_to_imagefolder_is_refused_and_writes_nothing(tmp_path, fake_run, train):
    syn = make_set(train, soft=True)
    torch.save({"images": syn.images, "labels": syn.labels, "lr": None}, fake_run / "distill.pt")
    target = tmp_path / "multi"
    assert_rejected(["export", str(fake_run), "--format", "pt", "--format", "imagefolder", "--to", str(target)],
                    target, ["hard labels only"])


def test_failed_write_leaves_nothing(tmp_path, train, monkeypatch):
    from pd_plugins.data import interop

    def boom(syn, like, path):
        raise OSError("disk full")

    monkeypatch.setitem(interop.WRITERS, "safetensors", boom)
    syn = make_set(train)
    monkeypatch.setattr(interop, "run_synthetic", lambda run_dir: (syn, train))
    with pytest.raises(OSError):
        export_distilled("unused", ["pt", "safetensors"], tmp_path / "multi")
    assert list(tmp_path.iterdir()) == []


def test_syn_lr_as_tensor_is_read_and_a_bad_one_refused(tmp_path, train):
    syn = make_set(train)
    torch.save({"images": syn.images, "labels": syn.labels, "syn_lr": torch.tensor(0.05)}, tmp_path / "t.pt")
    back, _ = read_synthetic(tmp_path / "t.pt", train)
    assert back.lr == pytest.approx(0.05) and back.mean == tuple(train.mean)
    torch.save({"images": syn.images, "labels": syn.labels, "syn_lr": -1.0}, tmp_path / "b.pt")
    assert_rejected(eval_args(tmp_path / "b.pt", tmp_path / "out"), tmp_path / "out", ["syn_lr"])
