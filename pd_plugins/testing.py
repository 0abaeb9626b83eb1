"""pd_plugins.testing: a test kit for plugin authors.

Conformance checks in the spirit of scikit-learn's ``check_estimator``; each raises
``AssertionError`` (or the strategy's own error) on the first violation and returns a report of
what it checked and what it skipped (and why):

* :func:`check_pruner` -- options (defaults and budgets resolve, an unknown or mistyped option is an
  :class:`~pd_plugins.OptionsError`), the declared contracts, determinism under a seed, the
  :class:`~pd_plugins.PruneResult` (sorted unique in-range positions, one score per sample), and the
  score cache of a :class:`~pd_plugins.ScorePruner` with a ``score_key``;
* :func:`check_distiller` -- options and contracts, determinism, the
  :class:`~pd_plugins.DistillResult` (``ipc`` images per class, labels, finite images of the data's
  shape) and, when the distiller checkpoints, that a run killed after a checkpoint resumes to the
  uninterrupted result;
* :func:`check_evaluator` and :func:`check_dataset` for the other strategy kinds.

It is also a pytest plugin (``pytest_plugins = ["pd_plugins.testing"]`` in your root
``conftest.py``) with the fixtures ``tiny_splits``, ``tiny_dataset`` (3 classes of 8x8 grey
images, learnable in a few epochs), ``run_context``/``ctx`` (a CPU :class:`~pd_plugins.RunContext`
with seed 0 in a temporary folder) and ``pd_host`` (a fresh plugin host with only the built-ins).
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import pytest

#: model options that keep the default ConvNet tiny in the checks
TINY_MODEL = {"width": 8}


# ----------------------------------------------------------------------------------------------
# data and context


def tiny_splits(classes: int = 3, per_class: int = 10, test_per_class: int = 4, size: int = 8, seed: int = 0):
    """:class:`~pd_plugins.DataSplits` of ``classes`` classes of ``size`` x ``size`` grey uint8 images:
    each class is a fixed random template plus noise, so a small network separates them in a few epochs."""
    import torch

    from pd_plugins.data.builtin import make_splits

    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(classes, 1, size, size, generator=g)

    def split(n: int):
        y = torch.arange(classes).repeat_interleave(n)
        x = templates[y] * 0.7 + torch.rand(len(y), 1, size, size, generator=g) * 0.3
        return (x * 255).round().to(torch.uint8), y

    return make_splits("tiny", split(per_class), split(test_per_class), classes=[f"c{i}" for i in range(classes)],
                       allow_flip=False)


def make_context(work_dir, *, seed: int = 0, stage: str = "check", **values):
    """A :class:`~pd_plugins.RunContext` writing under ``work_dir`` (checkpoints, a score cache); on the
    CPU unless ``values`` name a ``device``."""
    from pd_plugins.pipeline.context import RunContext

    work_dir = Path(work_dir)
    values.setdefault("model_options", dict(TINY_MODEL))
    values.setdefault("cache_dir", work_dir / "cache")
    values.setdefault("device", "cpu")
    return RunContext(seed=seed, work_dir=work_dir, stage=stage, **values)


# ----------------------------------------------------------------------------------------------
# the checks


@dataclasses.dataclass
class CheckReport:
    """What a check verified (``checked``) and what did not apply (``skipped``: name -> why)."""

    strategy: str
    checked: list = dataclasses.field(default_factory=list)
    skipped: dict = dataclasses.field(default_factory=dict)


def check_pruner(cls, options: Optional[dict] = None, *, data=None, keep: float = 0.5, seed: int = 0,
                 budget: Optional[str] = None, work_dir=None, context: Optional[dict] = None) -> CheckReport:
    """Check that the pruner class ``cls`` behaves as the host expects (see the module docstring).

    ``options`` (user values over ``budget``) should make it fast on ``data`` (default:
    :func:`tiny_splits`' train split); ``context`` adds :class:`~pd_plugins.RunContext` fields.
    """
    import torch

    from pd_plugins.strategies import PAPER_MODES, Pruner, ScorePruner
    from pd_plugins.types import PruneResult

    report = CheckReport(_name(cls, Pruner, "pruner"))
    assert cls.paper_mode in PAPER_MODES, (
        f"{cls.__name__}.paper_mode is {cls.paper_mode!r}; declare one of {', '.join(PAPER_MODES)}")
    opts = _check_options(cls, options, budget, report)
    implied = cls.implied_keep(opts)
    assert implied is None or 0.0 < float(implied) <= 1.0, f"{cls.__name__}.implied_keep returned {implied!r}"
    keep = float(implied) if implied is not None else keep
    data = data if data is not None else tiny_splits().train
    with _workdir(work_dir) as root:
        ctx_a = make_context(root / "a", seed=seed, stage="prune", **(context or {}))
        ident = cls(opts).context_identity(ctx_a)
        assert isinstance(ident, dict), "context_identity must return a dict"
        json.dumps(ident, sort_keys=True, default=str)
        report.checked.append("contracts")

        a = cls(opts).prune(data, keep, ctx_a)
        assert isinstance(a, PruneResult), f"prune() returned {type(a).__name__}, not PruneResult"
        _check_prune_result(a, data, cls.name)
        report.checked.append("result")
        b = cls(opts).prune(data, keep, make_context(root / "b", seed=seed, stage="prune", **(context or {})))
        assert torch.equal(a.keep, b.keep), "same seed, different kept positions"
        if a.scores is not None:
            assert torch.equal(a.scores.isnan(), b.scores.isnan()) and torch.equal(
                a.scores.nan_to_num(), b.scores.nan_to_num()), "same seed, different scores"
        report.checked.append("determinism")

        if issubclass(cls, ScorePruner):
            scores, meta = cls(opts).cached_score(data, ctx_a)
            if meta.get("cache") == "off":
                report.skipped["score cache"] = "score_key() is None: scores are not cached"
            else:
                assert meta.get("cache") == "hit", f"a second scoring with the same key missed the cache: {meta}"
                assert a.scores is not None and torch.equal(scores.float().cpu(), a.scores), "cached scores differ"
                report.checked.append("score cache")
    return report


def check_distiller(cls, options: Optional[dict] = None, *, data=None, ipc: int = 2, seed: int = 0,
                    budget: Optional[str] = None, work_dir=None, context: Optional[dict] = None,
                    resume: bool = True) -> CheckReport:
    """Check that the distiller class ``cls`` behaves as the host expects (see the module docstring).

    ``options`` should make it fast (a few iterations); ``resume=False`` skips the
    kill-and-resume run (it costs two more distillations).
    """
    import torch

    from pd_plugins.strategies import Distiller
    from pd_plugins.types import DistillResult

    report = CheckReport(_name(cls, Distiller, "distiller"))
    opts = _check_options(cls, options, budget, report)
    rec = cls.recommended_keep_for(opts)
    assert rec is None or 0.0 < float(rec) <= 1.0, f"{cls.__name__}.recommended_keep_for returned {rec!r}"
    assert isinstance(cls.uses_real_init(opts), bool), "uses_real_init must return a bool"
    report.checked.append("contracts")
    data = data if data is not None else tiny_splits().train
    with _workdir(work_dir) as root:
        def ctx(name: str, **kw):
            return make_context(root / name, seed=seed, stage="distill", **{**(context or {}), **kw})

        a = cls(opts).distill(data, ipc, ctx("a"), data)
        assert isinstance(a, DistillResult), f"distill() returned {type(a).__name__}, not DistillResult"
        _check_distill_result(a, data, ipc, cls.name)
        report.checked.append("result")
        b = cls(opts).distill(data, ipc, ctx("b"), data)
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels), "same seed, different result"
        assert a.lr == b.lr, "same seed, different learned lr"
        report.checked.append("determinism")
        if resume:
            _check_resume(cls, opts, data, ipc, a, ctx, report)
        else:
            report.skipped["resume"] = "resume=False"
    return report


def check_evaluator(cls, options: Optional[dict] = None, *, splits=None, seed: int = 0, budget: Optional[str] = None,
                    work_dir=None) -> CheckReport:
    """Options, determinism and the :class:`~pd_plugins.EvalResult` of the evaluator class ``cls``."""
    from pd_plugins.strategies import Evaluator
    from pd_plugins.types import EvalResult

    report = CheckReport(_name(cls, Evaluator, "evaluator"))
    opts = _check_options(cls, options, budget, report)
    splits = splits if splits is not None else tiny_splits()
    with _workdir(work_dir) as root:
        res = [cls(opts).evaluate(splits.train, splits.test, make_context(root / s, seed=seed, stage="eval"))
               for s in ("a", "b")]
    assert all(isinstance(r, EvalResult) for r in res), "evaluate() must return an EvalResult"
    assert res[0].accs and all(0.0 <= a <= 1.0 for a in res[0].accs), f"accuracies out of [0, 1]: {res[0].accs}"
    json.dumps(res[0].to_json(), default=str)
    report.checked.append("result")
    assert list(res[0].accs) == list(res[1].accs), "same seed, different accuracies"
    report.checked.append("determinism")
    return report


def check_dataset(factory, root: Optional[str] = None, **options: Any) -> CheckReport:
    """The splits of a dataset ``factory(root, **options)``: types, shapes, labels, finite images, determinism."""
    import torch

    from pd_plugins.types import DataSplits, ImageDataset

    report = CheckReport(getattr(factory, "__name__", repr(factory)))
    a, b = factory(root, **options), factory(root, **options)
    assert isinstance(a, DataSplits), f"the factory returned {type(a).__name__}, not DataSplits"
    for split in ("train", "test"):
        d = getattr(a, split)
        assert isinstance(d, ImageDataset), f"{split} is {type(d).__name__}, not ImageDataset"
        assert d.pixels.dim() == 4 and len(d) == d.pixels.shape[0] > 0, f"{split}: pixels must be (N, C, H, W)"
        assert d.hard_labels.dtype == torch.long and int(d.hard_labels.min()) >= 0
        assert int(d.hard_labels.max()) < d.num_classes, f"{split}: a label >= num_classes"
        assert len(d.mean) == len(d.std) == d.channels, f"{split}: mean/std need one value per channel"
        assert d.index.shape == (len(d),), f"{split}: index needs one source position per sample"
        assert torch.isfinite(d.images(slice(0, 64))).all(), f"{split}: images() is not finite"
    assert a.train.channels == a.test.channels and a.train.im_size == a.test.im_size
    assert a.train.num_classes == a.test.num_classes
    report.checked.append("splits")
    assert a.train.fingerprint() == b.train.fingerprint(), "two loads gave different train splits"
    report.checked.append("determinism")
    return report


# ----------------------------------------------------------------------------------------------
# parts


def _name(cls, base, kind: str) -> str:
    from pd_plugins._registry import normalise_name

    assert isinstance(cls, type) and issubclass(cls, base), f"{cls!r} is not a pd_plugins.{base.__name__} subclass"
    assert cls.kind() == kind, f"{cls.__name__}.kind() is {cls.kind()!r}, not {kind!r}"
    assert cls.name and normalise_name(cls.name) == cls.name, f"{cls.__name__}.name {cls.name!r} is not kebab-case"
    return cls.name


def _check_options(cls, options: Optional[dict], budget: Optional[str], report: CheckReport):
    from pd_plugins.errors import OptionsError
    from pd_plugins.options import as_dict, describe

    assert dataclasses.is_dataclass(cls.Options), f"{cls.__name__}.Options must be a dataclass"
    defaults = cls.resolve_options(None)
    as_dict(defaults)
    describe(cls.Options)
    for name in cls.budgets:
        cls.resolve_options(None, name)
    _raises(OptionsError, "an unknown option", cls.resolve_options, {"no_such_option_pd_check": 1})
    report.checked.append("options")
    bad = _mistyped(cls.Options)
    if bad is None:
        report.skipped["bad option value"] = "no bool/int/float option to mistype"
    else:
        _raises(OptionsError, f"a mistyped value of {bad!r}", cls.resolve_options, {bad: "not-a-value"})
        report.checked.append("bad option value")
    return cls.resolve_options(options, budget)


def _raises(exc: type, what: str, fn, *args) -> None:
    try:
        fn(*args)
    except exc:
        return
    raise AssertionError(f"{what} did not raise {exc.__name__}")


def _mistyped(options_cls) -> Optional[str]:
    import typing

    hints = typing.get_type_hints(options_cls)
    for f in dataclasses.fields(options_cls):
        if hints.get(f.name) in (bool, int, float):
            return f.name
    return None


def _check_prune_result(res, data, name: str) -> None:
    import torch

    keep, n = res.keep, len(data)
    assert keep.dtype == torch.long and keep.dim() == 1, "PruneResult.keep must be a 1-D int64 tensor"
    assert 0 < keep.numel() <= n, f"kept {keep.numel()} of {n} samples"
    assert keep.unique().numel() == keep.numel() and torch.equal(keep, keep.sort().values), "keep must be sorted, unique"
    assert int(keep.min()) >= 0 and int(keep.max()) < n, "kept positions out of range"
    if res.scores is not None:
        assert res.scores.shape == (n,), f"scores must have one value per sample, got {tuple(res.scores.shape)}"
    assert res.pruner == name, f"PruneResult.pruner is {res.pruner!r}, not {name!r}"
    json.dumps({"options": res.options, "meta": res.meta}, default=str)
    assert torch.equal(res.apply(data).labels, data.labels[keep])


def _check_distill_result(res, data, ipc: int, name: str) -> None:
    import torch

    k = data.num_classes
    shape = (k * ipc, data.channels, *data.im_size)
    assert tuple(res.images.shape) == shape, f"images are {tuple(res.images.shape)}, expected {shape}"
    assert res.images.is_floating_point() and torch.isfinite(res.images).all(), "images must be finite floats"
    assert res.ipc == ipc and res.distiller == name, f"ipc/distiller fields are {res.ipc}/{res.distiller!r}"
    if res.soft:
        assert tuple(res.labels.shape) == (k * ipc, k), f"soft labels must be ({k * ipc}, {k})"
        assert torch.isfinite(res.labels).all()
    else:
        assert res.labels.dtype == torch.long and tuple(res.labels.shape) == (k * ipc,)
        assert torch.bincount(res.labels, minlength=k).tolist() == [ipc] * k, "labels must hold ipc per class"
    assert res.lr is None or res.lr > 0, f"learned lr {res.lr} must be > 0"
    json.dumps({"options": res.options, "meta": res.meta, "history": res.history}, default=str)
    syn = res.as_dataset(data)
    assert len(syn) == k * ipc and syn.normalized


class _Killed(BaseException):
    """Raised from the log callback to stop a distillation after its first checkpoint."""


def _check_resume(cls, opts, data, ipc: int, reference, ctx, report: CheckReport) -> None:
    import torch

    run = ctx("resume", checkpoint_every=1, cache_dir=ctx("a").cache_dir)

    def kill(step: int, metrics: dict) -> None:
        if run.checkpoint_path.exists():
            raise _Killed()

    run.on_log = kill
    try:
        cls(opts).distill(data, ipc, run, data)
    except _Killed:
        pass
    else:
        why = "no checkpoint written" if not run.checkpoint_path.exists() else "no log call after the first checkpoint"
        report.skipped["resume"] = why + " (set checkpoints with ctx.save_checkpoint and log with ctx.log)"
        return
    run.on_log = None
    resumed = cls(opts).distill(data, ipc, run, data)
    assert torch.equal(resumed.images, reference.images), "the resumed run differs from an uninterrupted one"
    assert torch.equal(resumed.labels, reference.labels) and resumed.lr == reference.lr
    assert not run.checkpoint_path.exists(), "a finished distillation must clear its checkpoint"
    report.checked.append("resume")


class _workdir:
    """``work_dir`` as a Path, or a temporary folder removed afterwards; ``PD_CACHE_DIR`` is unset
    meanwhile, so each run of a check uses its own context's cache (a shared one would make the
    determinism check read back the first run's scores)."""

    def __init__(self, work_dir):
        self.given = work_dir
        self.tmp = None
        self.env = None

    def __enter__(self) -> Path:
        self.env = os.environ.pop("PD_CACHE_DIR", None)
        if self.given is not None:
            return Path(self.given)
        self.tmp = tempfile.TemporaryDirectory(prefix="pd-check-")
        return Path(self.tmp.name)

    def __exit__(self, *exc) -> None:
        if self.env is not None:
            os.environ["PD_CACHE_DIR"] = self.env
        if self.tmp is not None:
            self.tmp.cleanup()


# ----------------------------------------------------------------------------------------------
# pytest fixtures


@pytest.fixture(name="tiny_splits")
def _tiny_splits_fixture():
    """:func:`tiny_splits` with its defaults: 3 classes, 10 train and 4 test images each."""
    return tiny_splits()


@pytest.fixture
def tiny_dataset():
    """The train split of :func:`tiny_splits`: 3 classes x 10 grey 8x8 images."""
    return tiny_splits().train


@pytest.fixture
def run_context(tmp_path):
    """A CPU RunContext, seed 0, stage ``check``, checkpoints and score cache under ``tmp_path``."""
    return make_context(tmp_path)


@pytest.fixture
def ctx(run_context):
    """Alias of ``run_context``."""
    return run_context


@pytest.fixture
def pd_host():
    """A fresh plugin host with only the built-ins, installed as the process-wide host for the test;
    register your plugin with ``pd_host.register(module, "name")``."""
    from pd_plugins import plugins

    old = plugins._host
    h = plugins.Host(load_entrypoints=False)
    plugins.set_host(h)
    try:
        yield h
    finally:
        plugins.set_host(old)
