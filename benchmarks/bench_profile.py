"""Where each method's iteration spends its time: phases (wall clock) and op families (profiler self time).

Issue 28 asks to profile before changing. The cells are bench_speed's (real MNIST, ConvNet-3 width 128,
instance norm, the papers' loops; :func:`bench_speed.build_cell`), fp32 eager by default, 2 threads.
Each unit (a DM, DC ipc 1 or MTT iteration; DC/DSA ipc 10's matching step and 50-epoch inner training)
runs once to warm up, then once under ``torch.profiler`` while a few methods are wrapped in wall-clock
timers:

* phases: the objective's ``loss`` (the forward side: real batches, embeddings, unroll), inside it the
  DSA augmentation, DC's real-side gradients, its batched synthetic gradients and the gradient distance;
  DC's inner training; the rest of the unit is the images' backward and the SGD update;
* op families: the profiler's self CPU time of every aten op, grouped (convolution forward/backward,
  group norm, pooling, ReLU, linear, grid sampling of the augmentation, everything else), as shares of
  the total self time.

Every figure is a share of its unit measured in one process, next to the fwd+bwd(256) floor timed in
the same process, so the table says which part an optimisation has to shrink.

usage: python benchmarks/bench_profile.py [--methods dm,dc1,dc10,dsa10,mtt] [--mode fp32] [--data PATH]
-> benchmarks/results/profile.json and profile.md
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, code_fingerprint, loadavg, provenance, write_json  # noqa: E402
from bench_speed import MODEL_OPTIONS, MODES, bench_context_options, build_cell, _load, _timeit, _floor_fn  # noqa: E402

METHODS = ("dm", "dc1", "dc10", "dsa10", "mtt")
#: op family -> substrings of aten op names (first match wins, in this order)
FAMILIES = {
    "convolution backward": ("convolution_backward",),
    "convolution forward": ("mkldnn_convolution", "convolution", "conv2d"),
    "group norm backward": ("native_group_norm_backward",),
    "group norm forward": ("native_group_norm", "group_norm"),
    "avg pool backward": ("avg_pool2d_backward",),
    "avg pool forward": ("avg_pool2d",),
    "ReLU (fwd, bwd)": ("threshold_backward", "relu", "clamp_min"),
    "linear": ("addmm", "aten::mm", "aten::bmm", "linear"),
    "grid sampling (DSA)": ("grid_sampler", "affine_grid"),
}
#: (module, attribute path, phase): wall-clock timed while profiling; nested phases name their parent
PHASES = [
    ("pd_plugins.training.augment", "Augmenter.pair", "loss > siamese augmentation"),
    ("pd_plugins.distillation.dc", "GradientMatchingObjective._real_grads", "loss > real-side gradients"),
    ("pd_plugins.distillation.dc", "GradientMatchingObjective._syn_grads", "loss > synthetic gradients (vmap)"),
    ("pd_plugins.distillation.dc", "match_distance", "loss > gradient distance"),
    ("pd_plugins.distillation.dc", "GradientMatchingObjective.train_inner", "inner training"),
]


PHASE_ORDER = ["loss (forward side)", *(p for _, _, p in PHASES), "backward, update and the rest"]


def family(op: str) -> str:
    for name, keys in FAMILIES.items():
        if any(k in op for k in keys):
            return name
    return "other"


@contextmanager
def timed_phases(objective, totals: dict):
    """Wrap :data:`PHASES` and ``objective``'s ``loss`` in wall-clock timers adding into ``totals``."""
    import importlib

    patched = []

    def wrap(owner, attr, phase):
        original = owner.__dict__[attr]

        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                totals[phase] += time.perf_counter() - t
        setattr(owner, attr, timed)
        patched.append((owner, attr, original))

    for module, path, phase in PHASES:
        owner = importlib.import_module(module)
        *parents, attr = path.split(".")
        for p in parents:
            owner = getattr(owner, p)
        wrap(owner, attr, phase)
    wrap(type(objective), "loss", "loss (forward side)")
    try:
        yield
    finally:
        for owner, attr, original in reversed(patched):
            setattr(owner, attr, original)


def profile_unit(fn, objective) -> dict:
    """One profiled call of ``fn``: wall seconds, phase seconds and op-family self seconds."""
    from torch.profiler import ProfilerActivity, profile

    phases: dict = defaultdict(float)
    with timed_phases(objective, phases), profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        fn()
        wall = time.perf_counter() - t
    families: dict = defaultdict(float)
    other: dict = {}
    for event in prof.key_averages():
        kind = family(event.key)
        families[kind] += event.self_cpu_time_total / 1e6
        if kind == "other":
            other[event.key] = event.self_cpu_time_total / 1e6
    top_other = dict(sorted(other.items(), key=lambda kv: -kv[1])[:4])
    phases["backward, update and the rest"] = wall - sum(v for k, v in phases.items()
                                                          if k in ("loss (forward side)", "inner training"))
    return {"wall_s": wall, "phases_s": dict(phases), "families_s": dict(families), "top_other_s": top_other}


