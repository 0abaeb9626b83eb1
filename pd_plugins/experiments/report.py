"""``pd-run report SWEEP_DIR``: tables, plots and significance tests over a sweep's cells.

Cells are grouped by every grid axis except ``seed``; each group reports mean ± std of the
per-seed accuracies. Every pruned group is compared with the unpruned group of the same
dataset/distiller/ipc (and other axes) by Welch's t-test (``scipy.stats.ttest_ind`` with
``equal_var=False``). Plots (matplotlib, Agg): accuracy vs keep ratio per distiller
(Moser et al. Figs. 6-8 style), EL2N window position vs accuracy (Sundar et al.; only with
``el2n-window`` cells) and pruned-vs-unpruned bars. A cell whose distillation diverged is a row of
its setting's outcome (where and how it diverged), not an accuracy.
"""
from __future__ import annotations

import csv
import io as _io
import json
import re
import statistics
from pathlib import Path
from typing import Any, Optional, Sequence

from pd_plugins.errors import DataError
from pd_plugins.io import atomic_path, atomic_write_text, read_json
from pd_plugins.paths import expect_output_dir
from pd_plugins.experiments.reeval import read_evaluation, selector_label
from pd_plugins.experiments.sweep import load_summary

GROUP_FIELDS = ("dataset", "distiller", "ipc", "pruner", "keep", "window", "mode")


def collect(sweep_dir, evaluation: Optional[dict] = None, *, allow_empty: bool = False) -> list[dict]:
    """One row per finished cell: its settings, accuracy and (when present) unseen-architecture mean; and one
    per diverged cell, with ``acc`` None and its ``outcome`` (e.g. ``diverged at it 11 (syn_lr <= 0)``).

    ``evaluation`` selects a re-evaluation (``pd-run eval RUN -E ...``) instead of each run's own
    ``eval.json``: ``{"evaluator": NAME, "options": {KEY: VALUE}}`` (see :func:`.reeval.read_evaluation`).
    No row is an error unless ``allow_empty``.
    """
    root = Path(sweep_dir)
    summary = load_summary(root)
    rows = []
    for cell in summary["cells"]:
        cdir = root / cell["dir"]
        if not (cdir / "config.json").exists():
            continue
        diverged = cell.get("status") == "diverged"
        ev = None if diverged else read_evaluation(cdir, evaluation)
        if ev is None and not diverged:
            continue
        cfg = read_json(cdir / "config.json", "config")
        res = ev["results"][0] if ev is not None else {}
        popts = cfg["resolved"].get("pruner_options") or {}
        window = popts.get("window")
        row = {
            "cell": cell["id"], "dataset": dataset_label(cfg), "distiller": cfg["distiller"], "ipc": cfg["ipc"],
            "pruner": cfg["pruner"], "keep": cfg["resolved"]["keep"],
            "window": tuple(float(w) for w in window) if window else None,
            "mode": mode_label(cfg), "seed": cfg["seed"], "acc": float(res["mean"]) if ev is not None else None,
            "model": res.get("model"), "unseen": ((ev or {}).get("cross_arch") or {}).get("unseen_mean"),
            "other": other_axes(cell["axes"]), "status": "diverged" if diverged else "done",
            "outcome": (cell.get("outcome") or "diverged") if diverged else "",
        }
        rows.append(row)
    if not rows and not allow_empty:
        what = "eval.json" if evaluation is None else f"an evaluation matching {selector_label(evaluation)}"
        raise DataError(f"{sweep_dir}: no finished cells with {what} to report")
    return rows


def other_axes(axes: dict) -> dict:
    """A cell's grid axes that are not grouping fields (nor the seed or the window): they split settings."""
    return {k: v for k, v in axes.items()
            if k.split(".")[0] not in GROUP_FIELDS + ("seed",) and not k.startswith("pruner_options.window")}


def mode_label(cfg: dict) -> str:
    """A cell's pipeline mode and why it was used, e.g. ``init (el2n-window's paper mode)``; folders
    written before ``--mode auto`` name only the mode."""
    source = (cfg.get("resolved") or {}).get("mode_source")
    mode = cfg.get("mode", "pool")
    return f"{mode} ({source})" if source else mode


