"""Run the reproduction plan and regenerate ``docs/reproduction.md`` from it.

    python docs/reproduction.py                      # run missing cells, then write the report
    python docs/reproduction.py --report-only        # only rewrite the report from finished cells
    python docs/reproduction.py --evaluations-only   # only re-evaluate finished cells (plan `evaluations`), then report
    python docs/reproduction.py --only moser_dm      # run one study (the report covers all)

The plan (``docs/reproduction.yaml``) names studies; each study is an ordinary ``pd-run sweep``
per dataset, run into ``RUNS/<study>/<dataset>/`` (resumable: finished cells are skipped). The
claims compare two arms of a study per dataset over seeds: mean ± std, Welch's t-test, and the
direction the paper claims. Plots and a JSONL of every cell's config go to ``docs/reproduction/``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

from pd_plugins.config import load_config_file  # noqa: E402
from pd_plugins.experiments.report import collect, other_axes, pyplot, save_figure  # noqa: E402
from pd_plugins.experiments.sweep import Sweep, load_summary, run_sweep  # noqa: E402
from pd_plugins.io import atomic_write_text, read_json  # noqa: E402


# ----------------------------------------------------------------------------------------
# plan -> sweeps

def load_plan(path: Path) -> dict:
    plan = load_config_file(str(path))
    for key in ("datasets", "studies", "claims"):
        if key not in plan:
            raise SystemExit(f"{path}: missing '{key}'")
    return plan


def study_sweeps(plan: dict, data_dir: Path, only=None) -> list[tuple[str, str, Sweep]]:
    """(study, dataset, Sweep) for every study and dataset of the plan, seeds added as the last axis."""
    out = []
    for study, spec in plan["studies"].items():
        if only and study not in only:
            continue
        seeds = spec.get("seeds", plan.get("seeds", [0]))
        grids = spec["grid"] if isinstance(spec["grid"], list) else [spec["grid"]]
        for ds in spec["datasets"]:
            dspec = dict(plan["datasets"][ds])
            if "file" in dspec:  # a file in --data; datasets without one (e.g. digits) need no root
                dspec["data_root"] = str(data_dir / dspec.pop("file"))
            fixed = {**plan.get("fixed", {}), **dspec, **spec.get("fixed", {}), "progress": False}
            for group in ("model_options", "distiller_options", "pruner_options", "dataset_options"):
                merged = {**(plan.get("fixed", {}).get(group) or {}), **(dspec.get(group) or {}),
                          **(spec.get("fixed", {}).get(group) or {})}
                if merged:
                    fixed[group] = merged
            sweep_grids = [{**g, "seed": seeds} for g in grids]
            out.append((study, ds, Sweep(name=f"{study}-{ds}", grid=sweep_grids, fixed=fixed)))
    return out


def run_plan(plan: dict, runs: Path, data_dir: Path, *, workers: int, threads: int, only=None) -> None:
    os.environ.setdefault("PD_CACHE_DIR", str(runs / ".pd-cache"))  # experts and scores shared across studies
    for study, ds, sweep in study_sweeps(plan, data_dir, only):
        if sweep.fixed.get("data_root") and not Path(sweep.fixed["data_root"]).exists():
            raise SystemExit(f"data file {sweep.fixed['data_root']} not found; pass --data DIR")
        t0 = time.perf_counter()
        summary = run_sweep(sweep, runs / study / ds, workers=workers, threads=threads, progress=sys.stderr.isatty())
        print(f"[{time.strftime('%H:%M:%S')}] {study}/{ds}: {summary['counts']} in {time.perf_counter() - t0:.0f} s",
              flush=True)
    ca = plan.get("cross_arch")
    if ca and (not only or ca["study"] in only):
        run_cross_arch(ca, runs)
    run_evaluations(plan, runs, only)


def run_cross_arch(ca: dict, runs: Path) -> None:
    from pd_plugins.experiments.crosseval import eval_run_dir

    root = runs / ca["study"] / ca["dataset"]
    if not (root / "sweep.json").exists():
        return
    for cell in load_summary(root)["cells"]:
        cdir = root / cell["dir"]
        if (cdir / "eval.json").exists():
            t0 = time.perf_counter()
            eval_run_dir(cdir, ca["models"], ca.get("repeats", 1))
            print(f"[{time.strftime('%H:%M:%S')}] cross-arch {cell['id']}: {time.perf_counter() - t0:.0f} s", flush=True)


def evaluation_selector(plan: dict, name) -> dict | None:
    """The selector of a plan's named re-evaluation (None: each run's own eval.json)."""
    if name is None:
        return None
    spec = plan.get("evaluations", {}).get(name)
    if spec is None:
        raise SystemExit(f"unknown evaluation {name!r}; the plan defines: {', '.join(plan.get('evaluations', {})) or 'none'}")
    return {"evaluator": spec.get("evaluator"), "options": spec.get("options") or {}}


def run_evaluations(plan: dict, runs: Path, only=None) -> None:
    """Re-evaluate every finished cell of the named studies (``pd-run eval RUN -E ...``); existing ones are kept."""
    from pd_plugins.errors import PdPluginsError
    from pd_plugins.experiments.reeval import evaluate_variant

    for name, spec in (plan.get("evaluations") or {}).items():
        for study in spec["studies"]:
            if only and study not in only:
                continue
            for ds in plan["studies"][study]["datasets"]:
                root = runs / study / ds
                if not (root / "sweep.json").exists():
                    continue
                t0, done, skipped = time.perf_counter(), 0, []
                for cell in load_summary(root)["cells"]:
                    try:
                        evaluate_variant(root / cell["dir"], evaluator=spec.get("evaluator"),
                                         options=spec.get("options") or {}, reuse=True)
                        done += 1
                    except PdPluginsError as exc:  # e.g. a diverged cell without distill.pt
                        skipped.append(f"{cell['id']}: {exc}")
                print(f"[{time.strftime('%H:%M:%S')}] evaluation {name} {study}/{ds}: {done} cells in "
                      f"{time.perf_counter() - t0:.0f} s" + (f"; skipped {skipped}" if skipped else ""), flush=True)


# ----------------------------------------------------------------------------------------
# claims

def _norm(v):
    if isinstance(v, (list, tuple)):
        return tuple(float(x) for x in v)
    return v


def matches(row: dict, spec: dict) -> bool:
    """Does a collected cell row have every ``key: value`` of ``spec``? ``null`` means the axis is absent."""
    for key, want in spec.items():
        have = row[key] if key in row and key != "other" else row["other"].get(key)
        if _norm(have) != _norm(want):
            return False
    return True


def load_rows(runs: Path, study: str, dataset: str, evaluation: dict | None = None) -> list[dict]:
    root = runs / study / dataset
    if not (root / "sweep.json").exists():
        return []
    rows = collect(root, evaluation, allow_empty=True)
    seconds = {c["id"]: c.get("seconds") for c in load_summary(root)["cells"]}
    for r in rows:
        r["dir"] = str((root / "cells" / r["cell"]).relative_to(runs))
        r["seconds"] = seconds.get(r["cell"])
    return rows


def row_of_cell(cell: dict) -> dict:
    """The fields `matches` reads, built from a sweep cell's config and axes (for cells without results)."""
    cfg = cell["config"]
    window = (cfg.get("pruner_options") or {}).get("window")
    return {"cell": cell["id"], "distiller": cfg["distiller"], "pruner": cfg.get("pruner", "none"),
            "seed": cfg.get("seed", 0), "window": tuple(float(w) for w in window) if window else None,
            "keep": cfg.get("keep"), "ipc": cfg.get("ipc"), "other": other_axes(cell["axes"])}


