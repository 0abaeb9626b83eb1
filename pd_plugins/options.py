"""Typed strategy options.

Every strategy has an ``Options`` dataclass. Values arrive as strings from ``-P KEY=VALUE``
or as YAML/TOML/JSON values from config files; :func:`coerce` turns them into the
dataclass's types and rejects unknown keys, listing the valid ones. Function factories
(models, datasets, augmentations) get an ``Options`` class derived from their keyword-only
parameters by :func:`options_from_signature`.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from typing import Any, Literal, Mapping, Optional, Union, get_args, get_origin

from pd_plugins.errors import OptionsError


def option(default: Any, help: str = "", *, recorded_at_default: bool = True, **kw) -> Any:
    """A dataclass field with a help string shown by ``pd-run show``.

    ``recorded_at_default=False`` is for an option added after runs were written: at its default it is
    left out of :func:`as_dict` (the recorded, fingerprinted options), so those runs keep their
    fingerprints and still resume; any other value is recorded.
    """
    meta = {"help": help} if recorded_at_default else {"help": help, "omit_at_default": True}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


def _resolved_types(cls) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # pragma: no cover - unresolvable forward refs
        return {f.name: f.type for f in dataclasses.fields(cls)}


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on", "y"):
        return True
    if t in ("0", "false", "no", "off", "n"):
        return False
    raise ValueError(f"not a boolean: {text!r} (use true/false)")


def _coerce_value(value: Any, tp: Any) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return value
    if origin is Union:
        non_none = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        errors = []
        for a in non_none:
            try:
                return _coerce_value(value, a)
            except (ValueError, TypeError) as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin is Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise ValueError(f"must be one of {', '.join(map(str, args))}")
    if tp is dict or origin is dict:
        if isinstance(value, str):
            value = mapping_from_text(value)
        if not isinstance(value, Mapping):
            raise ValueError(f"expected a mapping, got {value!r}")
        key_tp, val_tp = args if len(args) == 2 else (Any, Any)
        return {_coerce_value(k, key_tp): _coerce_value(v, val_tp) for k, v in value.items()}
    if origin in (tuple, list):
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("[") or text.startswith("("):
                text = "[" + text[1:-1] + "]"
                value = json.loads(text)
            else:
                value = [v for v in text.split(",") if v.strip() != ""]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ValueError(f"expected {len(args)} values, got {len(value)}")
            return tuple(_coerce_value(v, a) for v, a in zip(value, args))
        inner = args[0] if args else Any
        out = [_coerce_value(v, inner) for v in value]
        return tuple(out) if origin is tuple else out
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return _parse_bool(value)
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(f"not a boolean: {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"not an integer: {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            text = value.strip()
            try:
                return int(text)
            except ValueError:
                try:
                    f = float(text)
                except ValueError:
                    f = None
                if f is not None and f.is_integer():
                    return int(f)
        raise ValueError(f"not an integer: {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"not a number: {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"not a number: {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ValueError(f"not a string: {value!r}")
        return str(value)
    return value


def coerce(cls, values: Optional[Mapping[str, Any]], *, what: str = "options"):
    """Build ``cls`` from ``values``; unknown keys or bad values raise :class:`OptionsError`.

    Keys may use ``-`` or ``_``; a value of ``None`` means "use the default". A mapping-typed
    option takes a mapping (or its JSON text) and/or dotted keys ``NAME.SUB`` (from
    ``-D NAME.SUB=VALUE``), which are merged into it (dotted keys win).
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    types = _resolved_types(cls)
    values = fold_dotted(values, {n for n in fields if _is_mapping(types.get(n, Any))})
    kwargs = {}
    for raw_key, raw_value in values.items():
        key = str(raw_key).replace("-", "_")
        if key not in fields:
            valid = ", ".join(sorted(fields)) or "(none)"
            raise OptionsError(f"unknown option {raw_key!r} for {what}; valid options: {valid}")
        if raw_value is None:
            continue
        try:
            kwargs[key] = _coerce_value(raw_value, types.get(key, Any))
        except (ValueError, TypeError, json.JSONDecodeError) as exc:
            raise OptionsError(f"bad value {raw_value!r} for option {key!r} of {what}: {exc}") from None
    try:
        obj = cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise OptionsError(f"bad options for {what}: {exc}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except (ValueError, TypeError) as exc:
            raise OptionsError(f"bad options for {what}: {exc}") from None
    return obj


def mapping_from_text(text: str) -> dict:
    """A mapping option's text form: a JSON object, or ``k=v,k2=v2`` (values stay strings)."""
    text = text.strip()
    if text.startswith("{"):
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError(f"expected a JSON object, got {text!r}")
        return value
    pairs = [p for p in text.split(",") if p.strip()]
    if any("=" not in p for p in pairs):
        raise ValueError(f"expected a mapping (a JSON object, k=v,k2=v2 or NAME.KEY=VALUE), got {text!r}")
    return parse_key_values(pairs, flag="mapping")


def _is_mapping(tp: Any) -> bool:
    if get_origin(tp) is Union:
        return any(_is_mapping(a) for a in get_args(tp))
    return tp is dict or get_origin(tp) is dict


def fold_dotted(values: Optional[Mapping[str, Any]], mapping_fields: set[str]) -> dict:
    """``{"a.x": 1, "a": {"y": 2}}`` -> ``{"a": {"y": 2, "x": 1}}`` for the mapping fields named;
    other dotted keys are left as they are (and then rejected as unknown)."""
    out: dict[str, Any] = {}
    dotted: dict[str, dict] = {}
    for raw_key, value in (values or {}).items():
        key = str(raw_key).replace("-", "_")
        head, _, sub = key.partition(".")
        if sub and head in mapping_fields:
            dotted.setdefault(head, {})[sub] = value
        else:
            out[raw_key] = value
    for head, subs in dotted.items():
        base = out.pop(head, None)
        if isinstance(base, str):
            try:
                base = mapping_from_text(base)
            except (ValueError, json.JSONDecodeError, OptionsError) as exc:
                raise OptionsError(f"bad value {base!r} for option {head!r}: {exc}") from None
        if base is not None and not isinstance(base, Mapping):
            raise OptionsError(f"option {head!r} is a mapping; got {base!r} beside {head}.KEY=VALUE")
        out[head] = {**dict(base or {}), **subs}
    return out


def as_dict(options) -> dict:
    """Options dataclass to a JSON-able dict (tuples become lists); options declared with
    ``recorded_at_default=False`` are left out while they hold their default."""
    out = json.loads(json.dumps(dataclasses.asdict(options), default=str))
    for f in dataclasses.fields(options):
        if f.metadata.get("omit_at_default") and f.default is not dataclasses.MISSING \
                and getattr(options, f.name) == f.default:
            out.pop(f.name, None)
    return out


def describe(cls) -> list[dict]:
    """Rows of ``{name, type, default, help}`` for ``pd-run show``."""
    types = _resolved_types(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        rows.append(
            {
                "name": f.name,
                "type": _type_name(types.get(f.name, Any)),
                "default": default,
                "help": f.metadata.get("help", ""),
            }
        )
    return rows


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Union:
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is Literal:
        return "{" + ",".join(map(str, get_args(tp))) + "}"
    if origin is dict:
        return "mapping"
    if origin in (tuple, list):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in get_args(tp))}]"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def options_from_signature(fn, skip: tuple[str, ...] = ()) -> type:
    """A frozen dataclass mirroring ``fn``'s keyword-only parameters (with defaults)."""
    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn.__init__ if inspect.isclass(fn) else fn)
    except Exception:  # pragma: no cover
        hints = {}
    specs = []
    for p in sig.parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.name in skip:
            continue
        default = None if p.default is inspect.Parameter.empty else p.default
        tp = hints.get(p.name, type(default) if default is not None else Any)
        specs.append((p.name, tp, dataclasses.field(default=default)))
    name = "".join(part.title() for part in getattr(fn, "__name__", "factory").split("_")) + "Options"
    return dataclasses.make_dataclass(name, specs, frozen=True)


def parse_key_values(pairs, *, flag: str) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; a pair without ``=`` is an error."""
    out: dict[str, str] = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise OptionsError(f"{flag} expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        key = key.strip()
        if not key:
            raise OptionsError(f"{flag} expects KEY=VALUE, got {pair!r}")
        out[key.replace("-", "_")] = value
    return out
