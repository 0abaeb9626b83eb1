"""Registry and plugin-host behaviour: duplicates, replace, did-you-mean, aliases and
isolation of broken plugins (hook errors, failed imports, misspelled hooks)."""
from __future__ import annotations

import types

import pluggy
import pytest
from click.testing import CliRunner

from pd_plugins import hookimpl
from pd_plugins.errors import PluginLoadError, RegistryError, UnknownNameError

RANDOM = "pd_plugins.pruning.random:RandomPruner"


class Provider:
    """A test plugin registering one pruner (and optionally an alias / replace flag)."""

    def __init__(self, name="extra", aliases=(), replace=False, fail=False):
        self.name, self.aliases, self.replace, self.fail = name, aliases, replace, fail

    @hookimpl
    def register_pruners(self, register):
        if self.fail:
            raise RuntimeError("boom in register_pruners")
        register(self.name, RANDOM, summary=f"from {self.name}", aliases=self.aliases, replace=self.replace)


class Broken:
    @hookimpl
    def register_distillers(self, register):
        raise RuntimeError("broken plugin exploded")


def test_hook_register_pruners(host):
    host.register(Provider("my-pruner"), name="third")
    entry = host.registries()["pruner"].get("my-pruner")
    assert entry.plugin == "third" and entry.summary == "from my-pruner"
    assert entry.load().__name__ == "RandomPruner"


def test_duplicate_name_skips_the_plugin_naming_both(host, capsys):
    host.register(Provider("random"), name="copycat", dist="pd-copycat", version="9.9")
    host.register(Provider("fine"), name="fine")
    regs = host.registries()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "skipping plugin 'copycat' (pd-copycat 9.9)" in err[0], err
    assert "duplicate pruner name 'random'" in err[0] and "pd-plugins" in err[0] and "replace=True" in err[0]
    assert regs["pruner"].get("random").plugin == "pd_plugins.default_plugins.pruners"
    assert "fine" in regs["pruner"] and [f.name for f in host.failures] == ["copycat"]
    assert not host.pm.has_plugin("copycat")  # skipped entirely: no observer hooks either
    host.register(Provider("later"), name="later")  # a rebuild does not report it again
    assert "later" in host.registries()["pruner"] and not capsys.readouterr().err


def test_duplicate_name_fatal_when_strict(host, monkeypatch):
    monkeypatch.setenv("PD_STRICT_PLUGINS", "1")
    host.register(Provider("random"), name="copycat", dist="pd-copycat", version="9.9")
    with pytest.raises(PluginLoadError, match="failed to load plugin 'copycat'.*duplicate pruner name 'random'"):
        host.registries()


def test_duplicate_via_alias_and_case(host, capsys):
    host.register(Provider("Other", aliases=("RANDOM",)), name="aliaser")
    regs = host.registries()
    assert "'aliaser'" in capsys.readouterr().err and "other" not in regs["pruner"]


def test_conflicting_plugin_drops_its_entries_of_every_kind(host):
    class Both:
        @hookimpl
        def register_datasets(self, register):
            register("both-ds", "pd_plugins.data.builtin:digits")

        @hookimpl
        def register_pruners(self, register):
            register("random", RANDOM)

    host.register(Both(), name="both")
    regs = host.registries()
    assert "both-ds" not in regs["dataset"] and [f.name for f in host.failures] == ["both"]


def test_conflicting_plugin_adds_no_commands(host):
    import click

    class Clash(Provider):
        @hookimpl
        def register_commands(self, cli):
            cli.add_command(click.Command("clash-cmd"))

    host.register(Clash("random"), name="clash")
    group = click.Group()
    host.add_commands(group)
    assert "clash-cmd" not in group.commands and [f.name for f in host.failures] == ["clash"]


