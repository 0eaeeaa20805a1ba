"""Training losses (``train.loss``) and class weights (``train.class_weights``) for lopsided
and multi-label data.

Logits are (B, K) float; targets are (B,) int64 class indices (single-label) or (B, K) multi-hot
floats (multi-label). Every loss is a mean over the B clips of the batch, weighted or not, so
processes and accumulation steps average to the loss of the whole global batch (a mean that
divided by the batch's sum of weights, torch's ``F.cross_entropy(weight=...)`` convention,
would not: each process's batch has other weights):

* ``ce``: softmax cross-entropy, ``-sum_c q_c log p_c`` with the smoothed target
  ``q = (1 - eps) onehot(y) + eps / K`` (``train.label_smoothing`` = eps).
* ``weighted_ce``: with class weights, ``(1 - eps) w_y (-log p_y) + eps / K sum_c w_c
  (-log p_c)`` (each term of ``ce`` weighted by its class).
* ``focal`` (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017), gamma =
  ``train.focal_gamma``: single-label ``-sum_c w_c q_c (1 - p_c)^gamma log p_c``; multi-label
  (sigmoid) ``-sum_c w_c [t_c (1 - s_c)^gamma log s_c + (1 - t_c) s_c^gamma log(1 - s_c)]``
  with ``s = sigmoid(logits)``; class weights only when set (``inverse``, ``effective`` or a
  list).
* ``bce``: per-class sigmoid cross-entropy summed over the classes (a clip's loss is on the
  scale of a softmax cross-entropy), targets smoothed to ``t (1 - eps) + eps / 2``, weights
  ``w_c`` when set; single-label targets become one-hot.
* ``auto``: ``ce``, or ``bce`` for a multi-label model.

Class weights: ``inverse`` ``w_c ∝ 1 / n_c``; ``effective`` (Cui et al., "Class-Balanced Loss
Based on Effective Number of Samples", CVPR 2019) ``w_c ∝ (1 - beta) / (1 - beta^n_c)`` with
``beta`` = ``train.class_weight_beta``, which is ``1 / n_c`` for few samples and flattens for
many; both normalised to a mean of 1 over the training clips (``sum_c n_c w_c = sum_c n_c``:
the loss keeps its scale under uniform sampling), ``n_c`` counted on the training list (at
least 1). ``auto``: ``effective`` for ``weighted_ce``, none for the other losses; ``none``:
no weights; or one weight per class as a list.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["class_counts", "class_weights", "build_loss", "loss_name", "Loss"]

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def class_counts(labels: Sequence[int | Sequence[int]], num_classes: int) -> torch.Tensor:
    """(K,) training videos per class; a multi-label video counts for each of its classes."""
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for lab in labels:
        for c in ([lab] if isinstance(lab, int) else lab):
            counts[c] += 1
    return counts


def class_weights(counts: torch.Tensor, mode: str, beta: float = 0.999) -> torch.Tensor:
    """(K,) weights of ``mode`` ``inverse`` or ``effective`` from (K,) class counts, with a mean
    of 1 over the training clips (``sum_c n_c w_c = sum_c n_c``)."""
    n = counts.double().clamp(min=1)  # (K,)
    if mode == "inverse":
        w = 1.0 / n
    elif mode == "effective":
        w = (1.0 - beta) / (1.0 - beta ** n)
    else:
        raise ValueError(f"class weight mode must be inverse or effective, not {mode!r}")
    return (w * n.sum() / (w * n).sum()).float()


def loss_name(loss: str, multilabel: bool) -> str:
    """``train.loss`` with ``auto`` resolved: ``bce`` for a multi-label model, else ``ce``."""
    return ("bce" if multilabel else "ce") if loss == "auto" else loss


def _weights_for(loss: str, spec: str | list[float], counts: torch.Tensor | None, beta: float,
                 k: int) -> torch.Tensor | None:
    if isinstance(spec, list):
        if len(spec) != k:
            raise ValueError(f"train.class_weights has {len(spec)} weights for {k} classes")
        return torch.tensor(spec, dtype=torch.float32)
    if spec == "none" or (spec == "auto" and loss != "weighted_ce"):
        return None
    if counts is None:
        raise ValueError(f"train.class_weights={spec} counts the training videos of each class; "
                         f"streamed shards are not counted ahead: give the weights as a list")
    return class_weights(counts, "effective" if spec == "auto" else spec, beta)


def build_loss(loss: str, *, multilabel: bool, counts: torch.Tensor | None,
               weights: str | list[float] = "auto", beta: float = 0.999, gamma: float = 2.0,
               label_smoothing: float = 0.0,
               num_classes: int | None = None) -> tuple[Loss, torch.Tensor | None]:
    """The loss ``fn(logits (B, K), targets) -> scalar`` of ``train.loss`` (see the module
    docstring) and the class weights it uses (None: unweighted). ``counts``: (K,) training
    videos per class (None: not known; then weights from counts are an error)."""
    name = loss_name(loss, multilabel)
    if multilabel and name in ("ce", "weighted_ce"):
        raise ValueError(f"train.loss={name} is a softmax loss (one class a clip); a multi-label "
                         f"model trains with bce or focal")
    k = num_classes if num_classes is not None else (0 if counts is None else counts.numel())
    w = _weights_for(name, weights, counts, beta, k)
    eps = label_smoothing

    def fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        wt = None if w is None else w.to(logits.device, logits.dtype)
        if name in ("ce", "weighted_ce"):  # a sum over the clips / B (see the docstring)
            return F.cross_entropy(logits, target, weight=wt, label_smoothing=eps,
                                   reduction="sum") / logits.shape[0]
        if target.dim() == 1:  # single-label data with a sigmoid loss: one-hot targets
            if name == "focal":
                return softmax_focal(logits, target, gamma, wt, eps)
            target = F.one_hot(target, logits.shape[1]).to(logits.dtype)  # (B, K)
        target = target * (1 - eps) + eps / 2  # (B, K)
        if name == "bce":
            per = F.binary_cross_entropy_with_logits(logits, target, reduction="none")  # (B, K)
        else:
            per = sigmoid_focal(logits, target, gamma)  # (B, K)
        if wt is not None:
            per = per * wt  # (B, K)
        return per.sum(1).mean()

    return fn, w


def softmax_focal(logits: torch.Tensor, target: torch.Tensor, gamma: float,
                  weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """``mean_i -sum_c w_c q_ic (1 - p_ic)^gamma log p_ic`` (q: smoothed one-hot targets)."""
    k = logits.shape[1]
    logp = logits.log_softmax(1)  # (B, K)
    q = F.one_hot(target, k).to(logp.dtype) * (1 - eps) + eps / k  # (B, K)
    per = -q * (1 - logp.exp()).pow(gamma) * logp  # (B, K)
    if weight is not None:
        per = per * weight
    return per.sum(1).mean()


def sigmoid_focal(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per element (B, K): ``-[t (1 - s)^gamma log s + (1 - t) s^gamma log(1 - s)]``."""
    logs, log1s = F.logsigmoid(logits), F.logsigmoid(-logits)  # log s, log (1 - s)
    s = logs.exp()
    return -(target * (1 - s).pow(gamma) * logs + (1 - target) * s.pow(gamma) * log1s)
