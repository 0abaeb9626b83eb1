"""Label- and augmentation-robust metrics of a finished run: ``pd-run eval RUN --metrics robust``.

DD-Ranking (Li et al., arXiv 2505.13300) asks whether a distilled set's accuracy comes from its
images or from the labels and augmentation it is evaluated with. It trains the same evaluation
on three kinds of set -- the run's set (``syn``: distilled, or pruned without a distiller), a
random real subset with the same number of images per class (``rdm``, drawn afresh for every
network) and the real pool (``real``: the full training split, or the pruned pool) -- under a
few label and augmentation settings, and combines the accuracies into HLR, IOR, LRS and ARS
(:mod:`pd_plugins.experiments.robust_scores`; formulas in docs/evaluation.md).

Every term is one evaluator with one change of options (``labels``, ``augment``); network ``r``
of every term has the same seed, so the scores are computed per network and reported as
mean ± std over networks. Each network is cached in ``RUN/robust/networks/`` under the hash of
everything it depends on, so a second call (other weights, another score) trains only what is
missing; the summary is ``RUN/robust/robust-<hash>.json``, kept as it is unless ``overwrite``.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from pd_plugins.errors import DataError, OptionsError
from pd_plugins.experiments import robust_scores
from pd_plugins.io import atomic_write_json, read_json
from pd_plugins.types import sha256_json

FOLDER = "robust"
POOLS = ("full", "pruned")
SCORES = tuple(robust_scores.TERMS)


@dataclass(frozen=True)
class Term:
    """One accuracy term: which set, which training targets, whether augmented (None: as the evaluator)."""

    name: str
    symbol: str
    set: str  # "syn", "rdm" or "real"
    labels: Optional[str]  # "hard", or None: the evaluator's own label mode ("any" in the paper)
    augment: Optional[bool]


TERMS = {t.name: t for t in (
    Term("real_hard", "Acc_real-hard", "real", "hard", None),
    Term("syn_hard", "Acc_syn-hard", "syn", "hard", None),
    Term("syn_any", "Acc_syn-any", "syn", None, None),
    Term("rdm_any", "Acc_rdm-any", "rdm", None, None),
    Term("syn_aug", "Acc_syn-aug", "syn", None, True),
    Term("rdm_aug", "Acc_rdm-aug", "rdm", None, True),
    Term("syn_naug", "Acc_syn-naug", "syn", None, False),
    Term("rdm_naug", "Acc_rdm-naug", "rdm", None, False),
)}


def parse_metrics(text: str) -> tuple[str, ...]:
    """``robust`` (all four) or a comma list of ``hlr``, ``ior``, ``lrs``, ``ars``, in the order of :data:`SCORES`."""
    names = {n.strip().lower() for n in str(text).split(",") if n.strip()}
    if "robust" in names:
        names = (names - {"robust"}) | set(SCORES)
    unknown = names - set(SCORES)
    if not names or unknown:
        raise OptionsError(f"--metrics takes robust or a comma list of {', '.join(SCORES)}; got {text!r}")
    return tuple(s for s in SCORES if s in names)


def term_options(opts, term: Term, train_is_soft: bool):
    """The evaluator options of ``term`` on a set with (or without) soft labels, normalised so that
    terms that train identically have equal options: own labels of a hard-labelled set are hard."""
    changes = {}
    if term.labels is not None:
        changes["labels"] = term.labels
    if term.augment is not None:
        changes["augment"] = term.augment
    if term.set != "syn":
        changes["use_learned_lr"] = False  # a real set has no learned lr: the evaluator's lr option
    fields = {f.name for f in dataclasses.fields(opts)}
    missing = sorted(k for k in changes if k not in fields and k != "use_learned_lr")
    if missing:
        raise OptionsError(f"the robust metrics set the evaluator option(s) {missing}, which this evaluator lacks")
    changes = {k: v for k, v in changes.items() if k in fields}
    new = dataclasses.replace(opts, **changes)
    if "labels" in fields and new.labels == "own" and not (term.set == "syn" and train_is_soft):
        new = dataclasses.replace(new, labels="hard")  # a hard-labelled set's own labels are hard labels
    return new


def random_subset(train, counts: Sequence[int], generator):
    """``counts[c]`` random samples of every class ``c`` of ``train`` (a random real subset of the same ipc)."""
    import torch

    chosen = []
    for c, (positions, n) in enumerate(zip(train.by_class(), counts)):
        if n > len(positions):
            raise DataError(f"class {c} has {len(positions)} real samples, fewer than the {n} the random subset needs")
        chosen.append(positions[torch.randperm(len(positions), generator=generator)[:n]])
    return train.subset(torch.sort(torch.cat(chosen)).values)


def _network(ctx, evaluator, train, test, lr, teacher: dict, r: int):
    """Train and test network ``r`` of one term (one executor task); returns its EvalResult."""
    return evaluator.evaluate(train, test, ctx, lr=lr, repeats=1, repeat_index=r, **teacher)


class RobustEvaluation:
    """The terms, sets and cache of one robust evaluation of a loaded run."""

    def __init__(self, run, metrics: Sequence[str], *, evaluator: Optional[str] = None,
                 options: Optional[dict] = None, eval_repeats: Optional[int] = None, pool: str = "full",
                 w: float = 0.5, gamma: float = 0.5):
        from pd_plugins.experiments.finished_run import finished_stages
        from pd_plugins.experiments.reeval import resolve_variant

        if pool not in POOLS:
            raise OptionsError(f"the real pool is one of {', '.join(POOLS)}, not {pool!r}")
        for name, value in (("--lrs-weight", w), ("--ars-weight", gamma)):
            if not 0.0 <= float(value) <= 1.0:
                raise OptionsError(f"{name} must be in [0, 1], got {value}")
        self.run, self.metrics, self.pool, self.w, self.gamma = run, tuple(metrics), pool, float(w), float(gamma)
        self.name, self.evaluator, _ = resolve_variant(run, evaluator, options, eval_repeats)
        self.opts = self.evaluator.options
        data_fp, pruned, distilled = finished_stages(run)
        stage = run.distill_stage if distilled is not None else run.prune_stage
        self.artifact = {"stage": stage.name, "fingerprint": stage.fingerprint(data_fp)}
        self.syn, self.test, self.lr, self.what = run.eval_stage.inputs(pruned, distilled)
        self.real_split = run.eval_stage.real_split(distilled)  # the random subsets and the teacher's data
        self.pool_set = self.real_split if pool == "full" else self.real_split.subset(pruned.keep)
        self.counts = self.syn.class_counts()
        self.repeats = int(self.opts.repeats)
        self.terms = [TERMS[t] for t in dict.fromkeys(t for s in self.metrics for t in robust_scores.TERMS[s])]
        self.term_opts = {t.name: term_options(self.opts, t, self.syn.soft) for t in self.terms}

    # -- identity -------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """The summary's identity: every setting the scores depend on."""
        from pd_plugins.options import as_dict

        return sha256_json({"evaluator": self.name, "options": as_dict(self.opts), "artifact": self.artifact,
                            "revision": self.evaluator.protocol_revision, "metrics": list(self.metrics),
                            "pool": self.pool, "w": self.w, "gamma": self.gamma})

    def network_key(self, term: Term, r: int) -> str:
        """What network ``r`` of ``term`` depends on; terms that train alike share their networks."""
        from pd_plugins.options import as_dict

        what = {"syn": self.artifact, "real": {"pool": self.pool}, "rdm": {"random": self.counts, "network": r}}
        return sha256_json({"evaluator": self.name, "options": as_dict(self.term_opts[term.name]),
                            "revision": self.evaluator.protocol_revision, "set": term.set, "what": what,
                            "artifact": self.artifact, "repeat": r})

    @property
    def folder(self) -> Path:
        return self.run.out / FOLDER

    def summary_path(self) -> Path:
        return self.folder / f"robust-{self.fingerprint()[:12]}.json"

    def network_path(self, key: str, r: int) -> Path:
        return self.folder / "networks" / f"{key[:16]}-{r}.json"

    # -- sets -----------------------------------------------------------------------------
    def train_set(self, term: Term, r: int):
        """``(training set, learned lr or None)`` of network ``r`` of ``term``."""
        if term.set == "syn":
            return self.syn, self.lr
        if term.set == "real":
            return self.pool_set, None
        g = self.run.context("eval").generator("robust-random", r)
        return random_subset(self.real_split, self.counts, g), None

    def evaluator_for(self, term: Term):
        return type(self.evaluator)(self.term_opts[term.name])

    # -- work -----------------------------------------------------------------------------
    def compute(self, overwrite: bool = False) -> dict:
        """Train the missing networks (all with ``overwrite``), then write and return the summary."""
        ctx = self.run.context("eval")
        items, todo = {}, []
        for term in self.terms:
            for r in range(self.repeats):
                key = self.network_key(term, r)
                path = self.network_path(key, r)
                if (key, r) in items or (key, r) in todo:  # a term that trains like one before it
                    continue
                if path.exists() and not overwrite and read_json(path, "robust network").get("key") == key:
                    items[key, r] = read_json(path, "robust network")
                else:
                    todo.append((key, r))
        if todo:
            self._train(ctx, todo, items)
        accs = {t.name: [float(items[self.network_key(t, r), r]["acc"]) for r in range(self.repeats)]
                for t in self.terms}
        try:
            scores = robust_scores.scores(accs, self.metrics, w=self.w, gamma=self.gamma)
        except ValueError as exc:
            raise DataError(f"robust metrics: {exc}") from None
        payload = self.payload(accs, items, scores)
        atomic_write_json(self.summary_path(), payload)
        man = self.run.dir.manifest()
        man.setdefault("evaluations", {})[str(self.summary_path().relative_to(self.run.out))] = {
            "fingerprint": payload["fingerprint"], "evaluator": self.name, "metrics": list(self.metrics),
            "finished": payload["finished"]}
        atomic_write_json(self.run.dir.manifest_path, man)
        return payload

    def _train(self, ctx, todo: list, items: dict) -> None:
        from pd_plugins.executor import run_tasks
        from pd_plugins.pipeline.stages import call_strategy

        from pd_plugins.training.teacher import teacher_inputs

        by_key = {self.network_key(t, r): t for t in self.terms for r in range(self.repeats)}
        teacher = teacher_inputs(self.evaluator, ctx, lambda: self.real_split)  # loaded (or trained) once
        tasks = []
        for key, r in todo:
            term = by_key[key]
            train, lr = self.train_set(term, r)
            evaluator = self.evaluator_for(term)
            extra = teacher if getattr(evaluator.options, "labels", None) == "teacher" else {}
            tasks.append(((key, r), (evaluator, train, self.test, lr, extra, r)))

        def train_missing():
            for (key, r), res in run_tasks(ctx, _network, tasks):
                items[key, r] = {"key": key, "term": by_key[key].name, "repeat": r, "acc": float(res.accs[0]),
                                 "labels_used": res.options.get("labels_used"), "result": res.to_json()}
                atomic_write_json(self.network_path(key, r), items[key, r])

        call_strategy(self.run.regs, "evaluator", self.name, train_missing)

    def payload(self, accs: dict, items: dict, scores: dict) -> dict:
        from pd_plugins.options import as_dict

        terms = {}
        for t in self.terms:
            first = items[self.network_key(t, 0), 0]
            mean, std = robust_scores.mean_std(accs[t.name])
            opts = self.term_opts[t.name]
            size = len(self.syn) if t.set == "syn" else (len(self.pool_set) if t.set == "real" else sum(self.counts))
            terms[t.name] = {"symbol": t.symbol, "set": t.set, "size": size, "accs": accs[t.name], "mean": mean,
                             "std": std, "labels": first.get("labels_used"),
                             "augment": getattr(opts, "augment", None), "lr_used": first["result"]["options"].get("lr_used")}
        return {"fingerprint": self.fingerprint(), "evaluator": self.name, "options": as_dict(self.opts),
                "revision": self.evaluator.protocol_revision, "artifact": self.artifact, "evaluated": self.what,
                "metrics": list(self.metrics), "pool": self.pool, "w": self.w, "gamma": self.gamma,
                "repeats": self.repeats, "augmentation": self.run.cfg.augmentation, "terms": terms, "scores": scores,
                "neutral": robust_scores.NEUTRAL, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}


