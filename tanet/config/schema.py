"""The run configuration's schema: one dataclass per section, with defaults and comments, and
:meth:`Config.validate` for what types alone cannot say. Reading YAML and ``--set`` overrides
is :mod:`tanet.config.loading`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tanet.geometry import SAMPLINGS
from tanet.precision import AMPS

__all__ = ["Config", "ModelConfig", "DataConfig", "TrainConfig", "TestConfig", "TamConfig",
           "ConfigError", "SAMPLERS", "LOSSES", "CLASS_WEIGHTS"]


SAMPLERS = ("uniform", "balanced", "sqrt")  # data.sampler
LOSSES = ("auto", "ce", "weighted_ce", "focal", "bce")  # train.loss
CLASS_WEIGHTS = ("auto", "inverse", "effective", "none")  # train.class_weights (or a list)


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the file and key."""


@dataclass
class TamConfig:
    """TAM's switches (``tanet_*`` models), passed as ``tam_kwargs``; null keeps the paper's."""

    branches: str | None = None  # both | local | global
    kernel: str | None = None  # adaptive | fixed (a learned static channel-wise temporal conv)
    kernel_init: str | None = None  # uniform | random: start of a fixed kernel
    stages: list[int] | None = None  # which of layer1..4 get TAM, e.g. [3, 4]
    every: int | None = None  # every n-th block of a stage
    position: str | None = None  # before_conv1 | after_conv1 | after_conv2
    kernel_size: int | None = None  # K
    alpha: int | None = None  # expansion of the global branch's hidden layer (alpha * T); paper 2
    beta: int | None = None  # channel reduction of the local branch (C / beta); paper 4
    local_kernel_size: int | None = None  # temporal kernel of the local branch; paper 3


@dataclass
class ModelConfig:
    """Which network to build (see ``tanet models``)."""

    name: str = "tanet_r50"  # a registered model (`tanet models`), e.g. tsm_r50
    num_segments: int = 8  # T, frames per clip
    pretrained: str | None = None  # imagenet | weights tag/name (k400) | ImageNet state dict path/URL
    init_from: str | None = None  # video checkpoint to fine-tune from: file, weights name or URL
    adapt_frames: bool = False  # init_from with another T: resample TAM's T-dependent weights
    dropout: float = 0.5  # dropout before the classifier, in [0, 1)
    partial_bn: bool = False  # freeze every BatchNorm2d but the first (fine-tuning)
    input_size: int | None = None  # crop size in px; None: the model's default
    multilabel: bool | None = None  # sigmoid head (several classes a clip); None: as the data is
    tam: TamConfig = field(default_factory=TamConfig)  # TAM switches; e.g. model.tam.branches=local


@dataclass
class DataConfig:
    """Where the videos and labels are and how clips are sampled and augmented."""

    root: str | None = None  # prefix for relative video paths in the annotation files
    train: str | None = None  # annotation file (any supported format) or class-per-folder dir
    val: str | None = None  # validation (and `tanet test`) videos: same forms as data.train
    labels: str | None = None  # class names, one a line (optional)
    format: str = "auto"  # annotation format (multilabel, charades: several classes a video)
    sampler: str = "uniform"  # uniform | balanced | sqrt: class-balanced / square-root frequency
    split: int = 1  # official split (1-3) of UCF101 / HMDB51 split files
    sampling: str | None = None  # segment (TSN) | dense (fixed stride, Kinetics); None: the model card's
    flip: bool = True  # random horizontal flip in training
    flip_label_map: dict[str, str] | None = None  # class swaps under flip ("left" <-> "right")
    scales: list[float] = field(default_factory=lambda: [1.0, 0.875, 0.75, 0.66])  # crop scales
    short_side: int | None = None  # test-time resize; None: the model's card
    frame_template: str = "img_{:05d}.jpg"  # file names in frame folders, numbered from 1
    test_clips: int = 1  # clips per video at test time
    test_crops: int = 1  # 1 (centre), 3 or 10 crops at test time
    on_error: str = "skip"  # skip | raise, for videos that fail to decode
    on_warning: str = "keep"  # keep | skip, for truncated or damaged videos (listed either way)
    decode_timeout: float | None = 30.0  # seconds per video before it fails; None: no limit
    shuffle_buffer: int = 64  # shards: records a loader worker shuffles over (memory: x their size)


