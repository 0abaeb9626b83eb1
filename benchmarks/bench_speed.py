"""Seconds per iteration of every method as a multiple of the fp32 eager fwd+bwd floor, per execution mode.

Real MNIST (``--data``, default /work/shared/data/mnist.npz; ``digits`` for the embedded set), ConvNet-3
(width 128, instancenorm), the papers' loop settings: DM ipc 10 (batch_real 256, DSA), DC ipc 1 and ipc 10
(outer/inner 1/1 and 10/50), DSA ipc 10, MTT ipc 10 (syn_steps 10, batch_syn 100; ``mtt`` unrolled,
``mttc`` the constant-memory gradient), and expert
training (one SGD step at batch 256). Modes: fp32 eager, compile, bf16, compile+bf16; on CUDA
(``--device cuda``) also channels_last, cudnn_benchmark and fast (bf16 with both, no compile: compiling
pays its warm-up once per run and is timed as compile+bf16), each against the same deterministic fp32
floor of that GPU, with the peak CUDA memory of the timed part. ``--width`` narrows the ConvNet (toy runs).

Every (method, mode) runs in its own subprocess, which first times the floor -- one fp32 eager
forward+backward of the same ConvNet at batch 256 -- then one warm-up iteration (it pays the
compile), then the timed iterations; the ratio is median / floor in that process (MTT: each iteration
also over a fwd+bwd(100) timed just before it, median of those ratios), and peak RSS
(ru_maxrss) is that process's. The process keeps freed memory as pd-run does
(:mod:`pd_plugins.training.allocator`); before that it times the floor with glibc's default
malloc, the way the original code ran, and each iteration is also reported over that floor.
Every cell reports the median of 3 timed iterations (issue 28: one iteration moved ratios by ~10 %
between runs). ``--quick`` differs only for DC/DSA ipc 10, whose full iteration takes minutes on a
CPU: it times 3 matching steps and 3 inner trainings (50 epochs) and reports 10 x median matching +
9 x median inner (the iteration's composition). MTT peak RSS at syn_steps 10 and 40 in both memory modes is measured
in separate subprocesses (fp32 eager, one iteration each).

usage: python benchmarks/bench_speed.py [--quick] [--device cuda] [--methods dm,dc1,...] [--modes fp32,bf16,...]
[--out DIR] -> benchmarks/results/speed.json and speed.md (or DIR/)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
METHODS = ("dm", "dc1", "dc10", "dsa10", "mtt", "mttc", "experts")  # mttc: MTT with memory=constant
#: mode -> (precision, compile); the CUDA-only switches of a mode are in SWITCHES
MODES = {"fp32": ("fp32", False), "compile": ("fp32", True), "bf16": ("bf16", False),
         "compile+bf16": ("bf16", True), "channels_last": ("fp32", False), "cudnn_benchmark": ("fp32", False),
         "fast": ("bf16", False)}
SWITCHES = {"channels_last": {"channels_last": True}, "cudnn_benchmark": {"cudnn_benchmark": True},
            "fast": {"channels_last": True, "cudnn_benchmark": True}}
CPU_MODES = ("fp32", "compile", "bf16", "compile+bf16")  # the default on a CPU: the switches are CUDA fast paths
MODEL_OPTIONS = {"width": 128, "depth": 3, "norm": "instancenorm"}
# what the worker subprocesses run, for the provenance record (modules they load lazily are not listed)
MEASURED = [("distiller", "dm"), ("distiller", "dc"), ("distiller", "dsa"), ("distiller", "mtt")]
MEASURED_MODULES = ["pd_plugins.training.accel", "pd_plugins.distillation.experts", "pd_plugins.training.evaluate"]
ORIGINAL = {"dm": 3.7, "dc1": 8.2, "dc10": 219, "dsa10": 242, "mtt": 31.9, "mttc": 31.9, "experts": 1.06}


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def _sync() -> None:
    """Wait for the GPU (a no-op without CUDA), so a timing covers the work it launched."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _timeit(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        _sync()
        t = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _count_syncs(fn) -> int:
    """How often ``fn`` makes the host wait for the GPU (CUDA's sync debug mode warns at every such call)."""
    import warnings

    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchronizing" in str(w.message) for w in caught)


def _load(data_path: str):
    """The train split timed: the embedded digits (``digits``) or an npz file (MNIST by default)."""
    from pd_plugins.data.builtin import digits, npz

    return digits(None).train if data_path == "digits" else npz(data_path, name="mnist").train


