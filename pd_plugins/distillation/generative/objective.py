"""The pixel objective of a latent distiller (``glad``, ``ld3m``) and its options.

A latent distiller reuses a pixel distiller's objective by name (``dc``, ``dm``, ``mtt``) and
passes it ``objective_options`` through that distiller's own option parser, layered as

    the objective's paper defaults < the latent method's per-objective defaults
    < the budget's per-objective overrides < the user's ``objective_options``.

Unknown keys are a one-line error. The pixel distiller's image-optimiser settings
(``iterations``, ``lr_img``, ``momentum``, ``init``, ``log_every``) have no meaning for latents
(the latent distiller's own options set those), so they are refused as objective options.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

from pd_plugins.errors import OptionsError

#: pixel-distiller options that drive its image optimiser, not its objective
IMAGE_OPTIMISER_KEYS = frozenset({"iterations", "lr_img", "momentum", "init", "log_every"})


def objective_class(name: str, registry=None) -> type:
    """The pixel distiller ``name`` (it must expose ``objective()``)."""
    if registry is None:
        from pd_plugins.plugins import registries

        registry = registries()["distiller"]
    cls = registry.load(name)
    if not hasattr(cls, "objective"):
        raise OptionsError(f"distiller {name!r} exposes no objective(); use one of the pixel distillers (dc, dm, mtt)")
    return cls


def objective_fields(cls: type) -> list[str]:
    """The options of pixel distiller ``cls`` that configure its objective."""
    return [f.name for f in dataclasses.fields(cls.Options) if f.name not in IMAGE_OPTIMISER_KEYS]


def resolve_objective_options(method: str, objective: str, user: Optional[Mapping], defaults: Optional[Mapping] = None,
                              budget: Optional[Mapping] = None, registry=None) -> dict:
    """The objective's options (all of its objective fields, JSON-able) for latent method ``method``.

    ``defaults`` and ``budget`` are the method's per-objective layers for ``objective``;
    ``user`` wins over both. Raises OptionsError (one line) for an unknown or bad key.
    """
    from pd_plugins.options import as_dict, coerce

    cls = objective_class(objective, registry)
    valid = objective_fields(cls)
    what = f"{method}'s {objective!r} objective (objective_options)"
    user = {str(k).replace("-", "_"): v for k, v in (user or {}).items()}
    for key in user:
        if key in IMAGE_OPTIMISER_KEYS:
            raise OptionsError(f"objective option {key!r} drives the pixel distiller's image optimiser, not {what}; "
                               f"set {method}'s own options instead (pd-run show distiller {method})")
        if key not in valid:
            raise OptionsError(f"unknown option {key!r} for {what}; valid options: {', '.join(sorted(valid))}")
    layered = {**dict(defaults or {}), **dict(budget or {}), **user}
    opts = coerce(cls.Options, layered, what=what)
    return {k: v for k, v in as_dict(opts).items() if k not in IMAGE_OPTIMISER_KEYS}


def build_objective(objective: str, values: Mapping, registry=None):
    """The pixel distiller ``objective``'s Objective built from resolved ``values``."""
    from pd_plugins.options import coerce

    cls = objective_class(objective, registry)
    return cls(coerce(cls.Options, dict(values), what=f"objective {objective!r}")).objective()