def dataset_label(cfg: dict) -> str:
    """The dataset's display name: ``npz`` runs are named by their ``name`` option or file stem."""
    if cfg.get("dataset") != "npz":
        return cfg.get("dataset")
    name = str((cfg.get("dataset_options") or {}).get("name") or "").strip()
    return name or Path(str(cfg.get("data_root") or "npz")).stem


def _group_key(row: dict) -> tuple:
    return tuple(row[f] for f in GROUP_FIELDS) + (json.dumps(row["other"], sort_keys=True),)


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean ± std over seeds per setting, with Welch's t-test against the unpruned setting."""
    from scipy import stats

    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(_group_key(row), []).append(row)
    out = []
    for key, members in groups.items():
        finished = [m for m in members if m["acc"] is not None]
        accs = [m["acc"] for m in finished]
        agg = {f: members[0][f] for f in GROUP_FIELDS}
        agg.update({"other": members[0]["other"], "n": len(accs), "mean": statistics.fmean(accs) if accs else None,
                    "std": (statistics.stdev(accs) if len(accs) > 1 else 0.0) if accs else None, "accs": accs,
                    "seeds": [m["seed"] for m in finished],
                    "diverged": [f"seed {m['seed']}: {m['outcome']}" for m in members if m["acc"] is None]})
        unseen = [m["unseen"] for m in members if m["unseen"] is not None]
        agg["unseen_mean"] = statistics.fmean(unseen) if unseen else None
        out.append(agg)
    base = {(g["dataset"], g["distiller"], g["ipc"], json.dumps(g["other"], sort_keys=True)): g
            for g in out if g["pruner"] == "none"}
    for g in out:
        ref = base.get((g["dataset"], g["distiller"], g["ipc"], json.dumps(g["other"], sort_keys=True)))
        g["delta"] = g["p_value"] = None
        if ref is None or ref is g or g["mean"] is None or ref["mean"] is None:
            continue
        g["delta"] = g["mean"] - ref["mean"]
        if g["n"] > 1 and ref["n"] > 1:
            res = stats.ttest_ind(g["accs"], ref["accs"], equal_var=False)
            g["p_value"] = None if res.pvalue != res.pvalue else float(res.pvalue)  # NaN when both are constant
    out.sort(key=lambda g: (g["dataset"], g["distiller"], g["ipc"], g["pruner"] != "none", g["pruner"],
                            g["keep"], g["window"] or (), json.dumps(g["other"], sort_keys=True)))
    return out


def _fmt(v: Optional[float], pct: bool = True, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{100 * v:+.{digits}f}" if pct == "signed" else (f"{100 * v:.{digits}f}" if pct else f"{v:.3g}")


def _setting(g: dict) -> str:
    if g["pruner"] == "none":
        return "unpruned"
    if g["window"]:
        return f"{g['pruner']} [{g['window'][0]:g}, {g['window'][1]:g})"
    return f"{g['pruner']} keep={g['keep']:g}"


COLUMNS = ["dataset", "distiller", "ipc", "setting", "mode", "other", "n", "acc %", "std", "Δ vs unpruned (pp)",
           "Welch p", "unseen-arch %", "diverged (no accuracy)"]


def _table_rows(groups: list[dict]) -> list[list[str]]:
    return [[g["dataset"], g["distiller"], str(g["ipc"]), _setting(g), g["mode"],
             ",".join(f"{k}={v}" for k, v in g["other"].items()) or "-", str(g["n"]), _fmt(g["mean"]),
             _fmt(g["std"]), _fmt(g["delta"], "signed"), _fmt(g["p_value"], False), _fmt(g["unseen_mean"]),
             "; ".join(g["diverged"]) or "-"]
            for g in groups]


def markdown(groups: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in _table_rows(groups)]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[list[Any]], header: list[str]) -> str:
    buf = _io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------
# plots