def _floor_fn(ctx, data, n: int):
    """A warmed-up callable: one fp32 eager forward+backward of the run's ConvNet at batch ``n``."""
    import torch
    import torch.nn.functional as F

    net = ctx.make_model(data.channels, data.num_classes, data.im_size)
    n = min(n, len(data))
    x = data.images(torch.arange(n), ctx.device)
    y = data.labels[:n].to(ctx.device)

    def once():
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()

    once()
    return once


def _fwd_bwd(ctx, data, n: int, reps: int = 3) -> float:
    """Median seconds of one fp32 eager forward+backward of the run's ConvNet at batch ``n``."""
    return _timeit(_floor_fn(ctx, data, n), reps)


class Cell:
    """One benchmark cell: its timed units (callables, already warmed up), how many of each make one
    distillation iteration, and facts to record. ``floor100`` (MTT) is also timed next to every unit."""

    def __init__(self, units: dict, counts: dict, facts: dict, floor100: bool = False, objective=None):
        self.units, self.counts, self.facts, self.floor100 = units, counts, facts, floor100
        self.objective = objective  # the distiller's objective (None for expert training)

    def compose(self, per_unit: dict) -> float:
        """An iteration's figure from each unit's (seconds or ratio): the sum of count x unit."""
        return sum(self.counts[name] * per_unit[name] for name in self.units)


def build_cell(method: str, ctx, data, quick: bool, syn_steps: int = 10, memory: str = "unrolled") -> Cell:
    """The distiller state of ``method`` on ``data`` under ``ctx``, one warm-up done (it pays any compile)."""
    import torch

    from pd_plugins.distillation.objectives import SyntheticOptimiser, run_iteration
    from pd_plugins.distillation.synthetic import class_major_labels, initial_images
    from pd_plugins.plugins import get_host

    if method == "experts":
        from pd_plugins.training.evaluate import train_network

        net = ctx.make_model(data.channels, data.num_classes, data.im_size)
        batch = data.subset(torch.arange(256))
        aug = ctx.make_augmenter(data)

        def step():
            train_network(net, batch, ctx, epochs=1, lr=0.01, momentum=0.0, weight_decay=0.0, batch=256,
                          decay_epoch=None, augmenter=aug, generator=torch.Generator().manual_seed(0))
        step()
        return Cell({"iteration": step}, {"iteration": 1}, {})
    ipc = {"dm": 10, "dc1": 1, "dc10": 10, "dsa10": 10, "mtt": 10, "mttc": 10}[method]
    name = {"dm": "dm", "dc1": "dc", "dc10": "dc", "dsa10": "dsa", "mtt": "mtt", "mttc": "mtt"}[method]
    if method == "mttc":
        memory = "constant"
    cls = get_host().registries()["distiller"].load(name)
    opts = {"syn_steps": syn_steps, "batch_syn": 100, "expert_epochs": 2, "max_start_epoch": 2,
            "train_epochs": 4, "experts": 1, "memory": memory} if name == "mtt" else {}
    dist = cls(cls.resolve_options(opts))
    obj = dist.objective()
    labels = class_major_labels(data.num_classes, ipc)
    init = "noise" if name == "dc" else "real"
    images = initial_images(data, ipc, init, ctx.generator("init"), ctx.device).requires_grad_(True)
    facts: dict = {}
    if name == "mtt":  # timing needs no trained experts: a synthetic trajectory of the right size
        obj.setup_student(data, labels, ctx)
        p0 = torch.cat([p.detach().reshape(-1) for p in obj.student.parameters()])
        noise = torch.randn(5, p0.numel(), generator=torch.Generator().manual_seed(0)).to(p0.device)
        obj._cache[0] = p0 + 0.01 * noise
        facts.update(syn_steps=syn_steps, memory=memory)
    else:
        obj.setup(data, ipc, labels, ctx)
    optimiser = SyntheticOptimiser(obj, {"images": images}, [{"params": [images], "lr": dist.options.lr_img}], 0.5)
    if quick and method in ("dc10", "dsa10"):
        # a matching step and an inner training (50 epochs) of iteration 0; an iteration = 10 m + 9 inner
        obj.begin_iteration(0)
        inner = obj.inner_loop
        obj.inner_loop = 1
        run_iteration(obj, images, optimiser, 0, steps=1)  # warm-up (compiles), inner 1 epoch
        obj.inner_loop = inner

        def match():
            loss, _ = obj.loss(images, 0, 0)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()

        def train_inner():
            obj.after_step(images.detach(), 0, 0)
        facts["outer"] = obj.outer_loop
        return Cell({"matching step": match, "inner training": train_inner},
                    {"matching step": obj.outer_loop, "inner training": obj.outer_loop - 1}, facts, objective=obj)
    it = iter(range(10 ** 6))
    run_iteration(obj, images, optimiser, next(it))  # warm-up

    def iteration():
        run_iteration(obj, images, optimiser, next(it))
    return Cell({"iteration": iteration}, {"iteration": 1}, facts, floor100=name == "mtt", objective=obj)


