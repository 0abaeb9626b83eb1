"""Named registries, one per kind, filled by the provider hooks."""
from __future__ import annotations

import difflib
import fnmatch
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

from pd_plugins.errors import RegistryError, UnknownNameError

KINDS = ("pruner", "distiller", "dataset", "model", "augmentation", "evaluator", "generator")

# What a factory of each strategy kind must be (the hookspecs document the same contracts):
# kind -> (base class in pd_plugins.strategies it must subclass, or None; methods it must have).
# Every other kind takes a plain callable (a function or a class that is not a strategy).
STRATEGY_CONTRACTS = {
    "pruner": ("Pruner", ("prune",)),
    "distiller": ("Distiller", ("distill",)),
    "evaluator": ("Evaluator", ("evaluate",)),
    "generator": (None, ("init_latents", "decode")),
}


def kind_mismatch(kind: str, obj: Any) -> Optional[str]:
    """Why ``obj`` cannot be a factory of ``kind`` (None when it can)."""
    from pd_plugins import strategies

    what = _qualname(obj)
    declared = obj.kind() if isinstance(obj, type) and issubclass(obj, strategies.Strategy) else None
    if declared not in (None, kind):
        return f"{what} is {_a(declared)}"
    if kind not in STRATEGY_CONTRACTS:
        return None if callable(obj) else f"{what} is not callable"
    base, methods = STRATEGY_CONTRACTS[kind]
    if base is not None and not (isinstance(obj, type) and issubclass(obj, getattr(strategies, base))):
        return f"{what} does not subclass pd_plugins.{base}"
    missing = [m for m in ("Options", *methods) if not callable(getattr(obj, m, None))]
    if not isinstance(obj, type) or missing:
        return f"{what} is not {_a(kind)} class (needs {', '.join(('Options',) + methods)})"
    return None


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _qualname(obj: Any) -> str:
    module, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}:{name}" if module and name else repr(obj)


def normalise_name(name: str) -> str:
    return str(name).strip().lower().replace("_", "-")


@dataclass
class Entry:
    """One registered strategy/factory and where it came from."""

    name: str
    kind: str
    factory: Union[str, Callable, type]
    summary: str = ""
    aliases: tuple[str, ...] = ()
    plugin: str = ""
    dist: str = ""
    version: str = ""
    meta: dict = field(default_factory=dict)
    replaces: str = ""  # provenance of the entry this one replaced (``replace=True``), else ""

    def load(self):
        """The factory itself, importing a lazy ``"module:attr"`` string on first use.

        A factory that is not of the entry's kind (a distiller registered as a pruner) is refused
        with a one-line :class:`RegistryError` naming the plugin.
        """
        if isinstance(self.factory, str):
            mod_name, _, attr = self.factory.partition(":")
            try:
                obj = importlib.import_module(mod_name)
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except Exception as exc:
                raise RegistryError(
                    f"{self.kind} {self.name!r} of {self.provenance()} could not be loaded from {self.factory!r}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            self.check_kind(obj)
            self.factory = obj
        return self.factory

    def check_kind(self, obj: Any) -> None:
        """Raise a one-line :class:`RegistryError` when ``obj`` is not a factory of this entry's kind."""
        reason = kind_mismatch(self.kind, obj)
        if reason is not None:
            raise RegistryError(f"{self.kind} {self.name!r} of {self.provenance()} is not {_a(self.kind)}: {reason}")

    def origin(self) -> str:
        if self.dist:
            return f"{self.dist} {self.version}".strip()
        return self.plugin or "?"

    def provenance(self) -> str:
        """``plugin 'name' (dist version)``: which plugin registered this entry."""
        return f"plugin {self.plugin!r}" + (f" ({self.origin()})" if self.dist else "")

    def options_class(self) -> type:
        """The ``Options`` dataclass (strategies) or one derived from the factory's signature."""
        obj = self.load()
        opts = getattr(obj, "Options", None)
        if opts is not None:
            return opts
        from pd_plugins.options import options_from_signature

        return options_from_signature(obj)

    def doc(self) -> str:
        import inspect

        return inspect.getdoc(self.load()) or self.summary or "Undocumented."

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "summary": self.summary,
            "aliases": list(self.aliases),
            "plugin": self.plugin,
            "dist": self.dist,
            "version": self.version,
            "factory": self.factory if isinstance(self.factory, str) else f"{self.factory.__module__}:{self.factory.__qualname__}",
            **({"meta": self.meta} if self.meta else {}),
            **({"replaces": self.replaces} if self.replaces else {}),
        }


class Registry:
    """Entries of one kind, keyed by kebab-case name (aliases resolve to the same entry).

    ``failures`` are the plugins the host skipped (objects with ``who()`` and ``error``): an
    unknown name mentions them, since the name may be one a skipped plugin would have provided.
    """

    def __init__(self, kind: str, failures: Sequence = ()):
        self.kind = kind
        self.failures = failures
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}

    def add(self, entry: Entry, replace: bool = False) -> None:
        """Add ``entry``; a taken name or alias raises unless ``replace`` (then ``entry.replaces`` says whose)."""
        name = normalise_name(entry.name)
        entry.name = name
        for key in (name, *map(normalise_name, entry.aliases)):
            existing = self._lookup(key)
            if existing is not None and not (replace and key == name):
                raise RegistryError(
                    f"duplicate {self.kind} name {key!r}: registered by {existing.provenance()} "
                    f"and by {entry.provenance()} (pass replace=True to override deliberately)"
                )
        entry.replaces = ""
        if replace and name in self._entries:
            old = self._entries[name]
            entry.replaces = old.provenance()
            for alias in old.aliases:
                self._aliases.pop(normalise_name(alias), None)
        self._entries[name] = entry
        for alias in entry.aliases:
            self._aliases[normalise_name(alias)] = name

    def _lookup(self, key: str) -> Optional[Entry]:
        key = normalise_name(key)
        if key in self._entries:
            return self._entries[key]
        if key in self._aliases:
            return self._entries[self._aliases[key]]
        return None

    def get(self, name: str) -> Entry:
        entry = self._lookup(name)
        if entry is None:
            raise UnknownNameError(self.unknown_message(name))
        return entry

    def unknown_message(self, name: str) -> str:
        choices = sorted(set(self._entries) | set(self._aliases))
        close = difflib.get_close_matches(normalise_name(name), choices, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}{self._skipped_note()}{hint} (see: pd-run list {self.kind}s)"

    def _skipped_note(self) -> str:
        if not self.failures:
            return ""
        if len(self.failures) == 1:
            f = self.failures[0]
            return f" (plugin {f.who()} failed to load and may provide it: {f.error})"
        return f" (plugins that failed to load may provide it: {', '.join(f.who() for f in self.failures)}; see: pd-run plugins)"

    def load(self, name: str):
        return self.get(name).load()

    def create(self, name: str, options: Optional[dict] = None, budget: Optional[str] = None):
        """Instantiate a strategy class with resolved, typed options."""
        cls = self.load(name)
        return cls(cls.resolve_options(options, budget))

    def names(self, include: Optional[str] = None, exclude: Optional[str] = None) -> list[str]:
        out = sorted(self._entries)
        if include:
            out = [n for n in out if fnmatch.fnmatch(n, include)]
        if exclude:
            out = [n for n in out if not fnmatch.fnmatch(n, exclude)]
        return out

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: str) -> bool:
        return self._lookup(name) is not None

    def __len__(self) -> int:
        return len(self._entries)