@dataclass
class TrainConfig:
    """Optimisation: SGD recipe of TSN/TSM/TANet plus the usual switches."""

    epochs: int = 50  # passes over the training videos
    batch_size: int = 8  # clips per process per step
    lr: float = 0.01  # learning rate (for train.lr_batch clips when that is set)
    optimizer: str = "sgd"  # sgd (the authors' recipe, with momentum) | adamw
    lr_batch: int | None = None  # if set, lr is for this global batch and scales linearly
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 1e-4  # L2 penalty; none on norms and biases
    schedule: str = "step"  # step | cosine
    lr_steps: list[int] = field(default_factory=lambda: [20, 40])  # epochs, for step
    lr_gamma: float = 0.1  # lr factor at each of train.lr_steps
    warmup_epochs: float = 0.0  # linear warm-up from 0, in epochs (fractions allowed)
    fc_lr_mult: float = 5.0  # lr multiplier of the new classifier
    clip_grad: float | None = 20.0  # max gradient norm; None: off
    label_smoothing: float = 0.0  # cross-entropy label smoothing, in [0, 1)
    loss: str = "auto"  # auto (ce; multi-label: bce) | ce | weighted_ce | focal | bce
    class_weights: str | list[float] = "auto"  # auto | inverse | effective | none | [w per class]
    class_weight_beta: float = 0.999  # effective-number weights (1 - beta) / (1 - beta ** n)
    focal_gamma: float = 2.0  # focal loss: (1 - p) ** gamma down-weights easy examples
    accumulate: int = 1  # gradient accumulation steps per optimiser step
    amp: str = "auto"  # auto (bf16 where the hardware has it, else fp32) | off | bf16 | fp16
    channels_last: bool = False  # channels-last memory format for the training model
    compile: bool = False  # torch.compile (Inductor) the training forward/backward
    freeze_bn: bool = False  # every BatchNorm uses running statistics (eval mode) in training
    freeze_backbone: bool = False  # linear probe: only the classifier trains; BN statistics frozen
    backbone_lr_mult: float = 1.0  # lr multiplier of everything but the classifier (fine-tuning)
    sync_bn: bool = False  # SyncBatchNorm across processes (CUDA only)
    seed: int = 0  # seeds initialisation, sampling and augmentation (per epoch and video)
    workers: int = 4  # data-loading processes per training process
    eval_every: int = 1  # validate every N epochs (and after the last)
    max_steps_per_epoch: int | None = None  # cut epochs short (smoke runs, benchmarks)
    checkpoint_every: int | None = None  # also save `last` every N optimiser steps (mid-epoch)
    on_nonfinite: str = "stop"  # stop | skip: a NaN/Inf loss stops the run or skips the batch
    tensorboard: bool = False  # also log to <output>/tb (the tensorboard extra)
    threads: int | None = None  # torch CPU threads; None: torch's default


@dataclass
class TestConfig:
    """``tanet test`` options (views come from ``data.test_clips`` x ``data.test_crops``)."""

    batch_size: int = 4  # videos per step
    workers: int = 4  # data-loading processes


