"""Checkpoint files: safe reading, tanet's own ``.safetensors`` format, ImageNet initialisation.

Every load goes through safetensors or ``torch.load(..., weights_only=True)``: a checkpoint is
data, never code. A pickle that tries to run code is refused with :class:`UnsafeCheckpointError`.

tanet's format is one ``.safetensors`` file whose metadata holds the model card (and the run's
config), so the file alone rebuilds the model. Building models from files is
:mod:`tanet.models.factory`'s job; this module only reads, writes and loads state dicts.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

__all__ = ["CheckpointError", "UnsafeCheckpointError", "load_state_file", "load_imagenet",
           "LoadReport", "save_model", "save_state", "read_metadata", "load_state_into", "CARD_KEY",
           "CONFIG_KEY"]


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
        with _numpy_scalars_allowed():
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


def _numpy_scalars_allowed() -> contextlib.AbstractContextManager:
    """Allow the numpy scalar and dtype constructors (data, no code) that published checkpoints
    keep in their metadata (mmcv's ``meta.hook_msgs.best_score``), under numpy 1's and 2's
    module names (torch >= 2.5; older torch refuses such files)."""
    import numpy as np

    allow = getattr(torch.serialization, "safe_globals", None)
    if allow is None:
        return contextlib.nullcontext()
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    names: list[Any] = [np.dtype, scalar, *{type(np.dtype(c)) for c in "?bBhHiIlLqQefdgSU"}]
    if tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 6):
        names.append((scalar, "numpy.core.multiarray.scalar"))  # pickled by numpy 1
    return allow(names)


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


# tanet's own checkpoint: weights + model card (+ config) in one .safetensors file.

CARD_KEY = "tanet.card"
CONFIG_KEY = "tanet.config"


def save_model(path: str | os.PathLike, model: nn.Module, *, config: dict | None = None,
               extra: dict[str, str] | None = None) -> Path:
    """Write ``model``'s weights and card atomically to ``path`` (.safetensors)."""
    if isinstance(path, nn.Module):
        raise TypeError("save_model(path, model): the path comes first")
    card = getattr(model, "card", None)
    if card is None:
        raise ValueError("model has no card; build it with tanet.create_model")
    return save_state(path, model.state_dict(), card.to_dict(), config=config, extra=extra)


def save_state(path: str | os.PathLike, state: Mapping[str, torch.Tensor], card: dict[str, Any],
               *, config: dict | None = None, extra: dict[str, str] | None = None) -> Path:
    """Write a tanet-named state dict and its card (a dict) atomically to ``path``
    (.safetensors): tanet's checkpoint format, without building the model."""
    from safetensors.torch import save as serialize

    from tanet.io import atomic_path

    meta = {CARD_KEY: json.dumps(card), "format": "pt"}
    if config is not None:
        meta[CONFIG_KEY] = json.dumps(config)
    meta.update(extra or {})
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    data = serialize(state, metadata=meta)  # bytes; written by Python so OSErrors stay OSErrors
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Card (dict), config (dict or None) and raw metadata of a tanet .safetensors checkpoint."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    if CARD_KEY not in meta:
        raise CheckpointError(f"{path}: no tanet model card in the metadata; for published "
                              "checkpoints run `tanet convert` first")
    return {"card": json.loads(meta[CARD_KEY]),
            "config": json.loads(meta[CONFIG_KEY]) if CONFIG_KEY in meta else None,
            "raw": meta}


def load_state_into(model: nn.Module, state: Mapping[str, torch.Tensor], *,
                    keep_head: bool = True, source: str | os.PathLike = "checkpoint",
                    what: str = "the model") -> LoadReport:
    """Load a tanet-named state dict into ``model`` strictly (BN counters may be absent in old
    files). ``keep_head=False`` loads the backbone only (fine-tuning to new classes). Errors
    name ``source`` (the file) and ``what`` (the model)."""
    state = dict(state)
    if not keep_head:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = model.state_dict()
    for k, v in own.items():  # pre-0.4.1 checkpoints have no BN batch counters
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = v
    shape_errors = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                    for k, v in state.items() if k in own and own[k].shape != v.shape]
    if shape_errors:
        raise CheckpointError(f"{source}: shapes do not match {what}: "
                              + "; ".join(shape_errors[:5]))
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if keep_head or not k.startswith("fc.")]
    report = LoadReport(missing=missing, unexpected=list(result.unexpected_keys),
                        loaded=len(state) - len(result.unexpected_keys))
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{source}: weights do not fit {what}: {report}")
    return report


