"""Run directories: checkpoints (weights + self-contained training state), resume, metrics.

``<out>/<tag>.safetensors`` is the user-facing model (weights, card, config); ``<out>/<tag>.state.pt``
holds what a resume needs (optimiser, scheduler, position, RNG states, best top-1) and its own
copy of the weights. Both are written atomically, state first, so a kill at any moment leaves a
state that resumes exactly.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from tanet.config import Config, config_to_dict
from tanet.engine.distributed import unwrap
from tanet.io import atomic_path, atomic_write_text
from tanet.models.checkpoint import CheckpointError, load_state_file, read_metadata, save_model

__all__ = ["save_checkpoint", "load_train_state", "has_saved_state", "check_same_run",
           "check_position", "append_metrics", "read_metrics", "truncate_metrics",
           "clear_stale_temp_files", "SAME_RUN_KEYS"]

# keys that define a run: a resume with other values would continue a different experiment
SAME_RUN_KEYS = ("model.name", "model.num_segments", "model.input_size", "model.tam",
                 "model.multilabel", "data.train", "data.labels", "data.format", "data.sampler",
                 "train.seed")


def save_checkpoint(out: Path, tag: str, model: nn.Module, cfg: Config, *,
                    state: dict[str, Any] | None = None,
                    extra: dict[str, str] | None = None) -> Path:
    """``<out>/<tag>.safetensors`` (weights + card + config, atomic) and, given ``state``,
    ``<out>/<tag>.state.pt`` (atomic): optimiser, scheduler, position (epoch, step, micro-step
    within the epoch), RNG states, best top-1 and a copy of the weights.

    The state file is written first and is self-contained, so a kill between the two writes
    leaves a state that resumes exactly (the weights file is only the user-facing model).
    ``extra``: more metadata for the weights file (e.g. ``tanet.train_counts``)."""
    extra = dict(extra or {})
    if state is not None:
        full = {**state, "model": {k: v.detach().cpu()  # serialised at once: no copy needed
                                   for k, v in unwrap(model).state_dict().items()}}
        with atomic_path(out / f"{tag}.state.pt") as tmp:
            torch.save(full, tmp)
        extra.update({"tanet.epoch": str(state["epoch"]), "tanet.step": str(state["step"])})
    return save_model(out / f"{tag}.safetensors", unwrap(model), config=config_to_dict(cfg),
                      extra=extra)


def has_saved_state(out: Path, tag: str = "last") -> bool:
    """Whether ``out`` holds a training state to resume from."""
    return (out / f"{tag}.state.pt").is_file()


def load_train_state(out: Path, tag: str = "last") -> tuple[dict[str, torch.Tensor], dict]:
    """Weights and training state of ``<out>/<tag>`` to resume from.

    The weights come from the state file (older runs without them there: from the weights file,
    checked to be of the same epoch)."""
    weights_path, state_path = out / f"{tag}.safetensors", out / f"{tag}.state.pt"
    if not state_path.is_file():
        raise FileNotFoundError(f"{state_path}: nothing to resume from (train without --resume, "
                                f"or point output at the run directory)")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{state_path}: unreadable training state ({type(e).__name__}: "
                              f"{e})") from e
    if "model" in state:
        return state.pop("model"), state
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path}: nothing to resume from")
    w_epoch = read_metadata(weights_path)["raw"].get("tanet.epoch")
    if w_epoch != str(state["epoch"]):
        raise CheckpointError(f"{out}: {weights_path.name} is from epoch {w_epoch} but "
                              f"{state_path.name} from epoch {state['epoch']} (interrupted "
                              f"while saving); resume from an earlier copy of the run")
    return load_state_file(weights_path), state


def check_same_run(out: Path, cfg: Config) -> None:
    """Refuse to resume the run saved in ``out`` when its defining config keys
    (:data:`SAME_RUN_KEYS`) differ from ``cfg``; the message names each key, saved and now."""
    try:
        saved = read_metadata(out / "last.safetensors")["config"]
    except CheckpointError:
        return  # torn or missing weights file: the state file alone decides
    if not saved:
        return
    now = config_to_dict(cfg)
    differ = [k for k in SAME_RUN_KEYS  # keys a run saved by an older tanet lacks are skipped
              if _has(saved, k) and _lookup(saved, k) != _lookup(now, k)]
    if differ:
        detail = "; ".join(f"{k}: saved {_lookup(saved, k)!r}, now {_lookup(now, k)!r}"
                           for k in differ)
        raise ValueError(f"{out}: --resume of a different run ({detail}); use another "
                         f"output directory or the saved settings")


def check_position(out: Path, state: dict[str, Any], world_size: int, cfg: Config, *,
                   plan: dict[str, Any] | None = None) -> None:
    """A state saved in the middle of an epoch resumes exactly only with the same processes x
    ``train.batch_size`` x ``train.accumulate`` (the epoch's order is cut into the same
    steps), and the same ``plan`` (shards: loader workers, shuffle buffer, manifest: what the
    streamed order depends on); refuse otherwise, naming both."""
    tc = cfg.train
    saved_plan = state.get("plan")
    if int(state.get("micro", 0)) and plan is not None and saved_plan not in (None, plan):
        keys = [k for k in dict.fromkeys([*saved_plan, *plan]) if saved_plan.get(k) != plan.get(k)]
        detail = "; ".join(f"{k}: saved {saved_plan.get(k)!r}, now {plan.get(k)!r}" for k in keys)
        raise ValueError(f"{out}: saved in the middle of an epoch whose order depends on what "
                         f"changed ({detail}); resume with the saved values, or from an "
                         f"epoch-end checkpoint")
    saved = (int(state.get("world_size", 1)), int(state.get("batch_size", tc.batch_size)),
             int(state.get("accumulate", tc.accumulate)))
    if int(state.get("micro", 0)) and saved != (world_size, tc.batch_size, tc.accumulate):
        raise ValueError(f"{out}: saved in the middle of an epoch with {saved[0]} "
                         f"process(es) x train.batch_size={saved[1]} x "
                         f"train.accumulate={saved[2]}; resume with the same (now "
                         f"{world_size} x {tc.batch_size} x {tc.accumulate}), or from an "
                         f"epoch-end checkpoint")


def _has(d: dict[str, Any], key: str) -> bool:
    *parents, leaf = key.split(".")
    parent = _lookup(d, ".".join(parents)) if parents else d
    return isinstance(parent, dict) and leaf in parent


def _lookup(d: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        d = d.get(part) if isinstance(d, dict) else None  # type: ignore[assignment]
    return d


def append_metrics(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line to ``metrics.jsonl``."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``, one per epoch, in order."""
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]


def truncate_metrics(path: Path, epoch: int) -> None:
    """Drop records after ``epoch`` (written before an interruption, not in the checkpoint)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines()
            if ln.strip() and json.loads(ln).get("epoch", 0) <= epoch]
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def clear_stale_temp_files(out: Path) -> None:
    """Remove temporary files of writes cut short by a kill."""
    for stale in out.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
