"""``pd-run plan``'s text: a run's estimate as a table of networks, data, and each stage's peak memory and
time with what makes them up."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from pd_plugins.planning.budget import FIRST_USE_MARGIN
from pd_plugins.planning.estimate import fmt_bytes, fmt_seconds

if TYPE_CHECKING:  # pragma: no cover
    from pd_plugins.planning.estimate import RunEstimate


def format_estimate(estimate: "RunEstimate", free: Optional[tuple[int, str]]) -> str:
    """The plan as text: one block per section, each stage's parts and timed units indented under it."""
    s = estimate.settings
    pruner = "no pruner" if s["pruner"] == "none" else f"pruner {s['pruner']} (keep {s['keep']:.3g})"
    distiller = "no distiller" if s["distiller"] == "none" else f"distiller {s['distiller']} (ipc {s['ipc']})"
    lines = [f"plan: {s['dataset']}, {pruner}, mode {s['mode']}, {distiller}, evaluator {s['evaluator']}; "
             f"model {s['model']}, budget {s['budget']}, {estimate.device}, {s['precision']}",
             "(estimates: nothing ran but timing probes of each stage's work at the real shapes)", ""]
    rows = [("networks" if i == 0 else "", f"{role}: {count:,} parameters")
            for i, (role, count) in enumerate(estimate.networks.items())]
    d = estimate.data
    shape = "x".join(str(v) for v in d["sample_shape"])
    rows.append(("data", f"train set {d['train_samples']:,} x {shape} {d['pixel_dtype'].removeprefix('torch.')}: "
                         f"{fmt_bytes(d['train_bytes'])} as stored (test set {fmt_bytes(d['test_bytes'])})"))
    rows.append(("", f"distillation pool {d['pool_samples']:,} samples: {fmt_bytes(d['pool_bytes'])}"))
    rows += [("stored", f"{what}: {fmt_bytes(nbytes)}") for stage in estimate.stages
             for what, nbytes in stage.stored.items()]
    width = max(len(k) for k, _ in rows)
    lines += [f"{k.ljust(width)}  {v}" for k, v in rows] + [""]
    lines.append(f"{'stage':<9}{'peak memory':>13}{'time':>11}  notes")
    for stage in estimate.stages:
        note = "; ".join(filter(None, [stage.strategy, stage.note]))
        lines.append(f"{stage.stage:<9}{fmt_bytes(stage.peak):>13}{fmt_seconds(stage.seconds):>11}  {note}")
        lines += [f"{'':<11}{fmt_bytes(v):>10}  {k}" for k, v in stage.parts.items()]
        lines += [f"{'':<11}{fmt_seconds(u.seconds * u.count):>10}  {u.count:,.0f} x {u.what} "
                  f"({fmt_seconds(u.seconds)} each)" for u in stage.units]
    peak, top = estimate.peak()
    lines.append("")
    total = estimate.seconds()
    lines.append(f"run: peak memory {fmt_bytes(peak)}{f' ({top.stage})' if top else ''} above what the process "
                 f"holds now, time {fmt_seconds(total)}")
    if free is not None and top is not None:
        fits = peak + FIRST_USE_MARGIN <= free[0]
        verdict = "fits" if fits else f"does NOT fit: lower {', '.join(top.lower) or 'the settings'} (or --force)"
        lines.append(f"free: {fmt_bytes(free[0])} of {free[1]} for the peak and {fmt_bytes(FIRST_USE_MARGIN)} "
                     f"of libraries and workspaces: {verdict}")
    return "\n".join(lines)
