"""Bad-input matrix through the CLI, extending tests/test_bad_input.py (which it does not repeat).

Every case expects exactly one ``Error:`` line, exit 1 (2 for click usage errors, 3 for
strict plugin failures), no traceback and no artifact in the run directory. Corrupt caches
(scores, expert trajectories) are the exception: they warn and are recomputed.
"""
from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pd_plugins import hookimpl
from pd_plugins.cli import cli
from pd_plugins.errors import DataError
from tests.test_bad_input import FAST, check_error

MTT_TINY = ["--distiller", "mtt", "--ipc", "1", "--evaluator", "none", "--no-progress", "--checkpoint-every", "0",
            "-D", "iterations=2", "-D", "syn_steps=2", "-D", "expert_epochs=1", "-D", "max_start_epoch=1",
            "-D", "train_epochs=2", "-D", "experts=1", "-D", "expert_batch=64"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PD_CACHE_DIR", str(tmp_path / "cache"))


def usage_error(args, *expect):
    """A click usage error: exit 2, exactly one ``Error:`` line, no traceback."""
    res = CliRunner().invoke(cli, [str(a) for a in args])
    text = res.stderr + res.output
    assert res.exit_code == 2, (res.exit_code, text)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in text, res.stderr
    for e in expect:
        assert e in errors[0]


def write_npz(path, x_train, y_train, x_test=None, y_test=None):
    rng = np.random.default_rng(0)
    if x_test is None:
        x_test, y_test = rng.random((6, 8, 8), dtype=np.float32), np.arange(6) % 2
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


# -- ratios, windows, ipc ---------------------------------------------------------------

@pytest.mark.parametrize("window,expect", [
    ("0.8,0.7", "lo < hi"),
    ("0.5,0.5", "lo < hi"),
    ("50,150", "[0, 100] as percentiles"),
    ("0.5", "expected 2 values"),
])
def test_el2n_window(host, tmp_path, window, expect):
    check_error(["--pruner", "el2n-window", "-P", f"window={window}", *FAST], tmp_path / "run", "el2n-window", expect)


@pytest.mark.parametrize("ipc", ["0", "-3"])
def test_ipc_below_one(host, tmp_path, ipc):
    check_error(["--pruner", "random", "--ipc", ipc, *FAST], tmp_path / "run", f"ipc must be >= 1, got {ipc}")


def test_ipc_larger_than_smallest_class_without_pruning(host, tmp_path):
    check_error(["--pruner", "none", "--ipc", "1000", *FAST], tmp_path / "run", "ipc 1000 is larger than the smallest class")


def test_negative_checkpoint_interval(host, tmp_path):
    check_error(["--pruner", "random", "--checkpoint-every", "-1", *FAST], tmp_path / "run", "--checkpoint-every must be >= 0")


@pytest.mark.parametrize("args,expect", [
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--eval-repeats", "0"], "--eval-repeats must be >= 1"),
    (["--model-option", "width=abc"], "not an integer"),
    (["--dataset-option", "foo=1"], "unknown option 'foo' for dataset 'digits'"),
    (["--distiller", "mtt", "-D", "experts=0"], "experts must be >= 1"),
    (["--distiller", "mtt", "-D", "max_start_epoch=60"], "train_epochs must be >= max_start_epoch - 1 + expert_epochs"),
])
def test_bad_run_settings(host, tmp_path, args, expect):
    check_error(["--pruner", "random", *FAST, *args], tmp_path / "run", expect)


@pytest.mark.parametrize("args,expect", [
    (["--ipc", "abc"], "'abc' is not a valid integer"),
    (["--keep", "half"], "'half' is not a valid float"),
    (["--precision", "fp8"], "'fp8' is not one of"),
    (["--bogus-flag"], "No such option"),
])
def test_usage_errors_exit_2(host, tmp_path, args, expect):
    out = tmp_path / "run"
    usage_error(["run", *args, "--out", out], expect)
    assert not out.exists()


# -- datasets ---------------------------------------------------------------------------

def test_empty_train_split(host, tmp_path):
    path = write_npz(tmp_path / "empty.npz", np.zeros((0, 8, 8), np.float32), np.zeros(0, np.int64))
    check_error(["--dataset", "npz", "--data-root", path, *FAST], tmp_path / "run", "empty")


def test_single_class_dataset(host, tmp_path):
    path = write_npz(tmp_path / "one.npz", np.random.default_rng(1).random((10, 8, 8), dtype=np.float32), np.zeros(10, int))
    check_error(["--dataset", "npz", "--data-root", path, *FAST], tmp_path / "run", "1 class(es); at least 2")


def test_nan_images(host, tmp_path):
    x = np.random.default_rng(1).random((10, 8, 8), dtype=np.float32)
    x[3, 2, 2] = np.nan
    path = write_npz(tmp_path / "nan.npz", x, np.arange(10) % 2)
    check_error(["--dataset", "npz", "--data-root", path, *FAST], tmp_path / "run", "NaN or inf")


def test_labels_images_length_mismatch(host, tmp_path):
    path = write_npz(tmp_path / "len.npz", np.random.default_rng(1).random((10, 8, 8), dtype=np.float32), np.arange(9) % 2)
    check_error(["--dataset", "npz", "--data-root", path, *FAST], tmp_path / "run", "9 labels for 10 images")


# -- checkpoints and caches -------------------------------------------------------------

def test_scorer_checkpoint_garbage(host, tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    check_error(["--pruner", "loss-easy", "-P", f"checkpoint={tmp_path / 'bad.pt'}", *FAST], tmp_path / "run",
                "scorer checkpoint", "not a valid checkpoint")


def test_scorer_checkpoint_truncated(host, tmp_path):
    torch.save({"features.0.weight": torch.zeros(4, 1, 3, 3)}, tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    check_error(["--pruner", "loss-easy", "-P", f"checkpoint={tmp_path / 'cut.pt'}", *FAST], tmp_path / "run",
                "not a valid checkpoint")


def test_scorer_checkpoint_mismatched(host, tmp_path):
    torch.save({"w": torch.zeros(3)}, tmp_path / "other.pt")
    check_error(["--pruner", "loss-easy", "-P", f"checkpoint={tmp_path / 'other.pt'}", *FAST], tmp_path / "run",
                "does not match a convnet scorer")


def test_scorer_checkpoint_missing(host, tmp_path):
    check_error(["--pruner", "loss-easy", "-P", f"checkpoint={tmp_path / 'nope.pt'}", *FAST], tmp_path / "run",
                "scorer checkpoint not found")


def _prune(out, *extra):
    res = CliRunner().invoke(cli, ["prune", "--pruner", "el2n-window", "-P", "models=1", "-P", "score_epoch=1", "-P", "epochs=1",
                                   "--no-progress", "--out", str(out), *extra])
    assert res.exit_code == 0, res.stderr
    return torch.load(out / "prune.pt", weights_only=True)["keep"]


def test_corrupt_score_cache_warns_and_recomputes(host, tmp_path):
    first = _prune(tmp_path / "a")
    entries = list((tmp_path / "cache" / "scores").glob("*.pt"))
    assert entries
    for e in entries:
        e.write_bytes(e.read_bytes()[:50])  # truncated
    with pytest.warns(RuntimeWarning, match="corrupt score cache entry"):
        again = _prune(tmp_path / "b")
    assert torch.equal(first, again)
    assert all(zipfile.is_zipfile(e) for e in entries)  # rewritten by the recomputation


def _mtt(out):
    return CliRunner().invoke(cli, ["run", "--pruner", "none", *MTT_TINY, "--out", str(out)])


def test_truncated_expert_is_retrained(host, tmp_path):
    res = _mtt(tmp_path / "a")
    assert res.exit_code == 0, res.stderr
    [expert] = (tmp_path / "cache" / "experts").glob("*/expert_0000.pt")
    good = torch.load(expert, weights_only=True)["trajectory"]
    expert.write_bytes(expert.read_bytes()[:100])
    with pytest.warns(RuntimeWarning, match="corrupt expert file"):
        res = _mtt(tmp_path / "b")
    assert res.exit_code == 0, res.stderr
    assert torch.equal(torch.load(expert, weights_only=True)["trajectory"], good)
    a = torch.load(tmp_path / "a" / "distill.pt", weights_only=True)["images"]
    b = torch.load(tmp_path / "b" / "distill.pt", weights_only=True)["images"]
    assert torch.equal(a, b)


def test_foreign_expert_file_is_one_line_error(host, tmp_path):
    assert _mtt(tmp_path / "a").exit_code == 0
    [expert] = (tmp_path / "cache" / "experts").glob("*/expert_0000.pt")
    torch.save({"something": torch.zeros(2)}, expert)  # a valid archive without a trajectory
    out = tmp_path / "b"
    res = _mtt(out)
    assert res.exit_code == 1 and "Traceback" not in res.stderr + res.output
    # found once distillation began: the run's announced mode line, then the error in one line
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0] == "mode pool (no pruner)", lines
    assert lines[1].startswith("Error:") and "no (epochs + 1, P) trajectory" in lines[1], lines
    assert not (out / "distill.pt").exists()


# -- output directory, plugins, configs -------------------------------------------------

def test_unwritable_output_dir(host, tmp_path):
    if os.geteuid() == 0:  # root ignores permission bits: use a path whose parent is a regular file
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "run"
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        out = locked / "run"
    try:
        res = CliRunner().invoke(cli, ["run", "--pruner", "random", *FAST, "--out", str(out)])
    finally:
        if os.geteuid() != 0:
            (tmp_path / "locked").chmod(0o700)
    assert res.exit_code == 1 and "Traceback" not in res.stderr + res.output, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "run" in lines[0], lines
    assert not out.exists()


class BrokenThirdParty:
    @hookimpl
    def register_pruners(self, register):
        raise ImportError("No module named 'fancy_dep'")


def test_broken_plugin_strict_run_exit_3(host, tmp_path, monkeypatch):
    monkeypatch.setenv("PD_STRICT_PLUGINS", "1")
    host.register(BrokenThirdParty(), name="fancy")
    line = check_error(["--pruner", "random", *FAST], tmp_path / "run", "fancy", codes=(3,))
    assert "fancy_dep" in line


def test_broken_plugin_lenient_run_still_works(host, tmp_path, capsys):
    host.register(BrokenThirdParty(), name="fancy")
    res = CliRunner().invoke(cli, ["list", "pruners"])
    assert res.exit_code == 0 and "random" in res.output
    assert "fancy" in res.stderr + capsys.readouterr().err


def test_config_unknown_key_json(host, tmp_path):
    (tmp_path / "c.json").write_text('{"pruner": "random", "ipcc": 3}')
    check_error(["--config", tmp_path / "c.json"], tmp_path / "run", "unknown config key 'ipcc'")


def test_garbage_subset_file(host, tmp_path):
    (tmp_path / "subset.pt").write_bytes(b"\x00\x01garbage")
    check_error(["--subset", tmp_path / "subset.pt", *FAST], tmp_path / "run", "subset")


@pytest.mark.parametrize("cmd", [["distill", "--from"], ["eval"], ["export", "--to", "x"]])
def test_commands_on_missing_run_dir(host, tmp_path, cmd):
    missing = str(tmp_path / "nodir")
    args = [*cmd[:2], missing, *cmd[2:]] if cmd[0] == "distill" else [cmd[0], missing, *cmd[1:]]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "nodir" in lines[0]
    assert not (tmp_path / "nodir").exists()


@pytest.mark.parametrize("option,value,expect", [
    ("train_per_class", "-1", "train_per_class must be >= 0"),
    ("test_per_class", "x", "test_per_class"),
])
def test_npz_per_class_limits(host, tmp_path, option, value, expect):
    path = write_npz(tmp_path / "d.npz", np.random.default_rng(1).random((12, 8, 8), dtype=np.float32), np.arange(12) % 2)
    check_error(["--dataset", "npz", "--data-root", path, "--dataset-option", f"{option}={value}", *FAST],
                tmp_path / "run", expect)


def test_npz_per_class_limit_below_ipc(host, tmp_path):
    path = write_npz(tmp_path / "d.npz", np.random.default_rng(1).random((12, 8, 8), dtype=np.float32), np.arange(12) % 2)
    check_error(["--dataset", "npz", "--data-root", path, "--dataset-option", "train_per_class=2", "--ipc", "3", *FAST],
                tmp_path / "run", "ipc 3 is larger than the smallest class")


# -- wrong kind of thing at a path ------------------------------------------------------
# Every path option and argument, given a file where a folder is needed (or the reverse), a broken
# symbolic link, or a folder to create under a file: exit 1, one ``Error:`` line, and nothing
# written anywhere (the temporary tree, the finished run it reads from, and the working directory).

def _snapshot(*roots):
    """Every entry under ``roots``: kind, bytes of files, target of links."""
    seen = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            seen[str(p)] = (("link", os.readlink(p)) if p.is_symlink() else ("dir",) if p.is_dir()
                            else ("file", p.read_bytes()))
    return seen


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished prune + distill run (no evaluation) to read from: RUN_DIR, --from, --images."""
    from pd_plugins import plugins

    old = plugins._host
    plugins.set_host(plugins.Host(load_entrypoints=False))
    root = tmp_path_factory.mktemp("finished")
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PD_CACHE_DIR", str(root / "cache"))
            res = CliRunner().invoke(cli, ["run", "--pruner", "random", "--evaluator", "none", "-D", "iterations=2",
                                           "--no-progress", "--out", str(root / "run")])
        assert res.exit_code == 0, res.stderr
    finally:
        plugins.set_host(old)
    return root / "run"


@pytest.fixture
def spots(tmp_path, monkeypatch):
    """Paths of every wrong kind, under a working directory that is part of the snapshot."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("keep me")
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir" / "inside.txt").write_text("keep me too")
    (tmp_path / "broken").symlink_to(tmp_path / "nowhere")
    (tmp_path / "sweep.yaml").write_text("name: s\ngrid:\n  pruner: [random]\nfixed:\n  ipc: 1\n")
    return {"file": tmp_path / "afile", "dir": tmp_path / "adir", "broken": tmp_path / "broken",
            "under-file": tmp_path / "afile" / "sub", "sweep": tmp_path / "sweep.yaml"}


def path_error(args, roots, *expect):
    before = _snapshot(*roots)
    res = CliRunner().invoke(cli, [str(a) for a in args])
    text = res.stderr + res.output
    assert res.exit_code == 1, (res.exit_code, text)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "Traceback" not in text, res.stderr
    for e in expect:
        assert e in lines[0], (e, lines[0])
    assert _snapshot(*roots) == before
    return lines[0]


EXPECT = {"file": "is a file, not a folder", "dir": "is a folder, not a file", "broken": "broken symbolic link",
          "under-file": "afile is a file, not a folder"}
RUNNING = ["--pruner", "random", *FAST]


@pytest.mark.parametrize("spot", ["file", "broken", "under-file"])
@pytest.mark.parametrize("cmd", [["run", *RUNNING], ["prune", "--pruner", "random", "--no-progress"], ["config"],
                                 ["experts", "--no-progress"], ["distill", "--from", "RUN", *FAST]])
def test_out_is_not_a_folder(host, spots, finished_run, cmd, spot):
    args = [finished_run if a == "RUN" else a for a in cmd]
    path_error([*args, "--out", spots[spot]], [spots["file"].parent, finished_run], "output directory", EXPECT[spot])


def test_out_from_config_file_is_not_a_folder(host, spots):
    (spots["file"].parent / "c.yaml").write_text(f"out: {spots['file']}\n")
    path_error(["run", *RUNNING, "--config", spots["file"].parent / "c.yaml"], [spots["file"].parent],
               "output directory", EXPECT["file"])


@pytest.mark.parametrize("flag,what,spot", [
    ("--config", "config file", "dir"), ("--config", "config file", "broken"),
    ("--subset", "subset file", "dir"), ("--subset", "subset file", "broken"),
])
def test_run_input_files_of_the_wrong_kind(host, spots, flag, what, spot):
    path_error(["run", *RUNNING, flag, spots[spot], "--out", spots["dir"].parent / "r"], [spots["file"].parent],
               what, EXPECT[spot])


@pytest.mark.parametrize("dataset,spot", [("npz", "dir"), ("npz", "broken"), ("imagefolder", "file"),
                                          ("imagefolder", "broken"), ("mnist", "file"), ("mnist", "broken")])
def test_data_root_of_the_wrong_kind(host, spots, dataset, spot):
    line = path_error(["run", *RUNNING, "--dataset", dataset, "--data-root", spots[spot], "--out", "r"],
                      [spots["file"].parent], f"dataset '{dataset}'", EXPECT[spot])
    assert str(spots[spot]) in line


def test_imagefolder_split_that_is_a_file(host, spots):
    (spots["dir"] / "train").mkdir()
    (spots["dir"] / "val").write_text("not a folder")
    path_error(["run", *RUNNING, "--dataset", "imagefolder", "--data-root", spots["dir"], "--out", "r"],
               [spots["file"].parent], "test folder", EXPECT["file"])


@pytest.mark.parametrize("spot", ["dir", "broken"])
def test_scorer_checkpoint_of_the_wrong_kind(host, spots, spot):
    path_error(["run", *FAST, "--pruner", "loss-easy", "-P", f"checkpoint={spots[spot]}", "--out", "r"],
               [spots["file"].parent], "scorer checkpoint", EXPECT[spot])


@pytest.mark.parametrize("distiller,spot,expect", [
    ("glad", "file", EXPECT["file"]), ("glad", "broken", EXPECT["broken"]), ("glad", "dir", "prior.json not found"),
    ("glad", "missing", "not found"),
    ("ld3m", "file", EXPECT["file"]), ("ld3m", "broken", EXPECT["broken"]), ("ld3m", "dir", "has no unet/config.json"),
])
def test_generator_prior_of_the_wrong_kind_leaves_no_run_directory(host, spots, distiller, spot, expect):
    if distiller == "ld3m":
        pytest.importorskip("diffusers")
    weights = spots["file"].parent / "missing" if spot == "missing" else spots[spot]
    path_error(["run", *RUNNING, "--distiller", distiller, "-D", f"weights={weights}", "--out", "r"],
               [spots["file"].parent], "prior", expect)


@pytest.mark.parametrize("cmd,spot,expect", [
    (["distill", "--from", "SPOT", *FAST, "--out", "r"], "file", "run directory"),
    (["distill", "--from", "SPOT", *FAST, "--out", "r"], "broken", "run directory"),
    (["eval", "SPOT"], "file", "run directory"),
    (["eval", "SPOT"], "broken", "run directory"),
    (["eval", "SPOT", "--models", "convnet"], "file", "run directory"),
    (["export", "SPOT", "--format", "pt", "--to", "x.pt"], "file", "run directory"),
    (["export", "SPOT", "--format", "pt", "--to", "x.pt"], "broken", "run directory"),
    (["eval", "--images", "SPOT", "--out", "r"], "broken", "distilled set"),
    (["sweep", "SPOT", "--out", "s"], "dir", "sweep file"),
    (["sweep", "SPOT", "--out", "s"], "broken", "sweep file"),
    (["report", "SPOT"], "file", "sweep directory"),
    (["report", "SPOT"], "broken", "sweep directory"),
])
def test_inputs_of_the_wrong_kind(host, spots, cmd, spot, expect):
    path_error([spots[spot] if a == "SPOT" else a for a in cmd], [spots["file"].parent], expect, EXPECT[spot])


@pytest.mark.parametrize("spot", ["file", "broken", "under-file"])
@pytest.mark.parametrize("cmd,what", [
    (["eval", "--images", "IMAGES", "-E", "epochs=1", "--eval-repeats", "1"], "output directory"),
    (["sweep", "SWEEP"], "sweep directory"),
    (["prior", "train", "--kind", "decoder", "--epochs", "1"], "prior directory"),
])
def test_output_folders_of_the_wrong_kind(host, spots, finished_run, cmd, what, spot):
    args = [finished_run / "distill.pt" if a == "IMAGES" else spots["sweep"] if a == "SWEEP" else a for a in cmd]
    path_error([*args, "--out", spots[spot]], [spots["file"].parent, finished_run], what, EXPECT[spot])


def test_sweep_file_out_is_a_file(host, spots):
    spots["sweep"].write_text(f"name: s\nout: {spots['file']}\ngrid:\n  pruner: [random]\nfixed:\n  ipc: 1\n")
    path_error(["sweep", spots["sweep"]], [spots["file"].parent], "sweep directory", EXPECT["file"])


@pytest.mark.parametrize("args,spot,expect", [
    (["--format", "pt", "--overwrite"], "dir", EXPECT["dir"]),  # --overwrite never swaps a folder for a file
    (["--format", "imagefolder", "--overwrite"], "file", EXPECT["file"]),
    (["--format", "pt", "--format", "safetensors", "--overwrite"], "file", EXPECT["file"]),
    (["--format", "pt"], "broken", EXPECT["broken"]),
    (["--format", "pt", "--overwrite"], "broken", EXPECT["broken"]),
    (["--format", "pt"], "under-file", EXPECT["under-file"]),
    (["--what", "subset", "--overwrite"], "dir.csv", EXPECT["dir"]),
    (["--what", "subset"], "under-file.csv", EXPECT["under-file"]),
])
def test_export_target_of_the_wrong_kind(host, spots, finished_run, args, spot, expect):
    if spot == "dir.csv":
        target = spots["dir"].parent / "subset.csv"
        target.mkdir()
    else:
        target = spots["under-file"].with_suffix(".csv") if spot == "under-file.csv" else spots[spot]
    path_error(["export", finished_run, *args, "--to", target], [spots["file"].parent, finished_run],
               "export target", expect)


def test_report_folder_that_is_a_file(host, spots, monkeypatch):
    from pd_plugins.experiments import report

    monkeypatch.setattr(report, "collect", lambda root, evaluation=None: [])  # the report folder is checked before any row is used
    (spots["dir"] / "report").write_text("a file")
    with pytest.raises(DataError, match="report directory .* is a file, not a folder"):
        report.write_report(spots["dir"])
    assert (spots["dir"] / "report").read_text() == "a file"


# -- the shared checks themselves (pd_plugins.paths) ------------------------------------

def test_path_checks_accept_the_right_kind(spots):
    from pd_plugins import paths

    (spots["dir"].parent / "link-to-dir").symlink_to(spots["dir"])
    assert paths.expect_file(spots["file"], "x") == spots["file"]
    assert paths.expect_dir(spots["dir"].parent / "link-to-dir", "x").is_dir()
    assert paths.expect_existing(spots["dir"], "x") == spots["dir"]
    assert paths.expect_output_dir(spots["dir"] / "new" / "deeper", "x") == spots["dir"] / "new" / "deeper"
    assert paths.expect_output_file(spots["file"], "x") == spots["file"]
    assert not (spots["dir"] / "new").exists()


@pytest.mark.parametrize("check,spot,expect", [
    ("expect_file", "dir", "x {} is a folder, not a file"),
    ("expect_file", "missing", "x not found: {}"),
    ("expect_dir", "file", "x {} is a file, not a folder"),
    ("expect_dir", "broken", "x {} is a broken symbolic link (to "),
    ("expect_existing", "broken", "x {} is a broken symbolic link"),
    ("expect_output_dir", "file", "x {} is a file, not a folder"),
    ("expect_output_dir", "under-file", "x {} cannot be created: "),
    ("expect_output_file", "dir", "x {} is a folder, not a file"),
    ("expect_output_file", "broken", "x {} is a broken symbolic link"),
])
def test_path_checks_refuse_the_wrong_kind(spots, check, spot, expect):
    from pd_plugins import paths

    path = spots["file"].parent / "missing" if spot == "missing" else spots[spot]
    with pytest.raises(DataError) as exc:
        getattr(paths, check)(path, "x")
    assert str(exc.value).startswith(expect.format(path)) and "\n" not in str(exc.value)


@pytest.mark.parametrize("check,spot,expect", [
    ("expect_file", "file", "is not readable"), ("expect_dir", "dir", "is not readable"),
    ("expect_output_dir", "dir", "is not writable"), ("expect_output_dir", "under-dir", "no permission to write in"),
])
def test_path_checks_refuse_missing_permissions(spots, monkeypatch, check, spot, expect):
    """Permission bits do not bind root, so the permission query itself is made to say no."""
    from pd_plugins import paths

    monkeypatch.setattr(paths.os, "access", lambda path, mode: False)
    path = spots["dir"] / "new" if spot == "under-dir" else spots[spot]
    with pytest.raises(DataError, match=expect):
        getattr(paths, check)(path, "x")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_unreadable_config_file_is_one_line(host, spots):
    locked = spots["file"].parent / "locked.yaml"
    locked.write_text("pruner: random\n")
    locked.chmod(0o000)
    try:
        path_error(["run", "--config", locked, "--out", "r"], [spots["dir"]], "config file", "not readable")
    finally:
        locked.chmod(0o600)
