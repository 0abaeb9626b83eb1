"""Run the reproduction plan and regenerate ``docs/reproduction.md`` from it.

    python docs/reproduction.py                      # run missing cells, then write the report
    python docs/reproduction.py --report-only        # only rewrite the report (from runs.jsonl and any run dirs)
    python docs/reproduction.py --evaluations-only   # only re-evaluate finished cells (plan `evaluations`), then report
    python docs/reproduction.py --only moser_dm      # run one study (the report covers all)

The plan (``docs/reproduction.yaml``) names studies; each study is an ordinary ``pd-run sweep``
per dataset, run into ``RUNS/<study>/<dataset>/`` (resumable: finished cells are skipped), which
records the commit, date and machine of every session that ran it in ``provenance.json``. The
claims compare two arms of a study per dataset over seeds: mean ± std, Welch's t-test, and the
direction the paper claims.

``docs/reproduction/runs.jsonl`` is the report's data: one record per cell (its config, accuracy,
learned lr, the plan's re-evaluations, cross-architecture accuracies, and the commit and date it
was measured at). Writing the report merges it with the run directories under ``--runs``: a
study/dataset whose sweep there is complete, or holds every carried cell of it, replaces its records;
every other record is carried over as it is, so the report regenerates without the old run directories and names the commit
each study was measured at. Plots go to ``docs/reproduction/`` too.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parent
PROVENANCE = "provenance.json"  # in each RUNS/<study>/<dataset>/: the sessions that ran it
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

from pd_plugins.config import load_config_file  # noqa: E402
from pd_plugins.experiments.report import other_axes, pyplot, save_figure  # noqa: E402
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


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def this_session(what: str) -> dict:
    """The commit (short hash; ``dirty`` when tracked files differ from it), time and machine of this process."""
    import torch

    try:
        commit = _git("rev-parse", "--short", "HEAD")
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", False
    now = time.time()
    return {"what": what, "commit": commit, "dirty": dirty, "started": now,
            "date": time.strftime("%Y-%m-%d", time.gmtime(now)),
            "machine": f"{platform.machine()} CPU with {os.cpu_count()} cores, torch {torch.__version__}"}


def record_session(root: Path, what: str) -> None:
    """Append this session to ``root/provenance.json`` (a study/dataset's run directory)."""
    path = root / PROVENANCE
    sessions = read_json(path, "provenance") if path.exists() else []
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(sessions + [this_session(what)], indent=1) + "\n")


def session_at(root: Path, when: float) -> dict:
    """The session of ``root/provenance.json`` that wrote a file at time ``when`` (the last one started before)."""
    path = root / PROVENANCE
    if not path.exists():
        raise SystemExit(f"{path} is missing: it names the commit {root}'s cells were measured at; write "
                         '[{"commit": "<short hash>", "started": <unix time>, "date": "YYYY-MM-DD", "machine": "..."}]')
    sessions = sorted(read_json(path, "provenance"), key=lambda s: s["started"])
    before = [s for s in sessions if s["started"] <= when]
    if not before:
        raise SystemExit(f"{path}: no session started before {time.ctime(when)}")
    return before[-1]


def run_plan(plan: dict, runs: Path, data_dir: Path, *, workers: int, threads: int, only=None) -> None:
    os.environ.setdefault("PD_CACHE_DIR", str(runs / ".pd-cache"))  # experts and scores shared across studies
    for study, ds, sweep in study_sweeps(plan, data_dir, only):
        if sweep.fixed.get("data_root") and not Path(sweep.fixed["data_root"]).exists():
            raise SystemExit(f"data file {sweep.fixed['data_root']} not found; pass --data DIR")
        t0 = time.perf_counter()
        record_session(runs / study / ds, "sweep")
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
    record_session(root, "cross_arch")
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
                record_session(root, f"evaluation {name}")
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
# records: runs.jsonl, merged with the run directories

def _own_result(ev: dict) -> dict:
    res = ev["results"][0]
    opts = res.get("options") or {}
    return {"acc": float(res["mean"]), "lr": opts.get("lr_used"), "lr_source": opts.get("lr_source")}


