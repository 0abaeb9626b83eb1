"""One ``test_hook_<name>`` per hook spec, plus meta-tests that keep hooks tested and documented."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import click
from click.testing import CliRunner

from pd_plugins import hookimpl, hookspecs

ROOT = Path(__file__).resolve().parents[1]


def hook_names() -> list[str]:
    return sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
                  if hasattr(fn, "pd_plugins_spec"))


def test_hookspecs_found():
    names = hook_names()
    assert "register_pruners" in names and "on_log" in names and len(names) >= 11


def test_every_hook_has_a_test():
    text = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    missing = [h for h in hook_names() if not re.search(rf"def test_hook_{h}\b", text)]
    assert not missing, f"hooks without a test_hook_<name> test: {missing}"


def test_every_hook_documented_in_readme():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| hook | purpose |"):]
    table = table[: table.index("\n\n")]
    first_cells = [row.split("|")[1] for row in table.splitlines()[2:]]
    documented = {name for cell in first_cells for name in re.findall(r"`(\w+)\(", cell)}
    missing = [h for h in hook_names() if h not in documented]
    assert not missing, f"hooks missing from README's hook table: {missing}"
    assert documented <= set(hook_names()), f"README documents unknown hooks: {documented - set(hook_names())}"


class Provider:
    """Registers one entry of every provider kind under a test name."""

    @hookimpl
    def register_distillers(self, register):
        register("test-dm", "pd_plugins.distillation.dm:DM", summary="dm again")

    @hookimpl
    def register_datasets(self, register):
        register("test-digits", "pd_plugins.data.builtin:digits", summary="digits again", default_budget="quick")

    @hookimpl
    def register_models(self, register):
        register("test-convnet", "pd_plugins.training.models:convnet", summary="convnet again")

    @hookimpl
    def register_augmentations(self, register):
        register("test-none", "pd_plugins.training.augment:none", summary="identity again")

    @hookimpl
    def register_evaluators(self, register):
        register("test-step", "pd_plugins.training.evaluate:StepEvaluator", summary="step again")

    @hookimpl
    def register_generators(self, register):
        register("test-gen", Generator, summary="a generator")


class Generator:
    """A stand-in generative prior with the hookspec's protocol (only registration is under test)."""

    Options = dict

    def init_latents(self, init_pool, ipc, ctx):
        raise NotImplementedError

    def decode(self, latents, labels, aux):
        raise NotImplementedError


def _registered(host, kind, name):
    host.register(Provider(), name="provider")
    entry = host.registries()[kind].get(name)
    assert entry.plugin == "provider"
    return entry


def test_hook_register_distillers(host):
    entry = _registered(host, "distiller", "test-dm")
    assert entry.options_class().__name__ == "Options"


def test_hook_register_datasets(host):
    entry = _registered(host, "dataset", "test-digits")
    assert entry.meta == {"default_budget": "quick"}
    assert entry.load()(None).train.num_classes == 10


def test_hook_register_models(host):
    import torch

    net = _registered(host, "model", "test-convnet").load()(1, 10, (8, 8))
    assert net.embed(torch.zeros(2, 1, 8, 8)).shape[0] == 2


def test_hook_register_augmentations(host):
    import torch

    aug = _registered(host, "augmentation", "test-none").load()()
    x = torch.ones(2, 1, 4, 4)
    assert aug(x, torch.Generator()) is x


def test_hook_register_evaluators(host):
    assert _registered(host, "evaluator", "test-step").load().name == "dsa-step"


def test_hook_register_generators(host):
    from pd_plugins.cli import cli

    assert _registered(host, "generator", "test-gen").load() is Generator
    res = CliRunner().invoke(cli, ["list", "generators"])
    assert res.exit_code == 0 and "test-gen" in res.output


def test_hook_register_commands(host):
    class Commands:
        @hookimpl
        def register_commands(self, cli):
            @cli.command("hello")
            @click.argument("who")
            def hello(who):
                click.echo(f"hello {who}")

    host.register(Commands(), name="commands")
    group = click.Group("g")
    host.add_commands(group)
    res = CliRunner().invoke(group, ["hello", "you"])
    assert res.exit_code == 0 and res.output == "hello you\n"


class Observer:
    def __init__(self):
        self.starts, self.stages, self.logs = [], [], []

    @hookimpl
    def on_run_start(self, config, context):
        self.starts.append(config)

    @hookimpl
    def on_stage_end(self, stage, result, context):
        self.stages.append((stage, type(result).__name__))

    @hookimpl
    def on_log(self, step, metrics, context):
        self.logs.append((context.stage, step, dict(metrics)))


def _observed_run(host, tmp_path):
    from pd_plugins.pipeline.runner import RunConfig, run

    obs = Observer()
    host.register(obs, name="observer")
    cfg = RunConfig(pruner="random", distiller="dm", distiller_options={"iterations": 3, "log_every": 1},
                    evaluator_options={"epochs": 1}, eval_repeats=1, out=str(tmp_path / "run"), progress=False)
    run(cfg, host=host)
    return obs


def test_hook_on_run_start(host, tmp_path):
    obs = _observed_run(host, tmp_path)
    assert len(obs.starts) == 1 and obs.starts[0]["pruner"] == "random"
    assert obs.starts[0]["resolved"]["distiller_options"]["iterations"] == 3


def test_hook_on_stage_end(host, tmp_path):
    obs = _observed_run(host, tmp_path)
    assert [s for s, _ in obs.stages] == ["data", "prune", "distill", "eval"]
    assert dict(obs.stages)["prune"] == "PruneResult" and dict(obs.stages)["distill"] == "DistillResult"


def test_hook_on_log(host, tmp_path):
    obs = _observed_run(host, tmp_path)
    distill = [(step, m) for stage, step, m in obs.logs if stage == "distill"]
    assert [s for s, _ in distill][:3] == [0, 1, 2] and all("loss" in m for _, m in distill)
