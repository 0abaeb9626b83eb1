"""Executors: run independent tasks in this process, in a local process pool, or on a Ray cluster.

One interface serves sweeps (one task per cell) and the embarrassingly parallel parts of
stages (MTT experts, scorer networks, evaluation repeats, cross-architecture networks).
A task is ``(key, args)`` for a module-level function ``fn`` (it travels by reference to
the workers), called as ``fn(*shared, *args)``; ``shared`` goes to the workers once per
map (Ray's object store) rather than once per task where the executor can. Results come
back as ``(key, result)`` in completion order.

Results are identical on every executor because a task draws all randomness from the run
seed and its own key (``ctx.generator(..., key)`` / ``ctx.fork_rng(..., key)``), never from
the worker or the order, and every worker runs torch with an explicit thread count.

Stages receive the executor through ``RunContext.executor`` and call :func:`run_tasks`,
which strips what cannot travel (log callbacks, progress bars) from the context it sends.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator, Optional

from pd_plugins.errors import OptionsError

KINDS = ("none", "local", "ray")


@dataclass(frozen=True)
class Resources:
    """What one task asks for: CPUs, GPUs, memory (GiB) and torch threads (default: its CPUs)."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: Optional[float] = None
    threads: Optional[int] = None

    def __post_init__(self):
        if self.cpus <= 0 or self.gpus < 0 or (self.memory_gb is not None and self.memory_gb <= 0):
            raise OptionsError(f"per-task resources must be positive (cpus {self.cpus}, gpus {self.gpus}, "
                               f"memory {self.memory_gb} GiB)")
        if self.threads is not None and self.threads < 1:
            raise OptionsError(f"threads per task must be >= 1, got {self.threads}")

    @property
    def torch_threads(self) -> int:
        return int(self.threads or max(1, int(self.cpus)))


def call_task(fn: Callable, threads: Optional[int], shared: tuple, args: tuple) -> Any:
    """What a worker runs: keep freed memory, set torch's thread count, then ``fn(*shared, *args)``."""
    from pd_plugins.training.allocator import keep_freed_memory

    keep_freed_memory()
    if threads:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    return fn(*shared, *args)


class Executor:
    """Runs ``fn(*shared, *args)`` for every ``(key, args)`` task; yields ``(key, result)``.

    A task's exception is raised from :meth:`map` (with its original type), or yielded as the
    result when ``return_exceptions`` is set (a sweep records failed cells and goes on).
    """

    kind = "none"
    remote = False  # tasks run in other processes (the context they get is stripped)

    def node_of(self, key) -> Optional[str]:
        """The cluster node that ran task ``key`` of the latest map (None off a cluster)."""
        return None

    @property
    def tasks_per_node(self) -> dict[str, int]:
        """How many tasks each cluster node has finished so far (empty off a cluster)."""
        return {}

    def map(self, fn: Callable, tasks: Iterable[tuple[Any, tuple]], shared: tuple = (), *,
            return_exceptions: bool = False) -> Iterator[tuple[Any, Any]]:
        for key, args in tasks:
            try:
                yield key, fn(*shared, *args)
            except Exception as exc:  # noqa: BLE001 - handed to the caller as asked
                if not return_exceptions:
                    raise
                yield key, exc

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {"executor": self.kind}

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InlineExecutor(Executor):
    """Sequential, in this process (the reference path every other executor must match)."""


class LocalExecutor(Executor):
    """A pool of ``workers`` spawned processes on this machine."""

    kind = "local"
    remote = True

    def __init__(self, workers: int, resources: Resources = Resources()):
        if workers < 1:
            raise OptionsError(f"--workers must be >= 1, got {workers}")
        if resources.gpus:
            raise OptionsError("the local executor does not place tasks on GPUs; use --executor ray for per-task GPUs")
        self.workers, self.resources = workers, resources
        self._pool = None

    def _get_pool(self):
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def map(self, fn, tasks, shared=(), *, return_exceptions=False):
        from concurrent.futures import as_completed

        pool = self._get_pool()
        threads = self.resources.torch_threads
        futures = {pool.submit(call_task, fn, threads, shared, args): key for key, args in tasks}
        try:
            for fut in as_completed(futures):
                try:
                    result = fut.result()
                except Exception as exc:  # noqa: BLE001 - the task's error, or a worker that died
                    if not return_exceptions:
                        raise
                    result = exc
                yield futures[fut], result
        finally:
            for fut in futures:
                fut.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def describe(self) -> dict:
        return {"executor": "local", "workers": self.workers, "threads": self.resources.torch_threads}


