"""Classification metrics: top-k accuracy, confusion matrix, mean class accuracy, and a plot.

Scores are (N, K) (logits or probabilities; only their order matters), labels (N,) int64.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch

__all__ = ["topk_correct", "topk_accuracy", "confusion_matrix", "mean_class_accuracy",
           "per_class_accuracy", "plot_confusion_matrix"]


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean (N,): is the label among the ``k`` highest scores (k clipped to K)?"""
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices  # (N, k)
    return (top == labels.view(-1, 1)).any(dim=1)  # (N,)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor,
                  ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """``{k: fraction of rows whose label is in the top k}``; 0.0 for an empty batch."""
    if scores.shape[0] == 0:
        return {k: 0.0 for k in ks}
    return {k: topk_correct(scores, labels, k).float().mean().item() for k in ks}


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) int64 counts; row = true class, column = predicted class."""
    idx = labels.long() * num_classes + preds.long()  # (N,)
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_accuracy(cm: torch.Tensor) -> torch.Tensor:
    """(K,) recall per class; NaN for classes absent from the labels."""
    support = cm.sum(dim=1).double()  # (K,)
    return cm.diagonal().double() / support  # NaN where support == 0


def mean_class_accuracy(cm: torch.Tensor) -> float:
    """Mean of the per-class recalls over classes present in the labels (0.0 if none)."""
    acc = per_class_accuracy(cm)
    acc = acc[~acc.isnan()]
    return acc.mean().item() if acc.numel() else 0.0


def plot_confusion_matrix(cm: torch.Tensor, path: str | os.PathLike, *,
                          class_names: Sequence[str] | None = None, title: str = "") -> None:
    """Row-normalised confusion matrix as a PNG (matplotlib, Agg backend), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tanet.io import save_figure

    k = cm.shape[0]
    norm = cm.double() / cm.sum(dim=1, keepdim=True).clamp(min=1)  # (K, K) row-normalised
    size = min(4 + 0.35 * k, 24)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(norm.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if class_names is not None and k <= 60:
        ax.set_xticks(range(k), labels=list(class_names), rotation=90, fontsize=7)
        ax.set_yticks(range(k), labels=list(class_names), fontsize=7)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (row-normalised)")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
