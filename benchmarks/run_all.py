"""Run every ``benchmarks/bench_*.py`` in its own subprocess and summarise the results.

Scripts that accept ``--quick`` get it unless ``--full`` is given; ``--device`` is passed to
scripts that accept it. Each script writes its own ``results/<name>.json``; this writes
``results/run_all.json`` (exit code, wall time, load average per script) and a combined
``results/README.md`` table of every numeric result.

    python benchmarks/run_all.py [--full] [--device cuda] [--only startup,scaling]
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
from _common import RESULTS, loadavg  # noqa: E402

HERE = Path(__file__).resolve().parent


def scripts(only=None) -> list[Path]:
    found = sorted(HERE.glob("bench_*.py"))
    if only:
        found = [p for p in found if p.stem.removeprefix("bench_") in only]
    return found


def flags(script: Path, full: bool, device: str | None) -> list[str]:
    source = script.read_text()
    out = [] if full or '"--quick"' not in source else ["--quick"]
    if device and '"--device"' in source:
        out += ["--device", device]
    return out


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
    lines = ["# Benchmark results", "", "Written by `python benchmarks/run_all.py`; one section per `results/*.json`.", "",
             "| script | exit | wall s | load average |", "|---|---|---|---|"]
    lines += [f"| {r['script']} | {r['returncode']} | {r['seconds']:.1f} | {r['loadavg']} |" for r in runs]
    for path in sorted(RESULTS.glob("*.json")):
        if path.name == "run_all.json":
            continue
        try:
            rows = flatten(json.loads(path.read_text()))
        except ValueError:
            continue
        lines += ["", f"## {path.stem}", "", "| key | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in rows.items()]
    out = RESULTS / "README.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="do not pass --quick")
    ap.add_argument("--device", default=None, help="passed to scripts that take --device (e.g. cuda)")
    ap.add_argument("--only", default=None, help="comma-separated script names without bench_ (e.g. startup,scaling)")
    a = ap.parse_args()
    only = set(a.only.split(",")) if a.only else None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))}
    RESULTS.mkdir(parents=True, exist_ok=True)
    runs = []
    for script in scripts(only):
        cmd = [sys.executable, str(script), *flags(script, a.full, a.device)]
        print(f"== {' '.join(cmd[1:])}", flush=True)
        t = time.perf_counter()
        rc = subprocess.run(cmd, env=env, cwd=HERE.parent).returncode
        runs.append({"script": script.name, "args": cmd[2:], "returncode": rc,
                     "seconds": time.perf_counter() - t, "loadavg": loadavg()})
    (RESULTS / "run_all.json").write_text(json.dumps(runs, indent=2) + "\n")
    print(f"wrote {write_readme(runs)}")
    failed = [r["script"] for r in runs if r["returncode"] != 0]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
