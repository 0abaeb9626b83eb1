"""The ``pd-run`` command line through click's CliRunner, plus import-weight checks in subprocesses."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pd_plugins.cli import cli

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--pruner", "random", "--distiller", "dm", "-D", "iterations=3", "-E", "epochs=3", "--eval-repeats", "1",
        "--no-progress"]
ARTIFACTS = ("config.json", "manifest.json", "prune.pt", "distill.pt", "eval.json", "synthetic.png")


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_help_lists_commands(host):
    res = invoke("--help")
    assert res.exit_code == 0
    for cmd in ("run", "prune", "distill", "eval", "config", "list", "show", "plugins"):
        assert cmd in res.output


def test_list_all_and_one_kind(host):
    res = invoke("list")
    assert res.exit_code == 0
    for header in ("pruners:", "distillers:", "datasets:", "models:", "augmentations:", "evaluators:"):
        assert header in res.output
    assert "random" in res.output and "dm" in res.output and "digits" in res.output
    res = invoke("list", "pruners")
    assert res.exit_code == 0
    assert res.output.splitlines()[0] == "pruners:" and "distillers:" not in res.output and "random" in res.output
    data = json.loads(invoke("list", "distillers", "--json").output)
    assert [e["name"] for e in data["distillers"]] == host.registries()["distiller"].names()


def test_list_unknown_kind(host):
    res = invoke("list", "prunerz")
    assert res.exit_code == 1 and res.stderr.startswith("Error: unknown kind")


def test_show_distiller_options_table(host):
    res = invoke("show", "distiller", "dm")
    assert res.exit_code == 0, res.output
    out = res.output
    assert "options:" in out
    for name in ("iterations", "lr_img", "momentum", "batch_real", "init"):
        assert any(line.strip().startswith(name) for line in out.splitlines()), name
    assert "default=20000" in out and "budget 'quick' overrides" in out
    js = json.loads(invoke("show", "distiller", "dm", "--json").output)
    opts = {r["name"]: r for r in js["options"]}
    from pd_plugins.distillation.dm import DM

    assert opts["iterations"]["default"] == DM.Options().iterations
    assert js["budgets"]["quick"] == DM.budgets["quick"]  # the effective overrides of every named budget
    assert js["budgets"]["cpu"] == {**DM.budgets["quick"], **DM.budgets.get("cpu", {})}


def test_plugins_all_is_json(host):
    res = invoke("plugins", "--all")
    assert res.exit_code == 0
    data = json.loads(res.output)
    names = {p["name"] for p in data["plugins"]}
    assert "pd_plugins.default_plugins.pruners" in names and data["failed"] == []
    assert all(p["builtin"] for p in data["plugins"])
    assert json.loads(invoke("plugins").output)["plugins"] == []  # no third-party plugins in tests


def test_config_prints_resolved(host):
    res = invoke("config", "--pruner", "random", "--distiller", "dm", "-D", "iterations=7")
    assert res.exit_code == 0, res.stderr
    cfg = json.loads(res.output)
    assert cfg["pruner"] == "random" and cfg["resolved"]["budget"] == "quick"
    assert cfg["resolved"]["distiller_options"]["iterations"] == 7
    from pd_plugins.distillation.dm import DM

    assert cfg["resolved"]["distiller_options"]["batch_real"] == DM.budgets["quick"]["batch_real"]
    assert cfg["resolved"]["keep"] == DM.recommended_keep


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One finished tiny run shared by the tests below (module-scoped: it costs a few seconds)."""
    from pd_plugins import plugins

    old = plugins._host
    plugins.set_host(plugins.Host(load_entrypoints=False))
    out = tmp_path_factory.mktemp("runs") / "tiny"
    res = CliRunner().invoke(cli, [*TINY, "--out", str(out), "--json"])
    plugins.set_host(old)
    return out, res


def test_tiny_run_writes_artifacts(tiny_run):
    out, res = tiny_run
    assert res.exit_code == 0, res.stderr + res.output
    for name in ARTIFACTS:
        assert (out / name).is_file(), name
    summary = json.loads(res.output)  # --json output parses
    assert summary["ipc"] == 10 and summary["synthetic"] == 100 and 0.0 <= summary["acc_mean"] <= 1.0
    man = json.loads((out / "manifest.json").read_text())
    assert set(man["stages"]) == {"prune", "distill", "eval"}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["resolved"]["distiller_options"]["iterations"] == 3
    ev = json.loads((out / "eval.json").read_text())
    assert len(ev["results"][0]["accs"]) == 1 and ev["evaluated"] == "distilled"


def test_rerun_refused_then_overwrite(host, tiny_run):
    out, _ = tiny_run
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    res = invoke(*TINY, "--out", out)
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "--overwrite" in lines[0]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    res = invoke(*TINY, "--out", out, "--overwrite", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.output)["out"] == str(out)
    assert all((out / name).is_file() for name in ARTIFACTS)


def test_config_file_yaml_and_toml_flags_win(host, tmp_path):
    (tmp_path / "c.yaml").write_text("pruner: random\nkeep: 0.3\nipc: 2\nseed: 5\ndistiller_options: {iterations: 9}\n")
    (tmp_path / "c.toml").write_text('pruner = "random"\nkeep = 0.3\nipc = 2\nseed = 5\n[distiller_options]\niterations = 9\n')
    for name in ("c.yaml", "c.toml"):
        res = invoke("config", "--config", tmp_path / name, "--seed", "7", "-D", "lr_img=3")
        assert res.exit_code == 0, res.stderr
        cfg = json.loads(res.output)
        assert cfg["seed"] == 7  # flag wins
        assert cfg["ipc"] == 2 and cfg["resolved"]["keep"] == 0.3 and cfg["pruner"] == "random"  # file values kept
        assert cfg["resolved"]["distiller_options"]["iterations"] == 9
        assert cfg["resolved"]["distiller_options"]["lr_img"] == 3.0


def _modules_after(code: str) -> set:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PD_LOAD_PLUGINS": ""}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    return set(json.loads(res.stdout.strip().splitlines()[-1]))


def test_cli_import_does_not_import_torch():
    mods = _modules_after("import sys, json, pd_plugins.cli; print(json.dumps(sorted(sys.modules)))")
    assert "pd_plugins.cli" in mods and "torch" not in mods and "kornia" not in mods


@pytest.mark.parametrize("argv", [["--help"], ["list"], ["list", "pruners"], ["show", "pruner", "random"]])
def test_module_entry_does_not_import_torch(argv):
    code = (
        "import sys, json, runpy\n"
        f"sys.argv = ['pd_plugins'] + {argv!r}\n"
        "try:\n    runpy.run_module('pd_plugins', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    mods = _modules_after(code)
    assert "torch" not in mods, argv


def test_prune_then_distill_from(host, tmp_path):
    src = tmp_path / "p"
    res = invoke("prune", "--pruner", "random", "--keep", "0.3", "--out", src, "--no-progress")
    assert res.exit_code == 0, res.stderr
    assert (src / "prune.pt").is_file() and not (src / "distill.pt").exists()
    res = invoke("distill", "--from", src, "-D", "iterations=2", "-E", "epochs=1", "--eval-repeats", "1",
                 "--no-progress", "--json")
    assert res.exit_code == 0, res.stderr
    out = Path(json.loads(res.output)["out"])
    assert out == Path(f"{src}-dm-ipc10")
    assert (out / "prune.pt").read_bytes() == (src / "prune.pt").read_bytes()  # reused, not recomputed
    assert all((out / name).is_file() for name in ARTIFACTS)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["resolved"]["keep"] == 0.3 and cfg["pruner"] == "random"
