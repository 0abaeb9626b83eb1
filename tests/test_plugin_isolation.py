"""Misbehaving third-party plugins, installed as real distributions with `pd_plugins` entry points,
leave every other command working and are reported in one line naming the plugin.

Each distribution is written as an installed ``*.dist-info`` (METADATA + entry_points.txt, what pip
writes) next to its module in a temporary site dir, which ``python -m pd_plugins`` sees through
PYTHONPATH; ``PD_LOAD_PLUGINS`` picks the plugins a test loads.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# distribution -> (version, entry-point name, module source)
MISFITS = {
    "pd-copycat": ("9.9", "copycat", '''
from pd_plugins import hookimpl

@hookimpl
def register_pruners(register):
    register("copycat-extra", "pd_plugins.pruning.random:RandomPruner", summary="registered next to the clash")
    register("random", "pd_plugins.pruning.random:RandomPruner", summary="a second 'random'")
'''),
    "pd-override": ("1.0", "override", '''
from pd_plugins import hookimpl

@hookimpl
def register_pruners(register):
    register("random", "pd_plugins.pruning.random:RandomPruner", summary="override's random", replace=True)
'''),
    "pd-wrongkind": ("0.3", "wrongkind", '''
from pd_plugins import hookimpl

@hookimpl
def register_pruners(register):
    register("dm-as-pruner", "pd_plugins.distillation.dm:DM", summary="a distiller registered as a pruner")
'''),
    "pd-eagerkind": ("0.2", "eagerkind", '''
from pd_plugins import hookimpl

class NotAPruner:
    """A plain class, registered eagerly as a pruner."""

@hookimpl
def register_pruners(register):
    register("not-a-pruner", NotAPruner)
'''),
    "pd-grand": ("0.5", "grand", '''
import not_installed_dep_for_pd_tests  # noqa: F401  (the import fails)
from pd_plugins import hookimpl

@hookimpl
def register_pruners(register):
    register("grand", "pd_grand_impl:Grand")
'''),
}


def _install(site: Path, dist: str, version: str, ep_name: str, source: str) -> None:
    module = dist.replace("-", "_")
    (site / f"{module}.py").write_text(source)
    info = site / f"{module}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[pd_plugins]\n{ep_name} = {module}\n")
    (info / "top_level.txt").write_text(module + "\n")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site = tmp_path_factory.mktemp("misfits-site")
    for dist, (version, ep_name, source) in MISFITS.items():
        _install(site, dist, version, ep_name, source)
    return site


def _pd(site, *args, load=None, strict=False, cwd=None):
    env = {k: v for k, v in os.environ.items() if k not in ("PD_LOAD_PLUGINS", "PD_STRICT_PLUGINS", "PD_DEBUG")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    if load is not None:
        env["PD_LOAD_PLUGINS"] = load
    if strict:
        env["PD_STRICT_PLUGINS"] = "1"
    return subprocess.run([sys.executable, "-m", "pd_plugins", *args], env=env, capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def _row(stdout: str, name: str) -> str:
    return next(ln for ln in stdout.splitlines() if ln.split() and ln.split()[0] == name)


def test_duplicate_name_skips_the_plugin_in_one_line(site):
    listed = _pd(site, "list", "pruners", load="copycat")
    assert listed.returncode == 0, listed.stderr
    err = _lines(listed.stderr)
    assert len(err) == 1, err
    assert "skipping plugin 'copycat'" in err[0] and "pd-copycat 9.9" in err[0]
    assert "duplicate pruner name 'random'" in err[0] and "pd-plugins" in err[0]  # names both plugins
    assert "pd-copycat" not in _row(listed.stdout, "random")  # the built-in keeps its name
    assert "copycat-extra" not in listed.stdout  # a skipped plugin registers nothing

    plugins = _pd(site, "plugins", load="copycat")
    assert plugins.returncode == 0, plugins.stderr
    report = json.loads(plugins.stdout)
    assert [f["name"] for f in report["failed"]] == ["copycat"] and report["failed"][0]["dist"] == "pd-copycat"
    assert "copycat" not in [p["name"] for p in report["plugins"]]

    shown = _pd(site, "show", "pruner", "random", load="copycat")
    assert shown.returncode == 0 and "pd-plugins" in shown.stdout.splitlines()[0], shown.stderr


def test_duplicate_name_is_fatal_in_strict_mode(site):
    res = _pd(site, "list", "pruners", load="copycat", strict=True)
    assert res.returncode == 3
    err = _lines(res.stderr)
    assert len(err) == 1 and err[0].startswith("Error:") and "'copycat'" in err[0] and "pd-plugins" in err[0], err


def test_replace_is_listed_and_warned_once(site):
    listed = _pd(site, "list", "pruners", load="override")
    assert listed.returncode == 0, listed.stderr
    row = _row(listed.stdout, "random")
    assert "pd-override 1.0" in row and "replaces" in row and "pd-plugins" in row
    err = _lines(listed.stderr)
    assert len(err) == 1 and "'override'" in err[0] and "replaces pruner 'random'" in err[0], err

    as_json = json.loads(_pd(site, "list", "pruners", "--json", load="override").stdout)
    entry = next(e for e in as_json["pruners"] if e["name"] == "random")
    assert entry["plugin"] == "override" and "pd-plugins" in entry["replaces"]

    plugins = _pd(site, "plugins", load="override")
    assert plugins.returncode == 0 and len(_lines(plugins.stderr)) == 1, plugins.stderr
    item = next(p for p in json.loads(plugins.stdout)["plugins"] if p["name"] == "override")
    assert item["replaces"] and "pruner 'random'" in item["replaces"][0]


def test_wrong_kind_class_is_refused_at_registration(site):
    listed = _pd(site, "list", "pruners", load="eagerkind")
    assert listed.returncode == 0, listed.stderr
    err = _lines(listed.stderr)
    assert len(err) == 1 and "skipping plugin 'eagerkind'" in err[0] and "pd-eagerkind 0.2" in err[0], err
    assert "Pruner" in err[0] and "not-a-pruner" not in listed.stdout


def test_wrong_kind_lazy_factory_is_refused_on_load(site, tmp_path):
    listed = _pd(site, "list", load="wrongkind")  # lazy: listing does not import it and still works
    assert listed.returncode == 0 and not listed.stderr.strip(), listed.stderr
    assert "dm-as-pruner" in listed.stdout

    for args in (["show", "pruner", "dm-as-pruner"],
                 ["--pruner", "dm-as-pruner", "--keep", "0.5", "--distiller", "none", "--evaluator", "none",
                  "--out", str(tmp_path / "run")]):
        res = _pd(site, *args, load="wrongkind")
        assert res.returncode == 1, res.stdout + res.stderr
        err = _lines(res.stderr)
        assert len(err) == 1 and err[0].startswith("Error:") and "Traceback" not in res.stderr, err
        assert "'wrongkind'" in err[0] and "pd-wrongkind 0.3" in err[0] and "is a distiller" in err[0], err
    assert not (tmp_path / "run" / "prune.pt").exists()


def test_failed_import_is_named_by_unknown_names(site, tmp_path):
    listed = _pd(site, "list", "pruners", load="grand")
    assert listed.returncode == 0, listed.stderr
    err = _lines(listed.stderr)
    assert len(err) == 1 and "skipping plugin 'grand'" in err[0] and "not_installed_dep_for_pd_tests" in err[0]

    res = _pd(site, "--pruner", "grand", "--keep", "0.5", "--distiller", "none", "--evaluator", "none",
              "--out", str(tmp_path / "run"), load="grand")
    assert res.returncode == 1
    error = [ln for ln in _lines(res.stderr) if ln.startswith("Error:")]
    assert len(error) == 1 and "unknown pruner 'grand'" in error[0], res.stderr
    assert "plugin 'grand' (pd-grand 0.5) failed to load" in error[0], error[0]


def test_all_misfits_together_leave_list_and_plugins_working(site):
    listed = _pd(site, "list")
    assert listed.returncode == 0, listed.stderr
    err = _lines(listed.stderr)
    # one line each: three skipped plugins and the replace notice; the lazy wrong kind is only refused on use
    assert len(err) == 4, err
    for name in ("copycat", "eagerkind", "grand"):
        assert sum(f"skipping plugin '{name}'" in ln for ln in err) == 1, (name, err)
    assert sum(ln.startswith("pd_plugins: plugin 'override'") and "replaces" in ln for ln in err) == 1, err
    for name in ("random", "dm-as-pruner", "dm", "digits"):
        assert _row(listed.stdout, name)
    plugins = _pd(site, "plugins")
    assert plugins.returncode == 0, plugins.stderr
    report = json.loads(plugins.stdout)
    assert sorted(f["name"] for f in report["failed"]) == ["copycat", "eagerkind", "grand"]
    assert sorted(p["name"] for p in report["plugins"]) == ["override", "wrongkind"]