def cell_records(plan: dict, runs: Path, study: str, dataset: str, sweep: Sweep) -> list[dict]:
    """One record per cell of ``sweep`` that ``RUNS/<study>/<dataset>`` finished or recorded as failed or diverged
    (a diverged record keeps what diverged, ``outcome`` and ``divergence``, and where its last finite state is)."""
    from pd_plugins.experiments.reeval import read_evaluation, variant_path

    root = runs / study / dataset
    status = {c["id"]: c for c in load_summary(root)["cells"]}
    evaluations = {name: evaluation_selector(plan, name) for name, spec in (plan.get("evaluations") or {}).items()
                   if study in spec["studies"]}
    out = []
    for cell in sweep.cells():
        rec, cdir = status.get(cell["id"], {}), root / "cells" / cell["id"]
        base = {"kind": "cell", "study": study, "dataset": dataset, "cell": cell["id"], "axes": cell["axes"],
                "seed": cell["config"].get("seed", 0), "dir": str(cdir.relative_to(runs)),
                "seconds": rec.get("seconds")}
        if (cdir / "eval.json").exists():
            ev = read_json(cdir / "eval.json", "eval")
            when = session_at(root, (cdir / "eval.json").stat().st_mtime)
            item = {**base, "status": "done", **_own_result(ev), "config": read_json(cdir / "config.json", "config"),
                    "commit": when["commit"], "dirty": when.get("dirty", False), "date": when["date"],
                    "machine": when.get("machine")}
            selection = selection_facts(cdir)
            if selection:
                item["selection"] = selection
            cross = (ev.get("cross_arch") or {}).get("models")
            if cross:
                item["cross_arch"] = {m: v["accs"] for m, v in cross.items()}
            item["evaluations"] = {}
            for name, selector in evaluations.items():
                var = read_evaluation(cdir, selector)
                if var is not None:
                    s = session_at(root, variant_path(cdir, var["evaluator"], var["fingerprint"]).stat().st_mtime)
                    item["evaluations"][name] = {"selector": selector, **_own_result(var),
                                                 "evaluator": var["evaluator"], "fingerprint": var["fingerprint"][:12],
                                                 "commit": s["commit"], "date": s["date"]}
            out.append(item)
        elif rec.get("status") in ("failed", "diverged"):
            when = session_at(root, (root / "sweep.json").stat().st_mtime)
            diverged = {k: rec[k] for k in ("outcome", "divergence", "kept") if k in rec}
            out.append({**base, "status": rec["status"], "acc": None, "error": rec.get("error", ""), **diverged,
                        "config": cell["config"], "commit": when["commit"], "dirty": when.get("dirty", False),
                        "date": when["date"], "machine": when.get("machine")})
    return out


def selection_facts(cdir: Path) -> dict | None:
    """What the cell's pruner kept (from ``prune_report.json``): the pool size, per-class counts and the KL
    divergence of its class distribution from the full training set's."""
    path = cdir / "prune_report.json"
    if not path.exists():
        return None
    rep = read_json(path, "prune report")
    return {k: rep.get(k) for k in ("kept", "of", "per_class_kept", "kl_to_full")}


def load_records(path: Path) -> list[dict]:
    """The records of ``runs.jsonl`` (none when it does not exist); each must name its commit and date."""
    if not path.exists():
        return []
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        rec = json.loads(line)
        missing = [k for k in ("kind", "study", "dataset", "commit", "date") if k not in rec]
        if missing:
            raise SystemExit(f"{path}:{i}: record without {', '.join(missing)}")
        out.append(rec)
    return out


def merge_records(plan: dict, carried: list[dict], runs: Path) -> tuple[list[dict], list[str]]:
    """``carried`` with every study/dataset the run directories hold in full replaced by their records.

    A study/dataset whose sweep under ``runs`` is incomplete replaces its carried records only when it holds
    every carried cell (it has grown past them); otherwise the carried set stays whole. Records of studies no
    longer in the plan are dropped. Returns the records and what was replaced.
    """
    fresh, replaced = {}, []
    for study, ds, sweep in study_sweeps(plan, Path("."), None):
        if not (runs / study / ds / "sweep.json").exists():
            continue
        recs = cell_records(plan, runs, study, ds, sweep)
        complete = len(recs) == len(sweep.cells())
        carried_cells = {r.get("cell") for r in carried if r["study"] == study and r["dataset"] == ds}
        if complete or carried_cells <= {r.get("cell") for r in recs}:
            fresh[(study, ds)] = recs
            replaced.append(f"{study}/{ds}")
        else:
            print(f"{study}/{ds}: {len(recs)} of {len(sweep.cells())} cells finished under {runs}; "
                  "keeping the carried-over records, which name cells it lacks", file=sys.stderr)
    order = [(study, ds) for study, spec in plan["studies"].items() for ds in spec["datasets"]]
    out = []
    for key in order:
        out += fresh.get(key) or [r for r in carried if (r["study"], r["dataset"]) == key]
    return out, replaced


