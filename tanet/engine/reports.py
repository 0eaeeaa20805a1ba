"""Per-class reports of ``tanet test``: which classes a model gets right and which it fails.

:func:`per_class_rows` gives, for every class, its support (test videos showing it), its
training videos (recorded in checkpoints ``tanet train`` writes), precision, recall, F1 and
average precision, sorted by support, then by training videos (most frequent first, so the
rare classes are at the bottom, side by side with the common ones). A single-label model predicts its top-1
class; a multi-label one every class whose score is >= the card's threshold. AP ranks the
videos by the class's score (one-vs-rest for a single-label model); a class without test
videos has no AP (empty in the CSV).

Files: ``per_class.csv``, ``report.md`` (the results, the table, the weakest classes and the
picture) and ``pr.png`` (precision-recall curves, multi-label) beside ``confusion.png``.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from tanet.io import atomic_path, atomic_write_text
from tanet.metrics import (average_precision, one_hot, precision_recall_curve,
                           precision_recall_f1)

__all__ = ["per_class_rows", "write_per_class_csv", "write_report_md", "plot_pr_curves"]

COLUMNS = ("class", "support", "train", "precision", "recall", "f1", "ap")


def per_class_rows(scores: torch.Tensor, labels: torch.Tensor, names: Sequence[str], *,
                   multilabel: bool, threshold: float = 0.5,
                   train_counts: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """One row per class (:data:`COLUMNS`, ``index`` too), sorted by support, then by training
    videos (``train_counts``, as the checkpoint recorded them; None: unknown), then name.
    ``scores`` (N, K); ``labels`` (N,) class indices or (N, K) multi-hot."""
    k = len(names)
    if multilabel:
        pred = scores >= threshold  # (N, K)
    else:
        pred = one_hot(scores.argmax(1), k) if scores.shape[0] else scores.bool()  # (N, K)
    precision, recall, f1, support = precision_recall_f1(pred, labels)
    ap = average_precision(scores, labels)  # (K,), NaN without positives
    train = list(train_counts) if train_counts is not None and len(train_counts) == k else None
    rows = [{"index": c, "class": names[c], "support": int(support[c]),
             "train": None if train is None else int(train[c]),
             "precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
             "ap": float(ap[c])} for c in range(k)]
    return sorted(rows, key=lambda r: (-r["support"], -(r["train"] or 0), r["class"]))


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def write_per_class_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> Path:
    """``per_class.csv``: :data:`COLUMNS`, one row per class, as sorted."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([_fmt(r[c]) for c in COLUMNS])
    return path


def write_report_md(path: str | os.PathLike, results: dict[str, Any],
                    rows: Sequence[dict[str, Any]], *, model_name: str, picture: str) -> Path:
    """``report.md``: the headline metrics, the weakest classes, the per-class table and
    ``picture`` (``confusion.png`` or ``pr.png``)."""
    multilabel = "mAP" in results
    if multilabel:
        head = (f"mAP {100 * results['mAP']:.2f} %, F1 {100 * results['f1']:.2f} % at the "
                f"threshold {results['threshold']:.3f}")
    else:
        head = (f"top-1 {100 * results['top1']:.2f} %, top-5 {100 * results['top5']:.2f} %, "
                f"mean class accuracy {100 * results['mean_class_acc']:.2f} %")
    lines = [f"# {model_name} on {results.get('data', 'the test set')}", "",
             f"{head}; {results['num_videos']} videos, views {results.get('views', '1x1')}, "
             f"{results['num_skipped']} skipped.", ""]
    present = [r for r in rows if r["support"] > 0]
    weakest = sorted(present, key=lambda r: (r["f1"], r["support"]))[:5]
    if weakest:
        lines += ["Weakest classes (lowest F1): " + ", ".join(
            f"{r['class']} (F1 {r['f1']:.2f}, {r['support']} videos)" for r in weakest) + ".", ""]
    absent = [r["class"] for r in rows if r["support"] == 0]
    if absent:
        lines += [f"{len(absent)} class(es) without test videos (no recall, no AP): "
                  f"{', '.join(absent[:20])}{' ...' if len(absent) > 20 else ''}.", ""]
    what = ("a class is predicted when its score is >= the threshold" if multilabel else
            "a video's prediction is its top-1 class")
    lines += [f"Per class, most frequent first ({what}; AP ranks the videos by the class's "
              f"score; train: the class's training videos, when the checkpoint recorded them):",
              "", "| class | support | train | precision | recall | F1 | AP |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['class']} | {r['support']} | {_fmt(r['train']) or '-'} | "
              f"{_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['f1'])} | "
              f"{_fmt(r['ap']) or '-'} |" for r in rows]
    lines += ["", f"![{picture}]({picture})", ""]
    return atomic_write_text(Path(path), "\n".join(lines))


def plot_pr_curves(scores: torch.Tensor, labels: torch.Tensor, names: Sequence[str],
                   path: str | os.PathLike, *, title: str = "", most: int = 12) -> None:
    """Precision-recall curves, one line per class with test positives (at most ``most``: the
    most and the least frequent halves), labelled with the class's AP; a PNG, atomically."""
    from matplotlib.figure import Figure

    from tanet.io import save_figure

    pos = one_hot(labels, len(names))  # (N, K)
    support = pos.sum(0)  # (K,)
    order = [int(c) for c in support.argsort(descending=True, stable=True) if support[c] > 0]
    if len(order) > most:
        order = order[:most // 2] + order[-(most - most // 2):]
    ap = average_precision(scores, labels)
    fig = Figure(figsize=(6.4, 5.2))
    ax = fig.subplots()
    for c in order:
        precision, recall = precision_recall_curve(scores[:, c], pos[:, c])
        ax.step([0.0, *recall.tolist()], [1.0, *precision.tolist()], where="post", lw=1.2,
                label=f"{names[c]} (AP {ap[c]:.2f}, n={int(support[c])})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title or "precision-recall per class", fontsize=9)
    ax.legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    save_figure(fig, path)