def pyplot():
    """matplotlib.pyplot on the Agg backend (imported lazily)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 120) -> None:
    """Write ``fig`` as a PNG atomically."""
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")


def _panels(groups: list[dict]) -> dict[tuple, list[dict]]:
    panels: dict[tuple, list[dict]] = {}
    for g in groups:
        panels.setdefault((g["dataset"], g["distiller"], g["ipc"]), []).append(g)
    return panels


def _line_plot(points: list[dict], groups: list[dict], path: Path, x, xerr, xlabel: str) -> Optional[Path]:
    """One panel per dataset/distiller/ipc, one line per pruner through ``points``, the unpruned mean dashed."""
    if not points:
        return None
    plt = pyplot()
    panels = _panels(points)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4), squeeze=False)
    for ax, ((ds, dist, ipc), members) in zip(axes[0], sorted(panels.items())):
        for pruner in sorted({g["pruner"] for g in members}):
            line = sorted((g for g in members if g["pruner"] == pruner), key=x)
            ax.errorbar([x(g) for g in line], [100 * g["mean"] for g in line], xerr=[xerr(g) for g in line],
                        yerr=[100 * g["std"] for g in line], marker="o", capsize=3, label=pruner)
        for g in groups:
            if g["pruner"] == "none" and (g["dataset"], g["distiller"], g["ipc"]) == (ds, dist, ipc):
                ax.axhline(100 * g["mean"], color="gray", ls="--", label=f"unpruned ({100 * g['mean']:.1f}%)")
        ax.set_title(f"{ds} · {dist} · ipc {ipc}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%, mean ± std over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)
    plt.close(fig)
    return path


def plot_keep(groups: list[dict], path: Path) -> Optional[Path]:
    """Accuracy vs keep ratio per distiller (Moser et al. Figs. 6-8 style)."""
    return _line_plot([g for g in groups if g["pruner"] != "none" and not g["window"]], groups, path,
                      x=lambda g: g["keep"], xerr=lambda g: 0.0, xlabel="keep ratio (fraction of the training set kept)")


def plot_window(groups: list[dict], path: Path) -> Optional[Path]:
    """Window position vs accuracy for windowed pruners such as el2n-window (Sundar et al.)."""
    return _line_plot([g for g in groups if g["window"]], groups, path,
                      x=lambda g: 100 * (g["window"][0] + g["window"][1]) / 2,
                      xerr=lambda g: 100 * (g["window"][1] - g["window"][0]) / 2,
                      xlabel="score percentile window (centre ± half width)")


def plot_bars(groups: list[dict], path: Path) -> Optional[Path]:
    """Grouped bars per dataset/distiller/ipc: unpruned first, then every pruned setting."""
    panels = {k: v for k, v in _panels(groups).items() if len(v) > 1}
    if not panels:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(max(5.0, 1.1 * max(len(v) for v in panels.values()) + 2) * len(panels), 4.2),
                             squeeze=False)
    for ax, ((ds, dist, ipc), members) in zip(axes[0], sorted(panels.items())):
        labels = [_setting(g) for g in members]
        colors = ["0.6" if g["pruner"] == "none" else f"C{i % 10}" for i, g in enumerate(members)]
        xs = range(len(members))
        ax.bar(xs, [100 * g["mean"] for g in members], yerr=[100 * g["std"] for g in members], color=colors, capsize=3)
        for x, g in zip(xs, members):
            mark = "" if g["p_value"] is None else ("*" if g["p_value"] < 0.05 else "n.s.")
            ax.text(x, 100 * g["mean"] + 100 * g["std"] + 0.5, f"{100 * g['mean']:.1f}{(' ' + mark) if mark else ''}",
                    ha="center", fontsize=8)
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{ds} · {dist} · ipc {ipc}\n(* Welch p<0.05 vs unpruned)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)
    plt.close(fig)
    return path


ROBUST_HEAD = ["dataset", "distiller", "ipc", "setting", "mode", "other"]


def robust_section(root: Path, rows: list[dict], groups: list[dict], metrics, out: Path) -> list[str]:
    """Report lines of the robust scores per setting (``pd-run report --metrics``); writes ``robust.csv``."""
    from pd_plugins.experiments import robust_report

    cells: dict[tuple, list[str]] = {}
    for r in rows:
        cells.setdefault(_group_key(r), []).append(r["cell"])
    settings = [([g["dataset"], g["distiller"], str(g["ipc"]), _setting(g), g["mode"],
                  ",".join(f"{k}={v}" for k, v in g["other"].items()) or "-"], cells[_group_key(g)]) for g in groups]
    table = robust_report.robust_groups(root, settings, metrics)
    atomic_write_text(out / "robust.csv", to_csv(robust_report.csv_rows(table, metrics),
                                                 robust_report.csv_header(ROBUST_HEAD, metrics)))
    return ["## Robust scores (DD-Ranking)", "",
            "Mean ± std over each setting's cells of their robust scores (`pd-run eval RUN --metrics`; "
            "docs/evaluation.md): HLR and IOR in pp, LRS and ARS in % (neutral 26.89 %). Labels: the label mode "
            "of Acc_syn-any.", "", robust_report.markdown(table, metrics, ROBUST_HEAD), ""]


def write_report(sweep_dir, evaluation: Optional[dict] = None, metrics: Optional[Sequence[str]] = None) -> dict:
    """Write report.md, report.csv, cells.csv and the PNG plots into ``SWEEP_DIR/report`` (for a selected
    re-evaluation: ``SWEEP_DIR/report-<selector>``); with ``metrics`` (robust scores such as ``("hlr", "lrs")``)
    also a table of the cells' stored robust scores and ``robust.csv``."""
    root = Path(sweep_dir)
    rows = collect(root, evaluation)
    groups = aggregate(rows)
    measured = [g for g in groups if g["mean"] is not None]  # what the plots can draw
    name = "report" if evaluation is None else "report-" + re.sub(r"[^A-Za-z0-9.=-]+", "_", selector_label(evaluation))
    out = expect_output_dir(root / name, "report directory")
    out.mkdir(parents=True, exist_ok=True)
    plots = [p for p in (plot_keep(measured, out / "acc_vs_keep.png"), plot_window(measured, out / "el2n_window.png"),
                         plot_bars(measured, out / "pruned_vs_unpruned.png")) if p is not None]
    md = [f"# Sweep report: {root.name}", "",
          "Evaluation: " + (f"the re-evaluation {selector_label(evaluation)}" if evaluation else "each run's own eval.json")
          + ".", "",
          f"{sum(r['acc'] is not None for r in rows)} finished cells"
          + (f", {sum(r['acc'] is None for r in rows)} diverged" if any(r["acc"] is None for r in rows) else "")
          + f", {len(groups)} settings. Accuracy = mean ± std over the finished seeds (%, n of them); Δ and Welch's "
          "t-test against the unpruned setting of the same dataset/distiller/ipc. A diverged cell has no accuracy; "
          "its row says where it diverged, and its run directory keeps the last finite state (diverged.pt).", "",
          markdown(groups), ""] + (robust_section(root, rows, groups, metrics, out) if metrics else []) \
        + [f"![{p.stem}]({p.name})" for p in plots]
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    atomic_write_text(out / "report.csv", to_csv(
        [[g["dataset"], g["distiller"], g["ipc"], g["pruner"], g["keep"], json.dumps(g["window"]),
          json.dumps(g["other"]), g["n"], g["mean"], g["std"], g["delta"], g["p_value"], g["unseen_mean"],
          "; ".join(g["diverged"])] for g in groups],
        ["dataset", "distiller", "ipc", "pruner", "keep", "window", "other", "n", "mean", "std", "delta", "p_value",
         "unseen_mean", "diverged"]))
    atomic_write_text(out / "cells.csv", to_csv(
        [[r["cell"], r["dataset"], r["distiller"], r["ipc"], r["pruner"], r["keep"], json.dumps(r["window"]), r["seed"],
          r["acc"], r["unseen"], r["status"], r["outcome"]] for r in rows],
        ["cell", "dataset", "distiller", "ipc", "pruner", "keep", "window", "seed", "acc", "unseen_mean", "status",
         "outcome"]))
    return {"dir": str(out), "cells": sum(r["acc"] is not None for r in rows),
            "diverged": sum(r["acc"] is None for r in rows), "settings": len(groups), "plots": [str(p) for p in plots],
            "groups": groups}
