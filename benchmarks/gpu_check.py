"""The prepared GPU check (issue 26): what one short lease of a GPU should run, in one command.

Steps, each recorded in ``OUT/gpu_check.json`` and ``OUT/gpu_check.md`` with the device, driver,
torch version and commit:

1. ``tests``: the device-parametrised tests, ``pytest -m device --device DEVICE`` (conformance of every
   pruner and distiller -- determinism and bit-exact resume included -- DSA, bf16, an end-to-end run).
2. ``runs``: one short end-to-end ``pd-run`` per distiller (dc, dsa, dm, mtt, glad, ld3m with a tiny
   prior) and per pruner on the embedded digits; exit code, accuracy, seconds, peak CUDA memory per stage.
3. ``speed``: ``bench_speed.py`` on the device -- each distiller's iteration in units of that GPU's fp32
   fwd+bwd, fp32 and the fast path, with peak memory and the host-device synchronisations of one
   iteration (``OUT/speed.*``), and each fast-path switch alone on DM (``OUT/speed_switches.*``): bf16,
   compile+bf16, channels_last, cudnn_benchmark.
4. ``accuracy``: the CIFAR-10 subset (4,000 train / 1,000 test) with DM at ipc 10 and MTT at ipc 1 (ZCA),
   each against a random real subset of the same ipc, the published full-CIFAR-10 numbers beside ours.

``--dry-run`` runs the same steps at toy size (the tests are collected, not run; the accuracy check uses
digits) so CI checks the script on a CPU (tests/test_gpu_check.py). Without ``--dry-run`` the device
must be CUDA: anything else is one line and exit 2. A global time budget (``--budget-s``) is shared by
the steps; a step that no longer fits is recorded as skipped. Bulky files (run directories, caches) go
to a scratch folder, so ``OUT`` holds at most 8 files (what the device tool brings back).

    benchmarks/gpu_check.sh [--out DIR]        # on a lent GPU: installs carried wheels, then runs this
    python benchmarks/gpu_check.py --device cuda [--out benchmarks/results/gpu] [--budget-s 450]
    python benchmarks/gpu_check.py --device cpu --dry-run --out /tmp/gpu-dry

docs/gpu.md says how to run it on a lent machine and what its numbers mean.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_GPU = HERE / "results" / "gpu"
SHARED = ROOT.parent / "shared" / "data"
CARRIED = ROOT / ".gpu"  # data and the commit carried to a GPU machine (docs/gpu.md); ignored by git
PUBLISHED = {"dm_ipc10": {"acc": 48.9, "source": "Zhao & Bilen, WACV 2023, Table 1 (CIFAR-10, ipc 10, 50k images)"},
             "mtt_ipc1": {"acc": 46.3,
                          "source": "Cazenavette et al., CVPR 2022, Table 1 (CIFAR-10, ipc 1, ZCA, 50k images)"}}
MARGIN_PP = 3.0  # 'beats random real by a clear margin': at least this many points above it

#: what each mode runs; "real" is sized to finish in about 7 minutes on one H100 (not yet measured there)
SIZES = {
    "real": {"budget_s": 450, "tests_timeout_s": 150, "run_iterations": 20, "run_eval_epochs": 50,
             "speed": {"methods": "dm,dc1,dsa10,mtt,experts", "modes": "fp32,fast", "switch_methods": "dm",
                       "switch_modes": "bf16,compile+bf16,channels_last,cudnn_benchmark", "width": 128,
                       "timeout_s": 150, "step_s": 170},
             "accuracy": {"dataset": "cifar10", "eval": ["-E", "epochs=1000", "--eval-repeats", "3"],
                          "dm": ["-D", "iterations=1000", "-D", "batch_real=256"],
                          "mtt": ["-D", "iterations=300", "-D", "syn_steps=50", "-D", "expert_epochs=2",
                                  "-D", "max_start_epoch=2", "-D", "train_epochs=20", "-D", "experts=10",
                                  "-D", "lr_img=1000", "-D", "lr_lr=1e-7", "-D", "zca=true"]}},
    "dry": {"budget_s": 240, "tests_timeout_s": 120, "run_iterations": 1, "run_eval_epochs": 1,
            "speed": {"methods": "dm", "modes": "fp32,bf16", "switch_methods": "", "switch_modes": "",
                      "width": 8, "timeout_s": 90, "step_s": 120},
            "accuracy": {"dataset": "digits", "eval": ["-E", "epochs=5", "--eval-repeats", "1"],
                         "dm": ["-D", "iterations=3", "-D", "batch_real=16"],
                         "mtt": ["-D", "iterations=3", "-D", "syn_steps=3", "-D", "expert_epochs=1",
                                 "-D", "max_start_epoch=1", "-D", "train_epochs=2", "-D", "experts=2",
                                 "-D", "lr_img=100", "-D", "lr_lr=1e-7", "-D", "zca=true"]}},
}

#: the end-to-end runs: distillers at ipc 1 (pruner none), pruners with no distiller (the pruned set evaluated)
DISTILLER_RUNS = {
    "dc": ["--distiller", "dc", "-D", "outer_loop=1", "-D", "inner_loop=1"],
    "dsa": ["--distiller", "dsa", "-D", "outer_loop=1", "-D", "inner_loop=1"],
    "dm": ["--distiller", "dm"],
    "mtt": ["--distiller", "mtt", "-D", "syn_steps=5", "-D", "expert_epochs=1", "-D", "max_start_epoch=1",
            "-D", "train_epochs=2", "-D", "experts=2"],
    "glad": ["--distiller", "glad"],
    "ld3m": ["--distiller", "ld3m", "-D", "prior_ae_epochs=1", "-D", "prior_unet_epochs=1", "-D", "prior_width=8",
             "-D", "steps=2"],
}
PRUNER_RUNS = {
    "random": [],
    "loss-easy": ["-P", "epochs=2"],
    "loss-hard": ["-P", "epochs=2"],
    "el2n-window": ["-P", "epochs=2", "-P", "models=2", "-P", "score_epoch=1"],
    "early-loss": ["-P", "epochs=1", "-P", "trials=2"],
}


class Deadline:
    """The run's shared time budget."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())