def failed_rows(runs: Path, study: str, dataset: str, sweep: Sweep) -> list[dict]:
    """Cells the sweep recorded as failed, with their one-line error."""
    root = runs / study / dataset
    if not (root / "sweep.json").exists():
        return []
    status = {c["id"]: c for c in load_summary(root)["cells"]}
    out = []
    for cell in sweep.cells():
        rec = status.get(cell["id"], {})
        if rec.get("status") == "failed":
            out.append({**row_of_cell(cell), "error": rec.get("error", ""),
                        "dir": str((root / "cells" / cell["id"]).relative_to(runs))})
    return out


def compare(base: list[float], var: list[float], expect) -> dict:
    """Mean/std per arm, Δ, Welch's p and the verdict against the expected direction."""
    from scipy import stats

    res = {"n": (len(base), len(var)), "base": base, "var": var}
    if not base or not var:
        return {**res, "verdict": "not run"}
    mb, mv = statistics.fmean(base), statistics.fmean(var)
    sb = statistics.stdev(base) if len(base) > 1 else 0.0
    sv = statistics.stdev(var) if len(var) > 1 else 0.0
    p = None
    if len(base) > 1 and len(var) > 1 and (sb > 0 or sv > 0):
        p = float(stats.ttest_ind(var, base, equal_var=False).pvalue)
    delta = mv - mb
    if isinstance(expect, dict) and "within" in expect:
        verdict = "holds" if abs(delta) <= float(expect["within"]) else "does not hold"
    elif delta > 0:
        verdict = "holds (p < 0.05)" if p is not None and p < 0.05 else "same direction, not significant"
    else:
        verdict = "reversed (p < 0.05)" if p is not None and p < 0.05 else "does not hold (opposite direction, n.s.)"
    return {**res, "base_mean": mb, "base_std": sb, "var_mean": mv, "var_std": sv, "delta": delta, "p": p,
            "verdict": verdict}


