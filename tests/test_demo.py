"""Demo helpers (the --quick demo end to end runs from an installed wheel: test_packaging.py)."""
import torch

from tanet.apps.demo import pair_accuracy, reversal_pairs


def test_pair_accuracy_hand_case():
    names = ["move_right", "move_left", "grow", "shrink", "other"]
    pairs = reversal_pairs(names)
    assert pairs == [(0, 1), (2, 3)]
    scores = torch.tensor([[0.6, 0.4, 0, 0, 0],     # right: beats left  -> win
                           [0.6, 0.3, 0, 0, 0.1],   # left: loses to right -> loss
                           [0, 0, 0.2, 0.1, 0.7],   # grow beats shrink (top-1 wrong) -> win
                           [0, 0, 0, 0, 1.0]])      # "other" is in no pair: not counted
    labels = torch.tensor([0, 1, 2, 4])
    assert abs(pair_accuracy(scores, labels, pairs) - 2 / 3) < 1e-6
