"""Exception hierarchy. The CLI prints any :class:`PdPluginsError` as one line and exits with its ``exit_code``
(1; 2 for a device this machine does not have, like a usage error; 3 for a strict plugin failure)."""
from __future__ import annotations


class PdPluginsError(Exception):
    """Base class of every expected failure; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class UnknownNameError(PdPluginsError, LookupError):
    """A strategy, dataset or model name that no plugin registered."""


class RegistryError(PdPluginsError):
    """Two plugins registered the same name, or a registration was malformed."""


class PluginLoadError(PdPluginsError):
    """A plugin failed to import or register (fatal only under ``PD_STRICT_PLUGINS=1``)."""

    exit_code = 3


class OptionsError(PdPluginsError, ValueError):
    """An unknown option key, or a value that does not coerce to the option's type."""


class DeviceError(OptionsError):
    """A ``--device`` this machine does not have (unknown name, no CUDA, no such index): a usage
    error, exit 2 as for a malformed flag."""

    exit_code = 2


class DataError(PdPluginsError, ValueError):
    """Missing, malformed or inconsistent input data, checkpoints or caches."""


class StrategyError(PdPluginsError):
    """A strategy failed while running; wraps the original exception."""


class DivergenceError(StrategyError):
    """A distillation produced a non-finite loss or learning rate, or a learned lr <= 0.

    ``state`` holds the last finite synthetic set so it can still be saved; ``record`` says what went
    wrong, in plain values: ``quantity`` (e.g. ``syn_lr``), ``reason`` (``non-finite`` or ``<= 0``),
    ``iteration``, ``value``, its ``last_value`` at ``last_iteration`` (None when unknown) and
    ``kept_after_iteration`` (the iteration the kept state finished; -1: the initial set) and ``also`` (other
    metrics that failed in the same iteration).
    """

    def __init__(self, message: str, state=None, record: dict | None = None):
        super().__init__(message)
        self.state = state
        self.record = dict(record or {})

    def outcome(self) -> str:
        """The record in a few words, e.g. ``diverged at it 11 (syn_lr <= 0)``."""
        return divergence_outcome(self.record)


def divergence_outcome(record: dict) -> str:
    """A divergence record (:attr:`DivergenceError.record`) in a few words, e.g. ``diverged at it 11 (syn_lr <= 0)``."""
    if not record or record.get("iteration") is None:
        return "diverged"
    return f"diverged at it {record['iteration']} ({record.get('quantity', '?')} {record.get('reason', '')})".replace(" )", ")")


class DeviceMemoryError(StrategyError):
    """A strategy ran out of device memory; the message names the options that lower it and what
    was kept (a distillation's last checkpoint)."""


class StageExistsError(PdPluginsError):
    """An artifact already exists and ``--overwrite`` was not given."""
