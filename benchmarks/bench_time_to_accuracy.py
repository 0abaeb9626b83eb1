"""Time to accuracy: test accuracy of the synthetic set against distillation wall-clock time.

DM, DC and MTT distil MNIST at ipc 10, in fp32 and on the fastest path (``compile=True`` and
bf16 where the device runs it; a CPU without AVX512-BF16/AMX falls back to fp32, recorded as
``precision_effective``). A :class:`RunContext` subclass keeps every checkpoint the loop writes
(every ``--checkpoint-every`` iterations) in memory with its time since the distillation began;
after distilling, the initial set (iteration 0, time 0), every snapshot and the final set are
evaluated with ONE fixed evaluator for all distillers and paths: ``dsa-step`` at lr 0.01 (a
learned MTT lr is recorded, not used), the stated epochs and networks, fp32, eager. Distillation
time excludes evaluation; MTT's time includes its expert training (also reported separately).

Levers (issue 28): ``--pruner``/``--keep`` prune the pool first (Moser et al.'s pool mode: real
batches and the initial images come from the kept pool) and the pruning wall clock, scorer
training included, counts in every point's time; ``--options`` overrides a distiller's options
(e.g. more iterations); ``--eval-iterations`` evaluates only chosen checkpoints (the final set is
always evaluated) so that a long run's expensive 1000-epoch evaluations stay affordable.

Modes (every setting is recorded in the JSON):
* ``--quick`` (CPU scale): first 300 train / 500 test images per class, ConvNet-3 width 32,
  DM 200 iterations batch_real 64, DC and MTT at their ``quick`` budgets, eval 300 epochs x 1 net.
* default (paper-like, a GPU job): the full MNIST pool and test set, ConvNet-3 width 128, DM 200
  iterations batch_real 256, DC 100 iterations of its paper loops (10 x 50 at ipc 10), MTT 1000
  iterations of its paper step (20 experts x 50 epochs), eval 1000 epochs x 3 nets.

    python benchmarks/bench_time_to_accuracy.py [--quick] [--device cuda] [--pool 500] [--width 128]
    -> benchmarks/results/time_to_accuracy.{json,md,png}
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, device_name, loadavg, pick_device, sync_for, write_result  # noqa: E402

from pd_plugins.pipeline.context import RunContext  # noqa: E402

IPC = 10
DATA = Path(os.environ.get("PD_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "mnist.npz"
TARGET = 0.958  # the original DM code at 200 iterations (ConvNet-128, full MNIST)
TARGETS = (TARGET, 0.970, 0.975)  # first crossings reported; 97.5 % is DM's published MNIST ipc 10 figure
MODES = {
    "quick": {"pool": 300, "test_per_class": 500, "width": 32, "eval_epochs": 300, "eval_networks": 1,
              "distillers": {"dm": ({"iterations": 200, "batch_real": 64}, None, 25),
                             "dc": ({}, "quick", 1),
                             "mtt": ({}, "quick", 20)}},
    "full": {"pool": 0, "test_per_class": 0, "width": 128, "eval_epochs": 1000, "eval_networks": 3,
             "distillers": {"dm": ({"iterations": 200, "batch_real": 256}, None, 20),
                            "dc": ({"iterations": 100}, None, 10),
                            "mtt": ({"iterations": 1000, "experts": 20}, None, 100)}},
}


@dataclass
class RecordingContext(RunContext):
    """A context whose checkpoints are kept in memory: ``(seconds since start, images, learned lr)``."""

    t0: float = 0.0
    snapshots: list = field(default_factory=list)

    def save_checkpoint(self, state: dict) -> None:
        sync_for(self.device)()
        elapsed = time.perf_counter() - self.t0
        lr = state["state"].get("objective", {}).get("syn_lr")
        self.snapshots.append({"iteration": int(state["iteration"]), "seconds": elapsed,
                               "images": state["state"]["tensors"]["images"].detach().cpu().clone(),
                               "lr": None if lr is None else float(lr)})

    def load_checkpoint(self):
        return None

    def clear_checkpoint(self) -> None:
        pass


def load_data(dataset: str, pool: int, test_per_class: int):
    from pd_plugins import get_registry

    factory = get_registry("dataset").load(dataset)
    if dataset == "digits":
        return factory(None)
    return factory(str(DATA), name="mnist", train_per_class=pool, test_per_class=test_per_class)


def prune_pool(pruner: str, keep: float, values: dict, budget, data, ctx_kw: dict, work: Path):
    """``(pool, facts)``: ``data`` pruned by ``pruner`` with a cold score cache, and what it took."""
    from pd_plugins import get_registry
    from pd_plugins.options import as_dict

    cls = get_registry("pruner").load(pruner)
    opts = cls.resolve_options(values, budget)
    ctx = RunContext(**ctx_kw, work_dir=work / "prune", cache_dir=work / "prune-cache", stage="prune")
    t = time.perf_counter()
    result = cls(opts).prune(data, keep, ctx)
    sync_for(ctx.device)()
    seconds = time.perf_counter() - t
    pool = result.apply(data)
    return pool, {"pruner": pruner, "keep": keep, "budget": budget, "options": as_dict(opts), "prune_s": seconds,
                  "pool_size": len(pool), "pool_per_class": pool.class_counts()}


def distill_one(name: str, values: dict, budget, every: int, data, ctx_kw: dict, work: Path) -> dict:
    """Distil once, recording snapshots; returns timings, snapshots and the final set."""
    from pd_plugins import get_registry
    from pd_plugins.distillation.synthetic import initial_images

    cls = get_registry("distiller").load(name)
    opts = cls.resolve_options(values, budget)
    d = cls(opts)
    ctx = RecordingContext(**ctx_kw, work_dir=work / "work", cache_dir=work / "cache", checkpoint_every=every,
                           stage="distill")
    experts_s = 0.0
    if name == "mtt":  # expert training is part of MTT's time to accuracy; timed on its own too
        t = time.perf_counter()
        d.experts(data, ctx)
        experts_s = time.perf_counter() - t
    init = getattr(opts, "init", "real")
    init = cls.default_init if init == "default" else init
    ctx.t0 = time.perf_counter()
    result = d.distill(data, IPC, ctx)
    sync_for(ctx.device)()
    total = time.perf_counter() - ctx.t0
    first = initial_images(data, IPC, init, ctx.generator(name, "init"), "cpu")
    points = [{"iteration": 0, "seconds": 0.0, "images": first, "lr": None}, *ctx.snapshots,
              {"iteration": int(opts.iterations), "seconds": total, "images": result.images, "lr": result.lr}]
    return {"options": {k: v for k, v in vars(opts).items()}, "budget": budget, "checkpoint_every": every,
            "init": init, "experts_s": experts_s, "distill_s": total, "points": points, "labels": result.labels}


def evaluate_points(run: dict, data, evaluator, eval_ctx, networks: int, only=None) -> list[dict]:
    """One row per point (``only``: just these iterations, and the final set); each point's time is
    the distillation clock plus the pruning time (and MTT's experts after iteration 0)."""
    from pd_plugins.types import DistillResult

    rows = []
    points = run["points"]
    if only:
        points = [p for i, p in enumerate(points) if p["iteration"] in only or i == len(points) - 1]
    for p in points:
        syn = DistillResult(images=p["images"], labels=run["labels"], ipc=IPC, distiller="snapshot")
        t = time.perf_counter()
        res = evaluator.evaluate(syn.as_dataset(data.train), data.test, eval_ctx, lr=None, repeats=networks)
        accs = [float(a) for a in res.accs]
        rows.append({"iteration": p["iteration"], "distill_s": round(p["seconds"], 3),
                     "time_s": round(p["seconds"] + run.get("prune_s", 0.0)
                                       + (run["experts_s"] if p["iteration"] else 0.0), 3),
                     "acc_mean": sum(accs) / len(accs), "accs": accs, "learned_lr": p["lr"],
                     "eval_s": round(time.perf_counter() - t, 2)})
        print(f"  it {p['iteration']:5d}  t {rows[-1]['time_s']:8.1f}s  acc {rows[-1]['acc_mean']:.4f}", flush=True)
    return rows


def first_reaching(rows: list[dict], target: float):
    hit = [r for r in rows if r["acc_mean"] >= target]
    return None if not hit else {"iteration": hit[0]["iteration"], "time_s": hit[0]["time_s"]}


def write_markdown(out: dict, path: Path, prov: dict) -> None:
    s = out["settings"]
    lines = ["# Time to accuracy (MNIST, ipc 10)", "",
             f"Measured on commit `{str(prov.get('commit'))[:10]}` ({prov.get('date')}): `{prov.get('command')}`.", "",
             f"Device {out['device']}; pool {s['pool_per_class'] or 'full'} per class, test "
             f"{s['test_per_class'] or 'full'} per class, ConvNet-3 width {s['width']}; evaluator dsa-step lr 0.01, "
             f"{s['eval']['epochs']} epochs x {s['eval']['networks']} net(s), fp32. Time = distillation wall clock "
             "(MTT: + expert training; a pruned pool: + pruning, scorer training included), evaluation excluded.", ""]
    pruning = s.get("pruning")
    if pruning:
        counts = pruning["pool_per_class"]
        lines += [f"Pool: `{pruning['pruner']}` keep {pruning['keep']} (budget {pruning['budget']}, options "
                  f"`{json.dumps(pruning['options'], sort_keys=True)}`): {pruning['pool_size']} images, "
                  f"{min(counts)}-{max(counts)} per class, pruned in {pruning['prune_s']:.1f} s.", ""]
    for key, run in out["runs"].items():
        lines += [f"`{key}` options: `{json.dumps(run['options'], sort_keys=True, default=str)}`", ""]
    lines += [
             "| distiller | path | iteration | time s | accuracy % |", "|---|---|---|---|---|"]
    for key, run in out["runs"].items():
        name, path_name = key.split("/")
        for r in run["curve"]:
            lines.append(f"| {name} | {path_name} | {r['iteration']} | {r['time_s']:.1f} | {100 * r['acc_mean']:.2f} |")
    heads = " | ".join(f"first >= {100 * t:.1f} %" for t in TARGETS)
    lines += ["", f"| distiller | path | precision (effective) | compile | distill s | experts s | final % | {heads} |",
              "|---|---|---|---|---|---|---|" + "---|" * len(TARGETS)]
    for key, run in out["runs"].items():
        name, path_name = key.split("/")
        hits = [first_reaching(run["curve"], t) for t in TARGETS]
        hit_s = " | ".join("not reached" if h is None else f"it {h['iteration']}, {h['time_s']:.1f} s" for h in hits)
        lines.append(f"| {name} | {path_name} | {run['precision_effective']} | {run['compile']} | "
                     f"{run['distill_s']:.1f} | {run['experts_s']:.1f} | {100 * run['curve'][-1]['acc_mean']:.2f} | "
                     f"{hit_s} |")
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


def write_plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, run in out["runs"].items():
        xs = [r["time_s"] for r in run["curve"]]
        ys = [100 * r["acc_mean"] for r in run["curve"]]
        ax.plot(xs, ys, marker="o", ms=3, ls="-" if key.endswith("fp32") else "--", label=key)
    ax.axhline(100 * TARGET, color="grey", lw=0.8, ls=":", label=f"{100 * TARGET:.1f} % (DM reference)")
    ax.axhline(97.5, color="black", lw=0.8, ls=":", label="97.5 % (DM, published)")
    ax.set_xlabel("distillation wall-clock s (MTT: incl. experts; incl. pruning)")
    ax.set_ylabel("test accuracy % (dsa-step, lr 0.01)")
    ax.set_title(f"MNIST ipc 10, width {out['settings']['width']}, pool {out['settings']['pool_per_class'] or 'full'}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    print(f"wrote {path}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CPU scale (see the module docstring)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dataset", default="npz", choices=("npz", "digits"), help="digits: the embedded 8x8 set (tests)")
    ap.add_argument("--pool", type=int, help="train images per class (0: all)")
    ap.add_argument("--test-per-class", type=int, help="test images per class (0: all)")
    ap.add_argument("--width", type=int, help="ConvNet width")
    ap.add_argument("--eval-epochs", type=int)
    ap.add_argument("--eval-networks", type=int)
    ap.add_argument("--distillers", default="dm,dc,mtt")
    ap.add_argument("--paths", default="fp32,fast", help="fp32 and/or fast (compile + bf16 where supported)")
    ap.add_argument("--fast-distillers", default="dm,dc,mtt", help="distillers also run on the fast path")
    ap.add_argument("--iterations", default="", help="override, e.g. dm=200,mtt=50")
    ap.add_argument("--every", default="", help="checkpoint interval override, e.g. dm=25,dc=2")
    ap.add_argument("--options", default="{}", help='JSON distiller options, e.g. {"dm": {"iterations": 1200}}')
    ap.add_argument("--pruner", default="", help="prune the pool first with this pruner (its time counts)")
    ap.add_argument("--keep", type=float, default=1.0, help="kept fraction for --pruner")
    ap.add_argument("--pruner-options", default="{}", help="JSON pruner options")
    ap.add_argument("--pruner-budget", default=None, help="the pruner's budget (e.g. cpu)")
    ap.add_argument("--eval-iterations", default="", help="evaluate only these checkpoints (and the final set)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--eval-threads", type=int, default=0, help="torch threads while evaluating (0: as --threads)")
    ap.add_argument("--name", default="time_to_accuracy", help="results/<name>.{json,md,png}")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    mode = MODES["quick" if a.quick else "full"]
    pool = mode["pool"] if a.pool is None else a.pool
    test_pc = mode["test_per_class"] if a.test_per_class is None else a.test_per_class
    width = a.width or mode["width"]
    epochs = a.eval_epochs or mode["eval_epochs"]
    networks = a.eval_networks or mode["eval_networks"]
    iters = dict(kv.split("=") for kv in a.iterations.split(",") if kv)
    every = dict(kv.split("=") for kv in a.every.split(",") if kv)
    extra = json.loads(a.options)
    only = {int(i) for i in a.eval_iterations.split(",") if i}
    if a.pruner and not 0.0 < a.keep <= 1.0:
        ap.error(f"--keep must be in (0, 1], got {a.keep}")
    device = pick_device(a.device)
    from pd_plugins import get_registry
    from pd_plugins.training.accel import resolve_precision

    data = load_data(a.dataset, pool, test_pc)
    fast_precision, note = resolve_precision("bf16", device)
    if note:
        print(note)
    ctx_kw = {"seed": 0, "device": device, "model": "convnet", "model_options": {"width": width}}
    ev_cls = get_registry("evaluator").load("dsa-step")
    evaluator = ev_cls(ev_cls.resolve_options({"epochs": epochs, "lr": 0.01, "use_learned_lr": False,
                                               "repeats": networks}))
    eval_ctx = RunContext(**ctx_kw, stage="evaluate")
    paths = {"fp32": ("fp32", False), "fast": (fast_precision, True)}
    out: dict = {"dataset": f"{a.dataset} {'mnist.npz' if a.dataset == 'npz' else '8x8'}", "ipc": IPC,
                 "device": device_name(device), "mode": "quick" if a.quick else "full", "target_accuracy": TARGET,
                 "settings": {"pool_per_class": pool, "test_per_class": test_pc, "train_size": len(data.train),
                              "test_size": len(data.test), "model": "convnet", "width": width,
                              "eval": {"protocol": "dsa-step", "lr": 0.01, "epochs": epochs,
                                       "passes": epochs + 1, "networks": networks, "precision": "fp32",
                                       "compile": False},
                              "threads": torch.get_num_threads(), "cores": os.cpu_count(),
                              "bf16_requested_on_fast_path": True, "bf16_note": note,
                              "loadavg_start": loadavg(), "eval_iterations": sorted(only) or "all"},
                 "runs": {}}
    train = data.train
    prune_s = 0.0
    if a.pruner:
        print(f"== prune {a.pruner} keep {a.keep}", flush=True)
        with tempfile.TemporaryDirectory(prefix="pd-tta-prune-") as tmp:
            train, facts = prune_pool(a.pruner, a.keep, json.loads(a.pruner_options), a.pruner_budget, data.train,
                                      ctx_kw, Path(tmp))
        prune_s = facts["prune_s"]
        out["settings"]["pruning"] = facts
        print(f"   pool {facts['pool_size']} images in {prune_s:.1f} s", flush=True)
    for name in [n for n in a.distillers.split(",") if n]:
        values, budget, k = mode["distillers"][name]
        values = {**values, **extra.get(name, {}), **({"iterations": int(iters[name])} if name in iters else {})}
        k = int(every.get(name, k))
        for path_name in [p for p in a.paths.split(",") if p]:
            if path_name == "fast" and name not in a.fast_distillers.split(","):
                continue
            precision, compile_ = paths[path_name]
            print(f"== {name} {path_name} (precision {precision}, compile {compile_})", flush=True)
            with tempfile.TemporaryDirectory(prefix="pd-tta-") as tmp:
                run = distill_one(name, values, budget, k, train,
                                  {**ctx_kw, "precision": precision, "compile": compile_}, Path(tmp))
            run["prune_s"] = prune_s
            print(f"   distilled in {run['distill_s']:.1f} s (experts {run['experts_s']:.1f} s)", flush=True)
            threads = torch.get_num_threads()
            if a.eval_threads:
                torch.set_num_threads(a.eval_threads)
            curve = evaluate_points(run, data, evaluator, eval_ctx, networks, only)
            torch.set_num_threads(threads)
            out["runs"][f"{name}/{path_name}"] = {
                "options": run["options"], "budget": run["budget"], "init": run["init"],
                "checkpoint_every": run["checkpoint_every"], "precision_requested": "bf16" if compile_ else "fp32",
                "precision_effective": precision, "compile": compile_, "experts_s": run["experts_s"], "prune_s": prune_s,
                "distill_s": run["distill_s"], "curve": curve, "first_reaching_target": first_reaching(curve, TARGET),
                "first_reaching": {f"{100 * t:.1f}": first_reaching(curve, t) for t in TARGETS},
                "loadavg_after": loadavg()}
            out["settings"]["loadavg_end"] = loadavg()
            out["complete"] = False
            write_all(out, a.name, a.distillers, a.pruner)  # after every run: an interrupted job keeps what it measured
    out["complete"] = True
    write_all(out, a.name, a.distillers, a.pruner)


def write_all(out: dict, name: str, distillers: str, pruner: str = "") -> None:
    plugins = [("distiller", n) for n in distillers.split(",") if n] + ([("pruner", pruner)] if pruner else [])
    written = write_result(name, out, plugins=plugins)
    write_markdown(out, RESULTS / f"{name}.md", json.loads(written.read_text())["provenance"])
    write_plot(out, RESULTS / f"{name}.png")


if __name__ == "__main__":
    main()
