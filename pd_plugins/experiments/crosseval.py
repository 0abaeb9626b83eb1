"""Cross-architecture evaluation of a finished run (``pd-run eval RUN --models ... --repeats N``).

Fresh networks of every listed architecture are trained on the run's distilled set (or
its pruned set when it has no distiller). Each (model, repeat) is one independent seeded
network (``ctx.fork_rng("eval-net", model, repeat)``) cached in ``eval/<model>-<repeat>.json``
with the fingerprint of what it depends on, so a rerun only trains what is missing. The
table reports mean ± std per model and, as GLaD and Moser et al. do, the mean over the
*unseen* architectures (all but the one the set was distilled with).
"""
from __future__ import annotations

import csv
import io as _io
import inspect
import statistics
from typing import Mapping, Sequence, Union

from pd_plugins.errors import OptionsError
from pd_plugins.experiments.finished_run import finished_stages, load_run
from pd_plugins.io import atomic_write_json, atomic_write_text, read_json
from pd_plugins.types import sha256_json


def _one_repeat(ctx, evaluator, train_set, test, lr, model: str, repeat: int):
    """Train and test network ``repeat`` of ``model`` (one executor task); returns its EvalResult."""
    return evaluator.evaluate(train_set, test, ctx, lr=lr, model=model, repeats=1, repeat_index=repeat)


def cross_eval(run, models: Sequence[str], repeats: Union[int, Mapping[str, int]], *, overwrite: bool = False) -> dict:
    """Evaluate ``models`` × ``repeats`` on a finished run; writes eval.json/.md/.csv and returns the payload.

    ``repeats`` is one count for every model or a ``{model: count}`` mapping (e.g. keep the run's own
    model at its evaluation's repeats while unseen architectures train fewer networks).
    """
    counts = dict(repeats) if isinstance(repeats, Mapping) else {}
    default = 1 if counts else int(repeats)
    for n in [default, *counts.values()]:
        if int(n) < 1:
            raise OptionsError(f"--repeats must be >= 1, got {n}")
    if run.evaluator is None:
        raise OptionsError("the run has evaluator 'none'; nothing evaluates the set")
    models = [m.strip() for m in models if m.strip()]
    if not models:
        raise OptionsError("--models needs at least one model name")
    models = [run.regs["model"].get(m).name for m in models]  # unknown names fail here, with a hint
    counts = {run.regs["model"].get(m).name: n for m, n in counts.items()}
    data_fp, pruned, distilled = finished_stages(run)
    stage = run.eval_stage
    train_set, test, lr, what = stage.inputs(pruned, distilled)
    eval_fp = stage.fingerprint(data_fp)
    cache = run.out / "eval"
    items, todo = {}, []
    for model in models:
        for r in range(int(counts.get(model, default))):
            path = cache / f"{model}-{r}.json"
            key = sha256_json({"eval": eval_fp, "model": model, "repeat": r})
            if path.exists() and not overwrite and read_json(path, "cached evaluation").get("key") == key:
                items[model, r] = read_json(path, "cached evaluation")
            else:
                todo.append(((model, r), (model, r)))
    if todo:  # every missing (model, repeat) network is one task on the run's executor
        evaluate = run.evaluator.evaluate
        if "repeat_index" not in inspect.signature(evaluate).parameters:
            raise OptionsError(f"evaluator {run.cfg.evaluator!r} cannot train single repeats (no repeat_index argument)")
        from pd_plugins.executor import run_tasks

        def train_missing():
            for (model, r), res in run_tasks(run.context("eval"), _one_repeat, todo,
                                             shared=(run.evaluator, train_set, test, lr)):
                key = sha256_json({"eval": eval_fp, "model": model, "repeat": r})
                items[model, r] = {"key": key, "model": model, "repeat": r, "acc": res.accs[0], "result": res.to_json()}
                atomic_write_json(cache / f"{model}-{r}.json", items[model, r])

        run._call("evaluator", run.cfg.evaluator, train_missing)
    per_model = {}
    for model in models:
        mine = [items[model, r] for r in range(int(counts.get(model, default)))]
        per_model[model] = _combine([i["result"] for i in mine], [float(i["acc"]) for i in mine])
    payload = _payload(run, what, len(train_set), eval_fp, per_model)
    atomic_write_json(run.out / "eval.json", payload)
    atomic_write_text(run.out / "eval.md", markdown_table(payload["cross_arch"]))
    atomic_write_text(run.out / "eval.csv", csv_table(payload["cross_arch"]))
    run.dir.mark_done(stage.name, eval_fp)
    return payload


def _combine(results: list[dict], accs: list[float]) -> dict:
    first = dict(results[0])
    first.update({"accs": accs, "mean": statistics.fmean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0})
    first["options"] = {**first.get("options", {}), "repeats": len(accs)}
    first["meta"] = {"final_train_loss": [r.get("meta", {}).get("final_train_loss", [None])[0] for r in results]}
    return first


def _payload(run, what: str, train_size: int, eval_fp: str, per_model: dict) -> dict:
    home = run.cfg.model
    order = sorted(per_model, key=lambda m: m != home)  # the run's own model first: results[0] stays comparable
    unseen = [m for m in order if m != home]
    means = [per_model[m]["mean"] for m in unseen]
    cross = {
        "distill_model": home,
        "models": {m: {"mean": per_model[m]["mean"], "std": per_model[m]["std"], "accs": per_model[m]["accs"]}
                   for m in order},
        "unseen": unseen,
        "unseen_mean": statistics.fmean(means) if means else None,
        "unseen_std": statistics.stdev(means) if len(means) > 1 else (0.0 if means else None),
    }
    return {"evaluated": what, "train_size": train_size, "results": [per_model[m] for m in order],
            "cross_arch": cross, "fingerprint": eval_fp}


def _rows(cross: dict) -> list[tuple]:
    rows = [(m, v["mean"], v["std"], len(v["accs"]), "distillation model" if m == cross["distill_model"] else "unseen")
            for m, v in cross["models"].items()]
    if cross["unseen_mean"] is not None:
        rows.append(("unseen mean", cross["unseen_mean"], cross["unseen_std"], len(cross["unseen"]),
                     "mean of per-model means; std across models"))
    return rows


def markdown_table(cross: dict) -> str:
    """The cross-architecture table as Markdown (accuracies in %)."""
    lines = ["| model | accuracy (%) | n | note |", "|---|---|---|---|"]
    for name, mean, std, n, note in _rows(cross):
        lines.append(f"| {name} | {100 * mean:.2f} ± {100 * std:.2f} | {n} | {note} |")
    return "\n".join(lines) + "\n"


def csv_table(cross: dict) -> str:
    """The cross-architecture table as CSV (accuracies as fractions)."""
    buf = _io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model", "mean", "std", "n", "note"])
    for row in _rows(cross):
        w.writerow(row)
    return buf.getvalue()


def eval_run_dir(run_dir, models: Sequence[str], repeats: Union[int, Mapping[str, int]], *, overwrite: bool = False,
                 progress: bool = False, executor=None) -> dict:
    """Load a run directory and cross-evaluate it (the body of ``pd-run eval --models``); the networks
    are tasks on ``executor`` (default: sequential)."""
    run = load_run(run_dir, progress=progress, executor=executor)
    with run.lock():
        return cross_eval(run, models, repeats, overwrite=overwrite)