# -- environment ------------------------------------------------------------------------------------

def commit() -> dict:
    """The commit measured: git where the checkout has it, else ``.gpu/COMMIT`` written before the copy."""
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode == 0 and out.stdout.strip():
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "pd_plugins", "benchmarks", "tests"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return {"commit": out.stdout.strip(), "dirty": bool(dirty), "from": "git"}
    carried = CARRIED / "COMMIT"
    if carried.is_file():
        words = carried.read_text().split()
        return {"commit": words[0], "dirty": "dirty" in words[1:], "from": str(carried.relative_to(ROOT))}
    return {"commit": "", "dirty": None, "from": "unknown (no git, no .gpu/COMMIT)"}


def stamp_commit(path: Path) -> None:
    """Name the carried commit in a results file written where git was not (its provenance says it)."""
    known = commit()
    if known["from"] == "git" or not path.exists():
        return
    data = json.loads(path.read_text())
    data.setdefault("provenance", {}).update(commit=known["commit"], dirty=known["dirty"], commit_from=known["from"])
    path.write_text(json.dumps(data, indent=2) + "\n")


def driver_version() -> str:
    """The NVIDIA driver (nvidia-smi), or why it is unknown."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "no nvidia-smi"
    out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True)
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"


def environment(device: str) -> dict:
    import torch

    from pd_plugins import __version__
    from pd_plugins.training.device import describe

    env = {"device": device, **describe(device), "torch": torch.__version__, "python": platform.python_version(),
           "pd_plugins": __version__, "host": platform.node(), "cpu_count": os.cpu_count()}
    if device.startswith("cuda"):
        env["driver"] = driver_version()
    try:
        import kornia

        env["kornia"] = kornia.__version__
    except ImportError:
        env["kornia"] = None
    return env


# -- 1. the device-parametrised tests ---------------------------------------------------------------

def device_test_files() -> list[str]:
    """The test files holding tests marked ``@pytest.mark.device``."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                  if "pytest.mark.device" in p.read_text())


