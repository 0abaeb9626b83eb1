"""The run directory: its config, ``manifest.json`` (stage fingerprints and done marks), the log,
the claim that one process works in it at a time, and the ``--overwrite``/resume rules.

A stage counts as done only when its artifact exists *and* its manifest entry holds the current
fingerprint, so a killed run resumes at the first unfinished stage, and a finished one is never
recomputed or overwritten without ``overwrite=True``.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from pd_plugins.errors import DataError, StageExistsError
from pd_plugins.io import atomic_write_json, atomic_write_text, read_json
from pd_plugins.paths import expect_output_dir

if TYPE_CHECKING:  # pragma: no cover
    from pd_plugins.config import RunConfig

ARTIFACTS = {"prune": "prune.pt", "distill": "distill.pt", "eval": "eval.json"}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def default_out(cfg: "RunConfig") -> str:
    """``runs/<dataset>-<pruner>-<distiller>-ipc<n>-s<seed>-<time>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return str(Path("runs") / f"{cfg.dataset}-{cfg.pruner}-{cfg.distiller}-ipc{cfg.ipc}-s{cfg.seed}-{stamp}")


def load_run_config(run_dir: str | os.PathLike) -> "RunConfig":
    """The :class:`RunConfig` stored in a run directory's ``config.json``."""
    from pd_plugins.config import RunConfig

    values = read_json(Path(run_dir) / "config.json", "run config")
    values.pop("resolved", None)
    return RunConfig.from_dict(values)


def package_versions() -> dict:
    """The versions recorded in the manifest: pd_plugins, torch, kornia, python."""
    import platform

    import kornia
    import torch

    from pd_plugins._version import __version__

    return {"pd_plugins": __version__, "torch": torch.__version__, "kornia": kornia.__version__,
            "python": platform.python_version()}


#: config.json entries that describe a run without defining it: not compared on resume
_NOT_COMPARED = ("out", "progress")
_RESOLVED_NOT_COMPARED = ("mode_source",)  # why the mode was chosen (absent in folders of older versions)


def config_differences(old: dict, new: dict) -> list[str]:
    """The top-level keys in which two ``config.json`` dicts define different runs (sorted)."""
    def defining(cfg: dict) -> dict:
        out = {k: v for k, v in cfg.items() if k not in _NOT_COMPARED}
        if isinstance(out.get("resolved"), dict):
            out["resolved"] = {k: v for k, v in out["resolved"].items() if k not in _RESOLVED_NOT_COMPARED}
        return out

    a, b = defining(old), defining(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _logged_at_or_after(line: str, stage: str, step: int) -> bool:
    """Is this log.jsonl line a row of ``stage`` at iteration ``step`` or later?"""
    try:
        row = json.loads(line)
    except ValueError:
        return True  # a torn last line from a killed process
    return row.get("stage") == stage and isinstance(row.get("step"), int) and row["step"] >= step


class RunDirectory:
    """One run's folder: ``config.json``, ``manifest.json``, the stage artifacts and ``log.jsonl``."""

    def __init__(self, path, *, overwrite: bool = False, lock_wait: float = 0.0):
        """``lock_wait``: seconds to wait for another process that holds the directory (0: refuse at once)."""
        self.path = Path(path)
        self.overwrite = overwrite
        self.lock_wait = lock_wait
        expect_output_dir(self.path, "output directory", writable=False)  # writability: prepare's probe

    # -- manifest ----------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def manifest(self) -> dict:
        return read_json(self.manifest_path, "manifest") if self.manifest_path.exists() else {}

    def artifact(self, stage: str) -> Path:
        return self.path / ARTIFACTS[stage]

    def stage_done(self, stage: str, fingerprint: str) -> bool:
        entry = self.manifest().get("stages", {}).get(stage)
        return bool(entry) and entry.get("fingerprint") == fingerprint and self.artifact(stage).exists()

    def mark_done(self, stage: str, fingerprint: str, extra: Optional[dict] = None) -> None:
        man = self.manifest()
        man.setdefault("stages", {})[stage] = {"fingerprint": fingerprint, "artifact": ARTIFACTS[stage],
                                               "finished": _now(), **(extra or {})}
        atomic_write_json(self.manifest_path, man)

    # -- create / resume -----------------------------------------------------------------
    def is_fresh(self) -> tuple[bool, bool]:
        """``(fresh, existed_empty)``: will :meth:`prepare` start from nothing, and was the folder there empty?"""
        existed_empty = self.path.is_dir() and not any(self.path.iterdir())
        return existed_empty or self.overwrite or not self.path.exists(), existed_empty

    def prepare(self, stages: tuple[str, ...], config: dict, stamp: dict) -> None:
        """Create the directory, or check that an existing one holds this ``config`` and may be resumed;
        then write ``config.json`` and merge ``stamp`` (versions, plugins) into the manifest."""
        out = self.path
        cfg_path = out / "config.json"
        if out.exists() and any(out.iterdir()):
            if self.overwrite:
                shutil.rmtree(out)
            elif cfg_path.exists():
                diff = config_differences(read_json(cfg_path, "config"), config)
                if diff:
                    raise StageExistsError(
                        f"run directory {out} holds a different run (differs in: {', '.join(diff)}); "
                        "use --overwrite or another --out"
                    )
                if all(self.manifest().get("stages", {}).get(s) for s in stages):
                    raise StageExistsError(f"run directory {out} is already finished; use --overwrite to redo it")
            elif not self.manifest().get("from"):  # "from": seeded with prune.pt by `pd-run distill --from`
                raise StageExistsError(
                    f"output directory {out} is not empty and holds no run; use --overwrite or another --out")
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".write-probe"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise DataError(f"cannot write to output directory {out}: {exc.strerror or exc}") from None
        atomic_write_json(cfg_path, config)
        man = self.manifest()
        man.update({**stamp, "created": man.get("created") or _now()})
        man.setdefault("stages", {})
        atomic_write_json(self.manifest_path, man)

    def discard(self, keep_dir: bool) -> None:
        """Remove what this invocation put into the directory (the directory too unless ``keep_dir``)."""
        if self.path.exists():
            shutil.rmtree(self.path)
            if keep_dir:
                self.path.mkdir()

    @contextlib.contextmanager
    def lock(self):
        """Hold the claim on the directory (a file beside it): one process works in it at a time."""
        from pd_plugins.locks import FileLock

        claim = FileLock(self.path.parent / f".{self.path.name}.lock", what=f"run directory {self.path}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            claim.acquire(self.lock_wait)
        except OSError as exc:
            raise DataError(f"cannot write to output directory {self.path}: {exc.strerror or exc}") from None
        try:
            yield claim
        finally:
            claim.release()

    # -- log ---------------------------------------------------------------------------
    def append_log(self, stage: str, step: int, metrics: dict) -> None:
        line = json.dumps({"stage": stage, "step": step, **metrics}, default=str)
        with open(self.path / "log.jsonl", "a") as fh:
            fh.write(line + "\n")

    def rewind_log(self, stage: str, step: int) -> None:
        """Drop ``stage``'s rows from iteration ``step`` on (a resumed checkpoint logs them again)."""
        path = self.path / "log.jsonl"
        if not path.exists():
            return
        lines = path.read_text().splitlines()
        kept = [ln for ln in lines if not _logged_at_or_after(ln, stage, step)]
        if len(kept) != len(lines):
            atomic_write_text(path, "".join(ln + "\n" for ln in kept))
