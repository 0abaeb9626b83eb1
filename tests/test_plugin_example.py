"""The third-party example package installs and is found through its `pd_plugins` entry point."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "pd-plugins-forgetting"


@pytest.fixture(scope="session")
def plugin_env(tmp_path_factory):
    """Install the example into a temporary target dir; an env that sees it (and loads entry points)."""
    import shutil

    target = tmp_path_factory.mktemp("site")
    src = tmp_path_factory.mktemp("src") / EXAMPLE.name
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(src)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"pip install of the example failed: {proc.stderr[-2000:]}")
    env = {k: v for k, v in os.environ.items() if k not in ("PD_LOAD_PLUGINS", "PD_STRICT_PLUGINS")}
    env["PYTHONPATH"] = os.pathsep.join([str(target), str(ROOT)])
    env["PD_STRICT_PLUGINS"] = "1"  # a broken plugin must fail the test, not be skipped
    return env, target


def _pd(env, *args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pd_plugins", *args], env=env, capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_example_plugin_is_listed_and_runs(plugin_env, tmp_path):
    env, target = plugin_env
    assert list(target.glob("pd_plugins_forgetting-*.dist-info/entry_points.txt"))
    listed = _pd(env, "list", "pruners")
    assert listed.returncode == 0, listed.stderr
    line = next(ln for ln in listed.stdout.splitlines() if ln.strip().startswith("forgetting"))
    assert "pd-plugins-forgetting" in line  # origin: the third-party distribution
    out = tmp_path / "run"
    res = _pd(env, "--pruner", "forgetting", "--keep", "0.5", "-P", "epochs=2", "-P", "augment=false",
              "--model-option", "width=16", "--distiller", "none", "--evaluator", "none", "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["pruner"] == "forgetting" and summary["kept"] == sum(c // 2 for c in _class_counts())
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["resolved"]["pruner_options"]["epochs"] == 2
    # the kept samples are the most forgotten of each class
    import torch

    saved = torch.load(out / "prune.pt", weights_only=True)
    scores, kept = saved["scores"], saved["keep"]
    assert torch.isfinite(scores).all() and scores.max() <= 2
    dropped = torch.ones(len(scores), dtype=torch.bool)
    dropped[kept] = False
    from pd_plugins.data.builtin import digits

    labels = digits(None).train.hard_labels
    for c in range(10):
        k, d = scores[kept][labels[kept] == c], scores[dropped][labels[dropped] == c]
        assert k.min() >= d.max()
    # the plugin's own tests pass against the installed package
    own = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
                         env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert own.returncode == 0, own.stdout[-2000:]


def _class_counts():
    from pd_plugins.data.builtin import digits

    import torch

    return torch.bincount(digits(None).train.hard_labels, minlength=10).tolist()