def robust_eval(run_dir, metrics: Sequence[str] = SCORES, *, evaluator: Optional[str] = None,
                options: Optional[dict] = None, eval_repeats: Optional[int] = None, pool: str = "full",
                w: float = 0.5, gamma: float = 0.5, overwrite: bool = False, progress: bool = False,
                executor=None) -> dict:
    """Compute (or read back) the robust metrics of a finished run directory; returns the summary with
    ``stored`` True when it was read back unchanged."""
    from pd_plugins.experiments.finished_run import load_run

    run = load_run(run_dir, progress=progress, executor=executor)
    with run.lock():
        job = RobustEvaluation(run, metrics, evaluator=evaluator, options=options, eval_repeats=eval_repeats,
                               pool=pool, w=w, gamma=gamma)
        path = job.summary_path()
        if path.exists() and not overwrite:
            stored = read_json(path, "robust metrics")
            if stored.get("fingerprint") == job.fingerprint():
                return {**stored, "stored": True, "path": str(path)}
        return {**job.compute(overwrite=overwrite), "stored": False, "path": str(path)}


def list_robust(run_dir) -> list[dict]:
    """Every robust summary stored in a run directory (sorted by file name)."""
    folder = Path(run_dir) / FOLDER
    return [read_json(p, "robust metrics") for p in sorted(folder.glob("robust-*.json"))] if folder.is_dir() else []


