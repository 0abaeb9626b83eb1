"""Run configuration: :class:`RunConfig` (everything that defines a run, written fully resolved
to ``config.json``) and reading config files (YAML, TOML or JSON). The CLI, sweeps and scripts
all build runs from here; this module imports nothing heavy."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Optional

from pd_plugins.errors import DataError, OptionsError
from pd_plugins.paths import expect_file


@dataclass
class RunConfig:
    """Everything that defines a run. Written, fully resolved, to ``config.json``."""

    dataset: str = "digits"
    data_root: Optional[str] = None
    dataset_options: dict = field(default_factory=dict)
    pruner: str = "none"
    keep: Optional[float] = None
    pruner_options: dict = field(default_factory=dict)
    mode: str = "auto"  # a Run writes the resolved mode (pool, init, init-random) to config.json
    subset: Optional[str] = None
    distiller: str = "dm"
    ipc: int = 10
    distiller_options: dict = field(default_factory=dict)
    model: str = "convnet"
    model_options: dict = field(default_factory=dict)
    augmentation: str = "dsa"
    augmentation_options: dict = field(default_factory=dict)
    evaluator: str = "dsa-step"
    evaluator_options: dict = field(default_factory=dict)
    eval_repeats: Optional[int] = None
    seed: int = 0
    device: str = "auto"
    budget: str = "auto"
    precision: str = "fp32"
    compile: bool = False
    checkpoint_every: int = 50
    out: Optional[str] = None
    progress: bool = True

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        clean = {}
        for key, value in (values or {}).items():
            k = str(key).replace("-", "_")
            if k in ("resolved", "stage_fingerprints"):
                continue  # written by the runner into config.json; ignored on read
            if k not in names:
                raise OptionsError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(names))}")
            clean[k] = value
        return cls(**clean)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_config_file(path: str) -> dict:
    """Read a YAML, TOML or JSON config; a malformed file is one DataError line."""
    p = expect_file(path, "config file")
    text = p.read_text()
    try:
        if p.suffix.lower() == ".toml":
            import tomllib

            values = tomllib.loads(text)
        elif p.suffix.lower() == ".json":
            values = json.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"config file {p} is malformed: {first}") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise DataError(f"config file {p} must hold a mapping of keys to values")
    return {str(k).replace("-", "_"): v for k, v in values.items()}
