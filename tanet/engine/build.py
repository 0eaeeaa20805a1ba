"""From a config to the things a run needs: datasets and loaders, the model, the optimiser and
its schedule, autocast. Plain functions, no state."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from tanet.config import Config
from tanet.data.annotations import read_class_names
from tanet.data.dataset import VideoDataset, VideoLoader, build_loader
from tanet.data.shards import ShardSet, is_shards, open_shards
from tanet.data.sources import STDIN, Video, is_url, resolve_videos
from tanet.data.streaming import ShardStream
from tanet.data.transforms import build_train_transform
from tanet.data.views import test_transform
from tanet.engine.distributed import DistInfo, ShardSampler
from tanet.engine.losses import Loss, build_loss, class_counts, loss_name
from tanet.engine.samplers import build_sampler
from tanet.engine.seeding import SeededItems, seeded_item
from tanet.geometry import Geometry
from tanet.models import Recognizer, create_model
from tanet.models.transfer import init_from_checkpoint
from tanet.precision import Precision, resolve_amp

__all__ = ["Split", "read_split", "Objective", "build_objective", "train_dataset", "test_dataset",
           "make_loader", "split_loader", "build_model", "build_optimizer", "build_scheduler",
           "lr_factor", "autocast", "run_precision", "set_bn_mode"]


@dataclass
class Split:
    """The videos of ``data.<split>`` (paths resolved by :mod:`tanet.data.sources`: relative
    paths of a list start from ``data.root``, else the list's folder) and the class names they
    are labelled with."""

    records: list[Video]
    class_names: list[str]
    source: str  # the annotation file or folder, as given
    shards: ShardSet | None = None  # data.<split> names WebDataset shards (streamed)
    label_map: list[int] | None = None  # shards: the manifest's label -> class_names index
    multilabel: bool = False  # records carry sets of classes (``Video.labels``)

    def __len__(self) -> int:
        return len(self.shards) if self.shards is not None else len(self.records)

    @property
    def labels(self) -> list[int] | list[tuple[int, ...]]:
        """Each video's class, or its tuple of classes (multi-label); files only (shards are
        streamed: their labels are not listed)."""
        if self.shards is not None:
            raise ValueError(f"{self.source}: shards are streamed, their labels are not listed "
                             f"ahead (class-balanced sampling and class weights from counts "
                             f"need a list of files; give train.class_weights as a list)")
        if self.multilabel:
            return [r.labels or () for r in self.records]
        return [int(r.label) for r in self.records]  # type: ignore[arg-type]


def read_split(cfg: Config, split: str, class_names: Sequence[str] | None = None) -> Split:
    """Read ``data.<split>`` (any annotation format, a class-per-folder directory, a UCF101 /
    HMDB51 split folder, or ``-``: a list on standard input) through the one resolver; a list
    may be at a URL. WebDataset shards (a ``shards.json`` manifest or a ``.tar`` pattern, local
    or at a URL: :mod:`tanet.data.shards`) are opened, not listed (``Split.shards``)."""
    src = getattr(cfg.data, split)
    if not src:
        raise ValueError(f"data.{split} is not set: give an annotation file or a class-per-folder "
                         f"directory (--set data.{split}=PATH)")
    if src == STDIN and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(f"data.{split}=- (a list on standard input) works in one process only; "
                         f"under torchrun write the list to a file")
    root = cfg.data.root
    if is_shards(src):
        return _shard_split(src, split, class_names or cfg.data.labels)
    if src != STDIN and not is_url(src) and not Path(src).exists():
        hint = ""
        if root and (Path(root) / src).exists():
            hint = (f"; data.root applies to the paths inside a list, not to the list itself: "
                    f"set data.{split}={Path(root) / src}")
        raise FileNotFoundError(f"{src}: data.{split} does not exist (relative to the working "
                                f"directory {os.getcwd()}){hint}")
    labels = list(class_names) if class_names else cfg.data.labels
    source = resolve_videos(src, root=root, labels=labels, format=cfg.data.format,
                            split=cfg.data.split, subset="train" if split == "train" else "test")
    if source.class_names is None or (source.labels is None and not source.multilabel):
        why = {"folder": "a folder with videos of its own, or in subfolders of its class "
                         "folders, is not a class-per-folder tree; data.format=tree reads it as "
                         "one", "paths": "a plain list of paths", "video": "a single video"}
        raise ValueError(f"{src}: data.{split} names videos without labels "
                         f"({why.get(source.format, source.format)}). Training and testing need "
                         f"an annotation list or a class-per-folder directory")
    return Split(list(source.videos), list(source.class_names), str(src),
                 multilabel=source.multilabel)


@dataclass
class Objective:
    """What training optimises: the head (``multilabel``), the loss and its class weights."""

    multilabel: bool
    loss: Loss
    loss_name: str  # train.loss with auto resolved
    weights: list[float] | None  # per-class weights of the loss (None: unweighted)
    counts: list[int] | None  # training videos per class (None: shards, not counted)

    def describe(self) -> str:
        head = "sigmoid (multi-label)" if self.multilabel else "softmax"
        w = "" if self.weights is None else (
            f", class weights {min(self.weights):.3g}..{max(self.weights):.3g}")
        return f"{head} head, loss {self.loss_name}{w}"


def build_objective(cfg: Config, train: Split, val: Split | None = None) -> Objective:
    """The head and loss of a run: ``model.multilabel`` (None: as the training data is; a
    single-label head cannot learn multi-label data) and ``train.loss`` / ``class_weights``
    (:mod:`tanet.engine.losses`) with the class counts of ``train``."""
    multilabel = train.multilabel if cfg.model.multilabel is None else cfg.model.multilabel
    for split in (train, val):
        if split is not None and split.multilabel and not multilabel:
            raise ValueError(f"{split.source}: a multi-label list (several classes a video); "
                             f"set model.multilabel=true (or leave it null) to train a sigmoid "
                             f"head on it")
    if val is not None and val.multilabel != train.multilabel and not multilabel:
        raise ValueError(f"{val.source}: data.val is multi-label but data.train is not")
    tc = cfg.train
    # shards are streamed: their class counts are not known ahead
    counts = None if train.shards is not None else class_counts(train.labels,
                                                                 len(train.class_names))
    fn, w = build_loss(tc.loss, multilabel=multilabel, counts=counts, weights=tc.class_weights,
                       beta=tc.class_weight_beta, gamma=tc.focal_gamma,
                       label_smoothing=tc.label_smoothing, num_classes=len(train.class_names))
    return Objective(multilabel, fn, loss_name(tc.loss, multilabel),
                     None if w is None else [float(x) for x in w],
                     None if counts is None else [int(c) for c in counts])


def _shard_split(src: str, split: str, labels: Sequence[str] | str | None) -> Split:
    """The shards of ``data.<split>``; class names from the manifest, or ``labels`` (the
    manifest's names must all be among them: records are relabelled by name)."""
    shards = open_shards(src)
    names = shards.class_names
    if not names:
        raise ValueError(f"{src}: data.{split} names shards without labels (sharded from an "
                         f"unlabelled source); training and testing need labels")
    if labels is None:
        return Split([], list(names), src, shards)
    wanted = read_class_names(labels) if isinstance(labels, (str, os.PathLike)) else list(labels)
    index = {n: i for i, n in enumerate(wanted)}
    unknown = [n for n in names if n not in index]
    if unknown:
        raise ValueError(f"{src}: class {unknown[0]!r} of the shards is not among the class "
                         f"names of the run ({len(unknown)} unknown)")
    return Split([], wanted, src, shards, [index[n] for n in names])


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
                        frame_template=cfg.data.frame_template,
                        num_classes=len(split.class_names))


