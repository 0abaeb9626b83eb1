"""Scoring throughput of the score-based pruners vs a bare forward pass, and score-cache timing.

For each pruner's scoring path (loss-easy/loss-hard and early-loss: per-sample CE; el2n-window:
EL2N) it times ``pd_plugins.pruning.scoring.sample_statistic`` against a bare ``net(x)`` loop over the
same, pre-normalised batches under ``torch.inference_mode``, and prints the ratio measured in
this run. It also times a cache miss (train + score) and a cache hit of ``score_dataset``.
Results go to ``benchmarks/results/pruners.json``.

    python benchmarks/bench_pruners.py [--quick] [--n 4096] [--size 32] [--device auto] [--repeats 3]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import provenance, write_json  # noqa: E402


def _timed(fn, repeats: int, sync) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    from pd_plugins.pipeline.context import RunContext
    from pd_plugins.pruning.scoring import ScorerRecipe, sample_statistic, score_dataset
    from pd_plugins.types import ImageDataset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1,024 images and 2 repeats")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "pruners.json"))
    a = ap.parse_args()
    if a.quick:
        a.n, a.repeats = min(a.n, 1024), min(a.repeats, 2)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    g = torch.Generator().manual_seed(0)
    data = ImageDataset(
        pixels=torch.randint(0, 256, (a.n, a.channels, a.size, a.size), generator=g, dtype=torch.uint8),
        labels=torch.randint(0, 10, (a.n,), generator=g), num_classes=10, mean=(0.5,) * a.channels,
        std=(0.25,) * a.channels, name="bench", index=torch.arange(a.n), source_id="bench")
    ctx = RunContext(seed=0, device=device, stage="bench")
    with ctx.fork_rng("bench-net"):
        net = ctx.make_model(data.channels, 10, data.im_size, name="convnet").eval()
    batches = [data.images(slice(s, s + a.batch), device) for s in range(0, a.n, a.batch)]

    @torch.inference_mode()
    def bare():
        for x in batches:
            net(x)

    t_bare = _timed(bare, a.repeats, sync)
    paths = {"loss-easy/loss-hard": "loss", "early-loss": "loss", "el2n-window": "el2n"}
    rows = {}
    for pruner, stat in paths.items():
        t = _timed(lambda: sample_statistic(net, data, ctx, stat, a.batch), a.repeats, sync)
        rows[pruner] = {"statistic": stat, "seconds": t, "bare_seconds": t_bare, "ratio": t / t_bare}
        print(f"{pruner:22s} {stat:5s} scoring {t * 1e3:8.1f} ms  bare forward {t_bare * 1e3:8.1f} ms  "
              f"ratio {t / t_bare:.3f}")

    with tempfile.TemporaryDirectory() as cache:
        ctx.cache_dir = Path(cache)
        recipe = ScorerRecipe(epochs=1, batch=256, augment=True, score_batch=a.batch)
        t = time.perf_counter()
        score_dataset(data, ctx, recipe, stat="loss", runs=1, purpose="bench")
        miss = time.perf_counter() - t
        t = time.perf_counter()
        _, meta = score_dataset(data, ctx, recipe, stat="loss", runs=1, purpose="bench")
        hit = time.perf_counter() - t
    assert meta["cache"] == "hit"
    print(f"score cache: miss (1 epoch training + scoring) {miss:.2f} s, hit {hit * 1e3:.1f} ms")
    result = {"device": torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)",
              "quick": a.quick, "n": a.n, "image": [a.channels, a.size, a.size], "batch": a.batch, "model": "convnet",
              "torch": torch.__version__, "scoring": rows, "cache": {"miss_seconds": miss, "hit_seconds": hit}}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(a.out), {**result, "provenance": provenance()})
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