def test_replace_true_overrides_builtin(host, capsys):
    host.register(Provider("random", replace=True), name="override", dist="pd-override", version="1.0")
    entry = host.registries()["pruner"].get("random")
    assert entry.plugin == "override" and entry.summary == "from random"
    from pd_plugins import __version__

    assert entry.replaces == f"plugin 'pd_plugins.default_plugins.pruners' (pd-plugins {__version__})"
    assert entry.to_json()["replaces"] == entry.replaces
    item = next(p for p in host.plugin_list() if p["name"] == "override")
    assert item["replaces"] == [f"pruner 'random' of {entry.replaces}"]
    host.register(Provider("more"), name="more")
    host.registries()  # rebuilt: warned once, not again
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "plugin 'override' (pd-override 1.0) replaces pruner 'random'" in err[0], err


def test_replace_without_a_previous_entry_is_not_a_replacement(host, capsys):
    host.register(Provider("brand-new", replace=True), name="newcomer")
    assert host.registries()["pruner"].get("brand-new").replaces == "" and not capsys.readouterr().err


def test_wrong_kind_class_skips_the_plugin(host, capsys):
    from pd_plugins.strategies import Distiller

    class NotAPruner(Distiller):
        pass

    class WrongKind:
        @hookimpl
        def register_pruners(self, register):
            register("not-a-pruner", NotAPruner)

    host.register(WrongKind(), name="wrongkind", dist="pd-wrongkind", version="0.3")
    regs = host.registries()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "skipping plugin 'wrongkind' (pd-wrongkind 0.3)" in err[0], err
    assert "NotAPruner is a distiller" in err[0] and "not-a-pruner" not in regs["pruner"]


@pytest.mark.parametrize("kind, factory, reason", [
    ("pruner", "pd_plugins.distillation.dm:DM", "DM is a distiller"),
    ("distiller", "pd_plugins.pruning.random:RandomPruner", "RandomPruner is a pruner"),
    ("evaluator", "pd_plugins.data.builtin:digits", "digits does not subclass pd_plugins.Evaluator"),
    ("model", "pd_plugins.training.evaluate:StepEvaluator", "StepEvaluator is an evaluator"),
    ("dataset", "pd_plugins.data.builtin:KINDS_THAT_DO_NOT_EXIST", "could not be loaded"),
])
def test_wrong_kind_lazy_factory_refused_on_load(host, kind, factory, reason):
    class Lazy:
        pass

    def hook(register):
        register("misfit", factory)

    setattr(Lazy, f"register_{kind}s", staticmethod(hookimpl(hook)))
    host.register(Lazy(), name="lazy", dist="pd-lazy", version="0.1")
    entry = host.registries()[kind].get("misfit")  # registered: lazy factories are checked on load
    for _ in range(2):  # refused every time, not only on the first load
        with pytest.raises(RegistryError) as exc:
            entry.load()
        msg = str(exc.value)
        assert "\n" not in msg and "'lazy' (pd-lazy 0.1)" in msg and reason in msg, msg


def test_builtin_factories_all_pass_the_kind_check(host):
    from pd_plugins._registry import kind_mismatch

    for kind, reg in host.registries().items():
        for entry in reg.entries():
            assert kind_mismatch(kind, entry.load()) is None, (kind, entry.name)


def test_unknown_name_did_you_mean(host):
    reg = host.registries()["pruner"]
    with pytest.raises(UnknownNameError, match="did you mean 'random'"):
        reg.get("randon")
    with pytest.raises(UnknownNameError) as exc:
        reg.get("zzzzzz")
    assert "did you mean" not in str(exc.value) and "pd-run list pruners" in str(exc.value)


def test_aliases_and_normalisation(host):
    host.register(Provider("my-pruner", aliases=("mp", "My_Alias")), name="third")
    reg = host.registries()["pruner"]
    for key in ("my-pruner", "MY_PRUNER", "mp", "my-alias", "My_Alias"):
        assert reg.get(key).name == "my-pruner"
    assert "mp" in reg and "my-pruner" in reg.names() and "mp" not in reg.names()
    # built-in alias
    assert host.registries()["dataset"].get("fmnist").name == "fashion-mnist"


