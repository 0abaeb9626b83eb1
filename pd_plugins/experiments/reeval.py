"""Re-evaluate a finished run with other evaluator settings: ``pd-run eval RUN -E KEY=VALUE [--evaluator NAME]``.

The result is a separate evaluation beside the run's own ``eval.json``, in
``evals/<evaluator>-<hash>.json``. Its ``fingerprint`` (the hash) covers the evaluator's name,
its fully resolved options, its protocol revision and the fingerprint of the evaluated artifact
(``distill.pt``, or ``prune.pt`` for a run without a distiller). The run's ``eval.json`` and its
manifest stages are never touched, and an existing identical evaluation is not recomputed
without ``overwrite``. Networks are seeded with the same keys as the run's own evaluation, so
a variant differs from it only by the settings that were changed.

Settings start from the run's: the same evaluator keeps the run's evaluator options, another
evaluator starts from its defaults; the run's budget and ``eval_repeats`` apply unless given.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from pd_plugins.errors import DataError, OptionsError, StageExistsError
from pd_plugins.experiments.finished_run import finished_stages, load_run
from pd_plugins.io import atomic_write_json, read_json
from pd_plugins.types import sha256_json

VARIANTS_DIR = "evals"


def resolve_variant(run, evaluator: Optional[str] = None, options: Optional[dict] = None,
                    eval_repeats: Optional[int] = None):
    """``(canonical name, evaluator instance, resolved options as a dict)`` of a re-evaluation of ``run``."""
    from pd_plugins.options import as_dict

    reg = run.regs["evaluator"]
    if evaluator is None and run.cfg.evaluator == "none":
        raise OptionsError("the run has evaluator 'none'; give --evaluator NAME")
    name = reg.get(evaluator or run.cfg.evaluator).name
    same = run.cfg.evaluator != "none" and reg.get(run.cfg.evaluator).name == name
    values: dict[str, Any] = dict(run.cfg.evaluator_options) if same else {}
    values.update(options or {})
    repeats = eval_repeats if eval_repeats is not None else run.cfg.eval_repeats
    if repeats is not None:
        if int(repeats) < 1:
            raise OptionsError(f"--eval-repeats must be >= 1, got {repeats}")
        values["repeats"] = int(repeats)
    cls = reg.load(name)
    opts = cls.resolve_options(values, run.resolved["budget"])
    return name, cls(opts), as_dict(opts)


def variant_path(run_dir, name: str, fingerprint: str) -> Path:
    """Where the evaluation with this evaluator name and fingerprint is stored."""
    return Path(run_dir) / VARIANTS_DIR / f"{name}-{fingerprint[:12]}.json"


def evaluate_variant(run_dir, *, evaluator: Optional[str] = None, options: Optional[dict] = None,
                     eval_repeats: Optional[int] = None, overwrite: bool = False, reuse: bool = False,
                     progress: bool = False) -> dict:
    """Evaluate a finished run's set with other evaluator settings; returns the stored payload.

    An existing identical evaluation raises :class:`StageExistsError` unless ``overwrite``
    (recompute it) or ``reuse`` (return it).
    """
    run = load_run(run_dir, progress=progress)
    name, ev, opts = resolve_variant(run, evaluator, options, eval_repeats)
    data_fp, pruned, distilled = finished_stages(run)
    stage = run.distill_stage if distilled is not None else run.prune_stage
    artifact = {"stage": stage.name, "file": stage.path.name, "fingerprint": stage.fingerprint(data_fp)}
    revision = ev.protocol_revision
    fp = sha256_json({"evaluator": name, "options": opts, "revision": revision, "artifact": artifact})
    path = variant_path(run.out, name, fp)
    if path.exists() and not overwrite:
        if reuse and read_json(path, "evaluation").get("fingerprint") == fp:
            return read_json(path, "evaluation")
        raise StageExistsError(f"{path} already holds this evaluation; use --overwrite to recompute it")
    train_set, test, lr, what = run.eval_stage.inputs(pruned, distilled)
    from pd_plugins.training.teacher import teacher_inputs

    ctx = run.context("eval")
    result = run._call("evaluator", name, ev.evaluate, train_set, test, ctx, lr=lr,
                       **teacher_inputs(ev, ctx, lambda: run.eval_stage.real_split(distilled)))
    payload = {"evaluated": what, "train_size": len(train_set), "results": [result.to_json()], "fingerprint": fp,
               "evaluator": name, "options": opts, "revision": revision, "artifact": artifact,
               "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_json(path, payload)
    man = run.dir.manifest()
    man.setdefault("evaluations", {})[str(path.relative_to(run.out))] = {
        "fingerprint": fp, "evaluator": name, "finished": payload["finished"]}
    atomic_write_json(run.dir.manifest_path, man)
    return payload


def list_variants(run_dir) -> list[dict]:
    """Every re-evaluation stored in a run directory (sorted by file name)."""
    folder = Path(run_dir) / VARIANTS_DIR
    if not folder.is_dir():
        return []
    return [read_json(p, "evaluation") for p in sorted(folder.glob("*.json"))]


def _matches(variant: dict, selector: dict, regs) -> bool:
    from pd_plugins.options import as_dict, coerce

    want = selector.get("evaluator")
    if want is not None and regs.get(want).name != variant.get("evaluator"):
        return False
    wanted = dict(selector.get("options") or {})
    if not wanted:
        return True
    cls = regs.get(variant["evaluator"]).options_class()
    try:  # typed like the evaluator's options, so "false" from a command line equals False
        typed = as_dict(coerce(cls, wanted, what=f"evaluator {variant['evaluator']!r}"))
    except OptionsError:
        return False  # an option this evaluator does not have
    have = variant.get("options") or {}
    return all(k in have and _same(have[k], typed[k]) for k in wanted)


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def read_evaluation(run_dir, selector: Optional[dict] = None) -> Optional[dict]:
    """A run's evaluation: its own ``eval.json`` when ``selector`` is None, else the one re-evaluation
    matching ``{"evaluator": NAME, "options": {KEY: VALUE}}`` (both optional; options must all match).
    None when there is none; more than one match is an error."""
    run_dir = Path(run_dir)
    if selector is None:
        path = run_dir / "eval.json"
        return read_json(path, "eval result") if path.exists() else None
    unknown = set(selector) - {"evaluator", "options"}
    if unknown:
        raise OptionsError(f"an evaluation selector takes 'evaluator' and 'options', not {', '.join(sorted(unknown))}")
    from pd_plugins.plugins import registries

    regs = registries()["evaluator"]
    hits = [v for v in list_variants(run_dir) if _matches(v, selector, regs)]
    if len(hits) > 1:
        names = ", ".join(variant_path(run_dir, v["evaluator"], v["fingerprint"]).name for v in hits)
        raise DataError(f"{run_dir}: {len(hits)} evaluations match {selector} ({names}); name more options")
    return hits[0] if hits else None


def selector_label(selector: Optional[dict]) -> str:
    """A short readable label of a selector, e.g. ``dsa-step use_learned_lr=false``."""
    if not selector:
        return "eval.json"
    parts = [str(selector["evaluator"])] if selector.get("evaluator") else []
    parts += [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in (selector.get("options") or {}).items()]
    return " ".join(parts) or "any re-evaluation"
