"""Transfer learning: start a configured model from another video checkpoint.

:func:`init_from_checkpoint` loads any checkpoint :func:`~tanet.models.convert.read_checkpoint`
reads (tanet ``.safetensors``, the authors' or mmaction2's ``.pth``) into a freshly built model
of the same architecture and returns a :class:`TransferReport` of what was loaded, what was
re-initialised (the classifier, for another class list) and what was adapted (TAM's
frame-dependent weights, for another T).

Adapting TAM to another number of frames (``adapt_frames``)
------------------------------------------------------------
Only TAM's global branch depends on T: ``G.0`` Linear(T -> aT), ``G.1`` BatchNorm1d(aT) and
``G.3`` Linear(aT -> K) (a = alpha; the local branch and every convolution are T-free). Neither
the authors' code nor mmaction2 adapts them (their 16-frame models are trained from ImageNet
again), so the rule here is ours. Going from T to T' frames:

1. Time axis (``G.0``'s inputs): ``W0 <- W0 @ R`` with R (T, T') the linear-interpolation matrix
   that resamples a T'-frame sequence to T frames (``F.interpolate(mode="linear",
   align_corners=False)``: frame centres at (i + 1/2) / T of the clip, as TSN sampling places
   them). Each row of R sums to 1.
2. Hidden axis (aT -> aT'), function-preserving in the manner of Net2Net's widening
   (Chen et al., ICLR 2016):

   * more frames (aT' >= aT): new unit j copies old unit u(j) = floor(j aT / aT') (its ``G.0``
     row and ``G.1`` parameters and statistics); ``G.3``'s column for j is the old column
     divided by the number of copies of u(j).
   * fewer frames: old unit i joins group floor(i aT' / aT); a new unit takes the mean of its
     group's ``G.0`` rows and ``G.1`` vectors, and the sum of its ``G.3`` columns.

Guarantee: with more frames the adapted branch computes exactly ``G'(x') = G(R x')`` for every
pooled sequence x' of T' frames (train or eval mode): it sees the T' frames resampled to the T
it was trained on. So a clip whose frames are all equal gets the same kernel Theta before and
after adaptation. With fewer frames the hidden merge is exact when the groups hold copies
(T -> kT -> T gives back the hidden units, and still clips their kernels) and an approximation
otherwise; fine-tuning repairs the rest.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping

import torch
import torch.nn.functional as F

from tanet.models.checkpoint import CheckpointError, load_state_into
from tanet.models.convert import read_checkpoint
from tanet.models.recognizer import Recognizer

__all__ = ["TransferReport", "init_from_checkpoint", "adapt_frames", "adapt_global_branch",
           "resample_matrix", "tam_frames"]

_G0 = re.compile(r"^(.*\.temporal)\.G\.0\.weight$")


@dataclass
class TransferReport:
    """What :func:`init_from_checkpoint` did, tensor by tensor."""

    source: str  # the checkpoint as given
    layout: str  # tanet | official | mmaction2
    model: str  # its architecture
    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)  # the classifier, new classes
    adapted: list[str] = field(default_factory=list)  # TAM global branch, new T (also loaded)
    classes: tuple[int, int] = (0, 0)  # checkpoint's, model's
    frames: tuple[int, int] = (0, 0)  # checkpoint's, model's
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        groups = Counter(_group(k) for k in self.loaded)
        lines = [f"init_from {self.source} ({self.layout} layout, {self.model}, "
                 f"T={self.frames[0]}, {self.classes[0]} classes): loaded {len(self.loaded)} tensors ("
                 + ", ".join(f"{g}: {n}" for g, n in groups.items()) + ")"]
        if self.reinitialised:
            lines.append(f"re-initialised {', '.join(self.reinitialised)} ({self.classes[0]} -> "
                         f"{self.classes[1]} classes)")
        if self.adapted:
            lines.append(f"adapted {len(self.adapted)} TAM global-branch tensors "
                         f"(*.temporal.G.0/1/3) from T={self.frames[0]} to T={self.frames[1]}")
        return "\n".join(lines + self.notes)


def _group(key: str) -> str:
    """``backbone.layer1.0.conv1.weight`` -> ``backbone.layer1``; ``fc.bias`` -> ``fc``."""
    parts = key.split(".")
    if parts[0] == "backbone" and len(parts) > 2 and parts[1].startswith("layer"):
        return ".".join(parts[:2])
    return parts[0] if parts[0] != "backbone" else "backbone.stem"


def tam_frames(state: Mapping[str, torch.Tensor]) -> int | None:
    """T of the TAMs in a tanet-named state dict (``G.0``'s input width), None without TAM."""
    for key, value in state.items():
        if _G0.match(key):
            return int(value.shape[1])
    return None


def resample_matrix(t_from: int, t_to: int) -> torch.Tensor:
    """R (t_from, t_to): ``R @ x`` resamples a ``t_to``-frame sequence x to ``t_from`` frames by
    linear interpolation (frame centres, ``align_corners=False``); rows sum to 1."""
    eye = torch.eye(t_to, dtype=torch.float64).unsqueeze(1)  # (t_to, 1, t_to)
    cols = F.interpolate(eye, size=t_from, mode="linear", align_corners=False)  # (t_to, 1, t_from)
    return cols.squeeze(1).t()  # (t_from, t_to)


def _membership(h_from: int, h_to: int) -> torch.Tensor:
    """M (h_to, h_from): 1 where new hidden unit j takes old unit i (see the module docstring)."""
    m = torch.zeros(h_to, h_from, dtype=torch.float64)
    if h_to >= h_from:  # copies: one old unit per new unit
        m[torch.arange(h_to), torch.arange(h_to) * h_from // h_to] = 1.0
    else:  # groups: one new unit per old unit
        m[torch.arange(h_from) * h_to // h_from, torch.arange(h_from)] = 1.0
    return m


def adapt_global_branch(g: Mapping[str, torch.Tensor], t_to: int) -> dict[str, torch.Tensor]:
    """One TAM's global branch (keys ``0.weight``, ``1.weight``, ``1.bias``,
    ``1.running_mean``, ``1.running_var``, [``1.num_batches_tracked``], ``3.weight``) resampled
    from its T to ``t_to`` frames by the rule of the module docstring."""
    w0, w3 = g["0.weight"].double(), g["3.weight"].double()  # (aT, T), (K, aT)
    h_from, t_from = w0.shape
    if h_from % t_from:
        raise ValueError(f"G.0 has shape {tuple(w0.shape)}: not (alpha*T, T)")
    h_to = h_from // t_from * t_to
    m = _membership(h_from, h_to)  # (aT', aT)
    rows = m / m.sum(1, keepdim=True)  # averages over a group (a copy: one 1 per row)
    cols = m / m.sum(0, keepdim=True)  # splits a copied unit's output evenly
    out = {"0.weight": rows @ (w0 @ resample_matrix(t_from, t_to)),  # (aT', T')
           "3.weight": w3 @ cols.t()}  # (K, aT')
    for name in ("weight", "bias", "running_mean", "running_var"):
        out[f"1.{name}"] = rows @ g[f"1.{name}"].double()  # (aT',)
    dtypes = {k: g[k].dtype for k in out}
    out = {k: v.to(dtypes[k]).contiguous() for k, v in out.items()}
    if "1.num_batches_tracked" in g:
        out["1.num_batches_tracked"] = g["1.num_batches_tracked"].clone()
    return out


def adapt_frames(state: Mapping[str, torch.Tensor], t_to: int) -> tuple[dict[str, torch.Tensor],
                                                                           list[str]]:
    """Every TAM of a tanet-named state dict adapted to ``t_to`` frames; returns the new state
    and the keys that changed."""
    out = dict(state)
    changed: list[str] = []
    for key in list(state):
        match = _G0.match(key)
        if not match:
            continue
        prefix = f"{match.group(1)}.G."
        branch = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        for k, v in adapt_global_branch(branch, t_to).items():
            out[prefix + k] = v
            if k != "1.num_batches_tracked":  # a counter, kept
                changed.append(prefix + k)
    return out, changed


def init_from_checkpoint(model: Recognizer, checkpoint: str | os.PathLike, *,
                         adapt: bool = False, source: str = "auto") -> TransferReport:
    """Load ``checkpoint`` (anything :func:`read_checkpoint` takes) into ``model``, a fresh model
    of the same architecture, for fine-tuning.

    Another number of classes (or other class names) keeps ``model``'s new classifier; another
    T is refused for TANet unless ``adapt`` (see the module docstring). The model card takes
    the checkpoint's mean/std (the weights expect that normalisation).
    """
    ckpt = read_checkpoint(checkpoint, source=source)
    card, own = ckpt.card, model.card
    where = f"{checkpoint}"
    t_ckpt, t_model = tam_frames(ckpt.state), model.num_segments
    report = TransferReport(source=where, layout=ckpt.source, model=card.name,
                            classes=(card.num_classes, model.num_classes),
                            frames=(t_ckpt or card.num_segments, t_model))
    state = dict(ckpt.state)
    if t_ckpt is not None and t_ckpt != t_model:
        if not adapt:
            raise ValueError(f"{where}: TAM's global branch was trained for T={t_ckpt} frames "
                             f"(G.0 takes {t_ckpt} inputs); the config builds T={t_model}; "
                             f"set model.num_segments={t_ckpt}, or "
                             f"model.adapt_frames=true to resample TAM's T-dependent weights")
        state, report.adapted = adapt_frames(state, t_model)
    same_names = card.class_names is None or own.class_names is None \
        or list(card.class_names) == list(own.class_names)
    keep_head = card.num_classes == model.num_classes and same_names
    if not keep_head:
        report.reinitialised = [k for k in model.state_dict() if k.startswith("fc.")]
    what = f"the configured {own.name} (T={t_model}, {model.num_classes} classes)"
    try:
        load_state_into(model, state, keep_head=keep_head, source=where, what=what)
    except CheckpointError as e:
        if card.name == own.name:
            raise
        raise CheckpointError(f"{e}; the checkpoint holds a {card.name} model: set "
                              f"model.name={card.name}") from None
    if card.name != own.name:  # e.g. a TSN checkpoint into TSM, or a custom-width ResNet
        report.notes.append(f"a {card.name} checkpoint, loaded into {own.name}")
    report.loaded = [k for k in state if keep_head or not k.startswith("fc.")]
    if tuple(card.mean) != tuple(own.mean) or tuple(card.std) != tuple(own.std):
        own.mean, own.std = tuple(card.mean), tuple(card.std)
        report.notes.append(f"normalisation from the checkpoint: mean {own.mean}, std {own.std}")
    return report