def evaluate_claims(plan: dict, runs: Path) -> list[dict]:
    sweeps = {(study, ds): sw for study, ds, sw in study_sweeps(plan, Path("."))}
    out = []
    for claim in plan["claims"]:
        spec = plan["studies"][claim["study"]]
        selector = evaluation_selector(plan, claim.get("evaluation"))
        for ds in spec["datasets"]:
            rows = load_rows(runs, claim["study"], ds, selector)
            failed = failed_rows(runs, claim["study"], ds, sweeps[(claim["study"], ds)])
            arms = {}
            for arm in ("baseline", "variant"):
                arms[arm] = (sorted((r for r in rows if matches(r, claim[arm])), key=lambda r: r["seed"]),
                             [r for r in failed if matches(r, claim[arm])])
            (base, base_f), (var, var_f) = arms["baseline"], arms["variant"]
            res = compare([r["acc"] for r in base], [r["acc"] for r in var], claim.get("expect", "higher"))
            if base_f or var_f:
                notes = [f"{arm} failed in {len(f)} run(s): {f[0]['error']}" for arm, f in
                         (("baseline", base_f), ("variant", var_f)) if f]
                res["verdict"] = ("; ".join(notes) if res.get("delta") is None
                                  else f"{res['verdict']} (over the finished runs; " + "; ".join(notes) + ")")
            out.append({"claim": claim, "dataset": ds, "base_rows": base, "var_rows": var,
                        "failed_rows": base_f + var_f, **res})
    return out


# ----------------------------------------------------------------------------------------
# plots (matplotlib, Agg)

def _label(spec: dict) -> str:
    parts = []
    for k, v in spec.items():
        k = k.split(".")[-1]
        parts.append(f"{k}={'-' if v is None else (v if not isinstance(v, list) else '[' + ','.join(f'{x:g}' for x in v) + ']')}")
    return ", ".join(parts)


