"""`pd-run plan` and the pre-run memory check: the footprint model, the strategies' cost hooks, the plan's
report, and the refusal of a run whose estimated peak memory exceeds the free memory."""
from __future__ import annotations

import json
import re

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from pd_plugins.cli import cli
from pd_plugins.config import RunConfig
from pd_plugins.errors import OptionsError
from pd_plugins.pipeline.runner import Run
from pd_plugins.planning import budget
from pd_plugins.planning.costs import NetworkPass
from pd_plugins.planning.estimate import estimate_run
from pd_plugins.planning.footprint import STREAM, footprint, live_tensors, pass_bytes

FAST = ["--dataset", "digits", "--device", "cpu", "--budget", "quick"]


def _tiny_net():
    # conv 1->4 (3x3, same size), ReLU, flatten, linear: per sample the conv keeps its 1x8x8 input
    # (256 B) and the ReLU its 4x8x8 output (1024 B), which the linear layer reads through a view;
    # the cross-entropy the trace ends in keeps 10 log-probabilities (40 B) and the int64 target (8 B)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))


def test_footprint_counts_what_autograd_keeps_per_sample():
    fp = footprint(NetworkPass(_tiny_net(), (1, 8, 8), 16, order=1))
    assert fp.per_sample == 256 + 1024 + 40 + 8  # the ReLU output counted once, though two layers keep it
    # the working set streams STREAM largest single activations per sample (the conv's and ReLU's output)
    assert fp.work_per_sample == STREAM[1] * 1024 and fp.work_fixed == 0
    assert fp.params == 4 * (4 * 9 + 4 + 256 * 10 + 10)
    held, working = pass_bytes(NetworkPass(_tiny_net(), (1, 8, 8), 16, order=1, held=3))
    assert held == 3 * (fp.fixed + 16 * fp.per_sample)
    assert working == int(STREAM[1] * 1024 * 16)


def test_footprint_orders_keep_more_and_a_no_grad_pass_keeps_nothing():
    net = _tiny_net()
    kept = {order: footprint(NetworkPass(net, (1, 8, 8), 8, order=order, input_grad=True)).per_sample
            for order in (0, 1, 2)}
    assert kept[0] == 0
    assert kept[2] > kept[1] > 0
    held, working = pass_bytes(NetworkPass(net, (1, 8, 8), 8, order=0, held=0))
    assert held == 0 and working == int(STREAM[0] * 1024 * 8)


def test_a_traced_pass_counts_the_tensors_its_outputs_keep_alive():
    def build():
        x = torch.randn(4, 256, requires_grad=True)  # 4 KiB, kept as the input
        return (x * 3).exp(), [x]  # exp keeps its 4 KiB output for the backward, which is also the output

    alive, peak = live_tensors(build)
    assert alive == 2 * 4096 and peak >= alive + 4096  # the backward's gradient buffers come on top


def test_dc_traces_its_batched_synthetic_gradients(tmp_path):
    run = _run(tmp_path, distiller="dc", ipc=2, distiller_options={"outer_loop": 1, "inner_loop": 1})
    parts = _stage(estimate_run(run, ("distill",), timed=False), "distill").parts
    held = next(v for k, v in parts.items() if k.startswith("matching network graphs") and "synthetic" in k)
    generic = pass_bytes(NetworkPass(run.context("distill").make_model(1, 10, (8, 8)), (1, 8, 8), 2, order=2,
                                     input_grad=True))[0]
    assert held > 5 * generic  # ten classes' graphs, measured through torch.func


def _run(tmp_path, **values) -> Run:
    cfg = RunConfig(**{"dataset": "digits", "device": "cpu", "budget": "quick", "evaluator": "none",
                       "out": str(tmp_path / "run"), **values})
    return Run(cfg, quiet=True)


def _stage(estimate, name):
    return next(s for s in estimate.stages if s.stage == name)


def test_mtt_unrolled_memory_grows_with_syn_steps_and_constant_memory_does_not(tmp_path):
    graphs = {}
    for memory in ("unrolled", "constant"):
        for steps in (2, 4):
            run = _run(tmp_path, distiller="mtt", distiller_options={"syn_steps": steps, "batch_syn": 20,
                                                                     "memory": memory})
            parts = _stage(estimate_run(run, ("distill",), timed=False), "distill").parts
            graphs[memory, steps] = sum(v for k, v in parts.items() if "graphs" in k)
    assert graphs["unrolled", 4] == 2 * graphs["unrolled", 2]
    assert graphs["constant", 4] == graphs["constant", 2] < graphs["unrolled", 2]


def test_mtt_declares_experts_with_their_stored_trajectories(tmp_path):
    run = _run(tmp_path, distiller="mtt", distiller_options={"experts": 3, "train_epochs": 6})
    experts = _stage(estimate_run(run, ("distill",), timed=False), "experts")
    params = sum(p.numel() for p in run.context("distill").make_model(1, 10, (8, 8)).parameters())
    assert experts.stored == {"expert trajectories": 3 * 7 * params * 4}  # experts x (epochs + 1) x P x fp32
    assert experts.peak > 0 and experts.seconds is None  # not timed