def test_broken_register_hook_is_skipped_with_one_line(host, capsys):
    host.register(Broken(), name="broken")
    host.register(Provider("fine"), name="fine")
    regs = host.registries()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "skipping plugin 'broken'" in err[0] and "broken plugin exploded" in err[0]
    assert "fine" in regs["pruner"] and "dm" in regs["distiller"] and "random" in regs["pruner"]
    assert [f.name for f in host.failures] == ["broken"]


def test_failed_plugin_registers_nothing(host, capsys):
    class Half:
        @hookimpl
        def register_datasets(self, register):
            register("half-ds", "pd_plugins.data.builtin:digits")

        @hookimpl
        def register_pruners(self, register):
            raise ValueError("second hook fails")

    host.register(Half(), name="half")
    regs = host.registries()
    assert "half-ds" not in regs["dataset"]  # staged entries of a failing plugin are dropped
    assert "half" in capsys.readouterr().err


def test_broken_plugin_fatal_when_strict(host, monkeypatch):
    monkeypatch.setenv("PD_STRICT_PLUGINS", "1")
    host.register(Broken(), name="broken")
    with pytest.raises(PluginLoadError, match="failed to load plugin 'broken'"):
        host.registries()


def test_broken_plugin_strict_cli_exit_3(host, monkeypatch):
    from pd_plugins.cli import cli

    monkeypatch.setenv("PD_STRICT_PLUGINS", "1")
    host.register(Broken(), name="broken")
    res = CliRunner().invoke(cli, ["list", "pruners"])
    assert res.exit_code == 3, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "broken" in lines[0]
    assert "Traceback" not in res.output + res.stderr


class FakeEntryPoint:
    def __init__(self, name, loader):
        self.name, self._loader, self.dist = name, loader, None

    def load(self):
        return self._loader()


def _fake_entry_points(monkeypatch, eps):
    import importlib.metadata

    monkeypatch.delenv("PD_LOAD_PLUGINS", raising=False)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None, **kw: list(eps) if group == "pd_plugins" else [])


def _good_module():
    mod = types.ModuleType("good_plugin")
    mod.register_pruners = hookimpl(lambda register: register("good-ep", RANDOM, summary="via entry point"))
    return mod


def _import_fails():
    raise ImportError("No module named 'not_installed_dep'")


def test_entry_point_import_failure_is_skipped(monkeypatch, capsys):
    from pd_plugins.plugins import Host

    _fake_entry_points(monkeypatch, [FakeEntryPoint("bad-ep", _import_fails), FakeEntryPoint("good", _good_module)])
    h = Host()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "skipping plugin 'bad-ep'" in err[0] and "not_installed_dep" in err[0]
    assert "good-ep" in h.registries()["pruner"]
    assert not h.pm.has_plugin("bad-ep")
    assert [p["name"] for p in h.plugin_list()] == ["good"]


def test_unknown_name_mentions_the_plugin_that_failed_to_load(monkeypatch, capsys):
    from pd_plugins.plugins import Host

    _fake_entry_points(monkeypatch, [FakeEntryPoint("grand", _import_fails)])
    reg = Host().registries()["pruner"]
    with pytest.raises(UnknownNameError) as exc:
        reg.get("grand")
    msg = str(exc.value)
    assert "plugin 'grand' failed to load" in msg and "not_installed_dep" in msg and "\n" not in msg, msg


def test_entry_point_import_failure_strict(monkeypatch):
    from pd_plugins.plugins import Host

    _fake_entry_points(monkeypatch, [FakeEntryPoint("bad-ep", _import_fails)])
    monkeypatch.setenv("PD_STRICT_PLUGINS", "1")
    with pytest.raises(PluginLoadError, match="bad-ep"):
        Host()