def claim_row(rec: dict) -> dict:
    """The fields `matches` and the report read, from a cell record."""
    return {**row_of_cell({"id": rec["cell"], "config": rec["config"], "axes": rec["axes"]}),
            "acc": rec["acc"], "dir": rec["dir"], "seconds": rec.get("seconds"), "lr": rec.get("lr"),
            "error": rec.get("error", ""), "status": rec["status"], "outcome": outcome_of(rec)}


# the DivergenceError message before it named the quantity's reason (records measured before issue 25)
OLD_DIVERGENCE = re.compile(r"(\w+) became non-finite \(or non-positive\) at iteration (\d+)")


def outcome_of(rec: dict) -> str:
    """A cell record's outcome in a few words: ``done``, ``diverged at it 11 (syn_lr <= 0)``, or ``failed``.
    Failed records measured before diverged cells had their own status are recognised by their message."""
    if rec["status"] == "done":
        return "done"
    if rec.get("outcome"):
        return rec["outcome"]
    old = OLD_DIVERGENCE.search(rec.get("error") or "")
    if old:
        return f"diverged at it {old.group(2)} ({old.group(1)} non-finite or <= 0)"
    return rec["status"]


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


def row_of_cell(cell: dict) -> dict:
    """The fields `matches` reads, built from a sweep cell's config and axes."""
    cfg = cell["config"]
    window = (cfg.get("pruner_options") or {}).get("window")
    return {"cell": cell["id"], "distiller": cfg["distiller"], "pruner": cfg.get("pruner", "none"),
            "seed": cfg.get("seed", 0), "window": tuple(float(w) for w in window) if window else None,
            "keep": cfg.get("keep"), "ipc": cfg.get("ipc"), "other": other_axes(cell["axes"])}


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
    elif isinstance(expect, dict) and "margin" in expect:  # variant beats baseline by at least the margin
        short = f"misses the {100 * float(expect['margin']):g} pp margin"
        verdict = (("holds (p < 0.05)" if p is not None and p < 0.05 else "holds, not significant")
                   if delta >= float(expect["margin"]) else short + (" (reversed)" if delta < 0 else ""))
    elif delta > 0:
        verdict = "holds (p < 0.05)" if p is not None and p < 0.05 else "same direction, not significant"
    else:
        verdict = "reversed (p < 0.05)" if p is not None and p < 0.05 else "does not hold (opposite direction, n.s.)"
    return {**res, "base_mean": mb, "base_std": sb, "var_mean": mv, "var_std": sv, "delta": delta, "p": p,
            "verdict": verdict}


def _arm_rows(recs: list[dict], evaluation: str | None, selector: dict | None) -> tuple[list[dict], list[dict]]:
    """(finished rows, failed or diverged rows) of the cell records; under a re-evaluation a row takes its
    accuracy and lr."""
    done, failed = [], []
    for rec in recs:
        if rec["status"] in ("failed", "diverged"):
            failed.append(claim_row(rec))
            continue
        row = claim_row(rec)
        if evaluation is not None:
            var = (rec.get("evaluations") or {}).get(evaluation)
            if var is None or var["selector"] != selector:
                continue  # not re-evaluated (with these settings): missing, like an unfinished cell
            row.update(acc=var["acc"], lr=var.get("lr"))
        done.append(row)
    return done, failed


def unfinished_note(arm: str, rows: list[dict]) -> str:
    """An arm's runs without accuracy: diverged ones by seed and where they diverged, failed ones by the first error."""
    diverged = [r for r in rows if r["outcome"].startswith("diverged")]
    failed = [r for r in rows if not r["outcome"].startswith("diverged")]
    notes = []
    if diverged:
        notes.append(f"{arm} diverged in {len(diverged)} run(s): "
                     + ", ".join(f"seed {r['seed']} {r['outcome']}" for r in sorted(diverged, key=lambda r: r["seed"])))
    if failed:
        notes.append(f"{arm} failed in {len(failed)} run(s): {failed[0]['error']}")
    return "; ".join(notes)


