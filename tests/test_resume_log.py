"""A distill stage killed after a checkpoint resumes there and logs every iteration once."""
from __future__ import annotations

import json

import pytest


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing in the runner handles it."""


def _rows(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_resumed_distill_logs_each_iteration_once(tmp_path, monkeypatch):
    from pd_plugins.distillation import objectives
    from pd_plugins.config import RunConfig
    from pd_plugins.pipeline.runner import Run

    cfg = dict(dataset="digits", distiller="dm", ipc=1, evaluator="none", budget="quick", checkpoint_every=3,
               distiller_options={"iterations": 8, "log_every": 1, "batch_real": 16}, progress=False,
               out=str(tmp_path / "run"))
    real = objectives.run_iteration

    def dying(objective, images, optimiser, it, steps=None):
        if it == 5:  # after the checkpoint at iteration 3 and two more logged iterations
            raise Killed()
        return real(objective, images, optimiser, it, steps)

    monkeypatch.setattr(objectives, "run_iteration", dying)
    with pytest.raises(Killed):
        Run(RunConfig.from_dict(cfg)).execute()
    before = [r["step"] for r in _rows(tmp_path / "run") if r["stage"] == "distill"]
    assert before == [0, 1, 2, 3, 4]
    with (tmp_path / "run" / "log.jsonl").open("a") as fh:
        fh.write('{"stage": "distill", "st')  # a torn line from the kill

    monkeypatch.setattr(objectives, "run_iteration", real)
    Run(RunConfig.from_dict(cfg)).execute()
    after = [r["step"] for r in _rows(tmp_path / "run") if r["stage"] == "distill"]
    assert after == list(range(8))


def test_rewind_keeps_other_stages_and_earlier_steps():
    from pd_plugins.pipeline.runner import _logged_at_or_after

    assert _logged_at_or_after('{"stage": "distill", "step": 4}', "distill", 3)
    assert not _logged_at_or_after('{"stage": "distill", "step": 2}', "distill", 3)
    assert not _logged_at_or_after('{"stage": "prune", "step": 9}', "distill", 3)
    assert _logged_at_or_after('{"stage": "dist', "distill", 3)