def test_entry_point_filter(monkeypatch):
    from pd_plugins.plugins import Host

    _fake_entry_points(monkeypatch, [FakeEntryPoint("bad-ep", _import_fails), FakeEntryPoint("good", _good_module)])
    monkeypatch.setenv("PD_LOAD_PLUGINS", "good")
    h = Host()
    assert not h.failures and "good-ep" in h.registries()["pruner"]


def _misspelled_module():
    mod = types.ModuleType("typo_plugin")
    mod.register_pruner = hookimpl(lambda register: None)  # should be register_pruners
    return mod


def test_check_pending_catches_misspelled_hook(host):
    class Typo:
        @hookimpl
        def register_pruner(self, register):
            pass

    with pytest.raises((pluggy.PluginValidationError, PluginLoadError), match="register_pruner"):
        host.register(Typo(), name="typo")
    assert not host.pm.has_plugin("typo")  # a rejected plugin does not linger
    assert "random" in host.registries()["pruner"]


def test_misspelled_hook_in_entry_point_is_isolated(monkeypatch, capsys):
    from pd_plugins.plugins import Host

    _fake_entry_points(monkeypatch, [FakeEntryPoint("typo", _misspelled_module), FakeEntryPoint("good", _good_module)])
    h = Host()
    err = capsys.readouterr().err
    assert "skipping plugin 'typo'" in err and "register_pruner" in err
    assert "good-ep" in h.registries()["pruner"]


# -- registries are filled through pluggy's own call path --------------------------------


class Recorder:
    """A wrapper around every ``register_pruners`` call (new-style ``wrapper=True``)."""

    def __init__(self):
        self.calls = []

    @hookimpl(wrapper=True)
    def register_pruners(self, register):
        self.calls.append(register)
        return (yield)


def test_wrappers_apply_to_provider_hooks(host):
    rec = Recorder()
    host.register(rec, name="recorder")
    host.register(Provider("my-pruner"), name="third")
    regs = host.registries()
    assert len(rec.calls) == 2  # one call per providing plugin: the built-in pruners and 'third'
    assert regs["pruner"].get("my-pruner").plugin == "third"  # entries still name their plugin


def test_tryfirst_orders_third_party_registrations(host, capsys):
    class First(Provider):
        @hookimpl(tryfirst=True)
        def register_pruners(self, register):
            register("shared", RANDOM, summary="from first")

    host.register(First(), name="first")
    host.register(Provider("shared"), name="second")  # registered later: pluggy would call it first
    regs = host.registries()
    assert regs["pruner"].get("shared").summary == "from first"
    assert "skipping plugin 'second'" in capsys.readouterr().err


def test_hookcall_monitoring_and_tracing_see_provider_hooks(monkeypatch, capsys):
    from pd_plugins.plugins import Host

    monkeypatch.setenv("PD_TRACE_PLUGINS", "1")
    h = Host(load_entrypoints=False)
    seen = []
    undo = h.pm.add_hookcall_monitoring(lambda name, impls, kwargs: seen.append(name), lambda *a: None)
    h.registries()
    undo()
    assert "register_pruners" in seen and "register_models" in seen
    assert "register_pruners" in capsys.readouterr().err


def test_run_context_uses_the_run_host(host, tmp_path):
    from pd_plugins.plugins import Host
    from pd_plugins.config import RunConfig
    from pd_plugins.pipeline.runner import Run

    built = []

    def probe_net(channels, num_classes, im_size):
        built.append((channels, num_classes, im_size))
        import torch

        return torch.nn.Linear(1, 1)

    class Models:
        @hookimpl
        def register_models(self, register):
            register("probe-net", probe_net)

    own = Host(load_entrypoints=False)  # not the process host (the fixture installed another)
    own.register(Models(), name="models")
    run = Run(RunConfig(model="probe-net", distiller="none", evaluator="none", out=str(tmp_path / "r"),
                        device="cpu"), host=own)
    run.context("prune").make_model(1, 10, (8, 8))
    assert built == [(1, 10, (8, 8))]
    assert "probe-net" not in host.registries()["model"]
