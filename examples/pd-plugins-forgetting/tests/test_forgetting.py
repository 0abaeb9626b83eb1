"""Tests of the forgetting-events plugin (run after installing the package)."""
import torch

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