def claim_study(claim: dict, arm: str) -> str:
    """The study whose cells an arm of a claim compares: ``baseline_study`` for the baseline where the
    claim sets it (an arm another study already measures, e.g. random and herding beside full-scale MTT)."""
    return claim.get("baseline_study", claim["study"]) if arm == "baseline" else claim["study"]


def evaluate_claims(plan: dict, records: list[dict]) -> list[dict]:
    out = []
    for claim in plan["claims"]:
        spec = plan["studies"][claim["study"]]
        name = claim.get("evaluation")
        selector = evaluation_selector(plan, name)
        studies = {arm: claim_study(claim, arm) for arm in ("baseline", "variant")}
        for ds in spec["datasets"]:
            recs = [r for r in records if r["kind"] == "cell" and r["study"] in studies.values() and r["dataset"] == ds]
            arms = {}
            for arm, study in studies.items():
                rows, failed = _arm_rows([r for r in recs if r["study"] == study], name, selector)
                arms[arm] = (sorted((r for r in rows if matches(r, claim[arm])), key=lambda r: r["seed"]),
                             [{**r, "arm": arm} for r in failed if matches(r, claim[arm])])
            (base, base_f), (var, var_f) = arms["baseline"], arms["variant"]
            res = compare([r["acc"] for r in base], [r["acc"] for r in var], claim.get("expect", "higher"))
            if base_f or var_f:
                notes = [unfinished_note(arm, f) for arm, f in (("baseline", base_f), ("variant", var_f)) if f]
                res["verdict"] = ("; ".join(notes) if res.get("delta") is None
                                  else f"{res['verdict']} (over the finished runs; " + "; ".join(notes) + ")")
            measured = sorted({(r["commit"], r["date"]) for r in recs})
            out.append({"claim": claim, "dataset": ds, "base_rows": base, "var_rows": var,
                        "failed_rows": base_f + var_f, "measured": measured, **res})
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


def _stats(xs: list[float]) -> dict:
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def cross_arch_table(plan: dict, records: list[dict]) -> tuple[list[dict], list[str]]:
    """Per (setting, model): mean, std and count over every network of the seeds' cross-architecture evaluations.

    Cell records carry the networks' accuracies; a carried-over ``cross_arch`` record carries the summary
    of a table whose cells' accuracies were not kept.
    """
    ca = plan.get("cross_arch")
    if not ca:
        return [], []
    recs = [r for r in records if r["study"] == ca["study"] and r["dataset"] == ca["dataset"]]
    accs: dict[str, dict[str, list[float]]] = {}
    dirs: dict[str, list[str]] = {}
    measured: dict[str, set] = {}
    for r in recs:
        if r["kind"] != "cell" or not r.get("cross_arch"):
            continue
        row = claim_row(r)
        setting = "unpruned" if row["pruner"] == "none" else f"{row['pruner']} keep={row['keep']:g}"
        for model in ca["models"]:
            if model in r["cross_arch"]:
                accs.setdefault(setting, {}).setdefault(model, []).extend(r["cross_arch"][model])
        dirs.setdefault(setting, []).append(r["dir"])
        measured.setdefault(setting, set()).add((r["commit"], r["date"]))
    out = [{"setting": s, "models": {m: _stats(v) for m, v in per.items()}, "dirs": dirs[s],
            "measured": sorted(measured[s])} for s, per in accs.items()]
    for r in recs:
        if r["kind"] == "cross_arch" and r["setting"] not in accs:
            out.append({"setting": r["setting"], "models": r["models"], "dirs": r.get("dirs", []),
                        "measured": [(r["commit"], r["date"])], "summary": True, "unseen_mean": r.get("unseen_mean")})
    return out, list(ca["models"])