def test_dm_memory_follows_ipc_and_time_follows_iterations(tmp_path):
    small = _stage(estimate_run(_run(tmp_path, distiller="dm", ipc=2,
                                     distiller_options={"iterations": 3, "batch_real": 8})), "distill")
    large = _stage(estimate_run(_run(tmp_path, distiller="dm", ipc=8,
                                     distiller_options={"iterations": 6, "batch_real": 8}), timed=False), "distill")
    assert large.peak > small.peak
    (unit,) = small.units
    assert unit.count == 3 and unit.seconds > 0
    assert small.seconds == pytest.approx(3 * unit.seconds)


def test_plan_prints_memory_and_time_per_stage_without_running(tmp_path):
    out = tmp_path / "never"
    res = CliRunner().invoke(cli, ["plan", *FAST, "--pruner", "el2n-window", "--distiller", "mtt", "--out", str(out),
                                   "-P", "models=1", "-D", "syn_steps=2", "-D", "iterations=3", "-D", "experts=1",
                                   "-E", "epochs=2", "--eval-repeats", "1"])
    assert res.exit_code == 0, res.output
    text = res.output
    for stage in ("prune", "experts", "distill", "eval"):  # each stage: a peak memory and a time
        line = next(ln for ln in text.splitlines() if ln.startswith(stage))
        assert re.search(r"\d (B|KiB|MiB|GiB) +[\d.]+ (s|min|h) ", line), line
    assert "expert trajectories" in text and "parameters" in text and "as stored" in text
    assert "3 x iteration (2 unrolled steps" in text
    assert not out.exists()  # nothing ran, nothing was written


def test_plan_json_and_a_distiller_without_a_cost_gets_a_probe_only_time(host, tmp_path):
    from pd_plugins.distillation.dm import DM
    from pd_plugins.strategies import Distiller

    class NoCost(DM):
        name = "no-cost"
        cost = Distiller.cost  # a third-party distiller that declares nothing

    class Provider:
        from pd_plugins import hookimpl

        @hookimpl
        def register_distillers(self, register):
            register("no-cost", NoCost)

    host.register(Provider(), name="provider")
    res = CliRunner().invoke(cli, ["plan", *FAST, "--distiller", "no-cost", "--evaluator", "none", "--json",
                                   "-D", "iterations=4", "-D", "batch_real=8", "--out", str(tmp_path / "x")])
    assert res.exit_code == 0, res.output
    (stage,) = json.loads(res.output)["stages"]
    assert stage["peak_bytes"] is None and "declares no cost" in stage["note"]
    assert stage["seconds"] > 0 and [u["count"] for u in stage["units"]] == [1, 4]


def _free(nbytes):
    return lambda device: (nbytes, "available RAM")


def test_a_run_over_the_free_memory_is_refused_in_one_line_naming_what_to_lower(monkeypatch, tmp_path):
    monkeypatch.setattr(budget, "free_memory", _free(2 ** 20))
    out = tmp_path / "run"
    args = [*FAST, "--distiller", "mtt", "--evaluator", "none", "--out", str(out), "-D", "iterations=1"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code != 0
    (line,) = res.output.strip().splitlines()
    assert "exceeds the 1 MiB of available RAM" in line and "distill stage" in line
    for flag in ("-D batch_syn", "-D syn_steps", "-D memory=constant", "--ipc", "--force"):
        assert flag in line
    assert not out.exists()  # refused before the run directory was made


def test_force_runs_anyway_and_the_manifest_records_the_estimate(monkeypatch, tmp_path):
    monkeypatch.setattr(budget, "free_memory", _free(2 ** 20))
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, [*FAST, "--distiller", "dm", "--evaluator", "none", "--out", str(out), "--force",
                                   "-D", "iterations=2", "--ipc", "2"])
    assert res.exit_code == 0, res.output
    check = json.loads((out / "manifest.json").read_text())["memory_check"]
    assert check["forced"] is True and check["free_bytes"] == 2 ** 20
    assert check["peak_stage"] == "distill" and check["peak_bytes"] == check["stages"]["distill"] > 2 ** 20


def test_check_estimate_passes_a_run_that_fits_and_skips_when_free_memory_is_unknown(tmp_path):
    estimate = estimate_run(_run(tmp_path, distiller="dm", ipc=2), ("distill",), timed=False)
    peak, _ = estimate.peak()
    room = peak + budget.FIRST_USE_MARGIN
    assert budget.check_estimate(estimate, (room, "available RAM"), force=False)["peak_bytes"] == peak
    assert budget.check_estimate(estimate, None, force=False)["free_bytes"] is None
    with pytest.raises(OptionsError, match="lower --ipc or -D batch_real"):
        budget.check_estimate(estimate, (room - 1, "available RAM"), force=False)


def test_the_check_leaves_the_global_rng_alone(monkeypatch, tmp_path):
    monkeypatch.setattr(budget, "free_memory", _free(2 ** 40))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    estimate_run(_run(tmp_path, distiller="dc", ipc=1), ("prune", "distill"), timed=False)
    assert torch.equal(torch.rand(3), expected)


def test_free_memory_reads_the_hosts_available_ram():
    free, what = budget.free_memory("cpu")
    assert free > 0 and what in ("available RAM", "memory left under this process's cgroup limit")
