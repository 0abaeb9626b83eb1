"""CLI start-up cost: wall time of ``pd-run --help`` and ``pd-run list`` (median of 5 fresh
processes) and whether either imports torch (checked in the same process after the command).

    python benchmarks/bench_startup.py [--repeats 5] [--quick]  -> benchmarks/results/startup.json
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import loadavg, write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# run the CLI in-process, then report whether torch ended up in sys.modules
PROBE = ("import sys\nfrom pd_plugins.cli import cli\n"
         "try:\n    cli.main(args=sys.argv[1:], prog_name='pd-run', standalone_mode=False)\n"
         "except SystemExit:\n    pass\n"
         "print('TORCH_IMPORTED=' + str('torch' in sys.modules), file=sys.stderr)\n")
COMMANDS = {"--help": ["--help"], "list": ["list"]}


def _env():
    import os

    return {**os.environ, "PYTHONPATH": str(REPO), "PD_LOAD_PLUGINS": ""}


def measure(args, repeats: int) -> dict:
    cmd = [sys.executable, "-m", "pd_plugins", *args]
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    probe = subprocess.run([sys.executable, "-c", PROBE, *args], env=_env(), cwd=REPO, capture_output=True, text=True)
    imported = "TORCH_IMPORTED=True" in probe.stderr
    return {"median_s": statistics.median(times), "min_s": min(times), "runs": repeats, "imports_torch": imported}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="accepted for run_all; the default is already quick")
    a = ap.parse_args()
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    bare = time.perf_counter() - t
    base = [sys.executable, "-c", "import torch"]
    torch_times = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        subprocess.run(base, check=True)
        torch_times.append(time.perf_counter() - t)
    rows = {name: measure(args, a.repeats) for name, args in COMMANDS.items()}
    ref = statistics.median(torch_times)
    for name, r in rows.items():
        r["ratio_to_import_torch"] = r["median_s"] / ref
        print(f"pd-run {name:7s} median {r['median_s'] * 1e3:7.1f} ms (min {r['min_s'] * 1e3:.1f})  "
              f"imports torch: {r['imports_torch']}  vs `python -c 'import torch'` {ref * 1e3:.1f} ms: "
              f"ratio {r['ratio_to_import_torch']:.2f}")
    print(f"bare python start {bare * 1e3:.1f} ms, load average {loadavg()}")
    write_result("startup", {"commands": rows, "import_torch_median_s": ref, "python_start_s": bare,
                             "python": sys.version.split()[0]}, entry_modules=["pd_plugins.cli"])


if __name__ == "__main__":
    main()