def plot_cross_arch(table: list[dict], models: list[str], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    width = 0.8 / max(len(table), 1)
    for j, row in enumerate(table):
        xs = [i + (j - (len(table) - 1) / 2) * width for i in range(len(models))]
        vals = row["models"]
        ax.bar(xs, [100 * vals[m]["mean"] if m in vals else float("nan") for m in models], width=width * 0.95,
               yerr=[100 * vals[m]["std"] if m in vals else 0.0 for m in models], capsize=3,
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


def _pm_stats(s: dict | None) -> str:
    return "–" if not s else f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"


def _delta(r: dict) -> str:
    return f"{100 * r['delta']:+.2f}" if r.get("delta") is not None else "–"


def _p(r: dict) -> str:
    return f"{r['p']:.3g}" if r.get("p") is not None else "–"


def _commits(measured) -> str:
    return ", ".join(f"`{c}` ({d})" for c, d in measured) or "–"


def _lr(rows: list[dict]) -> str:
    lrs = [r["lr"] for r in rows if r.get("lr") is not None]
    if not lrs:
        return "–"
    lo, hi = min(lrs), max(lrs)
    return f"{lo:.2g}" if abs(hi - lo) <= 1e-9 else f"{lo:.2g}–{hi:.2g}"


def provenance_section(plan: dict, records: list[dict]) -> list[str]:
    """Which commit, date and machine measured each study (and each re-evaluation), from the records."""
    groups: dict[tuple, dict] = {}
    for r in records:
        key = (r["study"], r["commit"] + (" + uncommitted changes" if r.get("dirty") else ""), r["date"],
               r.get("machine") or "–")
        g = groups.setdefault(key, {"datasets": [], "cells": 0})
        if r["dataset"] not in g["datasets"]:
            g["datasets"].append(r["dataset"])
        g["cells"] += r["kind"] == "cell"
    L = ["## Provenance", "",
         "Every study below was measured at the commit and on the date named here (`runs.jsonl` keeps them per "
         "cell); studies not re-run since are carried over from the records of the commit that measured them.", "",
         "| study | datasets | measured at commit | date | machine | cells |", "|---|---|---|---|---|---|"]
    for (study, commit, date, machine), g in groups.items():
        L.append(f"| {study} | {', '.join(g['datasets'])} | `{commit}` | {date} | {machine} | {g['cells']} |")
    evals: dict[tuple, int] = {}
    for r in records:
        for name, var in (r.get("evaluations") or {}).items():
            key = (name, r["study"], var["commit"], var["date"])
            evals[key] = evals.get(key, 0) + 1
    if evals:
        L += ["", "| re-evaluation | study | evaluated at commit | date | cells |", "|---|---|---|---|---|"]
        for (name, study, commit, date), n in evals.items():
            L.append(f"| {name} | {study} | `{commit}` | {date} | {n} |")
    if plan.get("provenance_note"):
        L += ["", plan["provenance_note"].strip()]
    return L + [""]


def _holds(r: dict) -> bool:
    return r["verdict"].startswith("holds") or r["verdict"].startswith("same")


def where_line(items: list[dict]) -> str:
    """One claim's datasets: where it holds in direction, where significantly, where not."""
    c = items[0]["claim"]
    ran = [r for r in items if r.get("delta") is not None]
    good = [r["dataset"] for r in ran if _holds(r)]
    sig = [r["dataset"] for r in ran if r["verdict"] == "holds (p < 0.05)"]
    bad = [f"{r['dataset']} (Δ {100 * r['delta']:+.2f} pp" + (", p < 0.05" if r["verdict"].startswith("reversed")
                                                             else "") + ")" for r in ran if not _holds(r)]
    broken = [f"{r['dataset']} ({r['verdict']})" for r in items if r.get("delta") is None and r["failed_rows"]]
    line = ""
    if not ran:
        line += "not run." if not broken else ""
    else:
        expect = c.get("expect")
        how = ("in the claimed direction" if not isinstance(expect, dict) else "within the tolerance"
               if "within" in expect else f"by at least {100 * float(expect['margin']):g} pp")
        line += (f"{how} on {len(good)} of {len(ran)} "
                 "datasets"
                 + (f" ({', '.join(good)})" if good else "")
                 + (f", significant on {', '.join(sig)}" if sig else "")
                 + (f"; **does not hold** on {', '.join(bad)}" if bad else "") + ".")
    if broken:
        line += " Not comparable on " + "; ".join(broken) + "."
    return line


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
         + "; ".join(f"`{k}` = {json.dumps(v, sort_keys=True)}" for k, v in plan.get("evaluations", {}).items()) + ".",
         "The lr columns give the evaluation lr of each arm's runs (range over seeds): the lr MTT learned in its own "
         "evaluation, the one the re-evaluation used in the other.", "",
         "| claim | dataset | evaluation | lr, own (baseline / variant) | Δ own (pp) | p | verdict | "
         "lr, re-evaluated | Δ re-evaluated (pp) | p | verdict | verdict changed |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r, o in pairs:
        changed = "–" if r.get("delta") is None or o.get("delta") is None else (
            "no" if (_holds(r), r["verdict"].split(" (")[0]) == (_holds(o), o["verdict"].split(" (")[0]) else
            f"**yes** ({o['verdict'].split(' (')[0]} → {r['verdict'].split(' (')[0]})")
        L.append(f"| {o['claim']['id']} | {r['dataset']} | {r['claim']['evaluation']} | "
                 f"{_lr(o['base_rows'])} / {_lr(o['var_rows'])} | {_delta(o)} | {_p(o)} | {o['verdict']} | "
                 f"{_lr(r['base_rows'] + r['var_rows'])} | {_delta(r)} | {_p(r)} | {r['verdict']} | {changed} |")
    return L + [""]


def arm_label(axes: dict) -> str:
    """A cell's arm: its grid axes without the seed, e.g. ``pruner=loss-easy keep=0.2``."""
    return " ".join(f"{k}={v}" for k, v in axes.items() if k != "seed") or "(fixed)"


def _arm_file(arm: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", arm)


def copy_arm_images(arm: str, cells: list[dict], runs: Path, dest: Path) -> dict[str, str]:
    """Copy an arm's image grids (the lowest finished seed's synthetic set and its pool examples) into
    ``dest`` and return ``{kind: file name}``; a grid copied earlier is kept when its run folder is gone."""
    out = {}
    first = min(cells, key=lambda r: r["seed"])
    for kind, name in (("synthetic", "synthetic.png"), ("pool", "prune_examples.png")):
        target = dest / f"{_arm_file(arm)}-{kind}.png"
        src = runs / first["dir"] / name
        if src.exists():
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
        if target.exists():
            out[kind] = target.name
    return out


def arm_section(plan: dict, records: list[dict], runs: Path, asset_dir: Path) -> list[str]:
    """Per-arm tables for the studies the plan marks ``arm_table: true``: accuracy over seeds, wall time per run,
    what the pruner kept (pool size, smallest and largest class, KL of the class distribution to the full set)
    and links to the arm's image grids, so a reversed claim can be checked against its selection."""
    studies = [study for study, spec in plan["studies"].items() if spec.get("arm_table")]
    sweeps = {(study, ds): sw for study, ds, sw in study_sweeps(plan, Path("."), studies)}
    L = []
    for (study, ds), sweep in sweeps.items():
        n_seeds = len(plan["studies"][study].get("seeds", plan.get("seeds", [0])))
        # arms in the plan's axis order, keyed by cell id: runs.jsonl stores each record's axes key-sorted
        arm_of = {c["id"]: arm_label(c["axes"]) for c in sweep.cells()}
        by_arm: dict[str, list[dict]] = {arm: [] for arm in arm_of.values()}
        for r in records:
            if r["kind"] == "cell" and (r["study"], r["dataset"]) == (study, ds) and r["cell"] in arm_of:
                by_arm[arm_of[r["cell"]]].append(r)
        L += [f"### {study} on {ds}", "",
              "| arm | seeds finished | accuracy (%) | wall time per run (s) | pool | images per class in the "
              "pool (min–max) | class KL to full | image grids (lowest seed) |", "|---|---|---|---|---|---|---|---|"]
        for arm, recs in by_arm.items():
            done = [r for r in recs if r["status"] == "done"]
            other = [outcome_of(r) for r in recs if r["status"] != "done"]
            cells = [f"{len(done)} of {n_seeds}" + (f" ({'; '.join(other)})" if other else "")]
            if done:
                secs = [r["seconds"] for r in done if r.get("seconds") is not None]
                sel = [r["selection"] for r in done if r.get("selection")]
                counts = [c for s in sel for c in (s.get("per_class_kept") or [])]
                kl = [s["kl_to_full"] for s in sel if s.get("kl_to_full") is not None]
                images = copy_arm_images(arm, done, runs, asset_dir / study / ds)
                cells += [_pm([r["acc"] for r in done]),
                          f"{statistics.fmean(secs):.0f} ({min(secs):.0f}–{max(secs):.0f})" if secs else "–",
                          f"{sel[0]['kept']:,} of {sel[0]['of']:,}" if sel and sel[0].get("kept") else "–",
                          f"{min(counts):,}–{max(counts):,}" if counts else "–",
                          f"{max(kl):.2g}" if kl else "–",
                          ", ".join(f"[{k}]({asset_dir.name}/{study}/{ds}/{f})" for k, f in images.items()) or "–"]
            else:
                cells += ["–"] * 6
            L.append(f"| {arm} | " + " | ".join(cells) + " |")
        L.append("")
    return (["## Arms in detail", "",
             "Wall time per run is the cell's own time (pruning, distillation and evaluation; two cells at a time, "
             "one torch thread each), mean (min–max) over finished seeds. The pool columns come from each run's "
             "`prune_report.json`.", ""] + L) if L else []


def _ordered(results: list[dict]) -> list[dict]:
    """Claims in plan order, each re-check (``of``) right after the claim and dataset it re-checks."""
    out = [r for r in results if not r["claim"].get("of")]
    for r in [r for r in results if r["claim"].get("of")]:
        of = r["claim"]["of"]
        at = max((i for i, o in enumerate(out) if o["dataset"] == r["dataset"] and of in (o["claim"]["id"],
                                                                                          o["claim"].get("of"))),
                 default=len(out) - 1)
        out.insert(at + 1, r)
    return out


def write_report(plan: dict, runs: Path, out_md: Path, asset_dir: Path) -> dict:
    asset_dir.mkdir(parents=True, exist_ok=True)
    rel = asset_dir.name  # image links are relative to the report
    records, replaced = merge_records(plan, load_records(asset_dir / "runs.jsonl"), runs)
    atomic_write_text(asset_dir / "runs.jsonl",
                      "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in records))
    results = _ordered(evaluate_claims(plan, records))
    plot_claims(results, asset_dir / "claims.png")
    plot_deltas(results, asset_dir / "deltas.png")
    ca_rows, ca_models = cross_arch_table(plan, records)
    if ca_rows:
        plot_cross_arch(ca_rows, ca_models, asset_dir / "cross_arch.png")

    cells = [r for r in records if r["kind"] == "cell"]
    done = [r for r in cells if r["status"] == "done"]
    n_diverged = sum(outcome_of(r).startswith("diverged") for r in cells)
    seconds = sum(r.get("seconds") or 0.0 for r in done)
    now = this_session("report")
    L = ["# Reproduction report", "",
         f"Generated by `python docs/reproduction.py` from `docs/reproduction.yaml` and the cell records in "
         f"`{rel}/runs.jsonl` (report written at commit `{now['commit']}`, {now['date']}; the commit each study was "
         f"measured at is under \"Provenance\"). {len(done)} finished runs"
         + (f", {n_diverged} diverged" if n_diverged else "")
         + (f", {len(cells) - len(done) - n_diverged} failed" if len(cells) - len(done) > n_diverged else "")
         + f", {seconds / 3600:.2f} CPU-worker hours of cell time (two cells at a time, one torch thread each).", ""]
    L += provenance_section(plan, records)
    L += [plan.get("preface", "").strip(), "",
          "## Studies (from the plan file)", "",
          f"Shared by every cell: `{json.dumps(plan.get('fixed', {}), sort_keys=True)}`.", "",
          "| study | datasets | seeds | fixed | grid |", "|---|---|---|---|---|"]
    for study, spec in plan["studies"].items():
        L.append(f"| {study} | {', '.join(spec['datasets'])} | {spec.get('seeds', plan.get('seeds'))} | "
                 f"`{json.dumps(spec.get('fixed', {}), sort_keys=True)}` | `{json.dumps(spec['grid'])}` |")
    L += ["",
          "## Claims", "",
          "A claim id ending in `_fixed_lr` re-checks the claim above it with the same distilled sets evaluated at a "
          "fixed lr (see \"Re-evaluations\"). A claim whose plan entry names a `baseline_study` takes its "
          "baseline's cells from that study (the full-scale mission claims compare MTT with random and herding).", "",
          "| claim | source | dataset | baseline (%) | variant (%) | Δ (pp) | Welch p | verdict | measured at |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        c = r["claim"]
        L.append(f"| {c['id']} | {c['source']} | {r['dataset']} | {_pm(r['base'])} | {_pm(r['var'])} | "
                 f"{_delta(r)} | {_p(r)} | {r['verdict']} | {_commits(r['measured'])} |")
    L += ["", f"![claims]({rel}/claims.png)", "", f"![deltas]({rel}/deltas.png)", ""]

    L += ["## Where the claims hold and where they do not", ""]
    for cid in dict.fromkeys(r["claim"]["id"] for r in results if not r["claim"].get("of")):
        items = [r for r in results if r["claim"]["id"] == cid]
        line = f"- **{cid}** — {items[0]['claim']['title']}: {where_line(items)}"
        for rid in dict.fromkeys(r["claim"]["id"] for r in results if r["claim"].get("of") == cid):
            re_items = [r for r in results if r["claim"]["id"] == rid]
            line += f" *Re-evaluated (`{re_items[0]['claim']['evaluation']}`, {rid}):* {where_line(re_items)}"
        L.append(line)
    L.append("")
    L += reevaluation_section(plan, results)
    L += arm_section(plan, records, runs, asset_dir)

    if ca_rows:
        ca = plan["cross_arch"]
        L += ["## Cross-architecture", "",
              f"Study `{ca['study']}` on {ca['dataset']}: each seed's distilled set (distilled with ConvNet-3 width 32) "
              f"trains fresh networks of every architecture (networks per run and model: "
              f"`{json.dumps(ca.get('repeats', 1))}`; `pd-run eval RUN --models {','.join(ca['models'])}`); "
              "mean ± std over all those networks of the 3 seeds. Measured at "
              + "; ".join(f"{row['setting']}: {_commits(row['measured'])}" for row in ca_rows) + "."
              + (" Rows marked * are carried over as the summary (mean, std, networks) the report of that commit "
                 "printed; their per-network accuracies were not kept." if any(row.get("summary") for row in ca_rows)
                 else ""), "",
              "| setting | " + " | ".join(ca_models) + " | unseen-architecture mean |",
              "|---|" + "---|" * (len(ca_models) + 1)]
        for row in ca_rows:
            unseen = [row["models"][m]["mean"] for m in ca_models[1:] if m in row["models"]]
            mean = row.get("unseen_mean") or (statistics.fmean(unseen) if unseen else None)  # a summary's own
            L.append(f"| {row['setting']}{' *' if row.get('summary') else ''} | "
                     + " | ".join(_pm_stats(row["models"].get(m)) for m in ca_models)
                     + (f" | {100 * mean:.2f} |" if mean is not None else " | – |"))
        L += ["", f"![cross-architecture]({rel}/cross_arch.png)", ""]

    if plan.get("discussion"):
        L += [plan["discussion"].strip(), ""]
    L += ["## Every number's runs", "",
          f"Run directories are relative to the runs root (`--runs`, default `runs/reproduction`); each holds "
          "`config.json` (fully resolved, budget-scaled values under `resolved`), `manifest.json`, `prune.pt`, "
          f"`distill.pt`, `eval.json`, `synthetic.png` and `log.jsonl`. `{rel}/runs.jsonl` keeps every "
          "run's full config beside its accuracy, evaluation lr, wall time and the commit it was measured at, so "
          "the tables survive without the run directories.", "",
          "| claim | dataset | arm | seed | accuracy (%) | evaluation lr | cell seconds | commit | run directory |",
          "|---|---|---|---|---|---|---|---|---|"]
    commit_of = {r["dir"]: r["commit"] for r in cells}
    for r in results:
        for arm, key in (("baseline", "base_rows"), ("variant", "var_rows")):
            for row in r[key]:
                L.append(f"| {r['claim']['id']} | {r['dataset']} | {arm} | {row['seed']} | {100 * row['acc']:.2f} | "
                         + (f"{row['lr']:.3g}" if row.get("lr") is not None else "–") + " | "
                         f"{row['seconds'] if row['seconds'] is not None else '–'} | `{commit_of[row['dir']]}` | "
                         f"`{row['dir']}` |")
        for row in r["failed_rows"]:
            L.append(f"| {r['claim']['id']} | {r['dataset']} | {row['arm']} | {row['seed']} | {row['outcome']} | – | "
                     f"{row['seconds'] if row['seconds'] is not None else '–'} | `{commit_of[row['dir']]}` | "
                     f"`{row['dir']}` |")
    if ca_rows:
        for row in ca_rows:
            L.append(f"| cross_arch | {plan['cross_arch']['dataset']} | {row['setting']} | – | – | – | – | "
                     f"{', '.join(f'`{c}`' for c, _ in row['measured'])} | "
                     + ", ".join(f"`{d}`" for d in row["dirs"]) + " |")
    L.append("")
    atomic_write_text(out_md, "\n".join(L))
    return {"claims": results, "cells": len(done), "replaced": replaced}


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
    carried = f"; replaced from {runs}: {', '.join(rep['replaced'])}" if rep["replaced"] else "; all carried over"
    print(f"wrote {args.out} ({rep['cells']} finished runs{carried})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
