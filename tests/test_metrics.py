"""Metrics on hand-computed cases."""
import math

import torch

from tanet.metrics import (confusion_matrix, mean_class_accuracy, per_class_accuracy,
                           plot_confusion_matrix, topk_accuracy, topk_correct)


def test_topk_hand_case():
    scores = torch.tensor([[0.1, 0.7, 0.2],   # label 1: top1 yes
                           [0.5, 0.3, 0.2],   # label 2: top1 no, top2 no (rank 3)
                           [0.3, 0.4, 0.3],   # label 0: top1 no; top2: tie broken by topk
                           [0.0, 0.2, 0.8]])  # label 2: top1 yes
    labels = torch.tensor([1, 2, 0, 2])
    acc = topk_accuracy(scores, labels, ks=(1, 3, 5))
    assert acc[1] == 0.5 and acc[3] == 1.0 and acc[5] == 1.0  # k clipped to K
    assert topk_correct(scores, labels, 2).tolist()[:2] == [True, False]
    assert topk_accuracy(scores[:0], labels[:0]) == {1: 0.0, 5: 0.0}


def test_confusion_and_mean_class():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    preds = torch.tensor([0, 0, 0, 1, 1, 0, 2])
    cm = confusion_matrix(preds, labels, 4)
    assert cm.tolist() == [[3, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    pc = per_class_accuracy(cm)
    assert pc[:3].tolist() == [0.75, 0.5, 1.0] and math.isnan(pc[3])
    # class 3 is absent from the labels: it does not count; overall accuracy would be 5/7
    assert mean_class_accuracy(cm) == (0.75 + 0.5 + 1.0) / 3


def test_plot(tmp_path):
    cm = torch.tensor([[2, 1], [0, 3]])
    plot_confusion_matrix(cm, tmp_path / "cm.png", class_names=["a", "b"])
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
