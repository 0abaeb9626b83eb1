"""The summary of a run: the dict ``pd-run --json`` prints and :func:`~pd_plugins.pipeline.runner.run` returns."""
from __future__ import annotations

from typing import Any, Optional


def summarise(run, splits, pruned, distilled, evaluated: Optional[dict]) -> dict:
    """What a run did, in one flat dict: sizes, the kept and synthetic counts, the accuracy."""
    cfg = run.cfg
    out: dict[str, Any] = {
        "out": str(run.out), "dataset": cfg.dataset, "train_size": len(splits.train),
        "test_size": len(splits.test), "budget": run.resolved["budget"],
        "pruner": cfg.pruner if not cfg.subset else f"subset:{cfg.subset}",
        "keep": run.resolved["keep"], "mode": cfg.mode, "mode_source": run.plan.mode_source,
    }
    if pruned is not None:
        out["kept"] = int(pruned.keep.numel())
        out["kl_to_full"] = pruned.meta.get("kl_to_full")
    if distilled is not None:
        out.update({"distiller": cfg.distiller, "ipc": cfg.ipc, "synthetic": int(distilled.images.shape[0])})
        if distilled.history:
            out["final_loss"] = distilled.history[-1].get("loss")
        if distilled.lr is not None:
            out["learned_lr"] = distilled.lr
    if evaluated is not None:
        res = evaluated["results"][0]
        out.update({"evaluated": evaluated["evaluated"], "model": res["model"], "acc_mean": res["mean"],
                    "acc_std": res["std"], "repeats": len(res["accs"])})
    return out
