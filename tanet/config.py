"""Run configuration: dataclasses, a YAML file, and ``--set a.b=v`` overrides.

One :class:`Config` holds everything ``tanet train`` / ``tanet test`` need. A YAML recipe sets
any subset of its keys; ``--set`` overrides them one at a time, parsed as YAML scalars and
checked against the field's type. An unknown key is an error naming the file and the closest
known key::

    configs/x.yaml: unknown key 'train.epoch'; did you mean 'train.epochs'?
"""
from __future__ import annotations

import codecs
import dataclasses
import difflib
import math
import os
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from tanet.geometry import SAMPLINGS

__all__ = ["Config", "ModelConfig", "DataConfig", "TrainConfig", "TestConfig", "ConfigError",
           "load_config", "find_config", "list_recipes", "apply_overrides", "config_to_dict",
           "config_from_dict", "dump_config", "TamConfig"]


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
    alpha: int | None = None
    beta: int | None = None
    local_kernel_size: int | None = None


@dataclass
class ModelConfig:
    """Which network to build (see ``tanet models``)."""

    name: str = "tanet_r50"
    num_segments: int = 8  # T, frames per clip
    pretrained: str | None = None  # imagenet | weights tag/name (k400) | ImageNet state dict path/URL
    init_from: str | None = None  # video checkpoint to fine-tune from: file, weights name or URL
    adapt_frames: bool = False  # init_from with another T: resample TAM's T-dependent weights
    dropout: float = 0.5
    partial_bn: bool = False  # freeze every BatchNorm2d but the first (fine-tuning)
    input_size: int | None = None  # crop size in px; None: the model's default
    tam: TamConfig = field(default_factory=TamConfig)  # TAM switches; e.g. model.tam.branches=local


@dataclass
class DataConfig:
    """Where the videos and labels are and how clips are sampled and augmented."""

    root: str | None = None  # prefix for relative video paths in the annotation files
    train: str | None = None  # annotation file (any supported format) or class-per-folder dir
    val: str | None = None
    labels: str | None = None  # class names, one a line (optional)
    format: str = "auto"  # annotation format; "auto" detects it
    split: int = 1  # official split (1-3) of UCF101 / HMDB51 split files
    sampling: str | None = None  # segment (TSN) | dense (fixed stride, Kinetics); None: the model card's
    flip: bool = True  # random horizontal flip in training
    flip_label_map: dict[str, str] | None = None  # class swaps under flip ("left" <-> "right")
    scales: list[float] = field(default_factory=lambda: [1.0, 0.875, 0.75, 0.66])
    short_side: int | None = None  # test-time resize; None: the model's card
    frame_template: str = "img_{:05d}.jpg"  # file names in frame folders, numbered from 1
    test_clips: int = 1  # clips per video at test time
    test_crops: int = 1  # 1 (centre), 3 or 10 crops at test time
    on_error: str = "skip"  # skip | raise, for videos that fail to decode
    on_warning: str = "keep"  # keep | skip, for truncated or damaged videos (listed either way)
    decode_timeout: float | None = 30.0  # seconds per video before it fails; None: no limit


@dataclass
class TrainConfig:
    """Optimisation: SGD recipe of TSN/TSM/TANet plus the usual switches."""

    epochs: int = 50
    batch_size: int = 8  # clips per process per step
    lr: float = 0.01
    optimizer: str = "sgd"  # sgd (the authors' recipe, with momentum) | adamw
    lr_batch: int | None = None  # if set, lr is for this global batch and scales linearly
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"  # step | cosine
    lr_steps: list[int] = field(default_factory=lambda: [20, 40])  # epochs, for step
    lr_gamma: float = 0.1
    warmup_epochs: float = 0.0  # linear warm-up from 0, in epochs (fractions allowed)
    fc_lr_mult: float = 5.0  # lr multiplier of the new classifier
    clip_grad: float | None = 20.0  # max gradient norm; None: off
    label_smoothing: float = 0.0
    accumulate: int = 1  # gradient accumulation steps per optimiser step
    amp: str = "off"  # off | bf16 | fp16 (fp16 on CUDA only)
    channels_last: bool = False
    compile: bool = False  # torch.compile (Inductor) the training forward/backward
    freeze_bn: bool = False  # every BatchNorm uses running statistics (eval mode) in training
    freeze_backbone: bool = False  # linear probe: only the classifier trains; BN statistics frozen
    backbone_lr_mult: float = 1.0  # lr multiplier of everything but the classifier (fine-tuning)
    sync_bn: bool = False  # SyncBatchNorm across processes (CUDA only)
    seed: int = 0
    workers: int = 4  # data-loading processes per training process
    eval_every: int = 1  # validate every N epochs (and after the last)
    max_steps_per_epoch: int | None = None  # cut epochs short (smoke runs, benchmarks)
    checkpoint_every: int | None = None  # also save `last` every N optimiser steps (mid-epoch)
    on_nonfinite: str = "stop"  # stop | skip: a NaN/Inf loss stops the run or skips the batch
    tensorboard: bool = False
    threads: int | None = None  # torch CPU threads; None: torch's default