# ----------------------------------------------------------------------------------------
# tables

SCORE_ROWS = {  # score -> (label, unit, neutral value as a fraction)
    "hlr": ("HLR = Acc_real-hard − Acc_syn-hard", "pp", 0.0),
    "ior": ("IOR = Acc_syn-any − Acc_rdm-any", "pp", 0.0),
    "lrs": ("LRS", "%", robust_scores.NEUTRAL),
    "ars": ("ARS", "%", robust_scores.NEUTRAL),
}


def _augmentation(payload: dict, augment) -> str:
    return "-" if augment is None else (payload.get("augmentation") or "dsa") if augment else "none"


def markdown(payload: dict) -> str:
    """The accuracy terms and the scores as Markdown tables (percent; mean ± std over networks)."""
    sets = {"syn": payload.get("evaluated", "set"), "rdm": "random real subset", "real": f"{payload['pool']} real pool"}
    lines = [f"Robust metrics ({payload['evaluator']}, {payload['repeats']} networks a term, real pool: "
             f"{payload['pool']}, w = {payload['w']:g}, γ = {payload['gamma']:g}"
             + ("; stored" if payload.get("stored") else "") + ")", "",
             "| term | set (images) | labels | augmentation | accuracy (%) |", "|---|---|---|---|---|"]
    for t in payload["terms"].values():
        lines.append(f"| {t['symbol']} | {sets[t['set']]} ({t['size']}) | {t['labels']} | "
                     f"{_augmentation(payload, t['augment'])} | {100 * t['mean']:.2f} ± {100 * t['std']:.2f} |")
    lines += ["", "| score | mean ± std over networks | neutral |", "|---|---|---|"]
    for name, s in payload["scores"].items():
        label, unit, neutral = SCORE_ROWS[name]
        lines.append(f"| {label} ({unit}) | {100 * s['mean']:.2f} ± {100 * s['std']:.2f} | {100 * neutral:.2f} |")
    return "\n".join(lines) + "\n"
