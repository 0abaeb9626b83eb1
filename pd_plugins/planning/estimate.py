"""A run's estimate: what each stage of a resolved run costs in memory and time, before it runs.

The host asks each strategy's ``cost`` hook (:mod:`pd_plugins.planning.costs`) for its stages, with
stand-in inputs of the real shapes (the pruned pool is a class-balanced slice of the training set of
the size the keep ratio gives; the synthetic set is ``ipc`` real images per class), then

* **memory**: a stage's peak is its resident tensors plus, in its largest phase (in all of them
  where the allocator does not reuse freed blocks across phases), the graphs its passes hold together
  and the largest working set one of them streams through on top
  (:func:`~pd_plugins.planning.footprint.pass_bytes`), scaled by :data:`ALLOCATOR_SLACK` for what the
  allocator keeps beyond the live tensors;
* **time** (``timed=True``, ``pd-run plan``): each declared unit of work is run once as a warm-up
  and then timed, at the real shapes, and multiplied by its count.

A strategy without a hook gets no memory estimate (said in the report); a distiller without one
whose options have ``iterations`` is timed at 1 and 2 iterations instead (a probe-only estimate).
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

# ``run`` arguments are pd_plugins.pipeline.runner.Run objects (not imported: the runner imports this module)
if TYPE_CHECKING:  # pragma: no cover
    from pd_plugins.planning.costs import StageCost, TimedUnit
    from pd_plugins.types import ImageDataset

#: the stages in the order a run reaches them (``experts`` is part of MTT's distill stage)
STAGE_ORDER = ("prune", "experts", "distill", "eval")
#: what the allocator holds beyond the live tensors at a peak, as a factor on the estimate: glibc
#: keeping freed memory (pd-run's default on Linux, pd_plugins.training.allocator) leaves blocks a
#: later tensor of another size cannot reuse -- a second identical pass grew the resident set by
#: 12-40 % (ConvNet at MNIST and digits size, order 1 and 2), an unrolled MTT iteration by 23 %;
#: CUDA's caching allocator rounds and caches blocks too
ALLOCATOR_SLACK = {"glibc-keep-freed": 1.25, "system": 1.0, "cuda": 1.1}
#: allocators whose freed blocks a stage's next phase does not fully reuse, so that its phases add up (glibc
#: keeping freed memory: DC on the MNIST subset peaked at 1012 MiB matching alone and at 1170 MiB with its
#: inner-loop training in between, a phase of about 300 MiB whose graphs never coexist with the matching's)
PHASES_ADD_UP = ("glibc-keep-freed",)
#: a unit's first call longer than this is its timing (it pays one-time set-up too, small against it)
SLOW_UNIT_S = 5.0
#: a faster first call is a warm-up; the unit is then timed again while the timings took less than this
#: (at least once, at most 3 times)
TIMING_BUDGET_S = 1.0


@dataclass
class UnitTime:
    """A timed unit: what it is, how many the stage runs, and the seconds one took."""

    what: str
    count: float
    seconds: float

    def to_json(self) -> dict:
        return {"what": self.what, "count": self.count, "seconds_each": round(self.seconds, 6),
                "seconds": round(self.seconds * self.count, 3)}


@dataclass
class StageEstimate:
    """One stage's estimate: peak bytes and what makes them up (None when the strategy declares no
    cost), seconds and the timed units (None when not timed), bytes it stores, and what lowers it."""

    stage: str
    strategy: str
    peak: Optional[int] = None
    parts: dict[str, int] = field(default_factory=dict)
    seconds: Optional[float] = None
    units: list[UnitTime] = field(default_factory=list)
    stored: dict[str, int] = field(default_factory=dict)
    lower: tuple[str, ...] = ()
    note: str = ""

    def to_json(self) -> dict:
        return {"stage": self.stage, "strategy": self.strategy, "peak_bytes": self.peak, "parts": self.parts,
                "seconds": None if self.seconds is None else round(self.seconds, 3),
                "units": [u.to_json() for u in self.units], "stored": self.stored, "lower": list(self.lower),
                "note": self.note}


@dataclass
class RunEstimate:
    """The estimate of a run: its settings, networks (role -> parameters), data bytes and stages."""

    settings: dict
    networks: dict[str, int]
    data: dict[str, Any]
    stages: list[StageEstimate]
    device: str
    allocator: str

    def peak(self) -> tuple[int, Optional[StageEstimate]]:
        """The largest stage peak and its stage (0 and None when no stage declares memory)."""
        known = [s for s in self.stages if s.peak is not None]
        if not known:
            return 0, None
        top = max(known, key=lambda s: s.peak)
        return top.peak, top

    def seconds(self) -> Optional[float]:
        timed = [s.seconds for s in self.stages if s.seconds is not None]
        return sum(timed) if timed else None

    def to_json(self) -> dict:
        peak, stage = self.peak()
        return {"settings": self.settings, "device": self.device, "allocator": self.allocator,
                "networks": self.networks, "data": self.data, "stages": [s.to_json() for s in self.stages],
                "peak_bytes": peak, "peak_stage": stage.stage if stage else None,
                "seconds": None if self.seconds() is None else round(self.seconds(), 3)}


# -- stand-in inputs --------------------------------------------------------------------------
def kept_slice(train: "ImageDataset", keep: float) -> "ImageDataset":
    """The first ``floor(keep * n_c)`` samples (at least 1) of every class: a pool of the pruned size."""
    import torch

    positions = [idx[: max(1, int(keep * idx.numel()))] for idx in train.by_class() if idx.numel()]
    return train.subset(torch.cat(positions).sort().values)


def per_class(data: "ImageDataset", ipc: int) -> "ImageDataset":
    """``ipc`` samples of every class (fewer where a class has fewer), as normalised float32 images: the
    shape of a distilled set."""
    import torch

    positions = torch.cat([idx[:ipc] for idx in data.by_class()])
    chosen = data.subset(positions)
    return dataclasses.replace(chosen, pixels=chosen.images(), normalized=True)


def stand_ins(run) -> dict:
    """The inputs each stage gets, at the real shapes: ``train`` (the pruner's), ``pool`` and ``init_pool``
    (the distiller's), ``synthetic`` and ``test`` (the evaluator's)."""
    splits = run.data()
    train = splits.train
    if run.cfg.subset:
        from pd_plugins.data.subset import read_subset

        pool = read_subset(run.cfg.subset, train).apply(train)
    else:
        pool = train if run.pruner is None else kept_slice(train, run.resolved["keep"])
    data = pool if run.cfg.mode == "pool" else train
    init_pool = pool if run.cfg.mode != "init" else per_class(pool, run.cfg.ipc)
    synthetic = per_class(data, run.cfg.ipc) if run.distiller is not None else pool
    return {"train": train, "pool": data, "init_pool": init_pool, "synthetic": synthetic, "test": splits.test}


def _strategy_costs(run, inputs: dict, stages: tuple[str, ...]) -> list[tuple[str, str, Any]]:
    """``(stage, strategy label, list of StageCost or None)`` for every requested stage with a strategy."""
    cfg, out = run.cfg, []
    if "prune" in stages and run.pruner is not None:
        ctx = _planning_context(run, "prune")
        out.append(("prune", f"pruner {cfg.pruner}", run.pruner.cost(inputs["train"], run.resolved["keep"], ctx)))
    if "distill" in stages and run.distiller is not None:
        ctx = _planning_context(run, "distill")
        out.append(("distill", f"distiller {cfg.distiller}",
                    run.distiller.cost(inputs["pool"], cfg.ipc, ctx, inputs["init_pool"])))
    if "eval" in stages and run.evaluator is not None:
        ctx = _planning_context(run, "eval")
        out.append(("eval", f"evaluator {cfg.evaluator}",
                    run.evaluator.cost(inputs["synthetic"], inputs["test"], ctx)))
    return out


def _planning_context(run, stage: str):
    """The stage's context without the run directory: nothing a probe does is logged or checkpointed."""
    return dataclasses.replace(run.context(stage), work_dir=None, on_log=None, on_rewind=None,
                               progress_enabled=False, executor=None)


# -- memory -------------------------------------------------------------------------------------
def stage_memory(cost: "StageCost", allocator: str) -> tuple[int, dict[str, int]]:
    """``(peak bytes, parts)``: resident tensors plus the graphs each phase holds and the largest working set
    one of its passes streams through on top, for the largest phase (every phase where the ``allocator``
    does not reuse one phase's blocks for the next, :data:`PHASES_ADD_UP`), times its :data:`ALLOCATOR_SLACK`."""
    from pd_plugins.planning.footprint import pass_bytes

    phases: dict[str, list] = {}
    for p in cost.passes:
        phases.setdefault(p.phase, []).append(p)
    per_phase = []
    for phase, passes in phases.items():
        where = f" [{phase or 'main'}]" if len(phases) > 1 else ""
        sizes = [pass_bytes(p) for p in passes]
        held = {f"{p.role} graphs ({p.held} x batch {p.batch}, order {p.order}){where}": size[0]
                for p, size in zip(passes, sizes) if p.held}
        top = max(range(len(passes)), key=lambda i: sizes[i][1])
        p = passes[top]
        per_phase.append({**held, f"{p.role} working set (batch {p.batch}, order {p.order}){where}": sizes[top][1]})
    if allocator in PHASES_ADD_UP:
        graphs = {k: v for phase in per_phase for k, v in phase.items()}
    else:
        graphs = max(per_phase, key=lambda phase: sum(phase.values()), default={})
    parts = {**cost.resident, **graphs}
    peak = sum(parts.values())
    slack = ALLOCATOR_SLACK.get(allocator, 1.0)
    if slack != 1.0 and peak:
        parts["allocator slack"] = int(peak * (slack - 1.0))
        peak = sum(parts.values())
    return peak, parts


def allocator_name(device: str) -> str:
    """The allocator a run on ``device`` uses in this process: ``cuda``, ``glibc-keep-freed`` or ``system``."""
    from pd_plugins.training import allocator
    from pd_plugins.training.device import is_cuda

    return "cuda" if is_cuda(device) else allocator.current()["malloc"]


# -- time -----------------------------------------------------------------------------------------
def time_unit(unit: "TimedUnit", device: str) -> float:
    """Seconds one ``unit.run()`` takes. The first call builds the unit and sets its kernels up; when it took
    longer than :data:`SLOW_UNIT_S` it is the timing (one iteration of a slow unit), else the unit is timed
    again, up to 3 times while :data:`TIMING_BUDGET_S` lasts, and the median counts."""
    sync = _synchronizer(device)
    t = time.perf_counter()
    unit.run()
    sync()
    first = time.perf_counter() - t
    if first > SLOW_UNIT_S:
        return first
    times: list[float] = []
    while not times or (len(times) < 3 and sum(times) < TIMING_BUDGET_S):
        t = time.perf_counter()
        unit.run()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _synchronizer(device: str):
    from pd_plugins.training.device import is_cuda

    if is_cuda(device):
        import torch

        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def probe_iterations(run, inputs: dict, label: str) -> StageEstimate:
    """A probe-only estimate of a distiller that declares no cost: :meth:`distill` timed at 1 and 2
    iterations (per iteration: the difference; setup: the rest), in a throw-away cache directory."""
    import tempfile

    distiller, o = run.distiller, run.distiller.options
    if "iterations" not in {f.name for f in dataclasses.fields(o)}:
        return StageEstimate("distill", label, note=f"{label} declares no cost and has no iterations option: "
                                                    "not estimated")
    seconds = []
    with tempfile.TemporaryDirectory(prefix="pd-plan-") as tmp:
        ctx = dataclasses.replace(_planning_context(run, "distill"), cache_dir=tmp)
        for n in (1, 2):
            probe = type(distiller)(dataclasses.replace(o, iterations=n))
            t = time.perf_counter()
            probe.distill(inputs["pool"], run.cfg.ipc, ctx, inputs["init_pool"])
            seconds.append(time.perf_counter() - t)
    per = max(0.0, seconds[1] - seconds[0])
    setup = max(0.0, seconds[0] - per)
    return StageEstimate("distill", label, seconds=setup + per * o.iterations,
                         units=[UnitTime("setup (probe: 1 and 2 iterations)", 1, setup),
                                UnitTime("iteration", o.iterations, per)],
                         note=f"{label} declares no cost: time from a probe of 1 and 2 iterations, memory not estimated")


# -- the whole run ------------------------------------------------------------------------------------
def estimate_run(run, stages: tuple[str, ...] = ("prune", "distill", "eval"), *,
                 timed: bool = True) -> RunEstimate:
    """The estimate of ``run``'s ``stages``; ``timed``: also run each stage's timed units (seconds).

    The caller's global RNG is left as it was (building networks draws from it)."""
    import torch

    from pd_plugins.training.device import is_cuda

    devices = [torch.device(run.device).index or 0] if is_cuda(run.device) else []
    with torch.random.fork_rng(devices=devices):
        inputs = stand_ins(run)
        costs = _strategy_costs(run, inputs, stages)
        name = allocator_name(run.device)
        estimates, networks = [], {}
        for stage, label, declared in costs:
            if declared is None:
                estimates.append(probe_iterations(run, inputs, label) if stage == "distill" and timed else
                                 StageEstimate(stage, label, note=f"{label} declares no cost: not estimated"))
                continue
            for cost in declared:
                estimates.append(_stage_estimate(cost, label, name, run.device, timed))
                for p in cost.passes:
                    networks.setdefault(p.role, sum(t.numel() for t in p.net.parameters()))
    estimates.sort(key=lambda s: STAGE_ORDER.index(s.stage) if s.stage in STAGE_ORDER else len(STAGE_ORDER))
    cfg = run.cfg
    settings = {"dataset": cfg.dataset, "pruner": cfg.pruner, "keep": run.resolved["keep"], "mode": cfg.mode,
                "distiller": cfg.distiller, "ipc": cfg.ipc, "model": cfg.model, "evaluator": cfg.evaluator,
                "budget": run.resolved["budget"], "precision": run.resolved["precision"]}
    return RunEstimate(settings=settings, networks=networks, data=_data_bytes(inputs), stages=estimates,
                       device=run.device, allocator=name)


def _stage_estimate(cost: "StageCost", label: str, allocator: str, device: str, timed: bool) -> StageEstimate:
    peak, parts = stage_memory(cost, allocator)
    units = [UnitTime(u.what, u.count, time_unit(u, device) if u.count else 0.0) for u in cost.units] if timed else []
    seconds = sum(u.seconds * u.count for u in units) if timed else None
    return StageEstimate(cost.stage, label, peak=peak, parts=parts, seconds=seconds, units=units,
                         stored=dict(cost.stored), lower=tuple(cost.lower), note=cost.note)


def _data_bytes(inputs: dict) -> dict:
    def stored(data) -> int:
        return sum(t.numel() * t.element_size() for t in (data.pixels, data.labels, data.index))

    train, pool = inputs["train"], inputs["pool"]
    return {"train_samples": len(train), "train_bytes": stored(train), "test_bytes": stored(inputs["test"]),
            "pool_samples": len(pool), "pool_bytes": stored(pool),
            "sample_shape": [train.channels, *train.im_size], "pixel_dtype": str(train.pixels.dtype)}


def fmt_bytes(n: Optional[float]) -> str:
    """``1.5 GiB``, ``320 MiB``, ``12 KiB``."""
    if n is None:
        return "-"
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def fmt_seconds(s: Optional[float]) -> str:
    if s is None:
        return "-"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.3g} s"
