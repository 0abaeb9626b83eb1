"""`--mode auto` (the default): each pruner runs in the mode its paper uses, declared as ``paper_mode``.

el2n-window (Sundar et al.) seeds the initial images (init); the loss pruners, early-loss and random
replace the pool (Moser et al., Xu et al.); an explicit `--mode` wins; a distiller that cannot start
from a chosen set falls back to pool and says why.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pd_plugins import hookimpl
from pd_plugins.cli import cli
from pd_plugins.config import RunConfig
from pd_plugins.errors import RegistryError
from pd_plugins.pipeline.resolve import resolve_run
from pd_plugins.pipeline.run_dir import config_differences


def _mode(host, **values):
    plan = resolve_run(RunConfig(**values), host)
    return plan.mode, plan.mode_source


@pytest.mark.parametrize("pruner,distiller,expect", [
    ("el2n-window", "mtt", "init"), ("el2n-window", "dm", "init"), ("el2n-window", "dc", "init"),
    ("loss-easy", "mtt", "pool"), ("loss-hard", "dm", "pool"), ("early-loss", "dm", "pool"),
    ("random", "mtt", "pool"),
])
def test_auto_takes_the_pruners_paper_mode(host, pruner, distiller, expect):
    mode, source = _mode(host, pruner=pruner, distiller=distiller)
    assert (mode, source) == (expect, f"{pruner}'s paper mode")


def test_explicit_mode_wins(host):
    assert _mode(host, pruner="el2n-window", distiller="mtt", mode="pool") == ("pool", "set explicitly")
    assert _mode(host, pruner="loss-easy", distiller="mtt", mode="init") == ("init", "set explicitly")
    assert _mode(host, pruner="none", distiller="dm") == ("pool", "no pruner")


@pytest.mark.parametrize("distiller,options,why", [
    ("herding", {}, "herding selects real images itself"),
    ("random", {}, "random selects real images itself"),
    ("dm", {"init": "noise"}, "dm does not start from real images"),
    ("mtt", {"init": "noise"}, "mtt does not start from real images"),
])
def test_init_paper_mode_falls_back_to_pool_where_the_distiller_cannot_start_from_it(host, distiller, options, why):
    mode, source = _mode(host, pruner="el2n-window", distiller=distiller, distiller_options=options)
    assert mode == "pool"
    assert source.startswith("el2n-window's paper mode is init, but ") and why in source


class _Undeclared:
    @hookimpl
    def register_pruners(self, register):
        register("undeclared", "tests.test_mode_auto:Undeclared", summary="declares no paper mode")
        register("bad-mode", "tests.test_mode_auto:BadMode", summary="declares an unknown paper mode")


def _classes():
    from pd_plugins.pruning.random import RandomPruner

    class Undeclared(RandomPruner):
        name = "undeclared"

    class BadMode(RandomPruner):
        name = "bad-mode"
        paper_mode = "seed"

    return Undeclared, BadMode


Undeclared, BadMode = _classes()


def test_third_party_pruner_without_a_declaration_runs_in_pool_mode(host):
    from pd_plugins.testing import check_pruner

    host.register(_Undeclared(), name="undeclared-plugin")
    assert _mode(host, pruner="undeclared", distiller="mtt") == ("pool", "undeclared's paper mode")
    with pytest.raises(RegistryError, match="declares paper_mode 'seed'"):
        _mode(host, pruner="bad-mode", distiller="mtt")
    with pytest.raises(AssertionError, match="paper_mode is 'seed'"):
        check_pruner(BadMode)


def test_config_command_shows_mode_and_source(host):
    def config(*flags):
        res = CliRunner().invoke(cli, ["config", *flags])
        assert res.exit_code == 0, res.output
        out = json.loads(res.output)
        return out["mode"], out["resolved"]["mode_source"]

    assert config("--pruner", "el2n-window", "--distiller", "mtt") == ("init", "el2n-window's paper mode")
    assert config("--pruner", "loss-easy", "--distiller", "mtt") == ("pool", "loss-easy's paper mode")
    assert config("--pruner", "el2n-window", "--distiller", "mtt", "--mode", "pool") == ("pool", "set explicitly")


def test_show_names_the_paper_mode(host):
    res = CliRunner().invoke(cli, ["show", "pruner", "el2n-window", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["paper_mode"] == "init"
    res = CliRunner().invoke(cli, ["show", "pruner", "loss-easy"])
    assert "paper mode: pool" in res.output


def test_run_prints_its_mode_first_and_records_it(host, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, [
        "--pruner", "random", "--keep", "0.5", "--distiller", "dm", "--ipc", "1", "-D", "iterations=2",
        "--evaluator", "none", "--device", "cpu", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output + res.stderr
    assert res.stderr.splitlines()[0] == "mode pool (random's paper mode)"
    assert "mode_source  random's paper mode" in res.stdout  # the summary table
    res = CliRunner().invoke(cli, ["--pruner", "random", "--keep", "0.5", "--distiller", "dm", "--ipc", "1",
                                   "-D", "iterations=2", "--evaluator", "none", "--device", "cpu", "--out",
                                   str(tmp_path / "json"), "--json", "--no-progress"])
    summary = json.loads(res.stdout)  # --json: the summary carries the mode; stderr stays clean
    assert (summary["mode"], summary["mode_source"]) == ("pool", "random's paper mode") and not res.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["mode"] == "pool" and cfg["resolved"]["mode_source"] == "random's paper mode"


def test_source_is_provenance_not_a_setting():
    old = {"mode": "pool", "seed": 0, "out": "a", "resolved": {"keep": 0.5}}
    new = {"mode": "pool", "seed": 0, "out": "b", "resolved": {"keep": 0.5, "mode_source": "random's paper mode"}}
    assert config_differences(old, new) == []
    assert config_differences(old, {**new, "mode": "init"}) == ["mode"]
    assert config_differences(old, {**new, "resolved": {"keep": 0.6}}) == ["resolved"]


FIXTURE = Path(__file__).parent / "fixtures" / "run_v02"


def test_run_folder_from_before_auto_resumes_without_recomputing(host, tmp_path, monkeypatch):
    """run_v02 was written when pool was the default (its config names it, without a mode source):
    the same config loads as the same run, and a resume recomputes only the missing stage."""
    from pd_plugins.pipeline import stages
    from pd_plugins.pipeline.runner import Run, load_run_config

    out = tmp_path / "run_v02"
    shutil.copytree(FIXTURE, out)
    old = json.loads((out / "config.json").read_text())
    assert old["mode"] == "pool" and "mode_source" not in old["resolved"]
    man = json.loads((out / "manifest.json").read_text())
    del man["stages"]["eval"]
    (out / "manifest.json").write_text(json.dumps(man))
    (out / "eval.json").unlink()
    before = {name: (out / name).read_bytes() for name in ("prune.pt", "distill.pt")}
    cfg = load_run_config(out)
    cfg.out = str(out)
    run = Run(cfg, quiet=True)

    def boom(*args, **kwargs):
        raise AssertionError("a finished stage was recomputed")

    monkeypatch.setattr(stages.PruneStage, "compute", boom)
    monkeypatch.setattr(stages.DistillStage, "compute", boom)
    assert not config_differences(old, run.config_json())
    summary = run.execute(("prune", "distill", "eval"))
    assert (summary["mode"], summary["mode_source"]) == ("pool", "set explicitly")
    assert {name: (out / name).read_bytes() for name in before} == before
    assert json.loads((out / "config.json").read_text())["resolved"]["mode_source"] == "set explicitly"