def bench_context_options(device: str, width: int, cache_dir: str) -> dict:
    """The ``RunContext`` keywords every benchmark cell and its floor share (seed 0, ConvNet at ``width``)."""
    return dict(seed=0, device=device, model="convnet", model_options={**MODEL_OPTIONS, "width": width},
                stage="bench", cache_dir=Path(cache_dir))


def worker(method: str, mode: str, data_path: str, quick: bool, syn_steps: int = 10, memory: str = "unrolled",
           device: str = "cpu", width: int = MODEL_OPTIONS["width"]) -> dict:
    import torch

    from pd_plugins.pipeline.context import RunContext
    from pd_plugins.training import device as dev
    from pd_plugins.training.allocator import keep_freed_memory

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    precision, compile_ = MODES[mode]
    switches = SWITCHES.get(mode, {})
    if switches and not dev.is_cuda(device):
        raise SystemExit(f"mode {mode!r} is a CUDA fast path; give --device cuda")
    dev.configure(device)  # the floor runs as pd-run does: deterministic kernels on CUDA
    data = _load(data_path)
    base = bench_context_options(device, width, "/tmp/pd-bench-speed-cache")
    mtt = method in ("mtt", "mttc")
    # the floor as the original code ran it (glibc's default malloc), before this process keeps freed memory,
    # and right after it the same floor with freed memory kept: their ratio is the allocator's share
    floor_system = _fwd_bwd(RunContext(**base), data, 256)
    floor_system_100 = _fwd_bwd(RunContext(**base), data, 100) if mtt else None
    malloc = keep_freed_memory()  # as pd-run does (PD_PLUGINS_MALLOC=system: glibc's defaults), floor included
    floor_fn = _floor_fn(RunContext(**base), data, 256)
    floor100_fn = _floor_fn(RunContext(**base), data, 100) if mtt else None
    floor_start = _timeit(floor_fn, 3)
    floor_start_100 = _timeit(floor100_fn, 3) if mtt else None
    settings = dev.configure(device, cudnn_benchmark=switches.get("cudnn_benchmark", False))
    ctx = RunContext(**base, precision=precision, compile=compile_, channels_last=switches.get("channels_last", False))
    reps = 3  # timed repetitions of every unit (median)
    out = {"method": method, "mode": mode, "malloc": malloc["malloc"], "threads": torch.get_num_threads(),
           "timed_iterations": reps, "device": device,
           **({"device_settings": settings, "channels_last": ctx.channels_last} if settings else {})}
    if dev.is_cuda(device):  # the method's own peak, from here on (the floor's is not counted)
        torch.cuda.reset_peak_memory_stats()
    cell = build_cell(method, ctx, data, quick, syn_steps, memory)
    out.update(cell.facts)
    # every repetition of every unit is timed right after a floor, so a drift of the machine's speed
    # (these shared CPUs move by 10-40 % between processes) cancels in each ratio
    seconds, ratios, ratios100, floors = {}, {}, {}, []
    for unit_name, fn in cell.units.items():
        samples = []
        for _ in range(reps):
            f = _timeit(floor_fn, 1)
            f100 = _timeit(floor100_fn, 1) if cell.floor100 else None
            samples.append((_timeit(fn, 1), f, f100))
            floors.append(f)
        seconds[unit_name] = statistics.median(t for t, _, _ in samples)
        ratios[unit_name] = statistics.median(t / f for t, f, _ in samples)
        if cell.floor100:
            ratios100[unit_name] = statistics.median(t / f100 for t, _, f100 in samples)
    out["s_per_iter"] = cell.compose(seconds)
    out["ratio"] = cell.compose(ratios)
    out["floor_s"] = statistics.median(floors)
    if len(cell.units) > 1:
        out["scaled_from"] = {**{f"{k}_s": v for k, v in seconds.items()}, "counts": cell.counts}
    if dev.is_cuda(device):  # one more iteration, counting its waits for the GPU
        out["host_syncs_per_iter"] = sum(_count_syncs(fn) * cell.counts[k] for k, fn in cell.units.items())
    # the original's column is over glibc's default-malloc floor: our interleaved ratio times the
    # allocator's share of the floor, both floors timed back to back at the start
    out["floor_system_malloc_s"] = floor_system
    out["floor_start_s"] = floor_start
    out["ratio_system_malloc_floor"] = out["ratio"] * floor_start / floor_system
    if cell.floor100:
        out["ratio_fwd_bwd_100"] = cell.compose(ratios100)
        out["floor_system_malloc_fwd_bwd_100_s"] = floor_system_100
        out["ratio_system_malloc_fwd_bwd_100"] = out["ratio_fwd_bwd_100"] * floor_start_100 / floor_system_100
    out["peak_rss_gb"] = _peak_gb()
    if dev.is_cuda(device):
        out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    return out


