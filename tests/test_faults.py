"""Fault tolerance: a run SIGKILLed in any stage resumes to the same result, and a
half-written artifact is never taken as finished."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.proc_runs import DM_TINY, assert_same_run, command, env, kill_when, run

# a trained pruner, checkpoints every iteration, and stages long enough to be interrupted
FULL = ["--pruner", "early-loss", "--budget", "quick", "-P", "trials=2", "--keep", "0.5", "--ipc", "2",
        "-D", "iterations=150", "-E", "epochs=20", "--eval-repeats", "1", "--checkpoint-every", "1"]


def _stages(out) -> dict:
    try:
        return json.loads((out / "manifest.json").read_text()).get("stages", {})
    except (OSError, ValueError):
        return {}


KILL_POINTS = {
    "prune": lambda out: (out / "config.json").exists() and not (out / "prune.pt").exists(),
    "distill": lambda out: (out / "checkpoints" / "distill.pt").exists(),
    "eval": lambda out: "distill" in _stages(out) and not (out / "eval.json").exists(),
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    run(FULL, root / "run", root / "cache")
    return root / "run"


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(KILL_POINTS))
def test_sigkill_then_rerun_matches_uninterrupted(reference, tmp_path, stage):
    out, cache = tmp_path / "run", tmp_path / "cache"  # own cache: nothing reused from the reference
    kill_when(FULL, out, cache, KILL_POINTS[stage])
    assert not (out / "eval.json").exists()
    if stage == "distill":
        assert "prune" in _stages(out) and not (out / "distill.pt").exists()
    run(FULL, out, cache)
    assert_same_run(reference, out)
    assert not (out / "checkpoints" / "distill.pt").exists()
    # resumed from the checkpoint: rows the killed process logged past it are not repeated
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if r.get("stage") == "distill"]
    assert steps == sorted(set(steps)) and steps[0] == 0


@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    run(DM_TINY, root / "run", root / "cache")
    return root


def _damaged_copy(tiny_reference, tmp_path, unfinished, damage):
    """A copy of the finished tiny run, ``damage(out, distill_bytes)`` applied, and the
    ``unfinished`` stages dropped from the manifest (the process died before marking them)."""
    out = tmp_path / "run"
    shutil.copytree(tiny_reference / "run", out)
    damage(out, (out / "distill.pt").read_bytes())
    man = json.loads((out / "manifest.json").read_text())
    for s in unfinished:
        man["stages"].pop(s, None)
    (out / "manifest.json").write_text(json.dumps(man))
    return out


@pytest.mark.slow
def test_leftover_tmp_file_is_not_an_artifact(tiny_reference, tmp_path):
    def damage(out, data):
        (out / "distill.pt").unlink()
        (out / "eval.json").unlink()
        (out / ".distill.pt.abc123.tmp").write_bytes(data[: len(data) // 3])  # killed mid-write

    out = _damaged_copy(tiny_reference, tmp_path, ("distill", "eval"), damage)
    run(DM_TINY, out, tiny_reference / "cache")
    assert_same_run(tiny_reference / "run", out)


@pytest.mark.slow
def test_truncated_unmarked_artifact_is_recomputed(tiny_reference, tmp_path):
    def damage(out, data):  # e.g. a plugin's non-atomic writer died half-way
        (out / "distill.pt").write_bytes(data[: len(data) // 2])
        (out / "eval.json").write_text('{"evaluated": "dis')

    out = _damaged_copy(tiny_reference, tmp_path, ("distill", "eval"), damage)
    run(DM_TINY, out, tiny_reference / "cache")
    assert_same_run(tiny_reference / "run", out)


def test_truncated_marked_artifact_is_an_error_not_loaded(tiny_reference, tmp_path):
    import subprocess

    def damage(out, data):
        (out / "distill.pt").write_bytes(data[: len(data) // 2])
        (out / "eval.json").unlink()

    out = _damaged_copy(tiny_reference, tmp_path, ("eval",), damage)
    res = subprocess.run(command(DM_TINY, out), env=env(tiny_reference / "cache"), capture_output=True, text=True)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1 and lines[0].startswith("Error:") and "distill.pt" in lines[0], lines
    assert not (out / "eval.json").exists()