def step_tests(device: str, dry: bool, timeout: float, scratch: Path) -> dict:
    files = device_test_files()
    xml = scratch / "pytest.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "device", "--device", device, *files]
    cmd += ["--collect-only"] if dry else ["--junitxml", str(xml)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "timeout_s": round(timeout), "files": files}
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
    out = {"files": files, "returncode": proc.returncode, "tail": tail, "collect_only": dry}
    if dry:
        collected = [ln for ln in proc.stdout.splitlines() if "::" in ln]
        out.update(collected=len(collected), status="ok" if proc.returncode == 0 and collected else "failed")
        return out
    out.update(junit_counts(xml))
    out["status"] = "ok" if proc.returncode == 0 else "failed"
    return out


def junit_counts(path: Path) -> dict:
    """Passed / failed / skipped counts and the failing test ids of a pytest junit file."""
    import xml.etree.ElementTree as ET

    if not path.exists():
        return {}
    cases = list(ET.parse(path).getroot().iter("testcase"))
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in cases
              if c.find("failure") is not None or c.find("error") is not None]
    skipped = sum(c.find("skipped") is not None for c in cases)
    return {"tests": len(cases), "failed": failed, "skipped": skipped, "passed": len(cases) - len(failed) - skipped}


# -- 2. and 4.: pd-run, in this process -------------------------------------------------------------

def pd_run(args: list[str], out: Path) -> dict:
    """One ``pd-run`` (the CLI, in this process): exit code, its one error line, seconds, accuracy, peaks."""
    from click.testing import CliRunner

    from pd_plugins.cli import cli

    t = time.perf_counter()
    res = CliRunner().invoke(cli, ["run", *args, "--out", str(out)])
    row = {"exit": res.exit_code, "seconds": round(time.perf_counter() - t, 1)}
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("Error:")]
    if res.exit_code != 0:
        row["error"] = errors[0] if errors else f"{type(res.exception).__name__}: {res.exception}"[:300]
    manifest = out / "manifest.json"
    if manifest.exists():
        man = json.loads(manifest.read_text())
        row["device"] = man.get("device", {}).get("type")
        peaks = {s: e["cuda_max_memory_allocated_mib"] for s, e in man.get("stages", {}).items()
                 if "cuda_max_memory_allocated_mib" in e}
        if peaks:
            row["peak_cuda_mib"] = peaks
    evaluated = out / "eval.json"
    if evaluated.exists():
        accs = json.loads(evaluated.read_text())["results"][0]["accs"]
        row["acc"] = round(100 * statistics.mean(accs), 2)
        row["accs"] = [round(100 * a, 2) for a in accs]
    distilled = out / "distill.pt"
    if distilled.exists():
        from pd_plugins.types import DistillResult

        result = DistillResult.load(distilled)  # written on the device, read back on the host
        row["artifact_on"] = result.images.device.type
        if result.lr is not None:
            row["learned_lr"] = result.lr
    return row


def step_runs(device: str, sizes: dict, deadline: Deadline, scratch: Path) -> dict:
    common = ["--dataset", "digits", "--device", device, "--no-progress", "--seed", "0", "--eval-repeats", "1",
              "-E", f"epochs={sizes['run_eval_epochs']}"]
    rows = {}
    plan = [(f"distiller {n}", ["--pruner", "none", "--ipc", "1", "-D", f"iterations={sizes['run_iterations']}",
                                *args]) for n, args in DISTILLER_RUNS.items()]
    plan += [(f"pruner {n}", ["--pruner", n, "--distiller", "none", *args]) for n, args in PRUNER_RUNS.items()]
    for name, args in plan:
        if deadline.left() < 5:
            rows[name] = {"status": "skipped: out of time"}
            continue
        row = pd_run([*common, *args], scratch / "runs" / name.replace(" ", "-"))
        row["status"] = "ok" if row["exit"] == 0 and row.get("device") == device.split(":")[0] else "failed"
        rows[name] = row
    failed = [n for n, r in rows.items() if r["status"] != "ok"]
    return {"status": "ok" if not failed else "failed", "failed": failed, "runs": rows}


