"""Named budgets: ``cpu`` starts from ``quick``'s overrides and adds its own; unknown names are one-line errors."""
import pytest

from pd_plugins.errors import OptionsError
from pd_plugins.strategies import BUDGET_BASE, BUDGETS, Distiller, budget_chain
from pd_plugins.options import option


class Toy(Distiller):
    name = "toy-budgets"

    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Options:
        a: int = option(1, "a")
        b: int = option(2, "b")
        c: int = option(3, "c")

    budgets = {"quick": {"a": 10, "b": 20}, "cpu": {"b": 200}}


def test_budget_chain_layers_cpu_on_quick():
    assert BUDGET_BASE["cpu"] == "quick" and set(BUDGETS) == {"paper", "quick", "cpu"}
    assert budget_chain("cpu") == ["quick", "cpu"] and budget_chain("paper") == [] and budget_chain(None) == []


def test_cpu_overrides_win_over_quick_and_users_win_over_both():
    assert Toy.resolve_options(None, "paper") == Toy.Options()
    assert Toy.resolve_options(None, "quick") == Toy.Options(a=10, b=20, c=3)
    assert Toy.resolve_options(None, "cpu") == Toy.Options(a=10, b=200, c=3)
    assert Toy.resolve_options({"b": 7}, "cpu") == Toy.Options(a=10, b=7, c=3)


def test_a_strategy_without_cpu_settings_gets_quick_under_cpu():
    from pd_plugins.training.evaluate import StepEvaluator

    assert "cpu" not in StepEvaluator.budgets
    assert StepEvaluator.resolve_options(None, "cpu") == StepEvaluator.resolve_options(None, "quick")


def test_unknown_budget_is_an_options_error():
    with pytest.raises(OptionsError, match="unknown budget 'fast'"):
        Toy.resolve_options(None, "fast")


def test_every_builtin_budget_name_is_known():
    from pd_plugins.plugins import registries

    for kind in ("pruner", "distiller", "evaluator"):
        for entry in registries()[kind].entries():
            cls = entry.load()
            assert set(getattr(cls, "budgets", {})) <= set(BUDGETS), (kind, entry.name)


def test_cli_budget_cpu_reaches_the_resolved_config(host):
    """``--budget cpu`` is accepted, recorded, and its layered values reach the distiller's options."""
    import json

    from click.testing import CliRunner

    from pd_plugins.cli import cli
    from pd_plugins.distillation.mtt import MTT

    res = CliRunner().invoke(cli, ["config", "--budget", "cpu", "--distiller", "mtt", "-D", "iterations=3"])
    assert res.exit_code == 0, res.output
    resolved = json.loads(res.output)["resolved"]
    opts = resolved["distiller_options"]
    assert resolved["budget"] == "cpu" and opts["iterations"] == 3  # the user wins over the budget
    assert opts["experts"] == MTT.budgets["cpu"]["experts"] != MTT.budgets["quick"]["experts"]
    assert opts["expert_epochs"] == MTT.budgets["quick"]["expert_epochs"]  # inherited from quick
    bad = CliRunner().invoke(cli, ["config", "--budget", "fast"])
    assert bad.exit_code != 0 and "fast" in bad.output