@dataclass
class TestConfig:
    """``tanet test`` options (views come from ``data.test_clips`` x ``data.test_crops``)."""

    batch_size: int = 4  # videos per step
    workers: int = 4


@dataclass
class Config:
    """A whole run. ``output`` is the run directory (checkpoints, metrics, plots)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)
    output: str = "runs/train"

    def validate(self, source: str = "config") -> "Config":
        """Check values that types alone cannot; raise :class:`ConfigError` naming the key."""
        choices = {"data.sampling": SAMPLINGS, "data.on_error": ("skip", "raise"),
                   "data.on_warning": ("keep", "skip"),
                   "train.schedule": ("step", "cosine"),
                   "train.optimizer": ("sgd", "adamw"), "train.on_nonfinite": ("stop", "skip"),
                   "train.amp": ("off", "bf16", "fp16")}
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


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass with type checking


def _fields(obj_or_cls: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj_or_cls)}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the config, e.g. ``["model.name", ..., "output"]``."""
    keys = []
    for name, tp in _hints(cls).items():
        if dataclasses.is_dataclass(tp):
            keys += all_keys(tp, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _unknown(key: str, source: str) -> ConfigError:
    sections = [n for n, tp in _hints(Config).items() if dataclasses.is_dataclass(tp)]
    close = difflib.get_close_matches(key, all_keys() + sections, n=1, cutoff=0.5)
    if not close:  # a misspelt leaf under the right section, e.g. "train.eopchs"
        leaf = key.rsplit(".", 1)[-1]
        close = [k for k in all_keys() if difflib.get_close_matches(leaf, [k.rsplit(".", 1)[-1]],
                                                                    cutoff=0.7)][:1]
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"{source}: unknown key {key!r}{hint}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_REPR = reprlib.Repr()  # values in messages: short, even for huge or self-referencing YAML
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 80, 80


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    bad = ConfigError(f"{source}: {key} expects {_type_name(tp)}, got {_REPR.repr(value)} "
                      f"({type(value).__name__})")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key, source)
            except ConfigError:
                continue
        raise bad
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise bad
        return [_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return {_coerce(k, args[0], key, source): _coerce(v, args[1], f"{key}.{k}", source)
                for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isnan(value):
                raise ConfigError(f"{source}: {key} expects a number, got NaN")
            return float(value)
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            raise ConfigError(f"{source}: {key} expects a string, got {value!r} (YAML reads "
                              f"yes/no/on/off as booleans: quote it)")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. data.labels: 400 would be odd, but a name like 2024 is not
        raise bad
    raise ConfigError(f"{source}: {key}: unsupported field type {tp}")


def _set(cfg: Any, key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    obj = cfg
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(obj) or part not in _fields(obj):
            raise _unknown(key, source)
        tp = _hints(type(obj))[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(tp):
                if not isinstance(value, dict):
                    raise ConfigError(f"{source}: {key} is a section; set its keys, "
                                      f"e.g. {key}.{next(iter(_fields(tp)))}=...")
                for k, v in value.items():
                    _set(cfg, f"{key}.{k}", v, source)
            else:
                if key == "train.amp" and value is False:
                    value = "off"  # YAML 1.1 reads a bare `off` as false
                setattr(obj, part, _coerce(value, tp, key, source))
            return
        obj = getattr(obj, part)


def _leaf_type(cfg: Any, key: str) -> Any:
    """The annotation of config key ``key`` (None for an unknown key or a section)."""
    obj: Any = type(cfg)
    for part in key.split("."):
        if not dataclasses.is_dataclass(obj) or part not in _fields(obj):
            return None
        obj = _hints(obj)[part]
    return None if dataclasses.is_dataclass(obj) else obj


def _get(cfg: Any, key: str) -> Any:
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def config_from_dict(d: dict[str, Any] | None, *, source: str = "config",
                     base: Config | None = None) -> Config:
    """Build a :class:`Config` from a nested dict (unknown keys and bad types are errors)."""
    cfg = base if base is not None else Config()
    if d is None:
        return cfg
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(d).__name__}")
    for k, v in d.items():
        _set(cfg, str(k), v, source)
    return cfg


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Nested plain dict (JSON/YAML-safe) of a config."""
    return dataclasses.asdict(cfg)


def apply_overrides(cfg: Config, overrides: list[str] | None) -> Config:
    """Apply ``["a.b=v", ...]``; ``v`` is parsed as YAML (``1e-3``, ``[1, 2]``, ``null``)."""
    import yaml

    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=10")
        key, raw = item.split("=", 1)
        key = key.strip()
        text_field = _leaf_type(cfg, key) in (str, str | None)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as e:
            if not text_field:
                raise ConfigError(f"--set {item!r}: value is not valid YAML ({e})") from None
            value = raw.strip()
        if text_field and value is not None and not isinstance(value, str):
            value = raw.strip()  # a path or template, e.g. {:05d}.jpg, is text as written
        if isinstance(value, str) and _is_floatish(value):
            value = float(value)  # YAML 1.1 reads "1e-3" as a string
        _set(cfg, key, value, f"--set {key}")
    return cfg


def _is_floatish(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return s.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity")


def list_recipes() -> list[str]:
    """Names of the recipes shipped in ``tanet/configs`` (usable as ``--config NAME``)."""
    from tanet.io import shipped_yaml

    return shipped_yaml("tanet.configs")


def find_config(path_or_name: str | os.PathLike) -> Path:
    """A config file: ``path_or_name`` itself if it exists, else the shipped recipe of that name
    (``synthetic_tanet_tiny``, ``synthetic_tanet_tiny.yaml`` or ``configs/...yaml``)."""
    from tanet.io import find_yaml

    found = find_yaml(path_or_name, "tanet.configs")
    if found is not None:
        return found
    path = Path(path_or_name)
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    close = difflib.get_close_matches(name, list_recipes(), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{path}: no such config file or recipe{hint} (recipes: "
                      f"{', '.join(list_recipes())})")


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file or shipped recipe ``path`` (if given), then ``overrides``;
    validated."""
    import yaml

    cfg = Config()
    source = "config"
    if path is not None:
        path = find_config(path)
        source = str(path)
        try:
            data = _floatify(yaml.safe_load(_read_text(path)))
        except (yaml.YAMLError, ValueError, OverflowError) as e:  # an int of > 4300 digits; a
            # \U escape past the last code point
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        except RecursionError:
            raise ConfigError(f"{path}: YAML nested too deeply") from None
        cfg = config_from_dict(data, source=source, base=cfg)
    apply_overrides(cfg, overrides)
    return cfg.validate(source if not overrides else f"{source} (with --set)")


def _read_text(path: Path) -> str:
    """A config file's text: UTF-8 (optional BOM), or UTF-16 with a BOM."""
    data = path.read_bytes()
    enc = "utf-16" if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8-sig"
    try:
        return data.decode(enc)
    except UnicodeDecodeError as e:
        line = data[:e.start].decode(enc, errors="replace").count("\n") + 1
        raise ConfigError(f"{path}:{line}: not {'UTF-16' if enc == 'utf-16' else 'UTF-8'} text "
                          f"(byte 0x{data[e.start]:02x} at offset {e.start}); save it as "
                          f"UTF-8") from None


def _floatify(obj: Any, memo: dict[int, Any] | None = None) -> Any:
    """YAML 1.1 leaves ``1e-4`` (no dot) as a string; read such strings as floats.

    Each list or mapping is converted once (``memo``): YAML aliases share objects, and walking
    them expanded would take exponential time on a hostile file ("billion laughs")."""
    memo = {} if memo is None else memo
    if isinstance(obj, (dict, list)):
        if id(obj) in memo:
            return memo[id(obj)]
        if isinstance(obj, dict):
            out = memo[id(obj)] = {}
            out.update({k: _floatify(v, memo) for k, v in obj.items()})
        else:
            out = memo[id(obj)] = []
            out.extend(_floatify(v, memo) for v in obj)
        return out
    if isinstance(obj, str) and _is_floatish(obj) and any(c in obj for c in "eE."):
        return float(obj)
    return obj


def dump_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML (atomically), e.g. ``runs/x/config.yaml``."""
    import yaml

    from tanet.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
