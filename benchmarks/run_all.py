"""Regenerate every file in ``benchmarks/results/``: each ``benchmarks/bench_*.py`` and the digits
accuracy jobs run in their own subprocess, then the results are summarised.

Scripts that accept ``--quick`` get it unless ``--full`` is given; ``--device`` is passed to
scripts that accept it; scripts that need trained generative priors get ``--decoder``/``--ldm``
from ``--priors DIR`` (trained there with ``pd-run prior train`` when missing). Each job writes
its own ``results/<name>.json`` recording the commit, date and a fingerprint of the code it
measured (``tests/test_benchmarks.py`` fails once that code changes); this writes
``results/run_all.json`` (exit code, wall time, load average per job) and a combined
``results/README.md`` table of every result.

    python benchmarks/run_all.py [--full] [--device cuda] [--only startup,scaling] [--priors DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, loadavg, provenance, write_json  # noqa: E402

HERE = Path(__file__).resolve().parent
# Result files written by scripts that are not bench_*.py: job name (= result stem) -> script and arguments.
EXTRA_JOBS = {
    "digits_accuracy_ipc1": ["digits_accuracy.py", "1", "2"],
    "digits_accuracy_ipc10": ["digits_accuracy.py", "10", "2"],
    "digits_generative_ipc1": ["digits_generative.py", "--ipc", "1"],
    # the original DM code's own setting (full MNIST, ConvNet-128, 200 iterations, 2 x 1000-epoch
    # evaluations), fp32 only: about 25 minutes on 2 cores, at this scale even without --full
    "time_to_accuracy_dm_paper": ["bench_time_to_accuracy.py", "--distillers", "dm", "--paths", "fp32",
                                  "--every", "dm=100", "--eval-networks", "2", "--name", "time_to_accuracy_dm_paper"],
}
FIXED_SCALE = {"time_to_accuracy_dm_paper"}  # extra jobs that never take --quick
PRIOR_KINDS = {"--decoder": "decoder", "--ldm": "ldm"}


def scripts(only=None) -> list[Path]:
    found = sorted(HERE.glob("bench_*.py"))
    if only:
        found = [p for p in found if p.stem.removeprefix("bench_") in only]
    return found


def flags(script: Path, full: bool, device: str | None, priors: Path | None = None) -> list[str]:
    source = script.read_text()
    out = [] if full or '"--quick"' not in source else ["--quick"]
    if device and '"--device"' in source:
        out += ["--device", device]
    if priors is not None:
        for flag, kind in PRIOR_KINDS.items():
            if f'"{flag}"' in source:
                out += [flag, str(priors / kind)]
    return out


def jobs(only=None, full=False, device=None, priors: Path | None = None) -> list[tuple[str, list[str]]]:
    """``(name, argv)`` of every job (the bench_*.py scripts, then :data:`EXTRA_JOBS`), or those in ``only``."""
    out = [(p.stem.removeprefix("bench_"), [str(p), *flags(p, full, device, priors)]) for p in scripts(only)]
    for name, (script, *args) in EXTRA_JOBS.items():
        if not only or name in only:
            path = HERE / script
            out.append((name, [str(path), *args, *flags(path, full or name in FIXED_SCALE, device, priors)]))
    return out


def ensure_priors(priors: Path, env: dict) -> None:
    """Train the digits priors the generative jobs need, where ``priors`` lacks them."""
    for kind in PRIOR_KINDS.values():
        if not (priors / kind).exists():
            cmd = [sys.executable, "-m", "pd_plugins", "prior", "train", "--kind", kind, "--dataset", "digits",
                   "--out", str(priors / kind)]
            print(f"== {' '.join(cmd[1:])}", flush=True)
            subprocess.run(cmd, env=env, cwd=HERE.parent, check=True)


def flatten(obj, prefix="") -> dict:
    """Leaf numbers/strings of a JSON object as ``a.b.c`` keys (lists of numbers joined)."""
    rows = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            rows.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list) and all(isinstance(x, (int, float)) for x in obj):
        rows[prefix] = ", ".join(_fmt(x) for x in obj)
    elif isinstance(obj, (int, float, str, bool)) or obj is None:
        rows[prefix] = _fmt(obj)
    return rows


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def write_readme(runs: list[dict]) -> Path:
    lines = ["# Benchmark results", "", "Written by `python benchmarks/run_all.py`; one section per `results/*.json`,",
             "each naming the commit and date it was measured on.", "",
             "| script | exit | wall s | load average |", "|---|---|---|---|"]
    lines += [f"| {r['script']} | {r['returncode']} | {r['seconds']:.1f} | {r['loadavg']} |" for r in runs]
    for path in sorted(RESULTS.glob("*.json")):
        if path.name == "run_all.json":
            continue
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue
        prov = data.pop("provenance", None) if isinstance(data, dict) else None
        lines += ["", f"## {path.stem}", ""]
        if prov:
            dirty = ", with uncommitted changes" if prov.get("dirty") else ""
            lines += [f"Measured on commit `{str(prov.get('commit'))[:10]}` ({prov.get('date')}{dirty}): "
                      f"`{prov.get('command')}`.", ""]
        lines += ["| key | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in flatten(data).items()]
    out = RESULTS / "README.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="do not pass --quick")
    ap.add_argument("--device", default=None, help="passed to scripts that take --device (e.g. cuda)")
    ap.add_argument("--only", default=None,
                    help="comma-separated job names = result file stems (e.g. startup,scaling,digits_accuracy_ipc10)")
    ap.add_argument("--priors", default=str(Path(os.environ.get("PD_CACHE_DIR", Path.home() / ".cache" / "pd_plugins"))
                                            / "digits-priors"),
                    help="folder of the digits decoder/ldm priors (trained there when missing)")
    a = ap.parse_args()
    only = set(a.only.split(",")) if a.only else None
    known = {name for name, _ in jobs(priors=Path(a.priors))}
    if only and not only <= known:
        ap.error(f"unknown job(s) {sorted(only - known)}; known: {', '.join(sorted(known))}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))}
    RESULTS.mkdir(parents=True, exist_ok=True)
    selected = jobs(only, a.full, a.device, Path(a.priors))
    if any(flag in argv for _, argv in selected for flag in PRIOR_KINDS):
        ensure_priors(Path(a.priors), env)
    runs = []
    for name, argv in selected:
        cmd = [sys.executable, *argv]
        print(f"== {' '.join(cmd[1:])}", flush=True)
        t = time.perf_counter()
        rc = subprocess.run(cmd, env=env, cwd=HERE.parent).returncode
        runs.append({"script": Path(argv[0]).name, "job": name, "args": argv[1:], "returncode": rc,
                     "seconds": time.perf_counter() - t, "loadavg": loadavg()})
    write_json(RESULTS / "run_all.json", {"runs": runs, "provenance": provenance()})
    print(f"wrote {write_readme(runs)}")
    failed = [r["script"] for r in runs if r["returncode"] != 0]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