@dataclass
class Config:
    """A whole run. ``output`` is the run directory (checkpoints, metrics, plots)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)
    output: str = "runs/train"  # the run directory: config, metrics, checkpoints, plots

    def validate(self, source: str = "config") -> "Config":
        """Check values that types alone cannot; raise :class:`ConfigError` naming the key."""
        choices = {"data.sampling": SAMPLINGS, "data.on_error": ("skip", "raise"),
                   "data.on_warning": ("keep", "skip"),
                   "train.schedule": ("step", "cosine"),
                   "train.optimizer": ("sgd", "adamw"), "train.on_nonfinite": ("stop", "skip"),
                   "train.amp": AMPS,
                   "data.sampler": SAMPLERS, "train.loss": LOSSES}
        for key, allowed in choices.items():
            value = _get(self, key)
            if value not in allowed and not (key == "data.sampling" and value is None):
                raise ConfigError(f"{source}: {key} must be one of {', '.join(allowed)}; "
                                  f"got {value!r}")
        if self.model.input_size is not None and self.model.input_size < 1:
            raise ConfigError(f"{source}: model.input_size must be >= 1 or null; "
                              f"got {self.model.input_size}")
        if self.data.short_side is not None and self.data.short_side < 1:
            raise ConfigError(f"{source}: data.short_side must be >= 1 or null; "
                              f"got {self.data.short_side}")
        positive = ("model.num_segments", "train.epochs", "train.batch_size", "train.accumulate",
                    "train.eval_every", "data.test_clips", "data.test_crops", "test.batch_size",
                    "data.split")
        for key in positive:
            if _get(self, key) < 1:
                raise ConfigError(f"{source}: {key} must be >= 1; got {_get(self, key)}")
        if self.data.shuffle_buffer < 0:
            raise ConfigError(f"{source}: data.shuffle_buffer must be >= 0 (0: no shuffle "
                              f"buffer); got {self.data.shuffle_buffer}")
        for key in ("train.checkpoint_every", "train.max_steps_per_epoch"):
            if _get(self, key) is not None and _get(self, key) < 1:
                raise ConfigError(f"{source}: {key} must be >= 1 or null; got {_get(self, key)}")
        try:
            name = self.data.frame_template.format(1)
        except (IndexError, KeyError, ValueError) as e:
            raise ConfigError(f"{source}: data.frame_template {self.data.frame_template!r} must "
                              f"format a frame number, e.g. 'img_{{:05d}}.jpg' ({e})") from None
        if name == self.data.frame_template.format(2):
            raise ConfigError(f"{source}: data.frame_template {self.data.frame_template!r} has "
                              f"no frame-number field, e.g. 'img_{{:05d}}.jpg'")
        if self.data.test_crops not in (1, 3, 10):
            raise ConfigError(f"{source}: data.test_crops must be 1, 3 or 10; "
                              f"got {self.data.test_crops}")
        if self.train.lr <= 0:
            raise ConfigError(f"{source}: train.lr must be > 0; got {self.train.lr}")
        if not 0.0 <= self.train.label_smoothing < 1.0:
            raise ConfigError(f"{source}: train.label_smoothing must be in [0, 1)")
        _check_loss(self, source)
        if not 0.0 <= self.model.dropout < 1.0:
            raise ConfigError(f"{source}: model.dropout must be in [0, 1)")
        if self.train.backbone_lr_mult < 0:
            raise ConfigError(f"{source}: train.backbone_lr_mult must be >= 0")
        if self.model.init_from and self.model.pretrained:
            raise ConfigError(f"{source}: set model.init_from (a video checkpoint) or "
                              f"model.pretrained (ImageNet backbone), not both")
        return self

    def geometry_overrides(self) -> dict[str, Any]:
        """What this config sets of a model's test pipeline, for
        :meth:`tanet.geometry.Geometry.with_overrides` (None: the card's): ``model.input_size``,
        ``data.short_side``, ``data.sampling``. Training and ``tanet test`` apply them
        to the card through that one rule; ``model.num_segments`` builds the model instead."""
        return {"input_size": self.model.input_size, "short_side": self.data.short_side,
                "sampling": self.data.sampling}


def _check_loss(cfg: Config, source: str) -> None:
    """The long-tail keys: class weights, focal's gamma, a loss that fits the head."""
    tc = cfg.train
    weights = tc.class_weights
    if isinstance(weights, str) and weights not in CLASS_WEIGHTS:
        raise ConfigError(f"{source}: train.class_weights must be one of "
                          f"{', '.join(CLASS_WEIGHTS)} or a list of per-class weights; "
                          f"got {weights!r}")
    if isinstance(weights, list) and (not weights or min(weights) < 0):
        raise ConfigError(f"{source}: train.class_weights: a list of weights >= 0, one per class")
    if not 0.0 < tc.class_weight_beta < 1.0:
        raise ConfigError(f"{source}: train.class_weight_beta must be in (0, 1); "
                          f"got {tc.class_weight_beta}")
    if tc.focal_gamma < 0:
        raise ConfigError(f"{source}: train.focal_gamma must be >= 0; got {tc.focal_gamma}")
    if cfg.model.multilabel and tc.loss in ("ce", "weighted_ce"):
        raise ConfigError(f"{source}: train.loss={tc.loss} is a softmax loss (one class a clip); "
                          f"a multi-label model (model.multilabel=true) trains with bce or focal")


def _get(cfg: Any, key: str) -> Any:
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj
