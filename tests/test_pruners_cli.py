"""`pd-run prune` with a score-based pruner, then `pd-run distill --from` on digits."""
from __future__ import annotations

import json

import torch
from click.testing import CliRunner


def test_prune_then_distill_from(tmp_path, host, monkeypatch):
    from pd_plugins.cli import cli

    monkeypatch.setenv("PD_CACHE_DIR", str(tmp_path / "cache"))
    runner = CliRunner()
    src = tmp_path / "p"
    tiny = ["-P", "scorer_options=width=8,depth=2", "-P", "trials=1", "-P", "augment=false"]
    res = runner.invoke(cli, ["prune", "--pruner", "early-loss", "--keep", "0.3", *tiny, "--out", str(src),
                              "--no-progress", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads((src / "prune_report.json").read_text())
    assert report["pruner"] == "early-loss" and report["kl_to_full"] < 1e-3
    assert (src / "prune_scores.png").exists() and (src / "prune_examples.png").exists()
    assert list((tmp_path / "cache" / "scores").glob("*.pt"))
    saved = torch.load(src / "prune.pt", weights_only=True)
    assert torch.isfinite(saved["scores"]).all() and saved["meta"]["direction"] == "easy"

    out = tmp_path / "d"
    res = runner.invoke(cli, ["distill", "--from", str(src), "--distiller", "dm", "--ipc", "2", "-D", "iterations=2",
                              "--evaluator", "none", "--out", str(out), "--no-progress", "--json"])
    assert res.exit_code == 0, res.output
    distilled = torch.load(out / "distill.pt", weights_only=True)
    assert distilled["images"].shape[0] == 20 and distilled["meta"]["pool_size"] == int(saved["keep"].numel())
    assert torch.equal(torch.load(out / "prune.pt", weights_only=True)["keep"], saved["keep"])


def test_bad_window_is_one_line_error(tmp_path, host):
    from pd_plugins.cli import cli

    res = CliRunner().invoke(cli, ["prune", "--pruner", "el2n-window", "-P", "window=80,70", "--out", str(tmp_path / "x")])
    assert res.exit_code != 0 and "lo < hi" in res.output and "Traceback" not in res.output
