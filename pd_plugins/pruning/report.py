"""The pruning report the prune stage writes into the run directory.

* ``prune_report.json``: per-class totals and kept counts, KL(pruned || full class
  histogram), the selection rule and score statistics of kept and dropped samples;
* ``prune_scores.png``: the score histogram, kept and dropped samples stacked in two
  colours (the kept region marked), when the pruner produced scores;
* ``prune_examples.png``: a few kept (left) and dropped (right) images of every class.

matplotlib is imported lazily, only when a figure is drawn.
"""
from __future__ import annotations

from pathlib import Path

from pd_plugins.io import atomic_path, atomic_write_json

EXAMPLES = 4


def _stats(t) -> dict:
    if t.numel() == 0:
        return {"n": 0}
    t = t.double()
    return {"n": int(t.numel()), "mean": float(t.mean()), "min": float(t.min()), "max": float(t.max())}


def write_prune_report(out_dir, train, result) -> dict:
    """Write the report files for ``result`` (a PruneResult over ``train``) into ``out_dir``."""
    import torch

    out = Path(out_dir)
    mask = result.mask(len(train))
    labels = train.hard_labels
    totals = train.class_counts()
    kept = torch.bincount(labels[mask], minlength=train.num_classes).tolist()
    scores = result.scores
    scored = scores is not None and bool(torch.isfinite(scores).any())
    report = {
        "pruner": result.pruner,
        "kept": int(mask.sum()),
        "of": len(train),
        "per_class_total": totals,
        "per_class_kept": kept,
        "kl_to_full": result.meta.get("kl_to_full"),
        "selection": {k: result.meta.get(k) for k in ("direction", "keep", "window", "balanced", "rounding")},
        "scores": {"kept": _stats(scores[mask]), "dropped": _stats(scores[~mask])} if scored else None,
        "files": ["prune_examples.png"] + (["prune_scores.png"] if scored else []),
    }
    if scored:
        _histogram(scores, mask, out / "prune_scores.png", result.pruner)
    _examples(train, mask, scores if scored else None, out / "prune_examples.png")
    atomic_write_json(out / "prune_report.json", report)
    return report


def _histogram(scores, mask, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = scores.double().numpy()
    m = mask.numpy()
    lo, hi = float(s.min()), float(s.max())
    bins = 50 if hi > lo else 1
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist([s[m], s[~m]], bins=bins, range=(lo, hi if hi > lo else lo + 1), stacked=True,
            color=["tab:green", "tab:gray"], label=[f"kept ({int(m.sum())})", f"dropped ({int((~m).sum())})"])
    ax.set_xlabel("score")
    ax.set_ylabel("samples")
    ax.set_title(f"{title}: score histogram")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _examples(train, mask, scores, path: Path) -> None:
    """Per class: up to EXAMPLES kept then EXAMPLES dropped images (lowest scores first when scored)."""
    import torch

    from pd_plugins.viz import save_image_grid

    rows = []
    blank = torch.ones(train.channels, *train.im_size)
    for pos in train.by_class():
        for want in (True, False):
            sel = pos[mask[pos] == want]
            if scores is not None and sel.numel():
                sel = sel[torch.sort(scores[sel].double(), stable=True).indices]
            if sel.numel() > EXAMPLES:  # spread the examples over the score range
                sel = sel[torch.linspace(0, sel.numel() - 1, EXAMPLES).round().long()]
            imgs = train.to_unit(train.images(sel)) if sel.numel() else torch.zeros(0, *blank.shape)
            pad = blank.expand(EXAMPLES - imgs.shape[0], *blank.shape)
            rows.append(torch.cat([imgs, pad]))
    save_image_grid(torch.cat(rows), path, nrow=2 * EXAMPLES)

