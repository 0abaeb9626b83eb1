"""benchmarks/run_all.py: script discovery, flag passing and the combined README table."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def run_all(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("run_all_under_test", BENCH / "run_all.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("_common", None)


def test_discovers_every_bench_script(run_all):
    names = {p.name for p in run_all.scripts()}
    assert {"bench_pruners.py", "bench_distillers.py", "bench_startup.py", "bench_scaling.py"} <= names
    assert "run_all.py" not in names and {p.name for p in run_all.scripts({"startup"})} == {"bench_startup.py"}


def test_flags_only_where_supported(run_all, tmp_path):
    assert run_all.flags(BENCH / "bench_scaling.py", False, "cuda") == ["--quick", "--device", "cuda"]
    assert run_all.flags(BENCH / "bench_scaling.py", True, None) == []
    assert run_all.flags(BENCH / "bench_distillers.py", True, "cuda") == ["--device", "cuda"]
    bare = tmp_path / "bench_bare.py"
    bare.write_text("print('no options')\n")
    assert run_all.flags(bare, False, "cuda") == []  # takes neither flag


def test_readme_table(run_all, tmp_path, monkeypatch):
    monkeypatch.setattr(run_all, "RESULTS", tmp_path)
    (tmp_path / "x.json").write_text(json.dumps({"a": {"b": 0.123456, "c": [1, 2.5]}, "name": "cpu"}))
    (tmp_path / "broken.json").write_text("{")
    text = run_all.write_readme([{"script": "bench_x.py", "returncode": 0, "seconds": 1.25, "loadavg": [1.0]}]).read_text()
    assert "| bench_x.py | 0 | 1.2 | [1.0] |" in text or "| bench_x.py | 0 | 1.3 | [1.0] |" in text
    assert "## x" in text and "| a.b | 0.1235 |" in text and "| a.c | 1, 2.5 |" in text and "| name | cpu |" in text
    assert "broken" not in text