def _spawn(args: list[str], timeout: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    try:
        proc = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True,
                              env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    res = json.loads(lines[-1])
    warn = [ln for ln in proc.stderr.splitlines() if "torch.compile failed" in ln]
    if warn:
        res["compile_warning"] = warn[0][:300]
    return res


def _table(rows: list[dict], cuda: bool = False) -> str:
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    peak = "peak CUDA MiB" if cuda else "peak GB"
    head = "| method | original × floor | " + " | ".join(f"{m} × floor ({peak})" for m in modes) + " |"
    lines = [head, "|" + "---|" * (len(modes) + 2)]
    for method in dict.fromkeys(r["method"] for r in rows):
        cells = []
        for m in modes:
            r = next((r for r in rows if r["method"] == method and r["mode"] == m), None)
            if r is None or "error" in r:
                cells.append("error" if r else "–")
            else:
                fb = r.get("ratio_fwd_bwd_100")
                extra = f" [{fb:.1f} × fb(100)]" if fb is not None else ""
                sys_floor = r.get("ratio_system_malloc_floor")
                if sys_floor is not None:
                    fb_sys = r.get("ratio_system_malloc_fwd_bwd_100")
                    extra += f"; default-malloc floor: {sys_floor:.2f}" + (
                        f" [{fb_sys:.1f} × fb(100)]" if fb_sys is not None else "")
                used = f"{r['peak_cuda_mib']:.0f}" if cuda else f"{r['peak_rss_gb']:.2f}"
                cells.append(f"{r['ratio']:.2f}{extra} ({used})")
        original = "–" if cuda else ORIGINAL.get(method, "")  # the originals were timed on CPUs against a CPU floor
        lines.append(f"| {method} | {original} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="DC/DSA ipc 10: time their matching step and inner training, scaled")
    ap.add_argument("--data", default="/work/shared/data/mnist.npz", help="an npz file, or digits (embedded)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]: every time and peak is of this device")
    ap.add_argument("--out", default=None, help="folder of speed.json and speed.md (default benchmarks/results)")
    ap.add_argument("--width", type=int, default=MODEL_OPTIONS["width"], help="ConvNet width (128: the papers')")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--modes", default=None, help=f"default: {','.join(CPU_MODES)} on a CPU, every mode on CUDA")
    ap.add_argument("--mtt-memory", default="10,40", help="syn_steps values for the MTT peak-RSS comparison ('' skips)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per subprocess")
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows of results/speed.json that this invocation does not re-measure")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--syn-steps", type=int, default=10, help=argparse.SUPPRESS)
    ap.add_argument("--memory", default="unrolled", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.method, a.mode, a.data, a.quick, a.syn_steps, a.memory, a.device, a.width)))
        return
    cuda = a.device.startswith("cuda")
    if cuda:
        from pd_plugins.training.device import check_device

        check_device(a.device)  # one line when this machine has no such GPU
    modes = a.modes if a.modes is not None else ",".join(MODES if cuda else CPU_MODES)
    out_dir = Path(a.out) if a.out else RESULTS
    common = ["--data", a.data, "--device", a.device, "--width", str(a.width)] + (["--quick"] if a.quick else [])
    load_before = os.getloadavg()
    rows = []
    for method in [m for m in a.methods.split(",") if m]:
        for mode in [m for m in modes.split(",") if m]:
            res = {"method": method, "mode": mode, **_spawn(["--method", method, "--mode", mode, *common], a.timeout),
                   "measured": time.strftime("%Y-%m-%d %H:%M"), "loadavg": os.getloadavg()[0]}
            print(json.dumps(res), flush=True)
            rows.append(res)
    memory_rows = []
    for steps in [int(s) for s in a.mtt_memory.split(",") if s]:
        for memory in ("constant", "unrolled"):
            res = _spawn(["--method", "mtt", "--mode", "fp32", "--syn-steps", str(steps), "--memory", memory,
                          "--data", a.data, "--device", a.device, "--width", str(a.width), "--quick"], a.timeout)
            res = {"syn_steps": steps, "memory": memory, **{k: res.get(k) for k in ("s_per_iter", "ratio",
                   "ratio_fwd_bwd_100", "peak_rss_gb", "peak_cuda_mib", "error") if k in res}}
            print(json.dumps(res), flush=True)
            memory_rows.append(res)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import current_fingerprints, provenance, stale_files, write_json

    old = json.loads((out_dir / "speed.json").read_text()) if a.merge and (out_dir / "speed.json").exists() else None
    if old is not None and stale_files(old, current_fingerprints()):
        print(f"--merge: results/speed.json measured other code ({stale_files(old, current_fingerprints())}); "
              "its rows are dropped", file=sys.stderr)
        old = None
    if old is not None:
        new_keys = {(r["method"], r["mode"]) for r in rows}
        rows = [r for r in old.get("rows", []) if (r["method"], r["mode"]) not in new_keys] + rows
        rows.sort(key=lambda r: (METHODS.index(r["method"]) if r["method"] in METHODS else 99, list(MODES).index(r["mode"])))
        new_mem = {(r["syn_steps"], r["memory"]) for r in memory_rows}
        memory_rows = [r for r in old.get("mtt_memory", []) if (r["syn_steps"], r["memory"]) not in new_mem] + memory_rows
    prov = provenance(MEASURED_MODULES, MEASURED)
    if old is not None:  # merged rows were measured earlier on the same code: keep the first record
        prov = {**prov, "commit": old["provenance"]["commit"], "date": old["provenance"]["date"],
                "updated": prov["date"]}
    report = {"quick": a.quick, "device": a.device, "data": a.data, "loadavg_before": load_before,
              "loadavg_after": os.getloadavg(), "model_options": {**MODEL_OPTIONS, "width": a.width},
              "original_ratios": ORIGINAL,
              "rows": rows, "mtt_memory": memory_rows, "provenance": prov}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "speed.json", report)
    md = [f"# bench_speed ({'quick' if a.quick else 'full'}); load average before {load_before}, "
          f"after {report['loadavg_after']}", "",
          f"Measured on commit {prov['commit'][:10]} ({prov['date']}{', uncommitted changes' if prov['dirty'] else ''}).",
          "", "Ratios are s/iteration ÷ fp32 eager fwd+bwd of ConvNet-3 at "
          "batch 256 timed in the same process; MTT also ÷ fwd+bwd(100). Each process keeps freed memory "
          "(pd_plugins.training.allocator, as pd-run does) and times the floor with it; the "
          "'default-malloc floor' ratio divides by the same floor timed first, with glibc's default "
          "malloc, as the original code ran (the 'original × floor' column).", "", _table(rows, cuda), ""]
    if cuda:
        md[2:2] = [f"Device: {a.device}; the floor is that GPU's fwd+bwd with deterministic kernels, as pd-run "
                   "runs; each mode's peak is torch.cuda.max_memory_allocated over its iterations.", ""]
    if memory_rows:
        peak = "peak_cuda_mib" if cuda else "peak_rss_gb"
        md += [f"| MTT memory | syn_steps | s/iter | {'peak CUDA MiB' if cuda else 'peak RSS GB'} |",
               "|---|---|---|---|"]
        md += [f"| {r['memory']} | {r['syn_steps']} | {r.get('s_per_iter') or r.get('error')} | "
               f"{r.get(peak)} |" for r in memory_rows]
    (out_dir / "speed.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
