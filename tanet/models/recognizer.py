"""Recognizer: 2D backbone + TSN head + average consensus.

Input (N, T, C, H, W) float, normalised; output logits (N, num_classes). The head is TSN's:
per-frame global average pool -> dropout -> linear -> average over the T frames.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn

from tanet.geometry import IMAGENET_MEAN, IMAGENET_STD, Geometry

__all__ = ["Recognizer", "ModelCard", "IMAGENET_MEAN", "IMAGENET_STD"]

# Card keys written by earlier versions -> today's names (cards stored in checkpoints and ONNX
# files, entries of published weights). Old keys are read, never written.
RENAMED_CARD_KEYS = {"resize": "short_side"}


def _current_keys(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with old card keys renamed; a key under its current name wins over its old one."""
    out = {k: v for k, v in d.items() if k not in RENAMED_CARD_KEYS}
    for old, new in RENAMED_CARD_KEYS.items():
        if old in d and new not in d:
            out[new] = d[old]
    return out


@dataclass(kw_only=True, slots=True)
class ModelCard(Geometry):
    """Everything needed to rebuild a model and feed it; stored in every checkpoint.

    The model's identity (``name``, ``num_classes``, ``class_names``, builder ``kwargs``) and its
    test pipeline: the :class:`~tanet.geometry.Geometry` fields it inherits (T
    ``num_segments``, ``input_size``, ``short_side``, ``mean``/``std``, ``sampling``,
    ``dense_stride``), under the names the config uses; ``card.geometry`` is that part alone and
    :meth:`~tanet.geometry.Geometry.with_overrides` the one rule by which a config overrides it.
    A registry entry's defaults are a card too (``num_classes`` 0 until a model is built). Cards
    written with older key names (``resize``) are read by :meth:`from_dict`.

    ``multilabel``: the logits are read with a sigmoid per class (several classes a clip; a
    class is predicted when its score is >= ``threshold``, chosen on validation in training),
    rather than a softmax over them. Cards without these keys (older checkpoints) are
    single-label.
    """

    name: str
    num_classes: int = 0
    class_names: list[str] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra builder arguments
    multilabel: bool = False  # sigmoid per class instead of softmax
    threshold: float = 0.5  # multi-label: predicted classes score >= threshold

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return {"name": d.pop("name"), "num_classes": d.pop("num_classes"), **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelCard":
        d = _current_keys(d)
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for key in ("input_size", "mean", "std"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)

    def copy(self, **changes: Any) -> "ModelCard":
        """A deep copy with ``changes`` applied (old key names accepted, as in a stored card; an
        unknown one is an error)."""
        changes = _current_keys(changes)
        unknown = sorted(set(changes) - set(self.__dataclass_fields__))
        if unknown:
            raise TypeError(f"ModelCard has no field {unknown[0]!r}")
        return ModelCard.from_dict({**copy.deepcopy(self.to_dict()), **changes})


class Recognizer(nn.Module):
    """Frame-level 2D backbone with a TSN head.

    Args:
        backbone: maps (N*T, 3, H, W) -> (N*T, D, h, w), with attribute ``feature_dim`` = D.
        num_classes: classifier outputs.
        num_segments: T, frames per clip.
        dropout: dropout before the classifier (TSN/TANet: 0.5).
        init_std: std of the classifier's normal init (TSN/TANet: 0.001), bias 0.
        partial_bn: in train mode keep every BatchNorm but the first in eval mode (frozen
            statistics and affine parameters), as TSN/TANet do when fine-tuning.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        num_classes: int,
        num_segments: int,
        dropout: float = 0.5,
        init_std: float = 0.001,
        partial_bn: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.backbone = backbone
        self.num_classes = num_classes
        self.num_segments = num_segments
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(backbone.feature_dim, num_classes)
        nn.init.normal_(self.fc.weight, 0.0, init_std)
        nn.init.zeros_(self.fc.bias)
        self.partial_bn = partial_bn
        self.card: ModelCard | None = None  # set by create_model

    def _frames(self, x: torch.Tensor) -> tuple[int, int, torch.Tensor]:
        if x.dim() != 5:
            raise ValueError(
                f"expected a clip batch (N, T, C, H, W), got shape {tuple(x.shape)}")
        n, t = x.shape[:2]
        if t != self.num_segments:
            raise ValueError(
                f"model was built for T={self.num_segments} frames, got T={t}; sample "
                f"{self.num_segments} frames or rebuild with num_segments={t}")
        return n, t, x.flatten(0, 1)  # (N*T, C, H, W)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-frame pooled features: (N, T, C, H, W) -> (N, T, D)."""
        n, t, frames = self._frames(x)
        fmap = self.backbone(frames)  # (N*T, D, h, w)
        return fmap.mean(dim=(2, 3)).view(n, t, -1)  # (N, T, D)

    def forward_frames(self, x: torch.Tensor) -> torch.Tensor:
        """Per-frame class scores before consensus: (N, T, C, H, W) -> (N, T, num_classes)."""
        return self.fc(self.dropout(self.forward_features(x)))  # (N, T, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_frames(x).mean(dim=1)  # (N, K): average consensus

    def train(self, mode: bool = True) -> "Recognizer":
        super().train(mode)
        if mode and self.partial_bn:
            bns = [m for m in self.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
            for bn in bns[1:]:
                bn.eval()
                bn.weight.requires_grad_(False)
                bn.bias.requires_grad_(False)
        return self
