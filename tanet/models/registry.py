"""Model registry: ``create_model(name, ...)`` and ``list_models()`` in the timm style.

Each entry is a builder plus a default config (input size, mean/std, frames). Tiny variants are
reduced-width bottleneck ResNets for tests and the demo.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from tanet.models.recognizer import ModelCard, Recognizer
from tanet.models.resnet import DEPTHS, ResNet

__all__ = ["create_model", "list_models", "register_model", "model_defaults"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., ResNet]
    defaults: dict[str, Any] = field(default_factory=dict)
    hidden: bool = False  # buildable by name (checkpoints) but not listed


_REGISTRY: dict[str, _Entry] = {}


def register_model(name: str, builder: Callable[..., ResNet], *, hidden: bool = False,
                   **defaults: Any) -> None:
    """Register ``builder(*, num_segments, **kw) -> backbone`` under ``name``."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    cfg = dict(input_size=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, resize=256,
               num_segments=8)
    cfg.update(defaults)
    _REGISTRY[name] = _Entry(builder, cfg, hidden)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a glob pattern, sorted."""
    import fnmatch

    return sorted(n for n, e in _REGISTRY.items() if not e.hidden and fnmatch.fnmatch(n, pattern))


def model_defaults(name: str) -> dict[str, Any]:
    """The default config of a registered model (input size, mean/std, frames)."""
    return dict(_entry(name).defaults)


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown model {name!r}{hint} (see tanet.list_models())")
    return _REGISTRY[name]


def create_model(
    name: str | None = None,
    *,
    num_classes: int | None = None,
    num_segments: int | None = None,
    dropout: float = 0.5,
    partial_bn: bool = False,
    pretrained: str | None = None,
    checkpoint: str | None = None,
    checkpoint_source: str = "auto",
    class_names: list[str] | None = None,
    **kwargs: Any,
) -> Recognizer:
    """Build a registered recognizer.

    Args:
        name: a name from :func:`list_models`, e.g. ``"tanet_r50"``.
        num_classes: classifier outputs.
        num_segments: frames per clip T (default: the model's, 8).
        dropout: dropout before the classifier.
        partial_bn: freeze all BatchNorm layers but the first in training (fine-tuning).
        pretrained: path to an ImageNet ResNet state dict (torchvision ``.pth`` or
            ``.safetensors``) loaded into the backbone.
        checkpoint: a trained video model: tanet's ``.safetensors``, or the authors' or
            mmaction2's ``.pth`` (renamed on the fly). The architecture, num_classes and
            num_segments are read from it; ``name`` may be left out. A different
            ``num_classes`` keeps a fresh classifier (fine-tuning to new classes).
        checkpoint_source: ``"auto"`` | ``"official"`` | ``"mmaction2"`` | ``"tanet"``.
        class_names: stored in the model card.
        **kwargs: builder arguments, e.g. ``tam_kwargs={"kernel_size": 5}``.
    """
    if checkpoint is not None:
        from tanet.models.weights import model_from_checkpoint, read_checkpoint

        if pretrained:
            raise ValueError("pass either pretrained= (ImageNet backbone) or checkpoint=, not both")
        ckpt = read_checkpoint(checkpoint, source=checkpoint_source)
        return model_from_checkpoint(ckpt, name=name, num_classes=num_classes,
                                     num_segments=num_segments, class_names=class_names,
                                     dropout=dropout, partial_bn=partial_bn, **kwargs)
    if name is None or num_classes is None:
        raise TypeError("create_model needs a model name and num_classes (or checkpoint=PATH)")
    entry = _entry(name)
    t = num_segments if num_segments is not None else entry.defaults["num_segments"]
    backbone = entry.builder(num_segments=t, **kwargs)
    model = Recognizer(backbone, num_classes=num_classes, num_segments=t, dropout=dropout,
                       partial_bn=partial_bn)
    d = entry.defaults
    model.card = ModelCard(name=name, num_classes=num_classes, num_segments=t,
                           input_size=tuple(d["input_size"]), mean=tuple(d["mean"]),
                           std=tuple(d["std"]), resize=d["resize"], class_names=class_names,
                           kwargs=dict(kwargs, dropout=dropout))
    if pretrained:
        from tanet.models.weights import load_imagenet

        load_imagenet(model, pretrained)
    return model


def _resnet(depth: int, temporal: str | None) -> Callable[..., ResNet]:
    def build(*, num_segments: int, tam_kwargs: dict | None = None, **kw: Any) -> ResNet:
        return ResNet(DEPTHS[depth], temporal=temporal, num_segments=num_segments,
                      tam_kwargs=tam_kwargs, **kw)

    return build


def _tiny(temporal: str | None) -> Callable[..., ResNet]:
    def build(*, num_segments: int, tam_kwargs: dict | None = None, **kw: Any) -> ResNet:
        kw.setdefault("widths", (16, 32, 64, 128))
        kw.setdefault("stem_width", 16)
        return ResNet((1, 1, 1, 1), temporal=temporal, num_segments=num_segments,
                      tam_kwargs=tam_kwargs, **kw)

    return build


def _custom(temporal: str | None) -> Callable[..., ResNet]:
    """Any bottleneck ResNet shape (``layers``, ``widths``, ``stem_width``): imported checkpoints
    of non-standard depth or width."""
    def build(*, num_segments: int, layers=DEPTHS[50], tam_kwargs: dict | None = None,
              **kw: Any) -> ResNet:
        return ResNet(tuple(layers), temporal=temporal, num_segments=num_segments,
                      tam_kwargs=tam_kwargs, **kw)

    return build


for _depth in (50, 101, 152):
    register_model(f"tanet_r{_depth}", _resnet(_depth, "tam"))
for _depth in (50, 101):
    register_model(f"tsn_r{_depth}", _resnet(_depth, None))
    register_model(f"tsm_r{_depth}", _resnet(_depth, "shift"))
for _kind, _temporal in (("tanet", "tam"), ("tsn", None), ("tsm", "shift")):
    register_model(f"{_kind}_tiny", _tiny(_temporal), input_size=(3, 64, 64), resize=72)
    register_model(f"{_kind}_resnet", _custom(_temporal), hidden=True)
