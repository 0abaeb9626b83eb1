"""Old flat module paths (``pd_plugins.runner``, ``pd_plugins.selection``, ...) kept importable
for one release after the move into stage folders, each with a :class:`DeprecationWarning`.

A meta-path finder answers only for the names in :data:`MOVED` and hands back the module at its
new path, so ``pd_plugins.selection`` and ``pd_plugins.pruning.selection`` are one module object
(monkeypatching either patches both).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: old dotted name -> new dotted name (version 0.2 moved them; 0.3 drops the old names)
MOVED: dict[str, str] = {
    "pd_plugins.accel": "pd_plugins.training.accel",
    "pd_plugins.augment": "pd_plugins.training.augment",
    "pd_plugins.context": "pd_plugins.pipeline.context",
    "pd_plugins.coreset": "pd_plugins.distillation.selection_rules",
    "pd_plugins.datasets": "pd_plugins.data.builtin",
    "pd_plugins.distillers": "pd_plugins.distillation",
    "pd_plugins.distillers.coreset": "pd_plugins.distillation.coreset",
    "pd_plugins.distillers.dc": "pd_plugins.distillation.dc",
    "pd_plugins.distillers.dm": "pd_plugins.distillation.dm",
    "pd_plugins.distillers.glad": "pd_plugins.distillation.glad",
    "pd_plugins.distillers.ld3m": "pd_plugins.distillation.ld3m",
    "pd_plugins.distillers.mtt": "pd_plugins.distillation.mtt",
    "pd_plugins.evaluate": "pd_plugins.training.evaluate",
    "pd_plugins.experts": "pd_plugins.distillation.experts",
    "pd_plugins.generative": "pd_plugins.distillation.generative",
    "pd_plugins.generative.base": "pd_plugins.distillation.generative.base",
    "pd_plugins.generative.commands": "pd_plugins.distillation.generative.commands",
    "pd_plugins.generative.decoder": "pd_plugins.distillation.generative.decoder",
    "pd_plugins.generative.ldm": "pd_plugins.distillation.generative.ldm",
    "pd_plugins.generative.ldm_train": "pd_plugins.distillation.generative.ldm_train",
    "pd_plugins.generative.loop": "pd_plugins.distillation.generative.loop",
    "pd_plugins.generative.store": "pd_plugins.distillation.generative.store",
    "pd_plugins.interop": "pd_plugins.data.interop",
    "pd_plugins.nets": "pd_plugins.training.models",
    "pd_plugins.objectives": "pd_plugins.distillation.objectives",
    "pd_plugins.prune_report": "pd_plugins.pruning.report",
    "pd_plugins.pruners": "pd_plugins.pruning",
    "pd_plugins.pruners.early_loss": "pd_plugins.pruning.early_loss",
    "pd_plugins.pruners.el2n": "pd_plugins.pruning.el2n",
    "pd_plugins.pruners.loss": "pd_plugins.pruning.loss",
    "pd_plugins.pruners.random": "pd_plugins.pruning.random",
    "pd_plugins.pruners.trained": "pd_plugins.pruning.trained",
    "pd_plugins.runner": "pd_plugins.pipeline.runner",
    "pd_plugins.runtime_prune": "pd_plugins.pruning.runtime_prune",
    "pd_plugins.score_cache": "pd_plugins.pruning.score_cache",
    "pd_plugins.scoring": "pd_plugins.pruning.scoring",
    "pd_plugins.selection": "pd_plugins.pruning.selection",
    "pd_plugins.subset": "pd_plugins.data.subset",
    "pd_plugins.synthetic": "pd_plugins.distillation.synthetic",
    "pd_plugins.zca": "pd_plugins.data.zca",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, new: str):
        self.new = new

    def create_module(self, spec):
        return importlib.import_module(self.new)

    def exec_module(self, module):  # the module is already executed under its new name
        return None


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = MOVED.get(fullname)
        if new is None:
            return None
        warnings.warn(f"{fullname} moved to {new}; import it from there (or from pd_plugins) — "
                      "the old path goes away in the next release", DeprecationWarning, stacklevel=3)
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


def install() -> None:
    """Add the finder once (idempotent)."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