def data_file(name: str) -> Path | None:
    """A shared data file: ``../shared/data/NAME``, else ``.gpu/NAME`` (carried to a GPU machine)."""
    for folder in (SHARED, CARRIED):
        if (folder / name).is_file():
            return folder / name
    return None


def step_accuracy(device: str, sizes: dict, deadline: Deadline, scratch: Path) -> dict:
    acc = sizes["accuracy"]
    if acc["dataset"] == "cifar10":
        path = data_file("cifar10_exact_subset.npz")
        if path is None:
            return {"status": "skipped: cifar10_exact_subset.npz is neither in ../shared/data nor in .gpu/ "
                              "(carry it: docs/gpu.md)"}
        data = ["--dataset", "npz", "--data-root", str(path), "--budget", "paper"]
    else:
        data = ["--dataset", "digits", "--budget", "quick"]
    common = [*data, "--device", device, "--no-progress", "--seed", "0", "--pruner", "none", *acc["eval"]]
    arms = {"dm_ipc10": ["--ipc", "10", "--distiller", "dm", *acc["dm"]],
            "random_ipc10": ["--ipc", "10", "--distiller", "random"],
            "mtt_ipc1": ["--ipc", "1", "--distiller", "mtt", "--evaluator", "mtt-step-lr", *acc["mtt"]],
            "random_ipc1": ["--ipc", "1", "--distiller", "random"]}
    rows = {}
    for name, args in arms.items():
        if deadline.left() < 10:
            rows[name] = {"status": "skipped: out of time"}
            continue
        rows[name] = pd_run([*common, *args], scratch / "accuracy" / name)
    verdicts = {}
    for method, baseline in (("dm_ipc10", "random_ipc10"), ("mtt_ipc1", "random_ipc1")):
        ours, base = rows[method].get("acc"), rows[baseline].get("acc")
        if ours is None or base is None:
            verdicts[method] = {"judged": False, "why": "a run did not finish"}
            continue
        margin = round(ours - base, 2)
        verdicts[method] = {"ours": ours, "random_real": base, "margin_pp": margin,
                            "published": PUBLISHED[method]["acc"], "published_source": PUBLISHED[method]["source"],
                            "judged": acc["dataset"] == "cifar10", "beats_random": margin >= MARGIN_PP}
    judged = [v for v in verdicts.values() if v.get("judged")]
    finished = all(r.get("exit") == 0 for r in rows.values())
    if acc["dataset"] != "cifar10":
        status = "ok" if finished else "failed"  # toy size: the runs must finish; the margin is not judged
    else:
        status = "ok" if finished and len(judged) == 2 and all(v["beats_random"] for v in judged) else "failed"
    return {"status": status, "dataset": acc["dataset"], "margin_required_pp": MARGIN_PP, "verdicts": verdicts,
            "runs": rows}


# -- 3. speed ---------------------------------------------------------------------------------------

def step_speed(device: str, sizes: dict, deadline: Deadline, out: Path, dry: bool) -> dict:
    sp = sizes["speed"]
    mnist = data_file("mnist.npz")
    data = "digits" if dry or mnist is None else str(mnist)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    if dry:
        env.setdefault("BENCH_THREADS", "1")
    result = {"data": data, "width": sp["width"]}
    jobs = [("speed", sp["methods"], sp["modes"])]
    if sp["switch_methods"]:
        jobs.append(("speed_switches", sp["switch_methods"], sp["switch_modes"]))
    statuses = []
    for name, methods, modes in jobs:
        budget = min(sp["step_s"], deadline.left() - 5)
        if budget < 20:
            result[name] = {"status": "skipped: out of time"}
            statuses.append("skipped")
            continue
        cmd = [sys.executable, str(HERE / "bench_speed.py"), "--quick", "--device", device, "--data", data,
               "--methods", methods, "--modes", modes, "--mtt-memory", "", "--width", str(sp["width"]),
               "--timeout", str(sp["timeout_s"]), "--out", str(out / name)]
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=budget, env=env)
            stdout, code = proc.stdout, proc.returncode
        except subprocess.TimeoutExpired as exc:
            stdout, code = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or ""), None
        rows = [json.loads(ln) for ln in stdout.splitlines() if ln.startswith("{")]
        errors = [f"{r['method']}/{r['mode']}: {r['error']}" for r in rows if "error" in r]
        status = "ok" if code == 0 and rows and not errors else ("timeout" if code is None else "failed")
        kept = ("method", "mode", "ratio", "s_per_iter", "floor_s", "peak_cuda_mib", "peak_rss_gb",
                "host_syncs_per_iter", "error")
        result[name] = {"status": status, "rows": [{k: r[k] for k in kept if k in r} for r in rows],
                        "errors": errors}
        statuses.append(status)
        folder = out / name  # bring the files up to OUT itself (the device tool returns at most 2 levels)
        for suffix in ("json", "md"):
            if (folder / f"speed.{suffix}").exists():
                shutil.move(str(folder / f"speed.{suffix}"), out / f"{name}.{suffix}")
        shutil.rmtree(folder, ignore_errors=True)
        stamp_commit(out / f"{name}.json")
    result["status"] = "ok" if all(s == "ok" for s in statuses) else "failed"
    return result


# -- report -----------------------------------------------------------------------------------------

def markdown(report: dict) -> str:
    env, prov = report["environment"], report["provenance"]
    lines = [f"# gpu_check ({'dry run, toy size' if report['dry_run'] else 'full'}): "
             f"{env.get('name', env['device'])}", "",
             f"Measured on commit `{prov['commit'][:10]}` ({prov['date']}"
             f"{', uncommitted changes' if prov['dirty'] else ''})"
             f" with torch {env['torch']}, driver {env.get('driver', '-')}, device `{env['device']}`"
             f"{' (' + env['name'] + ', ' + str(env.get('memory_gib')) + ' GiB)' if env.get('name') else ''}; "
             f"{report['seconds']} s in all (budget {report['budget_s']} s).", "",
             "| step | status | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {step['status']} | {step.get('seconds', '-')} |" for name, step in report["steps"].items()]
    tests = report["steps"].get("tests", {})
    if tests.get("failed"):
        lines += ["", "Failed tests: " + ", ".join(f"`{t}`" for t in tests["failed"])]
    runs = report["steps"].get("runs", {}).get("runs", {})
    if runs:
        lines += ["", "## End-to-end runs (digits)", "",
                  "| run | status | s | acc % | peak CUDA MiB by stage | error |", "|---|---|---|---|---|---|"]
        for name, r in runs.items():
            peaks = ", ".join(f"{k} {v:.0f}" for k, v in r.get("peak_cuda_mib", {}).items()) or "-"
            lines.append(f"| {name} | {r['status']} | {r.get('seconds', '-')} | {r.get('acc', '-')} | {peaks} | "
                         f"{r.get('error', '')} |")
    acc = report["steps"].get("accuracy", {})
    if acc.get("verdicts"):
        lines += ["", f"## Accuracy ({acc['dataset']}; ours must beat random real by {MARGIN_PP} points)", "",
                  "| method | ours % | random real % | margin | published % (full data) | s |",
                  "|---|---|---|---|---|---|"]
        for method, v in acc["verdicts"].items():
            if "ours" in v:
                lines.append(f"| {method} | {v['ours']} | {v['random_real']} | {v['margin_pp']:+.2f} | "
                             f"{v['published']} | {acc['runs'][method].get('seconds')} |")
            else:
                lines.append(f"| {method} | - | - | - | {PUBLISHED[method]['acc']} | {v['why']} |")
    speed = report["steps"].get("speed", {})
    for name in ("speed", "speed_switches"):
        rows = speed.get(name, {}).get("rows", [])
        if rows:
            lines += ["", f"## {name} (× the fp32 fwd+bwd floor of the same device; {speed['data']}, width "
                          f"{speed['width']}; tables in {name}.md)", "",
                      "| method | mode | × floor | peak | host syncs / iteration |", "|---|---|---|---|---|"]
            for r in rows:
                peak = (f"{r['peak_cuda_mib']:.0f} MiB" if r.get("peak_cuda_mib") is not None
                        else f"{r.get('peak_rss_gb') or 0:.2f} GB RSS")
                ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else r.get("error", "-")
                syncs = r.get("host_syncs_per_iter", "-")
                lines.append(f"| {r['method']} | {r['mode']} | {ratio} | {peak} | {syncs} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda[:N] (cpu only with --dry-run)")
    ap.add_argument("--dry-run", action="store_true", help="the same steps at toy size (CI, on a CPU)")
    ap.add_argument("--out", default=None, help=f"results folder (default {RESULTS_GPU.relative_to(ROOT)}; "
                                                "required with --dry-run)")
    ap.add_argument("--scratch", default=None, help="run directories and caches (default: a temporary folder)")
    ap.add_argument("--budget-s", type=float, default=None, help="time budget of all steps (real: 450, dry: 240)")
    ap.add_argument("--steps", default="tests,runs,speed,accuracy", help="which steps, comma-separated")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from pd_plugins.errors import DeviceError
    from pd_plugins.training.device import check_device

    try:
        device = check_device(a.device)
    except DeviceError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    if not a.dry_run and not device.startswith("cuda"):
        print(f"gpu_check: --device {device} measures no GPU; use --device cuda, or --dry-run for the toy-size "
              "check", file=sys.stderr)
        return 2
    if a.dry_run and a.out is None:
        print("gpu_check: --dry-run needs --out (results/gpu/ holds GPU measurements only)", file=sys.stderr)
        return 2
    sizes = SIZES["dry" if a.dry_run else "real"]
    out = Path(a.out) if a.out else RESULTS_GPU
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(a.scratch) if a.scratch else Path(tempfile.mkdtemp(prefix="pd-gpu-check-"))
    os.environ["PD_CACHE_DIR"] = str(scratch / "cache")  # experts, scores and priors of this check only
    budget = a.budget_s if a.budget_s is not None else sizes["budget_s"]
    deadline = Deadline(budget)
    t0 = time.perf_counter()
    from pd_plugins.training.allocator import keep_freed_memory

    keep_freed_memory()  # as pd-run does
    report = {"dry_run": a.dry_run, "budget_s": budget, "environment": environment(device), "steps": {}}
    steps = {"tests": lambda: step_tests(device, a.dry_run, min(sizes["tests_timeout_s"], deadline.left()), scratch),
             "runs": lambda: step_runs(device, sizes, deadline, scratch),
             "speed": lambda: step_speed(device, sizes, deadline, out, a.dry_run),
             "accuracy": lambda: step_accuracy(device, sizes, deadline, scratch)}
    for name in [s for s in a.steps.split(",") if s]:
        if name not in steps:
            print(f"gpu_check: unknown step {name!r}; use {', '.join(steps)}", file=sys.stderr)
            return 2
        if deadline.left() < 10:
            report["steps"][name] = {"status": "skipped: out of time"}
            continue
        t = time.perf_counter()
        print(f"gpu_check: {name} ({deadline.left():.0f} s left)", file=sys.stderr, flush=True)
        try:
            result = steps[name]()
        except Exception as exc:  # noqa: BLE001 - a broken step is recorded; the others still run
            result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:500]}
        result["seconds"] = round(time.perf_counter() - t, 1)
        report["steps"][name] = result
    report["seconds"] = round(time.perf_counter() - t0, 1)
    sys.path.insert(0, str(HERE))
    from _common import provenance, write_json

    prov = provenance(["pd_plugins.training.device"], [(k, n) for k, n in
                                                       [("distiller", d) for d in DISTILLER_RUNS] +
                                                       [("pruner", p) for p in PRUNER_RUNS]])
    known = commit()
    if known["from"] != "git":  # no git on the GPU machine: the commit carried with the tree
        prov.update(commit=known["commit"], dirty=known["dirty"], commit_from=known["from"])
    report["provenance"] = prov
    write_json(out / "gpu_check.json", report)
    (out / "gpu_check.md").write_text(markdown(report))
    if not a.scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    bad = [n for n, s in report["steps"].items() if s["status"] != "ok"]
    print(f"gpu_check: wrote {out / 'gpu_check.json'} and .md; "
          + (f"not ok: {', '.join(bad)}" if bad else "every step ok"), file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
