"""baselines/: every paper config is a valid run config whose options the distiller accepts."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pd_plugins.config import load_config_file
from pd_plugins.config import RunConfig
from pd_plugins.pipeline.runner import Run

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "baselines" / "configs").glob("*/*.yaml"))


def test_configs_cover_each_distiller_dataset_and_ipc():
    names = {(p.parent.name, p.stem) for p in CONFIGS}
    for dist in ("dc", "dsa", "dm"):
        for ds in ("mnist", "fashion-mnist", "cifar10", "cifar100"):
            for ipc in (1, 10, 50):
                assert (dist, f"{ds}-ipc{ipc}") in names and (dist, f"{ds}-ipc{ipc}-cpu") in names
    assert ("mtt", "cifar10-ipc10") in names and ("mtt", "cifar100-ipc50-cpu") in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_resolves_when_its_distiller_is_installed(path, host):
    values = load_config_file(str(path))
    cfg = RunConfig.from_dict({**values, "out": "unused"})
    assert cfg.distiller == path.parent.name and cfg.ipc == int(path.stem.split("ipc")[1].split("-")[0])
    if cfg.distiller not in host.registries()["distiller"].names():
        pytest.skip(f"distiller {cfg.distiller!r} not merged yet")
    run = Run(cfg)  # unknown or mistyped options raise here
    assert run.resolved["distiller_options"]["iterations"] == values["distiller_options"]["iterations"]
    if path.stem.endswith("-cpu"):
        paper = load_config_file(str(path.with_name(path.stem[:-4] + ".yaml")))
        assert values["distiller_options"]["iterations"] < paper["distiller_options"]["iterations"]


def _table1():
    spec = importlib.util.spec_from_file_location("table1", ROOT / "baselines" / "table1.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_table1_columns():
    mod = _table1()
    base = {"dataset": "digits", "distiller": "dm", "ipc": 2, "distiller_options": {"iterations": 3}}
    cols = mod.column_configs(base, "random", {}, 0.3, "init-random", 0.02)
    assert cols["random"] == {"dataset": "digits", "ipc": 2, "distiller": "none", "pruner": "random", "keep": 0.02}
    assert cols["prune-only"]["distiller"] == "none" and cols["prune-only"]["keep"] == 0.02
    assert cols["distill-only"]["pruner"] == "none" and cols["distill-only"]["distiller"] == "dm"
    assert cols["prune-distill"]["mode"] == "init-random" and cols["prune-distill"]["keep"] == 0.3
    assert cols["full"]["pruner"] == "none" and cols["full"]["distiller"] == "none"
    for c in cols.values():
        RunConfig.from_dict(c)
    # Sundar et al.: in init mode prune-distill starts from the prune-only subset itself
    init = mod.column_configs(base, "random", {}, 0.3, "init", 0.02)
    assert init["prune-distill"]["mode"] == "init" and init["prune-distill"]["keep"] == 0.02


def test_table1_window_subset_is_the_windows_lower_edge(host):
    mod = _table1()
    sel = mod.ipc_selection("el2n-window", {"window": "70,80"}, 0.002)
    assert sel["keep"] is None and sel["pruner_options"]["window"] == pytest.approx([0.7, 0.702])
    base = {"dataset": "digits", "distiller": "mtt", "ipc": 10}
    cols = mod.column_configs(base, "el2n-window", {"window": "70,80"}, None, "init", 0.002, sel)
    for name in ("prune-only", "prune-distill"):
        run = Run(RunConfig.from_dict({**cols[name], "out": "unused"}))
        assert run.resolved["keep"] == pytest.approx(0.002)  # no --keep against the window
    assert mod.ipc_selection("loss-easy", {}, 0.02) == {"pruner_options": {}, "keep": 0.02}
    with pytest.raises(SystemExit, match="fewer than ipc"):
        mod.ipc_selection("el2n-window", {"window": "70,80"}, 0.2)