def run(method: str, mode: str, data_path: str) -> dict:
    import torch

    from pd_plugins.pipeline.context import RunContext

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    data = _load(data_path)
    base = bench_context_options("cpu", MODEL_OPTIONS["width"], "/tmp/pd-bench-profile-cache")
    precision, compile_ = MODES[mode]
    floor = _timeit(_floor_fn(RunContext(**base), data, 256), 3)
    ctx = RunContext(**base, precision=precision, compile=compile_)
    cell = build_cell(method, ctx, data, quick=True)
    out = {"method": method, "mode": mode, "floor_s": floor, "counts": cell.counts, "units": {}}
    for name, fn in cell.units.items():
        out["units"][name] = profile_unit(fn, cell.objective)
    return out


def _share_table(rows: list[dict], key: str) -> list[str]:
    columns = []
    for r in rows:
        for unit in r["units"]:
            columns.append((r, unit))
    present = {k for r, u in columns for k in r["units"][u][key]}
    order = [*FAMILIES, "other"] if key == "families_s" else PHASE_ORDER
    names = [n for n in order if n in present]
    head = "| " + ("phase" if key == "phases_s" else "op family (self CPU time)") + " | " + " | ".join(
        f"{r['method']} {u}" for r, u in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 1)]
    for n in names:
        cells = []
        for r, u in columns:
            values = r["units"][u][key]
            total = r["units"][u]["wall_s"] if key == "phases_s" else sum(values.values())
            cells.append(f"{100 * values[n] / total:.0f} %" if n in values else "–")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines.append("| unit wall time ÷ floor | " + " | ".join(
        f"{r['units'][u]['wall_s'] / r['floor_s']:.1f}" for r, u in columns) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--mode", default="fp32", choices=[m for m in MODES if m in ("fp32", "compile")])
    ap.add_argument("--data", default="/work/shared/data/mnist.npz", help="an npz file, or digits (embedded)")
    ap.add_argument("--out", default=None, help="folder of profile.json and profile.md (default benchmarks/results)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        from pd_plugins.training.allocator import keep_freed_memory

        keep_freed_memory()  # as pd-run and bench_speed run
        print(json.dumps(run(a.worker, a.mode, a.data)))
        return
    import subprocess

    rows = []
    for method in [m for m in a.methods.split(",") if m]:  # one process a method: no state carries over
        proc = subprocess.run([sys.executable, __file__, "--worker", method, "--mode", a.mode, "--data", a.data],
                              capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"profiling {method} failed: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
        rows.append(json.loads(lines[-1]))
        print(lines[-1], flush=True)
    from bench_speed import MEASURED, MEASURED_MODULES

    prov = provenance(MEASURED_MODULES, MEASURED)
    speed = Path(__file__).with_name("bench_speed.py")  # the cells are built there: a change there makes this stale
    prov["measures"]["benchmarks/bench_speed.py"] = code_fingerprint(speed.read_text())
    out_dir = Path(a.out) if a.out else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "profile.json", {"mode": a.mode, "data": a.data, "model_options": MODEL_OPTIONS,
                                          "rows": rows, "loadavg": loadavg(), "provenance": prov})
    md = [f"# bench_profile ({a.mode}, 2 threads, real MNIST, ConvNet-3 width 128)", "",
          f"Measured on commit {prov['commit'][:10]} ({prov['date']}{', uncommitted changes' if prov['dirty'] else ''}).",
          "", "One warmed-up unit of each cell. Phases are shares of the unit's wall time (nested phases, "
          "'loss > ...', are parts of 'loss (forward side)'); op families are shares of the profiler's "
          "self CPU time over both threads. An ipc-10 DC/DSA iteration is 10 matching steps and 9 inner "
          "trainings.", "", *_share_table(rows, "phases_s"), "", *_share_table(rows, "families_s"), "",
          "The largest ops in 'other', per unit (self seconds):", "",
          *(f"- {r['method']} {u}: " + ", ".join(f"{k} {v:.2f}" for k, v in unit["top_other_s"].items())
            for r in rows for u, unit in r["units"].items()), ""]
    (out_dir / "profile.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
