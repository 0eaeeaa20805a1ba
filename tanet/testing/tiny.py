"""The small model the app tests (predict, extract, serve, live) run: tanet_tiny at 4 frames of
32 px (short side 36), seeded, with a classifier spread wide enough for distinct scores."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

import tanet
from tanet.models.checkpoint import save_model


def tiny_checkpoint(path: Path, class_names: Sequence[str], *, fc_std: float,
                    **card: Any) -> tuple[Path, torch.nn.Module]:
    """Build (seed 0) and save the tiny model with ``class_names`` and other ``card`` fields
    (e.g. ``sampling="dense", dense_stride=4``); returns (file, model)."""
    torch.manual_seed(0)
    m = tanet.create_model("tanet_tiny", num_classes=len(class_names), num_segments=4,
                           class_names=list(class_names))
    m.card = m.card.copy(input_size=(3, 32, 32), short_side=36, **card)
    with torch.no_grad():
        m.fc.weight.normal_(0, fc_std)
    return save_model(path, m), m
