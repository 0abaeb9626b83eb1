"""Ray beyond one node: a head and a second node on 127.0.0.1, one CPU each, the second in its own
mount namespace where the tests' folders are an empty tmpfs -- it shares no output folder, cache or
temp folder with the driver, as a node of a real cluster would not. A sweep's cells run on both
nodes and the second node's cells come back through the transfer path; experts spread over both
and the cache holds each trajectory once; SIGKILLing the second node mid-sweep still gives a
complete report equal to the single-process run of the same cells."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("ray", reason="the `ray` extra is not installed (pip install -e '.[ray]'); .ci/run installs it")

from tests.ray_nodes import Cluster, finish, private_view_error, same_cell, sweep_file  # noqa: E402

CELL = {"pruner": "random", "keep": 0.5, "distiller": "dm", "ipc": 1, "device": "cpu",
        "distiller_options": {"iterations": 20, "batch_real": 16}, "checkpoint_every": 5,
        "evaluator_options": {"epochs": 2, "batch": 64}, "eval_repeats": 1}
GRID = {"seed": [0, 1, 2]}
SWEEP_FLAGS = ("--executor", "ray", "--cpus-per-cell", "1", "--json", "--no-progress")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = private_view_error()
    if why:
        pytest.skip(f"the second node needs a private filesystem view: {why}")
    c = Cluster(tmp_path_factory.mktemp("ray2"), cpus=1)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def second_node(cluster, tmp_path_factory):
    """The live non-head node (a fresh one if a test killed it): 1 CPU, blind to every test folder."""
    live = [n for n in cluster.workers if n.alive()]
    return live[0] if live else cluster.add_node(cpus=1, hide=tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same cells run one after another in this process (a fresh built-ins-only plugin host)."""
    from pd_plugins import plugins
    from pd_plugins.experiments.sweep import Sweep, run_sweep

    out = tmp_path_factory.mktemp("reference")
    old = plugins._host
    plugins.set_host(plugins.Host(load_entrypoints=False))
    try:
        run_sweep(Sweep(name="cells", grid=GRID, fixed=CELL), out, progress=False)
    finally:
        plugins.set_host(old)
    return out


def _files(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())


def _assert_same_as_reference(summary: dict, out: Path, reference: Path) -> None:
    """Every cell finished, holds the reference cell's files in the head's folder, with the same results;
    the report built from the folder equals the reference's."""
    from pd_plugins.experiments.report import collect

    assert summary["counts"] == {"done": len(GRID["seed"])}, summary
    for cell in summary["cells"]:
        assert _files(out / cell["dir"]) == _files(reference / cell["dir"])
        assert cell["summary"]["out"] == str(out / cell["dir"])
        assert json.loads((out / cell["dir"] / "config.json").read_text())["out"] == str(out / cell["dir"])
        same_cell(out / cell["dir"], reference / cell["dir"])
    assert collect(out) == collect(reference)
    assert sum(summary["cells_per_node"].values()) == len(GRID["seed"])


def _nodes(summary: dict) -> tuple[set, set]:
    """Nodes whose cells ran in place (they see the sweep folder) and nodes whose cells were shipped back."""
    return ({c["node"] for c in summary["cells"] if not c["shipped_back"]},
            {c["node"] for c in summary["cells"] if c["shipped_back"]})


def test_cells_run_on_both_nodes_and_land_in_the_heads_folder(cluster, second_node, tmp_path, reference):
    out = tmp_path / "sweep"
    t0 = time.monotonic()
    summary = json.loads(finish(cluster.pd("sweep", sweep_file(tmp_path / "cells.yaml", GRID, CELL), *SWEEP_FLAGS,
                                           "--address", cluster.address, "--out", out)))
    wall = time.monotonic() - t0
    in_place, shipped = _nodes(summary)
    # the head's cells ran in the sweep folder; the second node, which cannot see it, sent its cells back
    assert len(in_place) == 1 and len(shipped) == 1 and in_place != shipped, summary["cells_per_node"]
    assert set(summary["cells_per_node"]) == in_place | shipped
    _assert_same_as_reference(summary, out, reference)
    assert not list(second_node.scratch.glob("pd-cell-*"))  # its node-local folders were removed
    print(f"\ntwo nodes: cells per node {sorted(summary['cells_per_node'].values())}, {wall:.1f} s")


