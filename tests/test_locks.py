"""Claim files: exclusive, stale after a dead holder, and what keeps racing processes from
training one cached artifact twice or sharing a run folder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from pd_plugins.locks import FileLock, LockBusyError, cache_fill, host_id
from tests.proc_runs import REPO, env


def test_claim_is_exclusive_and_refusal_is_one_line(tmp_path):
    a = FileLock(tmp_path / "x.lock", what="thing X")
    b = FileLock(tmp_path / "x.lock", what="thing X")
    assert a.try_acquire()
    assert not b.try_acquire()
    with pytest.raises(LockBusyError) as err:
        b.acquire(wait=0)
    msg = str(err.value)
    assert "\n" not in msg and "thing X is in use" in msg and f"pid {os.getpid()}" in msg
    a.release()
    assert not (tmp_path / "x.lock").exists()
    assert b.try_acquire()
    b.release()


def test_dead_holder_on_this_host_is_stale_at_once(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "x.lock"
    path.write_text(json.dumps({"host": host_id(), "pid": dead.pid, "token": "old"}))
    lock = FileLock(path)
    assert lock.try_acquire()
    assert json.loads(path.read_text())["pid"] == os.getpid()
    lock.release()


def test_other_hosts_claim_is_stale_only_without_heartbeat(tmp_path):
    path = tmp_path / "x.lock"
    path.write_text(json.dumps({"host": "elsewhere:0", "pid": 1, "token": "remote"}))
    assert not FileLock(path, stale_after=30).try_acquire()  # fresh heartbeat: still held
    old = time.time() - 31
    os.utime(path, (old, old))
    lock = FileLock(path, stale_after=30)
    assert lock.try_acquire()
    lock.release()


def test_heartbeat_keeps_a_long_claim_fresh(tmp_path):
    path = tmp_path / "x.lock"
    with FileLock(path, stale_after=2.0):
        time.sleep(1.5)
        assert time.time() - path.stat().st_mtime < 1.0  # refreshed every stale_after / 4
        assert not FileLock(path, stale_after=2.0).try_acquire()


def test_cache_fill_waits_then_sees_the_filled_entry(tmp_path):
    entry = tmp_path / "scores" / "k.pt"
    computed = []

    def fill():
        with cache_fill(entry):
            if not entry.exists():
                computed.append(threading.get_ident())
                time.sleep(0.3)
                entry.parent.mkdir(exist_ok=True)
                entry.write_text("done")

    threads = [threading.Thread(target=fill) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(computed) == 1 and entry.read_text() == "done"


def test_racing_scorers_compute_one_score_file(tmp_path, digits_splits, monkeypatch):
    """Two threads score the same set into one cache: one trains the scorers, the other loads its file."""
    from dataclasses import replace

    from pd_plugins.pruning import scoring
    from pd_plugins.pipeline.context import RunContext

    calls = []
    real = scoring.scorer_statistic
    monkeypatch.setattr(scoring, "scorer_statistic", lambda *a: calls.append(a[-1]) or real(*a))
    ctx = RunContext(seed=0, cache_dir=tmp_path, stage="prune")
    data = digits_splits.train.subset(list(range(200)))
    recipe = scoring.ScorerRecipe(epochs=1, batch=64, augment=False)
    out = {}

    def score(name):
        out[name] = scoring.score_dataset(data, replace(ctx), recipe, stat="el2n", runs=2, purpose="race")

    threads = [threading.Thread(target=score, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(calls) == [0, 1]  # each scorer run once, not once per thread
    assert sorted(m["cache"] for _, m in out.values()) == ["hit", "miss"]
    assert out["a"][0].equal(out["b"][0])


EXPERTS = ["--pruner", "random", "--keep", "0.2", "-D", "experts=2", "-D", "train_epochs=2", "-D", "expert_epochs=1",
           "-D", "max_start_epoch=1", "-D", "expert_batch=64",
           "--device", "cpu", "--no-progress", "--json"]


def _pd(args, cache):
    return subprocess.Popen([sys.executable, "-m", "pd_plugins", *args], env=env(cache), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_racing_on_one_cache_train_each_expert_once(tmp_path):
    cache = tmp_path / "cache"
    racers = [_pd(["experts", *EXPERTS, "--out", str(tmp_path / f"e{i}")], cache) for i in range(2)]
    results = [p.communicate(timeout=300) for p in racers]
    assert all(p.returncode == 0 for p in racers), [r[1][-800:] for r in results]
    summaries = [json.loads(r[0]) for r in results]
    assert summaries[0]["experts_dir"] == summaries[1]["experts_dir"]
    assert sum(s["trained_now"] for s in summaries) == 2  # each expert trained once between the two
    assert sorted(p.name for p in (tmp_path / "e0").parent.glob("cache/experts/*/expert_*")) == \
        ["expert_0000.pt", "expert_0001.pt"]  # no claim file left behind



def test_second_command_into_a_busy_run_folder_refuses_in_one_line(tmp_path):
    """While another live process holds the run folder, `pd-run run` refuses before touching it."""
    out = tmp_path / "run"
    args = ["run", "--pruner", "random", "--ipc", "2", "-D", "iterations=2", "-E", "epochs=1", "--eval-repeats", "1",
            "--device", "cpu", "--no-progress", "--out", str(out)]
    with FileLock(tmp_path / ".run.lock"):  # what a running `pd-run` holds (this test process stands in for it)
        busy = _pd(args, tmp_path / "cache")
        _, err = busy.communicate(timeout=120)
    assert busy.returncode == 1
    assert err.strip().count("\n") == 0 and err.startswith(f"Error: run directory {out} is in use"), err
    assert not out.exists()
