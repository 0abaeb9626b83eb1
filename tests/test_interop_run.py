"""End to end on one tiny digits run: export in every format, evaluate the exports at the
run's seed (same accuracy as the run itself), and feed the exported subset back in."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from pd_plugins.cli import cli

TINY = ["--distiller", "dm", "-D", "iterations=3", "-D", "batch_real=16", "--ipc", "2", "-E", "epochs=5",
        "--eval-repeats", "1", "--no-progress", "--seed", "3"]


def ok(args):
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("interop") / "run"
    ok(["run", "--pruner", "random", "--keep", "0.5", "--out", str(out), *TINY])
    return out


@pytest.fixture(scope="module")
def exported(run_dir):
    to = run_dir.parent / "export"
    ok(["export", str(run_dir), "--format", "imagefolder", "--format", "pt", "--format", "safetensors", "--to", str(to)])
    return to


def test_export_holds_the_run_distilled_set(run_dir, exported):
    from safetensors.torch import load_file

    saved = torch.load(run_dir / "distill.pt", weights_only=True)
    pt = torch.load(exported / "distilled.pt", weights_only=True)
    st = load_file(str(exported / "distilled.safetensors"))
    for obj in (pt, st):
        assert torch.equal(obj["images"], saved["images"]) and torch.equal(obj["labels"], saved["labels"])
    meta = json.loads((exported / "imagefolder" / "dataset.json").read_text())
    counts = {c: len(list((exported / "imagefolder" / c).glob("*.png"))) for c in meta["class_names"]}
    assert set(counts.values()) == {2} and len(counts) == 10


@pytest.mark.parametrize("name", ["distilled.pt", "distilled.safetensors"])
def test_imported_set_evaluates_like_the_run(run_dir, exported, name, tmp_path):
    ev = tmp_path / "ev"
    ok(["eval", "--images", str(exported / name), "--dataset", "digits", "--out", str(ev), "--seed", "3",
        "-E", "epochs=5", "--eval-repeats", "1", "--no-progress"])
    mine = json.loads((run_dir / "eval.json").read_text())["results"][0]
    theirs = json.loads((ev / "eval.json").read_text())
    assert theirs["evaluated"] == "imported" and theirs["train_size"] == 20
    assert theirs["results"][0]["accs"] == mine["accs"]
    assert theirs["results"][0]["options"] == mine["options"]


def test_exported_subset_drives_a_run(run_dir, tmp_path):
    sub = tmp_path / "subset.csv"
    ok(["export", str(run_dir), "--what", "subset", "--to", str(sub)])
    prune = torch.load(run_dir / "prune.pt", weights_only=True)
    lines = sub.read_text().splitlines()
    assert lines[0] == "source_index,label,score" and len(lines) - 1 == prune["keep"].numel()
    out = tmp_path / "again"
    ok(["run", "--subset", str(sub), "--distiller", "none", "--evaluator", "none", "--out", str(out), "--no-progress"])
    again = torch.load(out / "prune.pt", weights_only=True)
    assert again["source_index"].tolist() == prune["source_index"].tolist()
    cfg = json.loads((out / "config.json").read_text())
    import hashlib

    assert cfg["resolved"]["subset"]["sha256"] == hashlib.sha256(sub.read_bytes()).hexdigest()
    # the JSON export reads back to the same indices
    js = tmp_path / "subset.json"
    ok(["export", str(run_dir), "--what", "subset", "--to", str(js)])
    from pd_plugins.data.subset import read_indices

    assert read_indices(js) == read_indices(sub) == prune["source_index"].tolist()
    assert json.loads(js.read_text())["labels"] == [int(v) for v in
                                                    (line.split(",")[1] for line in lines[1:])]


def test_outside_subset_of_chosen_indices(tmp_path):
    """A hand-written subset (unsorted, JSON list) selects exactly those source indices."""
    chosen = [17, 3, 250, 1000, 42, 8, 99, 512, 640, 7]
    sub = tmp_path / "mine.json"
    sub.write_text(json.dumps(chosen))
    out = tmp_path / "r"
    ok(["run", "--subset", str(sub), "--distiller", "none", "--evaluator", "none", "--out", str(out), "--no-progress"])
    saved = torch.load(out / "prune.pt", weights_only=True)
    assert sorted(saved["source_index"].tolist()) == sorted(chosen)
    assert Path(out / "config.json").exists()
