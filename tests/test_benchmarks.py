"""benchmarks/run_all.py (job discovery, flag passing, the combined README table) and the results'
provenance: every results file names its commit and date and fails here once the code it measured changes."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(monkeypatch, filename: str):
    """A benchmarks/ module by path (they import ``_common`` from their own folder)."""
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location(f"{Path(filename).stem}_under_test", BENCH / filename)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def run_all(monkeypatch):
    yield _load(monkeypatch, "run_all.py")
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
    assert run_all.flags(BENCH / "bench_generative.py", True, None, tmp_path) == [
        "--decoder", str(tmp_path / "decoder"), "--ldm", str(tmp_path / "ldm")]


def test_jobs_cover_every_results_file(run_all, tmp_path):
    names = {name for name, _ in run_all.jobs(priors=tmp_path)}
    assert {"startup", "distillers", "speed", "generative", "digits_accuracy_ipc10", "digits_generative_ipc1"} <= names
    for path in (BENCH / "results").glob("*.json"):  # one command regenerates every results file
        assert path.stem in names | {"run_all"}, path
    (only,) = run_all.jobs({"digits_accuracy_ipc1"})
    assert only == ("digits_accuracy_ipc1", [str(BENCH / "digits_accuracy.py"), "1", "2"])


def test_readme_table(run_all, tmp_path, monkeypatch):
    monkeypatch.setattr(run_all, "RESULTS", tmp_path)
    (tmp_path / "x.json").write_text(json.dumps({"a": {"b": 0.123456, "c": [1, 2.5]}, "name": "cpu",
                                                 "provenance": {"commit": "0123456789abcdef", "date": "2026-01-02",
                                                                "command": "python bench_x.py", "measures": {"f": "1"}}}))
    (tmp_path / "broken.json").write_text("{")
    text = run_all.write_readme([{"script": "bench_x.py", "returncode": 0, "seconds": 1.25, "loadavg": [1.0]}]).read_text()
    assert "| bench_x.py | 0 | 1.2 | [1.0] |" in text or "| bench_x.py | 0 | 1.3 | [1.0] |" in text
    assert "## x" in text and "| a.b | 0.1235 |" in text and "| a.c | 1, 2.5 |" in text and "| name | cpu |" in text
    assert "broken" not in text
    assert "Measured on commit `0123456789` (2026-01-02): `python bench_x.py`." in text
    assert "measures" not in text  # provenance is a sentence, not table rows


# -- provenance and staleness of benchmarks/results/ -----------------------------------------------
@pytest.fixture
def common(monkeypatch):
    return _load(monkeypatch, "_common.py")


def _results():
    return sorted((BENCH / "results").glob("*.json"))


def test_no_results_file_is_older_than_the_code_it_measures(common):
    current = common.current_fingerprints()
    stale = []
    for path in _results():
        data = json.loads(path.read_text())
        changed = common.stale_files(data, current)
        if changed:
            prov = (data.get("provenance") if isinstance(data, dict) else None) or {}
            cmd = "python benchmarks/run_all.py" if path.stem == "run_all" else common.REGENERATE.format(name=path.stem)
            stale.append(f"{path.name} (measured on {str(prov.get('commit'))[:10]} {prov.get('date')}; changed since: "
                         f"{', '.join(changed[:5])}): regenerate with `{cmd}` or delete it")
    assert not stale, "stale benchmark results:\n" + "\n".join(stale)


def test_results_files_name_their_commit_and_date(common):
    stems = {p.stem for p in _results()}
    for path in _results():
        prov = json.loads(path.read_text())["provenance"]
        assert len(prov["commit"]) == 40 and int(prov["commit"], 16) >= 0, path
        assert prov["date"][:2] == "20" and "T" in prov["date"], path
    others = [p for p in (BENCH / "results").iterdir() if p.suffix != ".json"]
    for path in others:  # every other file is generated from a json that records its provenance
        assert path.name == "README.md" or (path.suffix in (".md", ".png") and path.stem in stems), path
        if path.suffix == ".md" and path.name != "README.md":
            commit = json.loads((BENCH / "results" / f"{path.stem}.json").read_text())["provenance"]["commit"]
            assert commit[:10] in path.read_text(), path
    readme = (BENCH / "results" / "README.md").read_text()
    sections = {line[3:].strip() for line in readme.splitlines() if line.startswith("## ")}
    assert sections == stems - {"run_all"}, "results/README.md quotes deleted or missing results"
    for stem in sections:
        commit = json.loads((BENCH / "results" / f"{stem}.json").read_text())["provenance"]["commit"]
        assert f"Measured on commit `{commit[:10]}`" in readme, stem


def test_fingerprint_survives_moves_not_changes(common):
    src = '"""Doc."""\nfrom ..options import option\n\n\ndef f(x):\n    """Twice."""\n    return 2 * x\n'
    fp = common.code_fingerprint(src)
    moved = src.replace("from ..options import option", "from ...core.options import option")
    assert common.code_fingerprint(moved) == fp
    assert common.code_fingerprint(moved.replace('"""Twice."""', '"""Double x."""')) == fp
    assert common.code_fingerprint(src.replace("2 * x", "3 * x")) != fp
    assert common.code_fingerprint(src.replace("def f(x)", "def f(x, y=0)")) != fp


def test_stale_files_follow_moved_code(common, tmp_path):
    (tmp_path / "pd_plugins").mkdir()
    (tmp_path / "benchmarks").mkdir()
    old = tmp_path / "pd_plugins" / "evaluate.py"
    old.write_text("from .nets import convnet\n\n\ndef acc(n):\n    return n / 10\n")
    result = {"provenance": {"commit": "a" * 40, "date": "2026-01-01T00:00:00+00:00",
                             "measures": {"pd_plugins/evaluate.py": common.code_fingerprint(old.read_text())}}}
    assert common.stale_files(result, common.current_fingerprints(tmp_path)) == []
    (tmp_path / "pd_plugins" / "training").mkdir()  # moved into a sub-package, imports rewritten: still fresh
    old.rename(tmp_path / "pd_plugins" / "training" / "evaluate.py")
    new = tmp_path / "pd_plugins" / "training" / "evaluate.py"
    new.write_text(new.read_text().replace("from .nets", "from ..models.nets"))
    assert common.stale_files(result, common.current_fingerprints(tmp_path)) == []
    new.write_text(new.read_text().replace("n / 10", "n / 100"))  # changed: stale
    assert common.stale_files(result, common.current_fingerprints(tmp_path)) == ["pd_plugins/evaluate.py"]
    assert common.stale_files({"acc": 0.9}, set()) == ["<no provenance>"]


def test_provenance_records_the_measured_code(common):
    import inspect

    from pd_plugins.distillation.dm import DM

    prov = common.provenance(plugins=[("distiller", "dm")])
    dm_file = str(Path(inspect.getsourcefile(DM)).resolve().relative_to(common.ROOT))
    assert dm_file in prov["measures"] and "benchmarks/_common.py" in prov["measures"]
    assert prov["measures"][dm_file] == common.code_fingerprint(Path(common.ROOT / dm_file).read_text())
    assert len(prov["commit"]) == 40 and prov["date"].endswith("+00:00")


def test_time_to_accuracy_smoke(monkeypatch, tmp_path):
    """Two DM iterations on the embedded digits: snapshots at every iteration, each evaluated with
    the same fixed evaluator, times measured from the distillation's start, all three files written."""
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_tta_under_test", BENCH / "bench_time_to_accuracy.py")
    tta = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, tta)  # its @dataclass looks the module up
    spec.loader.exec_module(tta)
    monkeypatch.setattr(sys.modules["_common"], "RESULTS", tmp_path)
    monkeypatch.setattr(tta, "RESULTS", tmp_path)
    try:
        tta.main(["--quick", "--dataset", "digits", "--distillers", "dm", "--paths", "fp32", "--iterations", "dm=2",
                  "--every", "dm=1", "--eval-epochs", "1", "--threads", "1", "--name", "tta"])
    finally:
        sys.modules.pop("_common", None)
    out = json.loads((tmp_path / "tta.json").read_text())
    run = out["runs"]["dm/fp32"]
    curve = run["curve"]
    assert [r["iteration"] for r in curve] == [0, 1, 2]
    assert curve[0]["time_s"] == 0.0 and 0 < curve[1]["time_s"] <= curve[2]["time_s"]
    assert curve[2]["time_s"] == pytest.approx(run["distill_s"], abs=1e-3)
    assert all(0.0 <= r["acc_mean"] <= 1.0 and len(r["accs"]) == 1 for r in curve)
    assert out["settings"]["eval"]["epochs"] == 1 and out["complete"] and out["provenance"]["commit"]
    assert run["precision_effective"] == "fp32" and run["compile"] is False
    md = (tmp_path / "tta.md").read_text()
    assert "| dm | fp32 | 2 |" in md and f"Measured on commit `{out['provenance']['commit'][:10]}`" in md
    assert (tmp_path / "tta.png").read_bytes()[:4] == b"\x89PNG"
    assert tta.first_reaching(curve, 2.0) is None
    assert tta.first_reaching(curve, 0.0) == {"iteration": 0, "time_s": 0.0}
