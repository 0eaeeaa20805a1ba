"""From a config to the things a run needs: datasets and loaders, the model, the optimiser and
its schedule, autocast. Plain functions, no state."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn

from tanet.config import Config
from tanet.data.dataset import VideoDataset, VideoLoader, build_loader
from tanet.data.sources import STDIN, Video, resolve_videos
from tanet.data.transforms import build_train_transform
from tanet.data.views import test_transform
from tanet.engine.seeding import SeededItems
from tanet.geometry import Geometry
from tanet.models import Recognizer, create_model
from tanet.models.transfer import init_from_checkpoint
from tanet.precision import Precision, resolve_amp

__all__ = ["Split", "read_split", "train_dataset", "test_dataset", "make_loader", "build_model",
           "build_optimizer", "build_scheduler", "lr_factor", "autocast", "run_precision",
           "set_bn_mode"]


@dataclass
class Split:
    """The videos of ``data.<split>`` (paths resolved by :mod:`tanet.data.sources`: relative
    paths of a list start from ``data.root``, else the list's folder) and the class names they
    are labelled with."""

    records: list[Video]
    class_names: list[str]
    source: str  # the annotation file or folder, as given


def read_split(cfg: Config, split: str, class_names: Sequence[str] | None = None) -> Split:
    """Read ``data.<split>`` (any annotation format, a class-per-folder directory, a UCF101 /
    HMDB51 split folder, or ``-``: a list on standard input) through the one resolver."""
    src = getattr(cfg.data, split)
    if not src:
        raise ValueError(f"data.{split} is not set: give an annotation file or a class-per-folder "
                         f"directory (--set data.{split}=PATH)")
    if src == STDIN and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(f"data.{split}=- (a list on standard input) works in one process only; "
                         f"under torchrun write the list to a file")
    root = cfg.data.root
    if src != STDIN and not Path(src).exists():
        hint = ""
        if root and (Path(root) / src).exists():
            hint = (f"; data.root applies to the paths inside a list, not to the list itself: "
                    f"set data.{split}={Path(root) / src}")
        raise FileNotFoundError(f"{src}: data.{split} does not exist (relative to the working "
                                f"directory {os.getcwd()}){hint}")
    labels = list(class_names) if class_names else cfg.data.labels
    source = resolve_videos(src, root=root, labels=labels, format=cfg.data.format,
                            split=cfg.data.split, subset="train" if split == "train" else "test")
    if source.labels is None or source.class_names is None:
        why = {"folder": "a folder with videos of its own, or in subfolders of its class "
                         "folders, is not a class-per-folder tree; data.format=tree reads it as "
                         "one", "paths": "a plain list of paths", "video": "a single video"}
        raise ValueError(f"{src}: data.{split} names videos without labels "
                         f"({why.get(source.format, source.format)}). Training and testing need "
                         f"an annotation list or a class-per-folder directory")
    return Split(list(source.videos), list(source.class_names), str(src))


def _flip_map(cfg: Config, names: Sequence[str]) -> dict[int, int] | None:
    if not cfg.data.flip_label_map:
        return None
    index = {n: i for i, n in enumerate(names)}
    unknown = [k for kv in cfg.data.flip_label_map.items() for k in kv if k not in index]
    if unknown:
        raise ValueError(f"data.flip_label_map: unknown class {unknown[0]!r}")
    return {index[a]: index[b] for a, b in cfg.data.flip_label_map.items()}


def train_dataset(cfg: Config, split: Split, geom: Geometry) -> VideoDataset:
    """Training clips of ``split``: random offsets, multi-scale crop, flip (with label swaps)."""
    transform = build_train_transform(size=geom.input_size[-1], mean=geom.mean, std=geom.std,
                                      flip=cfg.data.flip,
                                      flip_label_map=_flip_map(cfg, split.class_names),
                                      scales=tuple(cfg.data.scales))
    return VideoDataset(split.records, root=None, num_segments=geom.num_segments,
                        sampling=geom.sampling, dense_stride=geom.dense_stride, train=True,
                        transform=transform, on_error=cfg.data.on_error,
                        on_warning=cfg.data.on_warning, decode_timeout=cfg.data.decode_timeout,
                        frame_template=cfg.data.frame_template)


def test_dataset(cfg: Config, split: Split, geom: Geometry, *, clips: int = 1,
                 crops: int = 1) -> VideoDataset:
    """Test views of ``split``: the clip-views policy of :mod:`tanet.data.views` (decoded at
    the test short side, as ``tanet predict`` does)."""
    return VideoDataset(split.records, root=None, num_segments=geom.num_segments,
                        sampling=geom.sampling, dense_stride=geom.dense_stride, train=False,
                        transform=test_transform(geom, crops), clips=clips,
                        on_error=cfg.data.on_error, decode_timeout=cfg.data.decode_timeout,
                        frame_template=cfg.data.frame_template, short_side=geom.short_side,
                        on_warning=cfg.data.on_warning)


def make_loader(dataset: VideoDataset, sampler: torch.utils.data.Sampler, *, batch_size: int,
                workers: int, seed: int) -> VideoLoader:
    """A loader over ``(epoch, index)`` keys with per-item seeding (see :mod:`.seeding`)."""
    return build_loader(SeededItems(dataset, seed), batch_size=batch_size, workers=workers,
                        sampler=sampler, seed=seed, prefetch_factor=4 if workers > 0 else None)


def build_model(cfg: Config, class_names: Sequence[str], *,
                log: Callable[[str], None] | None = None) -> Recognizer:
    """The recognizer of ``model.*`` with ``len(class_names)`` outputs (``model.tam.*`` set:
    TAM's switches, recorded in the card), started from ``model.init_from`` if set (``log``
    gets the report: tensors loaded, re-initialised, adapted) and with a frozen backbone under
    ``train.freeze_backbone``. Its card records the test pipeline of the run (names, crop size,
    short side, sampling): the registry's card with the config's values through the one override
    rule (:meth:`~tanet.geometry.Geometry.with_overrides`, as ``tanet test`` applies it)."""
    tam = {k: v for k, v in dataclasses.asdict(cfg.model.tam).items() if v is not None}
    model = create_model(cfg.model.name, num_classes=len(class_names),
                         num_segments=cfg.model.num_segments, dropout=cfg.model.dropout,
                         partial_bn=cfg.model.partial_bn, pretrained=cfg.model.pretrained,
                         class_names=list(class_names), **({"tam_kwargs": tam} if tam else {}))
    model.card = model.card.with_overrides(**cfg.geometry_overrides())
    if cfg.model.init_from:
        report = init_from_checkpoint(model, cfg.model.init_from, adapt=cfg.model.adapt_frames)
        if log is not None:
            log(str(report))
    if cfg.train.freeze_backbone:
        for name, p in model.named_parameters():
            p.requires_grad_(_is_classifier(name))
        if log is not None:
            log("train.freeze_backbone: only fc.weight and fc.bias train; BatchNorm statistics "
                "are frozen")
    return model


def _is_classifier(name: str) -> bool:
    return name.startswith("fc.")


def build_optimizer(model: nn.Module, cfg: Config, lr: float) -> torch.optim.Optimizer:
    """SGD with momentum (or AdamW, ``train.optimizer``); four groups: backbone weights (decay),
    backbone biases and norms (no decay), both at ``backbone_lr_mult`` x lr, classifier weight
    and bias at ``fc_lr_mult`` x lr (bias without decay). Frozen parameters are left out."""
    groups: dict[str, list[nn.Parameter]] = {"decay": [], "no_decay": [], "fc_w": [], "fc_b": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if _is_classifier(name):
            groups["fc_w" if p.dim() > 1 else "fc_b"].append(p)
        else:
            groups["decay" if p.dim() > 1 else "no_decay"].append(p)
    tc = cfg.train
    bb = tc.backbone_lr_mult
    spec = {"decay": (bb, tc.weight_decay), "no_decay": (bb, 0.0),
            "fc_w": (tc.fc_lr_mult, tc.weight_decay), "fc_b": (tc.fc_lr_mult, 0.0)}
    param_groups = [{"params": ps, "lr": lr * spec[k][0], "weight_decay": spec[k][1], "name": k}
                    for k, ps in groups.items() if ps]
    if tc.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=lr)
    return torch.optim.SGD(param_groups, lr=lr, momentum=tc.momentum)


def lr_factor(step: int, steps_per_epoch: int, cfg: Config) -> float:
    """Multiplier of the base lr at optimiser step ``step`` (0-based): linear warm-up, then
    step decay at ``train.lr_steps`` epochs or a cosine to 0 at ``train.epochs``."""
    tc = cfg.train
    epoch = step / max(steps_per_epoch, 1)  # fractional epoch
    warm = tc.warmup_epochs
    if warm > 0 and epoch < warm:
        return (step + 1) / (warm * steps_per_epoch)
    if tc.schedule == "cosine":
        span = max(tc.epochs - warm, 1e-8)
        return 0.5 * (1.0 + math.cos(math.pi * min((epoch - warm) / span, 1.0)))
    return tc.lr_gamma ** sum(epoch >= s for s in tc.lr_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, steps_per_epoch: int,
                    cfg: Config) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-optimiser-step schedule of :func:`lr_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps_per_epoch, cfg))


def set_bn_mode(model: nn.Module, cfg: Config) -> None:
    """``train.freeze_bn`` (or ``freeze_backbone``): every BatchNorm normalises with its
    running statistics."""
    if cfg.train.freeze_bn or cfg.train.freeze_backbone:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def run_precision(cfg: Config, device: torch.device) -> Precision:
    """``train.amp`` on ``device`` through the one rule (:func:`tanet.precision.resolve_amp`:
    ``auto`` is bf16 where the hardware computes in bf16 natively, fp32 elsewhere)."""
    precision = resolve_amp(cfg.train.amp, device)
    if precision.amp == "fp16" and device.type != "cuda":
        raise ValueError("train.amp=fp16 needs CUDA; use train.amp=bf16 (or auto) on CPU")
    return precision


def autocast(cfg: Config, device: torch.device) -> contextlib.AbstractContextManager:
    """``train.amp`` as autocast (:func:`run_precision`): bf16 (CPU or CUDA) or fp16 (CUDA), or
    nothing for fp32. Loss, softmax of the scores and BatchNorm statistics stay fp32."""
    return run_precision(cfg, device).autocast(device)