def test_dataset(cfg: Config, split: Split, geom: Geometry, *, clips: int = 1,
                 crops: int = 1) -> VideoDataset:
    """Test views of ``split``: the clip-views policy of :mod:`tanet.data.views` (decoded at
    the test short side, as ``tanet predict`` does)."""
    return VideoDataset(split.records, root=None, num_segments=geom.num_segments,
                        sampling=geom.sampling, dense_stride=geom.dense_stride, train=False,
                        transform=test_transform(geom, crops), clips=clips,
                        on_error=cfg.data.on_error, decode_timeout=cfg.data.decode_timeout,
                        frame_template=cfg.data.frame_template, short_side=geom.short_side,
                        on_warning=cfg.data.on_warning, num_classes=len(split.class_names))


def make_loader(dataset: VideoDataset, sampler: torch.utils.data.Sampler, *, batch_size: int,
                workers: int, seed: int) -> VideoLoader:
    """A loader over ``(epoch, index)`` keys with per-item seeding (see :mod:`.seeding`)."""
    return build_loader(SeededItems(dataset, seed), batch_size=batch_size, workers=workers,
                        sampler=sampler, seed=seed, prefetch_factor=4 if workers > 0 else None)


def split_loader(cfg: Config, split: Split, dataset: VideoDataset, info: DistInfo, *,
                 train: bool, batch_size: int, workers: int) -> tuple[Any, VideoLoader]:
    """This process's loader of ``split`` and what chooses its epochs (``set_epoch``, ``n``,
    ``plan``): files through ``data.sampler``'s (train: :class:`TrainSampler`, one seeded
    permutation per epoch, padded, or a :class:`~tanet.engine.samplers.ClassSampler`,
    class-balanced draws) or :class:`ShardSampler` (evaluation); shards streamed
    (:class:`ShardStream`: train: shuffled, padded to equal shares; evaluation: every record
    once; ``data.sampler`` uniform only)."""
    seed = cfg.train.seed
    if split.shards is None:
        n = len(split.records)
        sampler = (build_sampler(cfg.data.sampler, split.labels, world_size=info.world_size,
                                 rank=info.rank, seed=seed)
                   if train else ShardSampler(n, world_size=info.world_size, rank=info.rank))
        return sampler, make_loader(dataset, sampler, batch_size=batch_size, workers=workers,
                                    seed=seed)
    if train and cfg.data.sampler != "uniform":
        raise ValueError(f"{split.source}: data.sampler={cfg.data.sampler} draws files by their "
                         f"class; shards are streamed in shuffled shard order. Train from the "
                         f"list of files, or use data.sampler=uniform with shards")
    stream = ShardStream(split.shards, dataset, world_size=info.world_size, rank=info.rank,
                         workers=workers, batch_size=batch_size, seed=seed, train=train,
                         buffer=cfg.data.shuffle_buffer if train else 0,
                         label_map=split.label_map, item_context=partial(seeded_item, seed))
    return stream, build_loader(stream, batch_size=batch_size, workers=workers, seed=seed,
                                prefetch_factor=4 if workers > 0 else None)


