"""Bad input: one ``Error:`` line on stderr, exit 1 or 2, no traceback, no half-made run directory."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from pd_plugins import hookimpl
from pd_plugins.cli import cli

FAST = ["-D", "iterations=2", "-E", "epochs=1", "--eval-repeats", "1", "--no-progress"]


def check_error(args, out, *expect, codes=(1, 2)):
    res = CliRunner().invoke(cli, [str(a) for a in args] + ["--out", str(out)])
    text = res.stderr + res.output
    assert res.exit_code in codes, (res.exit_code, text)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), res.stderr
    assert "Traceback" not in text
    for e in expect:
        assert e in lines[0], (e, lines[0])
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())
    return lines[0]


@pytest.mark.parametrize("flag,value,hint", [
    ("--pruner", "randon", "did you mean 'random'"),
    ("--distiller", "dmm", "did you mean 'dm'"),
    ("--dataset", "digit", "did you mean 'digits'"),
    ("--model", "convnt", "did you mean 'convnet'"),
    ("--augmentation", "dsaa", "did you mean 'dsa'"),
    ("--evaluator", "dsa-stp", "did you mean 'dsa-step'"),
])
def test_unknown_names(host, tmp_path, flag, value, hint):
    args = ["--pruner", "random", *FAST, flag, value]
    check_error(args, tmp_path / "run", "unknown", repr(value), hint)


def test_bad_option_key_lists_valid(host, tmp_path):
    line = check_error(["--pruner", "random", "-D", "iteratons=3"], tmp_path / "run", "unknown option 'iteratons'")
    assert "valid options" in line and "iterations" in line and "lr_img" in line


@pytest.mark.parametrize("args,expect", [
    (["-D", "iterations=abc"], "not an integer"),
    (["-D", "lr_img=fast"], "not a number"),
    (["-D", "augment=maybe"], "not a boolean"),
    (["-D", "init=zeros"], "must be one of"),
    (["-P", "balanced=2"], "balanced"),
    (["-D", "iterations"], "KEY=VALUE"),
])
def test_bad_option_values(host, tmp_path, args, expect):
    check_error(["--pruner", "random", *args], tmp_path / "run", expect)


@pytest.mark.parametrize("keep", ["0", "-0.5", "1.5"])
def test_keep_outside_unit_interval(host, tmp_path, keep):
    check_error(["--pruner", "random", "--keep", keep, *FAST], tmp_path / "run", "keep ratio must be in (0, 1]")


def test_ipc_larger_than_smallest_pruned_class(host, tmp_path):
    out = tmp_path / "run"
    check_error(["--pruner", "random", "--keep", "0.02", "--ipc", "10", *FAST], out,
                "ipc 10 is larger than the smallest class after pruning")
    assert not out.exists()


def test_existing_empty_out_dir_stays_empty(host, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    check_error(["--pruner", "random", "--keep", "0.02", "--ipc", "10", *FAST], out, "ipc 10")
    assert out.is_dir() and not any(out.iterdir())


def test_missing_data(host, tmp_path):
    check_error(["--dataset", "npz", "--data-root", tmp_path / "nope.npz", *FAST], tmp_path / "run", "nope.npz")
    check_error(["--dataset", "mnist", "--data-root", tmp_path / "no-dir", *FAST], tmp_path / "run2", "no-dir")


def test_missing_data_root_for_npz(host, tmp_path):
    check_error(["--dataset", "npz", *FAST], tmp_path / "run", "npz")


@pytest.mark.parametrize("name,text", [
    ("bad.yaml", "pruner: [random\nkeep: 0.2\n"),
    ("bad.toml", "pruner = \nkeep = 0.2\n"),
    ("bad.json", "{\"pruner\": }"),
])
def test_malformed_config(host, tmp_path, name, text):
    (tmp_path / name).write_text(text)
    check_error(["--config", tmp_path / name], tmp_path / "run", "is malformed")


@pytest.mark.parametrize("name,text", [
    ("unknown.yaml", "prunr: random\n"),
    ("unknown.toml", 'prunr = "random"\n'),
])
def test_config_unknown_keys(host, tmp_path, name, text):
    (tmp_path / name).write_text(text)
    line = check_error(["--config", tmp_path / name], tmp_path / "run", "unknown config key 'prunr'")
    assert "pruner" in line


def test_config_not_a_mapping(host, tmp_path):
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    check_error(["--config", tmp_path / "list.yaml"], tmp_path / "run", "mapping")


class CrashingPruner:
    @hookimpl
    def register_pruners(self, register):
        register("crash", "tests.test_bad_input:Crash", summary="raises inside prune")


def _crash_cls():
    from pd_plugins.pruning.random import RandomPruner

    class Crash(RandomPruner):
        name = "crash"

        def score(self, data, ctx):
            raise RuntimeError("pruner blew up")

    return Crash


Crash = _crash_cls()


def test_strategy_failure_in_first_stage_leaves_nothing(host, tmp_path):
    host.register(CrashingPruner(), name="crashing")
    check_error(["--pruner", "crash", *FAST], tmp_path / "run", "pruner 'crash'", "RuntimeError: pruner blew up")


def test_failure_during_distill_keeps_resumable_dir(host, tmp_path, monkeypatch):
    """A run that fails after work began keeps its directory and resumes without redoing prune."""
    from pd_plugins.distillation.dm import DM

    out = tmp_path / "run"
    args = ["--pruner", "random", *FAST, "--out", str(out)]
    real = DM.distill

    def fail(self, *a, **k):
        raise RuntimeError("killed")

    monkeypatch.setattr(DM, "distill", fail)
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1 and "killed" in res.stderr
    assert (out / "prune.pt").is_file() and (out / "config.json").is_file()
    stamp = (out / "prune.pt").stat().st_mtime_ns
    monkeypatch.setattr(DM, "distill", real)
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.stderr
    assert (out / "prune.pt").stat().st_mtime_ns == stamp  # resumed, prune not recomputed
    assert (out / "eval.json").is_file()
