"""Named registries, one per kind, filled by the provider hooks."""
from __future__ import annotations

import difflib
import fnmatch
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from .errors import RegistryError, UnknownNameError

KINDS = ("pruner", "distiller", "dataset", "model", "augmentation", "evaluator", "generator")


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

    def load(self):
        """The factory itself, importing a lazy ``"module:attr"`` string on first use."""
        if isinstance(self.factory, str):
            mod_name, _, attr = self.factory.partition(":")
            try:
                obj = importlib.import_module(mod_name)
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except Exception as exc:
                raise RegistryError(
                    f"{self.kind} {self.name!r} ({self.origin()}) could not be loaded from {self.factory!r}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            self.factory = obj
        return self.factory

    def origin(self) -> str:
        if self.dist:
            return f"{self.dist} {self.version}".strip()
        return self.plugin or "?"

    def options_class(self) -> type:
        """The ``Options`` dataclass (strategies) or one derived from the factory's signature."""
        obj = self.load()
        opts = getattr(obj, "Options", None)
        if opts is not None:
            return opts
        from .options import options_from_signature

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
        }


class Registry:
    """Entries of one kind, keyed by kebab-case name (aliases resolve to the same entry)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}

    def add(self, entry: Entry, replace: bool = False) -> None:
        name = normalise_name(entry.name)
        entry.name = name
        for key in (name, *map(normalise_name, entry.aliases)):
            existing = self._lookup(key)
            if existing is not None and not (replace and key == name):
                raise RegistryError(
                    f"duplicate {self.kind} name {key!r}: registered by {existing.origin()} "
                    f"and by {entry.origin()} (pass replace=True to override deliberately)"
                )
        if replace and name in self._entries:
            old = self._entries[name]
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
        return f"unknown {self.kind} {name!r}{hint} (see: pd-run list {self.kind}s)"

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
