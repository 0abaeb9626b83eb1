"""Tests of the forgetting-events plugin (run after installing the package)."""
import torch

from pd_plugins.testing import check_pruner
from pd_plugins_forgetting.impl import ForgettingPruner, forgetting_events


def test_counts_correct_to_incorrect_transitions():
    c = torch.tensor([[1, 0, 1, 0],
                      [0, 0, 1, 1],
                      [1, 0, 1, 0],
                      [0, 0, 1, 0]], dtype=torch.bool)
    # sample 0: 1->0, 1->0 = 2 events; sample 1: never learned -> 4 (= presentations);
    # sample 2: unforgettable -> 0; sample 3: learned once, forgotten once -> 1
    assert forgetting_events(c).tolist() == [2.0, 4.0, 0.0, 1.0]


def test_direction_maps_to_shared_selector():
    most = ForgettingPruner(ForgettingPruner.resolve_options({"keep": "most-forgotten"}))
    least = ForgettingPruner(ForgettingPruner.resolve_options({"keep": "least-forgotten"}))
    assert most.selection(0.3)["direction"] == "hard" and least.selection(0.3)["direction"] == "easy"


def test_conforms_to_the_pruner_contract():
    # options, determinism under a seed, the PruneResult, and the score cache (score_key)
    report = check_pruner(ForgettingPruner, {"epochs": 3, "batch": 16, "augment": False})
    assert {"options", "bad option value", "result", "determinism", "score cache"} <= set(report.checked)


def test_keeps_the_most_forgotten_per_class(tiny_dataset, run_context):
    result = ForgettingPruner(ForgettingPruner.resolve_options({"epochs": 4, "batch": 8})).prune(
        tiny_dataset, 0.5, run_context)
    kept = torch.zeros(len(tiny_dataset), dtype=torch.bool)
    kept[result.keep] = True
    for c in range(tiny_dataset.num_classes):
        mine = tiny_dataset.hard_labels == c
        assert int((kept & mine).sum()) == int(mine.sum()) // 2
        assert result.scores[kept & mine].min() >= result.scores[~kept & mine].max()