def build_model(cfg: Config, class_names: Sequence[str], *,
                log: Callable[[str], None] | None = None, multilabel: bool = False) -> Recognizer:
    """The recognizer of ``model.*`` with ``len(class_names)`` outputs (``model.tam.*`` set:
    TAM's switches, recorded in the card), started from ``model.init_from`` if set (``log``
    gets the report: tensors loaded, re-initialised, adapted) and with a frozen backbone under
    ``train.freeze_backbone``. Its card records the test pipeline of the run (names, crop size,
    short side, sampling): the registry's card with the config's values through the one override
    rule (:meth:`~tanet.geometry.Geometry.with_overrides`, as ``tanet test`` applies it), and
    ``multilabel`` (a sigmoid head: the card says so to test, predict, export and serve)."""
    tam = {k: v for k, v in dataclasses.asdict(cfg.model.tam).items() if v is not None}
    model = create_model(cfg.model.name, num_classes=len(class_names),
                         num_segments=cfg.model.num_segments, dropout=cfg.model.dropout,
                         partial_bn=cfg.model.partial_bn, pretrained=cfg.model.pretrained,
                         class_names=list(class_names), **({"tam_kwargs": tam} if tam else {}))
    model.card = model.card.with_overrides(**cfg.geometry_overrides())
    model.card.multilabel = multilabel
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