def import_ray():
    """``ray``, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise OptionsError("--executor ray needs Ray: pip install 'pd-plugins[ray]'") from None
    return ray


# environment the tasks need wherever they run (plugin selection, shared cache, strictness)
FORWARDED_ENV = ("PD_LOAD_PLUGINS", "PD_STRICT_PLUGINS", "PD_CACHE_DIR")


def call_task_on_node(fn: Callable, threads: Optional[int], shared: tuple, args: tuple) -> tuple[str, Any]:
    """:func:`call_task` in a Ray worker, returning ``(id of the node it ran on, result)``."""
    import ray

    return ray.get_runtime_context().get_node_id(), call_task(fn, threads, shared, args)


class RayExecutor(Executor):
    """Tasks on a Ray cluster: the one at ``address`` (or ``RAY_ADDRESS``), else a local one.

    Each task asks Ray for ``resources`` (CPUs, GPUs, memory), so on a GPU cluster every
    task gets its own GPU. A task whose worker or node dies is retried up to ``max_retries``
    times (on the nodes still alive); the work it depends on (run folders, caches) resumes
    from what was written. The executor records the node that ran each task (:meth:`node_of`,
    :attr:`tasks_per_node`).
    """

    kind = "ray"
    remote = True

    def __init__(self, workers: int = 1, address: Optional[str] = None, resources: Resources = Resources(),
                 max_retries: int = 3):
        ray = import_ray()
        self.ray, self.resources, self.max_retries = ray, resources, max_retries
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.workers = workers
        self._started = False
        self._nodes: dict[Any, str] = {}  # task key -> node, for the latest map
        self._per_node: dict[str, int] = {}
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        if not ray.is_initialized():
            common = dict(logging_level="WARNING", log_to_driver=False, ignore_reinit_error=True,
                          runtime_env={"env_vars": env} if env else None)
            try:
                if self.address:  # an existing cluster sizes itself: no num_cpus/num_gpus here
                    ray.init(address=self.address, **common)
                else:
                    ray.init(num_cpus=max(1, int(workers * resources.cpus)), include_dashboard=False, **common)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
                raise OptionsError(f"cannot start or join {where}: {first}") from None
            self._started = True
        opts: dict[str, Any] = {"num_cpus": resources.cpus, "num_gpus": resources.gpus,
                                "max_retries": max_retries, "retry_exceptions": False}
        if resources.memory_gb:
            opts["memory"] = int(resources.memory_gb * 2 ** 30)
        self._remote = ray.remote(call_task_on_node).options(**opts)

    def map(self, fn, tasks, shared=(), *, return_exceptions=False):
        ray = self.ray
        shared_ref = ray.put(tuple(shared))
        threads = self.resources.torch_threads
        refs = {self._remote.remote(fn, threads, shared_ref, args): key for key, args in tasks}
        self._nodes = {}
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    try:
                        node, result = ray.get(ref)
                        self._nodes[refs[ref]] = node
                        self._per_node[node] = self._per_node.get(node, 0) + 1
                    except Exception as exc:  # noqa: BLE001 - the task's error (as its own type) or a lost worker
                        if not return_exceptions:
                            raise
                        result = exc
                    yield refs[ref], result
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def node_of(self, key) -> Optional[str]:
        return self._nodes.get(key)

    @property
    def tasks_per_node(self) -> dict[str, int]:
        return dict(self._per_node)

    def close(self) -> None:
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()
        self._started = False

    def describe(self) -> dict:
        return {"executor": "ray", "address": self.address or "local", "cpus_per_task": self.resources.cpus,
                "gpus_per_task": self.resources.gpus, "memory_gb_per_task": self.resources.memory_gb,
                "threads": self.resources.torch_threads, "tasks_per_node": self.tasks_per_node}


def driver_output(kind: str):
    """While tasks run: Ray's driver prints notices (e.g. a worker that died) on stdout, so route
    stdout to stderr for ``ray``, keeping stdout for the command's own output (``--json``)."""
    import contextlib
    import sys

    return contextlib.redirect_stdout(sys.stderr) if kind == "ray" else contextlib.nullcontext()


def make_executor(kind: str = "none", *, workers: Optional[int] = None, address: Optional[str] = None,
                  resources: Optional[Resources] = None) -> Executor:
    """``none`` (sequential), ``local`` (process pool of ``workers``) or ``ray`` (cluster at ``address``)."""
    resources = resources or Resources()
    if kind not in KINDS:
        raise OptionsError(f"unknown executor {kind!r}; use one of {', '.join(KINDS)}")
    if address and kind != "ray":
        raise OptionsError("--address needs --executor ray")
    if kind == "ray":
        return RayExecutor(workers or os.cpu_count() or 1, address, resources)
    if kind == "local":
        n = workers or os.cpu_count() or 1
        return LocalExecutor(n, resources) if n > 1 else InlineExecutor()
    return InlineExecutor()


INLINE = InlineExecutor()


def task_context(ctx):
    """The part of a RunContext a worker can use: no log callbacks, progress bars or executor."""
    return replace(ctx, on_log=None, on_rewind=None, executor=None, progress_enabled=False)


def run_tasks(ctx, fn: Callable, tasks: Iterable[tuple[Any, tuple]], shared: tuple = ()) -> Iterator[tuple[Any, Any]]:
    """Run ``fn(ctx, *shared, *args)`` for every ``(key, args)`` on the context's executor (inline by default)."""
    executor = ctx.executor or INLINE
    sent = task_context(ctx) if executor.remote else ctx
    return executor.map(fn, tasks, (sent, *shared))
