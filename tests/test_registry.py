"""Registry and plugin-host behaviour: duplicates, replace, did-you-mean, aliases and
isolation of broken plugins (hook errors, failed imports, misspelled hooks)."""
from __future__ import annotations

import types

import pluggy
import pytest
from click.testing import CliRunner

from pd_plugins import hookimpl
from pd_plugins.errors import PluginLoadError, RegistryError, UnknownNameError

RANDOM = "pd_plugins.pruners.random:RandomPruner"


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


def test_duplicate_name_names_both_plugins(host):
    host.register(Provider("random"), name="copycat", dist="pd-copycat", version="9.9")
    with pytest.raises(RegistryError) as exc:
        host.registries()
    msg = str(exc.value)
    assert "duplicate pruner name 'random'" in msg
    assert "pd-plugins" in msg and "pd-copycat 9.9" in msg and "replace=True" in msg


def test_duplicate_via_alias_and_case(host):
    host.register(Provider("Other", aliases=("RANDOM",)), name="aliaser")
    with pytest.raises(RegistryError, match="'random'"):
        host.registries()


def test_replace_true_overrides_builtin(host):
    host.register(Provider("random", replace=True), name="override")
    entry = host.registries()["pruner"].get("random")
    assert entry.plugin == "override" and entry.summary == "from random"


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
            register("half-ds", "pd_plugins.datasets:digits")

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
