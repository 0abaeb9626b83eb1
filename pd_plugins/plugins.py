"""The plugin manager: loading built-in and third-party plugins, and filling the registries.

Environment switches:

* ``PD_LOAD_PLUGINS`` -- unset: load every ``pd_plugins`` entry point; ``""``: none;
  ``"a,b"``: only those distributions (or entry-point names).
* ``PD_STRICT_PLUGINS=1`` -- a plugin that fails to load or register is fatal instead of
  being skipped with a one-line warning.
* ``PD_TRACE_PLUGINS=1`` -- print every hook call to stderr.
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Optional

import pluggy

from . import hookspecs
from ._registry import KINDS, Entry, Registry
from .errors import PluginLoadError, RegistryError

ENTRY_POINT_GROUP = "pd_plugins"

DEFAULT_PLUGINS = (
    "pd_plugins.default_plugins.datasets",
    "pd_plugins.default_plugins.models",
    "pd_plugins.default_plugins.augmentations",
    "pd_plugins.default_plugins.evaluators",
    "pd_plugins.default_plugins.pruners",
    "pd_plugins.default_plugins.distillers",
    "pd_plugins.default_plugins.commands",
    "pd_plugins.default_plugins.generators",
)

PROVIDER_HOOKS = {kind: f"register_{kind}s" for kind in KINDS}


@dataclass
class LoadFailure:
    name: str
    dist: str
    version: str
    error: str

    def line(self) -> str:
        where = f" ({self.dist} {self.version})" if self.dist else ""
        return f"pd_plugins: skipping plugin {self.name!r}{where}: {self.error}"


@dataclass
class PluginInfo:
    name: str
    dist: str = ""
    version: str = ""
    builtin: bool = False


class Host:
    """A plugin manager plus the registries it fills and the failures it skipped."""

    def __init__(self, load_entrypoints: bool = True, load_defaults: bool = True):
        self.pm = pluggy.PluginManager("pd_plugins")
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self.failures: list[LoadFailure] = []
        self._registries: Optional[dict[str, Registry]] = None
        if os.environ.get("PD_TRACE_PLUGINS") == "1":
            self.pm.trace.root.setwriter(lambda msg: sys.stderr.write(f"pd_plugins trace: {msg}"))
            self.pm.enable_tracing()
        if load_defaults:
            for mod_name in DEFAULT_PLUGINS:
                self.pm.register(importlib.import_module(mod_name), name=mod_name)
                self.info[mod_name] = PluginInfo(mod_name, "pd-plugins", _own_version(), builtin=True)
        if load_entrypoints:
            self._load_entrypoints()
        self.pm.check_pending()

    # -- loading -------------------------------------------------------------
    @staticmethod
    def strict() -> bool:
        return os.environ.get("PD_STRICT_PLUGINS", "") not in ("", "0")

    def _fail(self, failure: LoadFailure, exc: BaseException) -> None:
        if self.strict():
            raise PluginLoadError(failure.line().replace("skipping", "failed to load")) from exc
        self.failures.append(failure)
        sys.stderr.write(failure.line() + "\n")

    def _load_entrypoints(self) -> None:
        from importlib.metadata import entry_points

        wanted = os.environ.get("PD_LOAD_PLUGINS")
        allow = None if wanted is None else {w.strip() for w in wanted.split(",") if w.strip()}
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else ""
            version = dist.version if dist is not None else ""
            if allow is not None and ep.name not in allow and dist_name not in allow:
                continue
            if self.pm.has_plugin(ep.name) or self.pm.is_blocked(ep.name):
                continue
            try:
                module = ep.load()
                self.pm.register(module, name=ep.name)
                self.pm.check_pending()  # a misspelled hook name fails this plugin only
            except Exception as exc:  # isolate any failure of third-party code
                if self.pm.has_plugin(ep.name):
                    self.pm.unregister(name=ep.name)
                self._fail(LoadFailure(ep.name, dist_name, version, f"{type(exc).__name__}: {exc}"), exc)
                continue
            self.info[ep.name] = PluginInfo(ep.name, dist_name, version)

    def register(self, plugin, name: str, dist: str = "", version: str = "") -> None:
        """Register a plugin object (module or instance with ``@hookimpl`` methods)."""
        self.pm.register(plugin, name=name)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(name=name)
            raise PluginLoadError(f"plugin {name!r}: {exc}") from exc
        self.info[name] = PluginInfo(name, dist, version)
        self._registries = None

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.info.pop(name, None)
        self._registries = None

    # -- registries ------------------------------------------------------------
    def _ordered_plugins(self):
        """Built-ins first, so a third-party ``replace=True`` can override them."""
        names = [n for n in self.info if self.info[n].builtin] + [n for n in self.info if not self.info[n].builtin]
        return [(n, self.pm.get_plugin(n)) for n in names if self.pm.get_plugin(n) is not None]

    def registries(self) -> dict[str, Registry]:
        if self._registries is not None:
            return self._registries
        regs = {kind: Registry(kind) for kind in KINDS}
        for plugin_name, plugin in self._ordered_plugins():
            info = self.info[plugin_name]
            staged: list[tuple[Entry, bool]] = []
            try:
                for kind, hook_name in PROVIDER_HOOKS.items():
                    for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                        if impl.plugin is not plugin:
                            continue

                        def register(name, factory, *, summary="", aliases=(), replace=False, _kind=kind, **meta):
                            entry = Entry(
                                name=name, kind=_kind, factory=factory, summary=summary,
                                aliases=tuple(aliases), plugin=plugin_name, dist=info.dist,
                                version=info.version, meta=meta,
                            )
                            staged.append((entry, bool(replace)))

                        impl.function(**{arg: register for arg in impl.argnames})
            except Exception as exc:
                if info.builtin:
                    raise
                self._fail(LoadFailure(plugin_name, info.dist, info.version, f"{type(exc).__name__}: {exc}"), exc)
                continue
            for entry, replace in staged:  # commit only after the plugin's hooks all ran
                regs[entry.kind].add(entry, replace=replace)
        self._registries = regs
        return regs

    def add_commands(self, cli) -> None:
        for plugin_name, plugin in self._ordered_plugins():
            for impl in self.pm.hook.register_commands.get_hookimpls():
                if impl.plugin is plugin:
                    try:
                        impl.function(cli=cli)
                    except Exception as exc:
                        info = self.info[plugin_name]
                        if info.builtin:
                            raise
                        self._fail(LoadFailure(plugin_name, info.dist, info.version, f"{type(exc).__name__}: {exc}"), exc)

    def plugin_list(self, include_builtin: bool = False) -> list[dict]:
        out = []
        for name, plugin in self._ordered_plugins():
            info = self.info[name]
            if info.builtin and not include_builtin:
                continue
            hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
            out.append({"name": name, "dist": info.dist, "version": info.version, "hooks": hooks, "builtin": info.builtin})
        return out


def _own_version() -> str:
    from . import __version__

    return __version__


_host: Optional[Host] = None


def get_host() -> Host:
    """The process-wide host, created (and plugins loaded) on first use."""
    global _host
    if _host is None:
        _host = Host()
    return _host


def set_host(host: Optional[Host]) -> None:
    """Replace the process-wide host (tests)."""
    global _host
    _host = host


def registries() -> dict[str, Registry]:
    return get_host().registries()


def get_entry(kind: str, name: str) -> Entry:
    return registries()[kind].get(name)


__all__ = ["Host", "get_host", "set_host", "registries", "get_entry", "RegistryError", "ENTRY_POINT_GROUP"]
