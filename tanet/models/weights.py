"""Loading weights from local files: ImageNet initialisation of the backbone.

Every load goes through safetensors or ``torch.load(..., weights_only=True)``: a checkpoint is
data, never code. A pickle that tries to run code is refused with :class:`UnsafeCheckpointError`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

__all__ = ["CheckpointError", "UnsafeCheckpointError", "load_state_file", "load_imagenet",
           "LoadReport"]


class CheckpointError(RuntimeError):
    """A weights file that cannot be used; the message names the file and the problem."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle that would execute code or build non-tensor objects on load."""


def load_state_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``.safetensors`` file or a torch pickle safely (``weights_only=True``).

    Returns the top-level object (a state dict, or a dict holding one under ``state_dict``).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file")
    with open(path, "rb") as f:
        head = f.read(8)
    if path.suffix == ".safetensors" or _looks_like_safetensors(head, path):
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        msg = str(e)
        if "weights_only" in msg or "Unsupported global" in msg or "GLOBAL" in msg:
            raise UnsafeCheckpointError(
                f"{path}: refused to load: the pickle references code or objects other than "
                f"tensors and plain containers (possible code execution). Only load checkpoints "
                f"you trust with other tools; tanet never unpickles code") from None
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({msg.splitlines()[0]})") from e
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    return dict(obj)


def _looks_like_safetensors(head: bytes, path: Path) -> bool:
    if len(head) < 8 or head[:2] == b"PK" or head[:1] == b"\x80":
        return False
    n = int.from_bytes(head, "little")
    return 0 < n < path.stat().st_size and n < 100_000_000


class LoadReport(dict):
    """``{"missing": [...], "unexpected": [...], "loaded": int}`` with a readable str()."""

    def __str__(self) -> str:
        lines = [f"loaded {self['loaded']} tensors"]
        for key in ("missing", "unexpected"):
            if self[key]:
                shown = ", ".join(self[key][:8]) + (" ..." if len(self[key]) > 8 else "")
                lines.append(f"{len(self[key])} {key}: {shown}")
        return "; ".join(lines)


def load_imagenet(model: nn.Module, path: str | os.PathLike, *, verbose: bool = True) -> LoadReport:
    """Initialise ``model.backbone`` from a torchvision-format ImageNet ResNet state dict.

    ``fc.*`` is dropped (the recognizer has its own classifier); temporal modules (TAM) keep
    their default initialisation. Any other missing or unexpected key is an error naming them.
    """
    state = load_state_file(path)
    state = state.get("state_dict", state) if isinstance(state.get("state_dict"), Mapping) else state
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    backbone = model.backbone if hasattr(model, "backbone") else model
    own = backbone.state_dict()
    shape_errors = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                    for k, v in state.items() if k in own and own[k].shape != v.shape]
    if shape_errors:
        raise CheckpointError(f"{path}: shapes do not match the backbone: " + "; ".join(shape_errors[:5]))
    result = backbone.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if ".temporal." not in k]
    report = LoadReport(missing=missing, unexpected=list(result.unexpected_keys),
                        loaded=len(state) - len(result.unexpected_keys))
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{path}: not a torchvision ResNet state dict for this backbone: {report}")
    if verbose:
        print(f"ImageNet init from {path}: {report}")
    return report
