"""Shared helpers of the benchmark scripts: device choice and naming, load average, timing, results
and their provenance (commit, date and a fingerprint of the code each result measures)."""
from __future__ import annotations

import ast
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parents[1]
CODE_GLOBS = ("pd_plugins/**/*.py", "benchmarks/*.py")  # where measured code can live (after moves too)
REGENERATE = "python benchmarks/run_all.py --only {name}"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from pd_plugins.training.allocator import keep_freed_memory  # noqa: E402

# every benchmark process measures what pd-run runs with: freed memory kept in the process
# (PD_PLUGINS_MALLOC=system measures glibc's defaults); recorded in each result's provenance
MALLOC = keep_freed_memory()


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {requested}: CUDA is not available")
    return requested


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"


def sync_for(device: str):
    import torch

    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def median_time(fn, repeats: int, sync=lambda: None, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def loadavg() -> list:
    return [round(x, 2) for x in os.getloadavg()]


def write_result(name: str, payload: dict, entry_modules=(), plugins=()) -> Path:
    """``results/<name>.json`` with the load average and :func:`provenance`."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    write_json(path, {**payload, "loadavg": loadavg(), "provenance": provenance(entry_modules, plugins)})
    print(f"wrote {path}")
    return path


def write_json(path: Path, payload) -> None:
    """Write atomically (a reader never sees half a results file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


# -- provenance -----------------------------------------------------------------------------------
def code_fingerprint(source: str) -> str:
    """Hash of a module's code without imports and docstrings: a move into another package
    (which rewrites imports) keeps it, any change to what the code does changes it."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        kept = [n for n in body if not isinstance(n, (ast.Import, ast.ImportFrom))]
        if kept and isinstance(kept[0], ast.Expr) and isinstance(getattr(kept[0], "value", None), ast.Constant) \
                and isinstance(kept[0].value.value, str):
            kept = kept[1:]
        node.body = kept or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:20]


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def measured_files(entry_modules=(), plugins=()) -> list[Path]:
    """The repository's source files this process ran: the benchmark script, every loaded
    ``pd_plugins`` module, and, for code that runs in child processes, ``entry_modules`` and the
    registry entries ``plugins`` (``(kind, name)`` pairs, robust to modules moving) with what
    they import at module level."""
    import importlib

    for name in entry_modules:
        importlib.import_module(name)
    if plugins:
        from pd_plugins.plugins import registries

        for kind, name in plugins:
            registries()[kind].load(name)
    files = {Path(sys.argv[0]).resolve(), Path(__file__).resolve()}
    for name, mod in list(sys.modules.items()):
        if name == "pd_plugins" or name.startswith("pd_plugins."):
            if getattr(mod, "__file__", None):
                files.add(Path(mod.__file__).resolve())
    return sorted(f for f in files if f.suffix == ".py" and f.is_file() and ROOT in f.parents)


def provenance(entry_modules=(), plugins=()) -> dict:
    """Commit, UTC date, whether measured code had uncommitted changes, the command, and the
    fingerprint of every measured file (what :func:`stale_files` checks)."""
    files = measured_files(entry_modules, plugins)
    rel = [str(f.relative_to(ROOT)) for f in files]
    return {"commit": _git("rev-parse", "HEAD"),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "dirty": bool(_git("status", "--porcelain", "--", *rel)),
            "command": " ".join(["python", _relative(sys.argv[0]), *sys.argv[1:]]),
            "malloc": MALLOC["malloc"],
            "measures": {r: code_fingerprint(f.read_text()) for r, f in zip(rel, files)}}


def _relative(path: str) -> str:
    full = Path(path).resolve()
    return str(full.relative_to(ROOT)) if ROOT in full.parents else path


def current_fingerprints(root: Path = ROOT) -> set[str]:
    return {code_fingerprint(p.read_text()) for pattern in CODE_GLOBS for p in root.glob(pattern)}


def stale_files(result: dict, current: set[str]) -> list[str]:
    """The measured files (as recorded) whose code no longer exists anywhere in the tree;
    ``["<no provenance>"]`` for a result that does not record what it measured."""
    prov = result.get("provenance") if isinstance(result, dict) else None
    if not prov or not prov.get("measures") or not prov.get("commit") or not prov.get("date"):
        return ["<no provenance>"]
    return [path for path, fp in prov["measures"].items() if fp not in current]


class PeakRSS:
    """Peak resident set size above the level at entry, sampled from /proc every ``interval`` s.

    ``ru_maxrss`` is a lifetime high-water mark (imports alone reach ~1 GB with torch), so it
    cannot show what one call adds; this samples the current RSS in a thread instead.
    """

    def __init__(self, interval: float = 0.002):
        import threading

        self.interval, self.peak, self.base = interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            self._stop.wait(self.interval)

    def __enter__(self):
        self.base = self.peak = self.current()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())

    @property
    def added_mib(self) -> float:
        return (self.peak - self.base) / 2**20