def test_experts_spread_over_both_nodes_and_are_cached_once(cluster, second_node, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from pd_plugins.cli import cli

    n = 4
    args = ["experts", "--pruner", "random", "--keep", "0.2", "-D", f"experts={n}", "-D", "train_epochs=2",
            "-D", "expert_epochs=1", "-D", "max_start_epoch=1", "-D", "expert_batch=64", "--device", "cpu",
            "--no-progress", "--json"]
    on_ray = json.loads(finish(cluster.pd(*args, "--executor", "ray", "--address", cluster.address,
                                          "--out", tmp_path / "e-ray")))
    assert on_ray["trained_now"] == n
    per_node = on_ray["tasks_per_node"]
    assert len(per_node) == 2 and sum(per_node.values()) == n, per_node
    cache = Path(on_ray["experts_dir"])
    assert [p for p in (cluster.root / "cache" / "experts").iterdir()] == [cache]
    assert _files(cache) == ["expert_0000.pt", "expert_0001.pt", "expert_0002.pt", "expert_0003.pt", "key.json"]
    monkeypatch.setenv("PD_CACHE_DIR", str(tmp_path / "inline-cache"))
    res = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "e-inline")])
    assert res.exit_code == 0, res.output
    inline = Path(json.loads(res.output)["experts_dir"])
    for i in range(n):
        a, b = (torch.load(d / f"expert_{i:04d}.pt", weights_only=True)["trajectory"] for d in (cache, inline))
        assert a.equal(b)
    print(f"\nexperts per node {sorted(per_node.values())}")


def test_killing_the_second_node_mid_sweep_leaves_a_complete_correct_report(cluster, second_node, tmp_path,
                                                                           reference):
    out = tmp_path / "killed"
    t0 = time.monotonic()
    proc = cluster.pd("sweep", sweep_file(tmp_path / "cells.yaml", GRID, CELL), *SWEEP_FLAGS,
                      "--address", cluster.address, "--out", out)
    running = None  # a cell in progress on the second node: its node-local folder has the pruned set only
    while running is None:
        running = next((d for d in second_node.scratch.glob("pd-cell-*/*")
                        if (d / "prune.pt").exists() and not (d / "eval.json").exists()), None)
        assert proc.poll() is None, f"the sweep ended with no cell seen on the second node: {proc.communicate()}"
        assert time.monotonic() - t0 < 300, "no cell ever ran on the second node"
        time.sleep(0.05)
    second_node.kill()
    killed_at = time.monotonic() - t0
    assert not (running / "eval.json").exists()  # killed mid-cell (nothing of it can change now)
    while not (out / "cells" / running.name / "config.json").exists() and proc.poll() is None:
        time.sleep(0.05)  # until the cell is retried (on the head, in place)
    retried_after = time.monotonic() - t0 - killed_at
    summary = json.loads(finish(proc))
    wall = time.monotonic() - t0
    in_place, shipped = _nodes(summary)
    killed = next(c for c in summary["cells"] if c["id"] == running.name)
    # the killed cell was retried on the head, in place; nothing it left on the dead node was needed
    assert not killed["shipped_back"] and len(in_place) == 1 and killed["node"] in in_place
    _assert_same_as_reference(summary, out, reference)
    print(f"\nkill at {killed_at:.1f} s in {running.name}, retried {retried_after:.1f} s later; cells per node "
          f"{sorted(summary['cells_per_node'].values())} ({len(shipped)} shipped back); sweep {wall:.1f} s")
