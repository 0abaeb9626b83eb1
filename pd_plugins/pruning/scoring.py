"""The one scoring path of the score-based pruners: train scorer networks with one recipe,
record a per-sample statistic, average it over independent runs, cache the result.

* **Recipe** (:class:`ScorerRecipe`): the MTT expert recipe of the algorithm reference
  (SGD lr 0.01, momentum 0, weight decay 0, batch 256, independent DSA from
  ``ctx.make_augmenter``, no lr decay) unless the pruner's options say otherwise.
* **Statistic** (:func:`sample_statistic`): per-sample cross-entropy (``"loss"``) or EL2N
  (``"el2n"``, the L2 norm of softmax minus one-hot), on unaugmented normalised images, eval
  mode, batched, under ``torch.inference_mode``, with fp32 softmax/CE.
* **Runs** (:func:`score_dataset`): the statistic is computed per network and then averaged
  across networks (EL2N: norm per model, mean across models, then rank).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from pd_plugins.training import accel
from pd_plugins.errors import DataError, OptionsError
from pd_plugins.training.evaluate import TrainRecipe
from pd_plugins.pruning.score_cache import cached_scores
from pd_plugins.types import ImageDataset

STATISTICS = ("loss", "el2n")


@dataclass(frozen=True)
class ScorerRecipe(TrainRecipe):
    """How one scorer network is built and trained (``epochs`` = epochs before scoring)."""

    model: str = "convnet"
    model_options: dict = field(default_factory=dict)
    score_batch: int = 512

    def describe(self) -> dict:
        return asdict(self)


def parse_model_options(value, model: str) -> dict:
    """Scorer model options from a dict or a ``"width=32,depth=3"`` string, typed by the model registry."""
    from pd_plugins.options import coerce, as_dict, parse_key_values
    from pd_plugins.plugins import registries

    if isinstance(value, str):
        value = parse_key_values([p for p in value.split(",") if p.strip()], flag="scorer_options")
    entry = registries()["model"].get(model)
    given = dict(value or {})
    typed = as_dict(coerce(entry.options_class(), given, what=f"scorer model {model!r}"))
    return {k: typed[k] for k in given}


def train_scorer(data: ImageDataset, ctx, recipe: ScorerRecipe, key: tuple, on_batch=None) -> torch.nn.Module:
    """A fresh scorer (init from ``ctx.fork_rng(*key)``) trained ``recipe.epochs`` epochs on ``data``
    (``on_batch`` as in :func:`pd_plugins.training.evaluate.train_network`)."""
    with ctx.fork_rng("scorer-init", *key):
        net = ctx.make_model(data.channels, data.num_classes, data.im_size, name=recipe.model, **recipe.model_options)
    if recipe.epochs > 0:
        recipe.train(net, data, ctx, ctx.generator("scorer-train", *key), desc=f"scorer {'/'.join(map(str, key))}",
                     on_batch=on_batch)
    return net


def load_scorer(path, data: ImageDataset, ctx, recipe: ScorerRecipe) -> torch.nn.Module:
    """A scorer built for ``data`` with the weights of a ``torch.save``d state_dict at ``path``."""
    state = _safe_load(path)
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise DataError(f"scorer checkpoint {path} is not a state_dict (a dict of tensors)")
    net = ctx.make_model(data.channels, data.num_classes, data.im_size, name=recipe.model, **recipe.model_options)
    expected = net.state_dict()
    what = (f"a {recipe.model} scorer for {data.name} ({data.num_classes} classes, {data.channels} channels, "
            f"{data.im_size[0]}x{data.im_size[1]})")
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing or extra:
        raise DataError(f"scorer checkpoint {path} does not match {what}: "
                        f"missing {missing[:3]}, unexpected {extra[:3]}")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise DataError(f"scorer checkpoint {path} does not match {what}: {k} has shape "
                            f"{tuple(state[k].shape)}, expected {tuple(v.shape)}")
    net.load_state_dict(state)
    return net


def _safe_load(path):
    from pd_plugins.io import safe_torch_load

    return safe_torch_load(path, "scorer checkpoint")


@torch.inference_mode()
def sample_statistic(net: torch.nn.Module, data: ImageDataset, ctx, stat: str, batch: int = 512) -> torch.Tensor:
    """(N,) float32 per-sample ``stat`` ("loss" or "el2n") of ``net`` on unaugmented ``data``."""
    if stat not in STATISTICS:
        raise OptionsError(f"unknown statistic {stat!r}; use one of {', '.join(STATISTICS)}")
    if batch < 1:
        raise OptionsError(f"score batch must be >= 1, got {batch}")
    net.eval()
    n = len(data)
    labels = data.hard_labels.to(ctx.device)
    out = torch.empty(n, dtype=torch.float32, device=ctx.device)
    for start in range(0, n, batch):
        sl = slice(start, min(start + batch, n))
        logits = accel.forward(net, data.images(sl, ctx.device), ctx)
        logits = logits.float()
        y = labels[sl]
        if stat == "loss":
            out[sl] = F.cross_entropy(logits, y, reduction="none")
        else:
            err = torch.softmax(logits, dim=1)
            err[torch.arange(err.shape[0], device=err.device), y] -= 1.0
            out[sl] = torch.linalg.vector_norm(err, dim=1)
    return out.cpu()


def scorer_identity(ctx, recipe: ScorerRecipe, *, stat: str, runs: int, purpose: str,
                    checkpoint: Optional[str] = None) -> dict:
    """Everything but the data that determines :func:`score_dataset`'s scores (its cache key).

    That is the procedure, the recipe with the scorer's *effective* model options (a scorer of
    the run's own model inherits the run's ``--model-option``s, see ``ctx.model_options_for``),
    the seed and stage key its generators derive from, augmentation, precision, device type and
    compilation. A ``checkpoint`` replaces training: its content hash stands for recipe, seed,
    stage and augmentation.
    """
    model = {"model": recipe.model, "model_options": ctx.model_options_for(recipe.model, recipe.model_options)}
    identity = {"purpose": purpose, "stat": stat, "seed": ctx.seed, "stage": ctx.stage,
                "recipe": {**recipe.describe(), **model}, "runs": runs, "precision": ctx.precision,
                "device": torch.device(ctx.device).type, "compile": bool(ctx.compile),
                "augmentation": [ctx.augmentation, ctx.augmentation_options] if recipe.augment else None}
    if checkpoint:
        from pd_plugins.io import file_sha256

        from pd_plugins.paths import expect_file

        expect_file(checkpoint, "scorer checkpoint")
        identity.update(runs=1, checkpoint=file_sha256(checkpoint), recipe=model, augmentation=None, seed=None,
                        stage=None)
    return identity


def score_dataset(data: ImageDataset, ctx, recipe: ScorerRecipe, *, stat: str, runs: int, purpose: str,
                  checkpoint: Optional[str] = None) -> tuple[torch.Tensor, dict]:
    """Mean over ``runs`` scorers of the per-sample ``stat``; cached on disk. Returns ``(scores, meta)``.

    ``purpose`` names the scoring procedure (e.g. ``"loss-converge"``); pruners that share
    it share the cached scores. A ``checkpoint`` replaces training (one run, its weights).
    """
    if runs < 1:
        raise OptionsError(f"the number of scorer runs must be >= 1, got {runs}")
    identity = {"data": data.fingerprint(),
                **scorer_identity(ctx, recipe, stat=stat, runs=runs, purpose=purpose, checkpoint=checkpoint)}

    def compute() -> torch.Tensor:
        if checkpoint:
            return sample_statistic(load_scorer(checkpoint, data, ctx, recipe), data, ctx, stat, recipe.score_batch)
        from pd_plugins.executor import run_tasks

        done = dict(run_tasks(ctx, scorer_statistic, [(r, (r,)) for r in range(runs)],
                              shared=(data, recipe, purpose, stat)))
        return torch.stack([done[r] for r in range(runs)]).mean(0)

    scores, cache = cached_scores(ctx, identity, len(data), compute, what=f"{purpose} scores")
    return scores, {"statistic": stat, "purpose": purpose, "runs": identity["runs"], "scorer": identity["recipe"],
                    "checkpoint": str(checkpoint) if checkpoint else None, **cache}


def train_scorers(data: ImageDataset, ctx, n: int, recipe: Optional[ScorerRecipe] = None, *,
                  purpose: str = "scorer", **recipe_values) -> list[torch.nn.Module]:
    """``n`` independently seeded scorer networks trained on ``data`` with the shared recipe.

    ``recipe`` (default :class:`ScorerRecipe`, the MTT expert recipe: SGD lr 0.01, batch 256,
    independent DSA) may be adjusted with keyword values (``epochs=5, model="convnet"``).
    Network ``r`` is seeded from the run seed, the stage and ``(purpose, r)``: a pruner with
    the same ``purpose`` trains the same networks. They run on ``ctx``'s executor (inline by
    default) and come back in eval mode.
    """
    if n < 1:
        raise OptionsError(f"the number of scorers must be >= 1, got {n}")
    from dataclasses import replace

    from pd_plugins.executor import run_tasks

    recipe = replace(recipe or ScorerRecipe(), **recipe_values)
    done = dict(run_tasks(ctx, _trained_scorer, [(r, (r,)) for r in range(n)], shared=(data, recipe, purpose)))
    return [done[r].eval() for r in range(n)]


def _trained_scorer(ctx, data: ImageDataset, recipe: ScorerRecipe, purpose: str, r: int) -> torch.nn.Module:
    return train_scorer(data, ctx, recipe, (purpose, r))


def scorer_statistic(ctx, data: ImageDataset, recipe: ScorerRecipe, purpose: str, stat: str, r: int) -> torch.Tensor:
    """Scorer run ``r`` of ``purpose``: train it, return its per-sample ``stat`` (one executor task)."""
    net = train_scorer(data, ctx, recipe, (purpose, r))
    return sample_statistic(net, data, ctx, stat, recipe.score_batch)
