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

from pd_plugins import hookspecs
from pd_plugins._registry import KINDS, Entry, Registry
from pd_plugins.errors import PluginLoadError, RegistryError

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

    def who(self) -> str:
        """``'name' (dist version)``."""
        return f"{self.name!r}" + (f" ({self.dist} {self.version})" if self.dist else "")

    def line(self) -> str:
        return f"pd_plugins: skipping plugin {self.who()}: {self.error}"


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
        self._warned: set[tuple] = set()
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
    def _providers(self, hook_name: str) -> list[str]:
        """Names of the plugins implementing ``hook_name`` (wrappers aside), in pluggy's call order."""
        impls = getattr(self.pm.hook, hook_name).get_hookimpls()
        return [impl.plugin_name for impl in reversed(impls) if not (impl.wrapper or impl.hookwrapper)]

    def _call_one(self, hook_name: str, plugin_name: str, **kwargs):
        """Call ``hook_name`` on one providing plugin, through pluggy's own call path.

        The call goes through a subset hook caller (``pm.subset_hook_caller``, public API) that
        leaves out the other providers, so pluggy's wrappers (old and new style), its
        ``add_hookcall_monitoring`` callbacks and ``PD_TRACE_PLUGINS`` tracing all apply; callers
        visit the providers in pluggy's order (:meth:`_providers`: ``tryfirst``/``trylast``, then
        last registered first). Why not one 1:N call: pluggy offers no public way to tell which
        implementation is running inside it, yet every registry entry must record the plugin
        (dist, version) that registered it, and a 1:N call stops at the first implementation that
        raises, where one broken plugin must be skipped alone. The price: a wrapper sees one call
        per providing plugin.
        """
        others = [self.pm.get_plugin(n) for n in self._providers(hook_name) if n != plugin_name]
        return self.pm.subset_hook_caller(hook_name, remove_plugins=others)(**kwargs)

    def _info(self, plugin_name: str) -> PluginInfo:
        return self.info.get(plugin_name) or PluginInfo(plugin_name)

    def _report(self, plugin_name: str, exc: BaseException) -> None:
        """Record a third-party plugin's failure in one stderr line (fatal if strict); a built-in's re-raises."""
        info = self._info(plugin_name)
        if info.builtin:
            raise exc
        self._fail(LoadFailure(plugin_name, info.dist, info.version, f"{type(exc).__name__}: {exc}"), exc)

    def _skip(self, plugin_name: str, exc: BaseException) -> None:
        """Skip a plugin whose registration failed: reported, then unregistered (its observer hooks too)."""
        self._report(plugin_name, exc)
        self.pm.unregister(name=plugin_name)
        self.info.pop(plugin_name, None)

    def _registrar(self, kind: str, plugin_name: str, sink: list):
        """The ``register`` callback one plugin's provider hook receives for ``kind``."""
        info = self._info(plugin_name)

        def register(name, factory, *, summary="", aliases=(), replace=False, **meta):
            entry = Entry(name=name, kind=kind, factory=factory, summary=summary, aliases=tuple(aliases),
                          plugin=plugin_name, dist=info.dist, version=info.version, meta=meta)
            if not isinstance(factory, str):  # lazy "module:attr" factories are checked on load
                entry.check_kind(factory)
            sink.append((entry, bool(replace)))

        return register

    def _stage_entries(self) -> list[tuple[Entry, bool]]:
        """Every ``(entry, replace)`` the provider hooks register, per kind in call order, built-ins first.

        A plugin whose hook raises, or that registers a factory of the wrong kind, is skipped
        with all its entries.
        """
        staged: list[tuple[Entry, bool]] = []
        failed: set[str] = set()
        for kind, hook_name in PROVIDER_HOOKS.items():
            providers = self._providers(hook_name)
            providers.sort(key=lambda n: not self._info(n).builtin)  # stable: pluggy's order within each group
            for plugin_name in providers:
                mine: list[tuple[Entry, bool]] = []
                try:
                    self._call_one(hook_name, plugin_name, register=self._registrar(kind, plugin_name, mine))
                except Exception as exc:  # isolate any failure of third-party code
                    self._skip(plugin_name, exc)
                    failed.add(plugin_name)
                    continue
                staged.extend(mine)
        return [(entry, replace) for entry, replace in staged if entry.plugin not in failed]

    def registries(self) -> dict[str, Registry]:
        """One registry per kind, filled by the provider hooks (built once per set of plugins).

        Built-ins register first; a third-party plugin whose name or alias is taken is skipped
        with one line naming both plugins (fatal under ``PD_STRICT_PLUGINS=1``). A deliberate
        ``replace=True`` is warned about once and recorded in the entry's ``replaces``.
        """
        if self._registries is not None:
            return self._registries
        staged = self._stage_entries()
        while True:  # rebuilt without each conflicting plugin, whose other entries may already be in
            regs = {kind: Registry(kind, failures=self.failures) for kind in KINDS}
            conflict = None
            for entry, replace in staged:
                try:
                    regs[entry.kind].add(entry, replace=replace)
                except RegistryError as exc:
                    conflict = (entry.plugin, exc)
                    break
            if conflict is None:
                break
            self._skip(*conflict)  # raises for a built-in, or when strict
            staged = [(e, r) for e, r in staged if e.plugin != conflict[0]]
        for reg in regs.values():
            for entry in reg.entries():
                self._warn_replace(entry)
        self._registries = regs
        return regs

    def _warn_replace(self, entry: Entry) -> None:
        key = (entry.kind, entry.name, entry.plugin, entry.replaces)
        if entry.replaces and key not in self._warned:
            self._warned.add(key)
            sys.stderr.write(f"pd_plugins: {entry.provenance()} replaces {entry.kind} {entry.name!r} "
                             f"of {entry.replaces} (replace=True)\n")

    def add_commands(self, cli) -> None:
        """Let plugins add ``pd-run`` sub-commands (built-ins first); a failing plugin is reported and skipped.

        The registries are built first, so a plugin skipped for its registrations adds no commands.
        """
        self.registries()
        names = self._providers("register_commands")
        names.sort(key=lambda n: not self._info(n).builtin)
        for plugin_name in names:
            try:
                self._call_one("register_commands", plugin_name, cli=cli)
            except Exception as exc:
                self._report(plugin_name, exc)

    def plugin_list(self, include_builtin: bool = False) -> list[dict]:
        """Loaded plugins (built-ins first), each with its hooks and the entries it ``replaces``."""
        regs = self.registries()
        names = [n for n in self.info if self.info[n].builtin] + [n for n in self.info if not self.info[n].builtin]
        out = []
        for name in names:
            info, plugin = self.info[name], self.pm.get_plugin(name)
            if plugin is None or (info.builtin and not include_builtin):
                continue
            hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
            replaces = [f"{e.kind} {e.name!r} of {e.replaces}" for reg in regs.values() for e in reg.entries()
                        if e.plugin == name and e.replaces]
            out.append({"name": name, "dist": info.dist, "version": info.version, "hooks": hooks,
                        "builtin": info.builtin, **({"replaces": replaces} if replaces else {})})
        return out


def _own_version() -> str:
    from pd_plugins._version import __version__

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