def plot_claims(results: list[dict], path: Path) -> None:
    plt = pyplot()
    claims = list(dict.fromkeys(r["claim"]["id"] for r in results))
    cols = 3
    rows_n = (len(claims) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.2 * cols, 3.9 * rows_n), squeeze=False)
    for ax in axes.flat[len(claims):]:
        ax.axis("off")
    for ax, cid in zip(axes.flat, claims):
        items = [r for r in results if r["claim"]["id"] == cid]
        claim = items[0]["claim"]
        for j, (arm, key, color) in enumerate((("baseline", "base", "0.6"), ("variant", "var", "C0"))):
            xs = [i + (j - 0.5) * 0.38 for i in range(len(items))]
            means = [100 * statistics.fmean(r[key]) if r[key] else float("nan") for r in items]
            stds = [100 * statistics.stdev(r[key]) if len(r[key]) > 1 else 0.0 for r in items]
            ax.bar(xs, means, width=0.36, yerr=stds, color=color, capsize=3,
                   label=f"{arm}: {_label(claim[arm])}")
            for x, r in zip(xs, items):
                ax.scatter([x] * len(r[key]), [100 * a for a in r[key]], s=9, color="k", zorder=3)
        for i, r in enumerate(items):
            if r.get("delta") is not None:
                top = 100 * max(r["base"] + r["var"])
                ax.text(i, top + 1.0, f"Δ {100 * r['delta']:+.1f}" + (f"\np={r['p']:.2g}" if r.get("p") is not None else ""),
                        ha="center", fontsize=7)
        ax.set_xticks(range(len(items)))
        ax.set_xticklabels([r["dataset"] for r in items], fontsize=8)
        ax.set_title(f"{cid} ({claim['source']})", fontsize=9)
        ax.set_ylabel("test accuracy (%)")
        accs = [100 * a for r in items for a in r["base"] + r["var"]]
        if accs:
            ax.set_ylim(max(0.0, min(accs) - 8), min(100.0, max(accs) + 6))
        ax.legend(fontsize=6, loc="lower left")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def plot_deltas(results: list[dict], path: Path) -> None:
    """Δ (variant − baseline) with a 95% Welch interval per claim and dataset."""
    from scipy import stats

    plt = pyplot()
    items = [r for r in results if r.get("delta") is not None]
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(items) + 1.2))
    for i, r in enumerate(items):
        vb = statistics.variance(r["base"]) / len(r["base"]) if len(r["base"]) > 1 else 0.0
        vv = statistics.variance(r["var"]) / len(r["var"]) if len(r["var"]) > 1 else 0.0
        se = (vb + vv) ** 0.5
        dof = ((vb + vv) ** 2 / ((vb ** 2 / max(len(r["base"]) - 1, 1)) + (vv ** 2 / max(len(r["var"]) - 1, 1)))
               if vb + vv > 0 else 1.0)
        half = float(stats.t.ppf(0.975, dof)) * se
        ax.errorbar([100 * r["delta"]], [i], xerr=[[100 * half]], fmt="o", capsize=3,
                    color="C2" if r["delta"] > 0 else "C3")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(items)))
    ax.set_yticklabels([f"{r['claim']['id']} · {r['dataset']}" for r in items], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("Δ accuracy, variant − baseline (pp), 95% Welch interval over seeds")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def cross_arch_table(plan: dict, runs: Path) -> tuple[list[dict], list[str]]:
    """Per (setting, model): mean ± std over the seeds' runs of the cross-architecture evaluation."""
    ca = plan.get("cross_arch")
    if not ca:
        return [], []
    rows = load_rows(runs, ca["study"], ca["dataset"])
    table: dict[str, dict[str, list[float]]] = {}
    dirs: dict[str, list[str]] = {}
    for r in rows:
        ev = read_json(runs / r["dir"] / "eval.json", "eval")
        cross = ev.get("cross_arch")
        if not cross:
            continue
        setting = "unpruned" if r["pruner"] == "none" else f"{r['pruner']} keep={r['keep']:g}"
        for model in ca["models"]:
            if model in cross["models"]:
                table.setdefault(setting, {}).setdefault(model, []).extend(cross["models"][model]["accs"])
        dirs.setdefault(setting, []).append(r["dir"])
    out = [{"setting": s, "models": m, "dirs": dirs[s]} for s, m in table.items()]
    return out, list(ca["models"])


def plot_cross_arch(table: list[dict], models: list[str], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    width = 0.8 / max(len(table), 1)
    for j, row in enumerate(table):
        xs = [i + (j - (len(table) - 1) / 2) * width for i in range(len(models))]
        vals = row["models"]
        ax.bar(xs, [100 * statistics.fmean(vals[m]) if vals.get(m) else float("nan") for m in models], width=width * 0.95,
               yerr=[100 * statistics.stdev(vals[m]) if len(vals.get(m, [])) > 1 else 0.0 for m in models], capsize=3,
               label=row["setting"], color="0.6" if row["setting"] == "unpruned" else f"C{j}")
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels(models)
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------
# the report

def _pm(xs: list[float]) -> str:
    if not xs:
        return "–"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{100 * statistics.fmean(xs):.2f} ± {100 * sd:.2f}"


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:
        return "unknown"


def _delta(r: dict) -> str:
    return f"{100 * r['delta']:+.2f}" if r.get("delta") is not None else "–"


def reevaluation_section(plan: dict, results: list[dict]) -> list[str]:
    """Claims re-checked under a re-evaluation (``evaluation`` + ``of`` in the plan), beside the original."""
    pairs = [(r, o) for r in results if r["claim"].get("of") for o in results
             if o["claim"]["id"] == r["claim"]["of"] and o["dataset"] == r["dataset"]]
    if not pairs:
        return []
    L = ["## Re-evaluations", "",
         "The same distilled sets evaluated again with other evaluator settings (`pd-run eval RUN -E KEY=VALUE`; "
         "stored beside each run's own `eval.json` in `evals/<evaluator>-<hash>.json`, its networks seeded as in the "
         "run's own evaluation). Plan evaluations: "
         + "; ".join(f"`{k}` = {json.dumps(v, sort_keys=True)}" for k, v in plan.get("evaluations", {}).items()) + ".", "",
         "| claim | dataset | evaluation | Δ, run's own evaluation (pp) | verdict | Δ, re-evaluated (pp) | verdict |",
         "|---|---|---|---|---|---|---|"]
    for r, o in pairs:
        L.append(f"| {o['claim']['id']} | {r['dataset']} | {r['claim']['evaluation']} | {_delta(o)} | {o['verdict']} | "
                 f"{_delta(r)} | {r['verdict']} |")
    return L + [""]


def write_report(plan: dict, runs: Path, out_md: Path, asset_dir: Path) -> dict:
    asset_dir.mkdir(parents=True, exist_ok=True)
    rel = asset_dir.name  # image links are relative to the report
    results = evaluate_claims(plan, runs)
    plot_claims(results, asset_dir / "claims.png")
    plot_deltas(results, asset_dir / "deltas.png")
    ca_rows, ca_models = cross_arch_table(plan, runs)
    if ca_rows:
        plot_cross_arch(ca_rows, ca_models, asset_dir / "cross_arch.png")

    # every cell of every study: its config, for the appendix and runs.jsonl
    cells, seconds = [], 0.0
    for study, ds, _ in study_sweeps(plan, Path("."), None):
        for r in load_rows(runs, study, ds):
            cfg = read_json(runs / r["dir"] / "config.json", "config")
            cells.append({"dir": r["dir"], "study": study, "dataset": ds, "seed": r["seed"], "acc": r["acc"],
                          "seconds": r["seconds"], "config": cfg})
            seconds += r["seconds"] or 0.0
    atomic_write_text(asset_dir / "runs.jsonl", "".join(json.dumps(c, sort_keys=True, default=str) + "\n" for c in cells))

    import torch

    L = ["# Reproduction report", "",
         f"Generated by `python docs/reproduction.py` from `docs/reproduction.yaml` (commit `{_git_commit()}`, "
         f"{time.strftime('%Y-%m-%d')}), on {platform.machine()} CPU with {os.cpu_count()} cores, torch "
         f"{torch.__version__}. {len(cells)} finished runs, {seconds / 3600:.2f} CPU-worker hours of cell time "
         "(two cells at a time, one torch thread each).", "",
         plan.get("preface", "").strip(), "",
         "## Studies (from the plan file)", "",
         f"Shared by every cell: `{json.dumps(plan.get('fixed', {}), sort_keys=True)}`.", "",
         "| study | datasets | seeds | fixed | grid |", "|---|---|---|---|---|"]
    for study, spec in plan["studies"].items():
        L.append(f"| {study} | {', '.join(spec['datasets'])} | {spec.get('seeds', plan.get('seeds'))} | "
                 f"`{json.dumps(spec.get('fixed', {}), sort_keys=True)}` | `{json.dumps(spec['grid'])}` |")
    L += ["",
         "## Claims", "",
         "| claim | source | dataset | baseline (%) | variant (%) | Δ (pp) | Welch p | verdict |",
         "|---|---|---|---|---|---|---|---|"]
    for r in results:
        c = r["claim"]
        L.append(f"| {c['id']} | {c['source']} | {r['dataset']} | {_pm(r['base'])} | {_pm(r['var'])} | "
                 + (f"{100 * r['delta']:+.2f}" if r.get("delta") is not None else "–") + " | "
                 + (f"{r['p']:.3g}" if r.get("p") is not None else "–") + f" | {r['verdict']} |")
    L += ["", f"![claims]({rel}/claims.png)", "", f"![deltas]({rel}/deltas.png)", ""]

    L += ["## Where the claims hold and where they do not", ""]
    for cid in dict.fromkeys(r["claim"]["id"] for r in results):
        items = [r for r in results if r["claim"]["id"] == cid]
        c = items[0]["claim"]
        ran = [r for r in items if r.get("delta") is not None]
        good = [r["dataset"] for r in ran if r["verdict"].startswith("holds") or r["verdict"].startswith("same")]
        sig = [r["dataset"] for r in ran if r["verdict"] == "holds (p < 0.05)"]
        bad = [f"{r['dataset']} (Δ {100 * r['delta']:+.2f} pp)" for r in ran
               if not (r["verdict"].startswith("holds") or r["verdict"].startswith("same"))]
        broken = [f"{r['dataset']} ({r['verdict']})" for r in items if r.get("delta") is None and r["failed_rows"]]
        line = f"- **{cid}** — {c['title']}: "
        if not ran:
            line += "not run." if not broken else ""
        else:
            within = isinstance(c.get("expect"), dict)
            line += (f"{'within the tolerance' if within else 'in the claimed direction'} on {len(good)} of {len(ran)} datasets"
                     + (f" ({', '.join(good)})" if good else "")
                     + (f", significant on {', '.join(sig)}" if sig else "")
                     + (f"; **does not hold** on {', '.join(bad)}" if bad else "") + ".")
        if broken:
            line += " Not comparable on " + "; ".join(broken) + "."
        L.append(line)
    L.append("")
    L += reevaluation_section(plan, results)

    if ca_rows:
        ca = plan["cross_arch"]
        L += ["## Cross-architecture", "",
              f"Study `{ca['study']}` on {ca['dataset']}: each seed's distilled set (distilled with ConvNet-3 width 32) "
              f"trains fresh networks of every architecture (networks per run and model: "
              f"`{json.dumps(ca.get('repeats', 1))}`; `pd-run eval RUN --models {','.join(ca['models'])}`); "
              "mean ± std over all those networks of the 3 seeds.", "",
              "| setting | " + " | ".join(ca_models) + " | unseen-architecture mean |",
              "|---|" + "---|" * (len(ca_models) + 1)]
        for row in ca_rows:
            unseen = [statistics.fmean(row["models"][m]) for m in ca_models[1:] if row["models"].get(m)]
            L.append(f"| {row['setting']} | " + " | ".join(_pm(row["models"].get(m, [])) for m in ca_models)
                     + (f" | {100 * statistics.fmean(unseen):.2f} |" if unseen else " | – |"))
        L += ["", f"![cross-architecture]({rel}/cross_arch.png)", ""]

    if plan.get("discussion"):
        L += [plan["discussion"].strip(), ""]
    L += ["## Every number's runs", "",
          f"Run directories are relative to the runs root (`--runs`, default `runs/reproduction`); each holds "
          "`config.json` (fully resolved, budget-scaled values under `resolved`), `manifest.json`, `prune.pt`, "
          f"`distill.pt`, `eval.json`, `synthetic.png` and `log.jsonl`. `{rel}/runs.jsonl` keeps every "
          "run's full config beside its accuracy and wall time, so the table survives without the run directories.", "",
          "| claim | dataset | arm | seed | accuracy (%) | cell seconds | run directory |", "|---|---|---|---|---|---|---|"]
    for r in results:
        for arm, key in (("baseline", "base_rows"), ("variant", "var_rows")):
            for row in r[key]:
                L.append(f"| {r['claim']['id']} | {r['dataset']} | {arm} | {row['seed']} | {100 * row['acc']:.2f} | "
                         f"{row['seconds'] if row['seconds'] is not None else '–'} | `{row['dir']}` |")
        for row in r["failed_rows"]:
            arm = "baseline" if matches(row, r["claim"]["baseline"]) else "variant"
            L.append(f"| {r['claim']['id']} | {r['dataset']} | {arm} | {row['seed']} | failed | – | `{row['dir']}` |")
    if ca_rows:
        for row in ca_rows:
            L.append(f"| cross_arch | {plan['cross_arch']['dataset']} | {row['setting']} | – | – | – | "
                     + ", ".join(f"`{d}`" for d in row["dirs"]) + " |")
    L.append("")
    atomic_write_text(out_md, "\n".join(L))
    return {"claims": results, "cells": len(cells)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plan", default=str(DOCS / "reproduction.yaml"))
    ap.add_argument("--runs", default=str(ROOT / "runs" / "reproduction"), help="where the run directories go")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder with the .npz files")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per cell")
    ap.add_argument("--only", nargs="*", help="run only these studies (the report still covers all)")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--evaluations-only", action="store_true",
                    help="run no sweep: only the plan's re-evaluations of finished cells (with --only: of these studies)")
    ap.add_argument("--out", default=str(DOCS / "reproduction.md"))
    args = ap.parse_args(argv)
    plan = load_plan(Path(args.plan))
    runs = Path(args.runs)
    if args.evaluations_only:
        import torch

        torch.set_num_threads(args.threads)
        run_evaluations(plan, runs, args.only)
    elif not args.report_only:
        run_plan(plan, runs, Path(args.data), workers=args.workers, threads=args.threads, only=args.only)
    out = Path(args.out)
    rep = write_report(plan, runs, out, out.parent / out.stem)  # plots and runs.jsonl beside the report
    print(f"wrote {args.out} ({rep['cells']} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
