"""Robust scores over a sweep: ``pd-run sweep FILE --metrics robust`` computes them in every finished cell,
``pd-run report SWEEP --metrics robust`` adds a table of HLR, IOR, LRS and ARS per setting.

A cell's scores are those of its newest robust summary (``RUN/robust/robust-*.json``) that holds
every requested score; a setting reports the mean ± std over its cells (seeds) of the cells'
mean scores, and the label mode of ``Acc_syn-any`` each cell used.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Optional, Sequence

from pd_plugins.errors import PdPluginsError
from pd_plugins.experiments.robust import SCORE_ROWS, list_robust, robust_eval
from pd_plugins.experiments.sweep import load_summary

FINISHED = ("done", "skipped")


def robust_cells(sweep_dir, metrics: Sequence[str], *, overwrite: bool = False, executor=None,
                 **settings) -> list[dict]:
    """Compute (or read back) the robust scores of every finished cell of a sweep; one record per cell
    (``id``, ``status`` ``computed``/``stored``/``failed``, ``scores`` or ``error``). ``settings`` go to
    :func:`~pd_plugins.experiments.robust.robust_eval` (``evaluator``, ``options``, ``pool``, ``w``, ...)."""
    root = Path(sweep_dir)
    records = []
    for cell in load_summary(root)["cells"]:
        if cell.get("status") not in FINISHED:
            continue
        try:
            payload = robust_eval(root / cell["dir"], metrics, overwrite=overwrite, executor=executor, **settings)
        except PdPluginsError as exc:  # recorded per cell; the others go on
            records.append({"id": cell["id"], "status": "failed", "error": str(exc)})
            continue
        records.append({"id": cell["id"], "status": "stored" if payload["stored"] else "computed",
                        "scores": {k: v["mean"] for k, v in payload["scores"].items()}})
    return records


def cell_scores(run_dir, metrics: Sequence[str]) -> Optional[dict]:
    """The newest robust summary of a run directory that holds every score in ``metrics`` (None: none)."""
    fitting = [s for s in list_robust(run_dir) if set(metrics) <= set(s.get("scores", {}))]
    return max(fitting, key=lambda s: s.get("finished", "")) if fitting else None


def robust_groups(sweep_dir, settings: list[tuple[list[str], list[str]]], metrics: Sequence[str]) -> list[dict]:
    """``settings``: ``(label cells, cell ids)`` per setting of the report; returns one row per setting with
    the mean ± std over its cells of each score, the cells' label modes and how many cells lack scores."""
    root = Path(sweep_dir)
    dirs = {c["id"]: root / c["dir"] for c in load_summary(root)["cells"]}
    out = []
    for labels, cells in settings:
        found = [s for s in (cell_scores(dirs[c], metrics) for c in cells) if s is not None]
        row = {"labels": labels, "n": len(found), "missing": len(cells) - len(found),
               "label_modes": sorted({str(s["terms"].get("syn_any", s["terms"].get("syn_hard", {})).get("labels"))
                                      for s in found}),
               "scores": {}}
        for name in metrics:
            means = [s["scores"][name]["mean"] for s in found]
            row["scores"][name] = (statistics.fmean(means), statistics.stdev(means) if len(means) > 1 else 0.0) \
                if means else None
        out.append(row)
    return out


def markdown(groups: list[dict], metrics: Sequence[str], head: Sequence[str]) -> str:
    """The robust table: ``head`` names the label cells, then n, label mode and one column per score."""
    cols = [*head, "n", "labels (syn-any)"] + [f"{SCORE_ROWS[m][0].split(' =')[0]} ({SCORE_ROWS[m][1]})"
                                               for m in metrics]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for g in groups:
        cells = [*g["labels"], f"{g['n']}" + (f" ({g['missing']} without)" if g["missing"] else ""),
                 ", ".join(g["label_modes"]) or "-"]
        cells += ["-" if g["scores"][m] is None else f"{100 * g['scores'][m][0]:.2f} ± {100 * g['scores'][m][1]:.2f}"
                  for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_rows(groups: list[dict], metrics: Sequence[str]) -> list[list]:
    """One CSV row per setting: label cells, n, missing, label modes, then mean and std of each score (fractions)."""
    return [[*g["labels"], g["n"], g["missing"], ";".join(g["label_modes"])]
            + [v for m in metrics for v in (g["scores"][m] or (None, None))] for g in groups]


def csv_header(head: Sequence[str], metrics: Sequence[str]) -> list[str]:
    return [*head, "n", "missing", "labels"] + [f"{m}_{s}" for m in metrics for s in ("mean", "std")]
