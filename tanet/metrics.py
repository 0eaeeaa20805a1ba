"""Classification metrics: top-k accuracy, confusion matrix, mean class accuracy, and a plot;
for multi-label (and per-class) reports: average precision, mAP, precision / recall / F1 at a
threshold and the F1-optimal threshold.

Scores are (N, K) (logits or probabilities; only their order matters), labels (N,) int64, or
for multi-label (N, K) multi-hot targets (any dtype, nonzero = positive).
"""
from __future__ import annotations

import os
from typing import Sequence

import torch

__all__ = ["topk_correct", "topk_accuracy", "confusion_matrix", "mean_class_accuracy",
           "per_class_accuracy", "plot_confusion_matrix", "average_precision",
           "mean_average_precision", "precision_recall_f1", "best_f1_threshold", "one_hot",
           "top1_hits", "precision_recall_curve"]


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


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N,) class indices -> (N, K) bool targets; (N, K) multi-label targets -> bool as they are."""
    if labels.dim() == 2:
        return labels != 0  # (N, K)
    return torch.nn.functional.one_hot(labels.long(), num_classes).bool()  # (N, K)


def top1_hits(scores: torch.Tensor, labels: torch.Tensor) -> int:
    """How many rows' highest score is a right class: the label, or one of a multi-label row's."""
    best = scores.argmax(1)  # (N,)
    if labels.dim() == 2:
        return int((labels.gather(1, best[:, None]) != 0).sum())
    return int((best == labels).sum())


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(K,) average precision of each column: ``sum_n (R_n - R_{n-1}) P_n`` over the distinct
    score values in decreasing order (tied scores are one threshold), as scikit-learn's
    ``average_precision_score`` computes it. A class without positives has no AP: NaN.

    ``scores`` (N, K), ``targets`` (N, K) multi-hot (or (N,) labels, one-vs-rest)."""
    k = scores.shape[1]
    pos = one_hot(targets, k).double()  # (N, K)
    if scores.shape[0] == 0:
        return torch.full((k,), float("nan"), dtype=torch.float64)
    s, order = scores.double().sort(dim=0, descending=True)  # (N, K) each
    y = pos.gather(0, order)  # (N, K) targets in score order
    tp = y.cumsum(0)  # (N, K)
    seen = torch.arange(1, s.shape[0] + 1, dtype=torch.float64)[:, None]  # (N, 1)
    ends = torch.ones_like(s, dtype=torch.bool)  # (N, K) last row of each run of equal scores
    ends[:-1] = s[:-1] != s[1:]
    tp_end = torch.where(ends, tp, torch.zeros_like(tp))  # (N, K)
    before = torch.cat([torch.zeros(1, k, dtype=torch.float64),
                        tp_end.cummax(0).values[:-1]])  # (N, K) tp at the previous threshold
    gained = torch.where(ends, tp - before, torch.zeros_like(tp))  # (N, K) new true positives
    npos = pos.sum(0)  # (K,)
    ap = (gained * tp / seen).sum(0) / npos  # (K,) recall steps x precision
    return torch.where(npos > 0, ap, torch.full_like(ap, float("nan")))


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Macro mAP: the mean of :func:`average_precision` over the classes that have positives
    (classes without any are left out: their AP is undefined); 0.0 if none has."""
    ap = average_precision(scores, targets)
    ap = ap[~ap.isnan()]
    return ap.mean().item() if ap.numel() else 0.0


def precision_recall_f1(pred: torch.Tensor, targets: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per class (K,) precision, recall, F1 and support of (N, K) bool predictions against
    (N, K) multi-hot targets; 0 where undefined (nothing predicted, no positives)."""
    pos = one_hot(targets, pred.shape[1])  # (N, K)
    tp = (pred & pos).sum(0).double()  # (K,)
    npred, support = pred.sum(0).double(), pos.sum(0).double()  # (K,) each
    precision = tp / npred.clamp(min=1)
    recall = tp / support.clamp(min=1)
    f1 = 2 * tp / (npred + support).clamp(min=1)
    return precision, recall, f1, support.long()


def best_f1_threshold(scores: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """(threshold, micro-F1): the threshold on (N, K) scores whose predictions ``score >=
    threshold`` give the highest F1 over all (video, class) pairs, searched exactly over the
    scores' distinct values; it lies halfway between the lowest score kept and the next one
    below (so rounding does not flip those two). (0.5, 0.0) when there are no positives."""
    pos = one_hot(targets, scores.shape[1]).flatten()  # (N*K,)
    total = int(pos.sum())
    if total == 0:
        return 0.5, 0.0
    s, order = scores.flatten().double().sort(descending=True)  # (N*K,)
    tp = pos[order].double().cumsum(0)  # (N*K,)
    cut = torch.arange(1, s.numel() + 1, dtype=torch.float64)  # predicted so far
    ends = torch.ones_like(s, dtype=torch.bool)
    ends[:-1] = s[:-1] != s[1:]  # a threshold keeps or drops a whole run of ties
    f1 = torch.where(ends, 2 * tp / (cut + total), torch.zeros_like(tp))
    best = int(f1.argmax())
    below = s[best + 1:][s[best + 1:] < s[best]]  # the next distinct score down, if any
    threshold = (s[best] + below[0]) / 2 if below.numel() else s[best]
    return float(threshold), float(f1[best])


def precision_recall_curve(scores: torch.Tensor, positives: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """One class's (precision, recall) at each distinct score threshold, highest first, from
    (N,) scores and (N,) bool targets (the points :func:`average_precision` sums over)."""
    s, order = scores.double().sort(descending=True)  # (N,)
    if s.numel() == 0:
        return s, s
    tp = positives[order].double().cumsum(0)  # (N,)
    ends = torch.ones_like(s, dtype=torch.bool)
    ends[:-1] = s[:-1] != s[1:]
    seen = torch.arange(1, s.numel() + 1, dtype=torch.float64)
    return (tp / seen)[ends], (tp / tp[-1].clamp(min=1))[ends]
