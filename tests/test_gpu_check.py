"""benchmarks/gpu_check.py, the prepared GPU check: its dry mode runs every step at toy size on this CPU
(what CI can check of it), its real mode refuses a machine without CUDA in one line, and gpu_check.sh
names what a GPU machine lacks instead of failing inside Python."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.setenv("PD_CACHE_DIR", os.environ.get("PD_CACHE_DIR", ""))  # the script sets its own: restored after
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", BENCH / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("_common", None)


def test_dry_run_runs_every_step_at_toy_size(gpu_check, tmp_path, capsys):
    out = tmp_path / "out"
    before = sorted(p.name for p in gpu_check.RESULTS_GPU.parent.iterdir())
    assert gpu_check.main(["--device", "cpu", "--dry-run", "--out", str(out), "--scratch", str(tmp_path / "s")]) == 0
    report = json.loads((out / "gpu_check.json").read_text())
    steps = report["steps"]
    assert {n: s["status"] for n, s in steps.items()} == {n: "ok" for n in ("tests", "runs", "speed", "accuracy")}

    # the device tests: collected on a dry run, as many as the suite marks
    assert steps["tests"]["collect_only"] and steps["tests"]["collected"] >= 25
    assert "tests/test_device.py" in steps["tests"]["files"]
    # one end-to-end pd-run per distiller and pruner, each on the device it names, with an accuracy
    runs = steps["runs"]["runs"]
    assert set(runs) == {f"distiller {d}" for d in ("dc", "dsa", "dm", "mtt", "glad", "ld3m")} | {
        f"pruner {p}" for p in ("random", "loss-easy", "loss-hard", "el2n-window", "early-loss")}
    assert all(r["exit"] == 0 and r["device"] == "cpu" and 0 <= r["acc"] <= 100 for r in runs.values())
    assert runs["distiller mtt"]["learned_lr"] > 0 and runs["distiller dm"]["artifact_on"] == "cpu"
    # speed: the floor-relative ratio of each mode, bench_speed's own files brought up to OUT
    rows = steps["speed"]["speed"]["rows"]
    assert {(r["method"], r["mode"]) for r in rows} == {("dm", "fp32"), ("dm", "bf16")}
    assert all(r["ratio"] > 0 and r["floor_s"] > 0 for r in rows)
    assert json.loads((out / "speed.json").read_text())["device"] == "cpu"
    # accuracy: both arms against random real, published numbers beside, not judged at toy size
    verdicts = steps["accuracy"]["verdicts"]
    assert set(verdicts) == {"dm_ipc10", "mtt_ipc1"}
    for v in verdicts.values():
        assert not v["judged"] and v["margin_pp"] == pytest.approx(v["ours"] - v["random_real"], abs=0.011)
    assert verdicts["dm_ipc10"]["published"] == 48.9 and verdicts["mtt_ipc1"]["published"] == 46.3

    env, prov = report["environment"], report["provenance"]
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and env["type"] == "cpu"
    assert len(prov["commit"]) == 40 and prov["date"].startswith("20")
    md = (out / "gpu_check.md").read_text()
    assert f"Measured on commit `{prov['commit'][:10]}`" in md and "| distiller ld3m | ok |" in md
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert files == ["gpu_check.json", "gpu_check.md", "speed.json", "speed.md"]  # <= 8 files, none nested
    assert sorted(p.name for p in gpu_check.RESULTS_GPU.parent.iterdir()) == before  # results/ untouched
    assert "every step ok" in capsys.readouterr().err


def test_real_mode_needs_cuda_and_says_so_in_one_line(gpu_check, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CUDA is not available" in err[0]
    assert gpu_check.main(["--device", "cpu", "--out", str(tmp_path / "o")]) == 2
    assert "measures no GPU" in capsys.readouterr().err
    assert gpu_check.main(["--device", "cpu", "--dry-run"]) == 2
    assert "--dry-run needs --out" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_sizes_and_runs_cover_every_builtin(gpu_check, host):
    regs = host.registries()
    assert set(gpu_check.DISTILLER_RUNS) == {"dc", "dsa", "dm", "mtt", "glad", "ld3m"}
    assert set(gpu_check.PRUNER_RUNS) == set(regs["pruner"].names())
    for mode in ("real", "dry"):
        sizes = gpu_check.SIZES[mode]
        modes = sizes["speed"]["modes"].split(",") + [m for m in sizes["speed"]["switch_modes"].split(",") if m]
        bench = importlib.util.spec_from_file_location("bench_speed_modes", BENCH / "bench_speed.py")
        mod = importlib.util.module_from_spec(bench)
        bench.loader.exec_module(mod)
        assert set(modes) <= set(mod.MODES), modes
    assert gpu_check.SIZES["real"]["budget_s"] <= 8 * 60  # the bound on one H100


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_shell_wrapper_names_missing_packages(tmp_path):
    bare = next((p for p in ("/usr/bin/python3", "/bin/python3") if Path(p).exists()), None)
    if bare is None or subprocess.run([bare, "-c", "import torch"], capture_output=True).returncode == 0:
        pytest.skip("needs a python3 without torch")
    env = {**os.environ, "PYTHON": bare, "PD_WHEELS": str(tmp_path / "no-wheels"), "PYTHONPATH": ""}
    res = subprocess.run(["bash", str(BENCH / "gpu_check.sh"), "--dry-run"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check.sh: missing torch, kornia") and ".whl/" in lines[0]


def test_bench_speed_counts_the_host_waits_of_an_iteration(monkeypatch):
    """CUDA's sync debug mode warns at every call that makes the host wait; bench_speed counts them."""
    import warnings

    spec = importlib.util.spec_from_file_location("bench_speed_syncs", BENCH / "bench_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    modes = []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)

    def iteration():
        for _ in range(3):
            warnings.warn("called a synchronizing CUDA operation", UserWarning)
        warnings.warn("something else", UserWarning)

    assert mod._count_syncs(iteration) == 3 and modes == ["warn", "default"]
