"""Model registry: name -> builder + default :class:`ModelCard`, in the timm style.

The registry knows no checkpoints: :mod:`tanet.models.factory` builds models from names, cards
and files. Tiny variants are reduced-width bottleneck ResNets for tests and the demo.
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass
from typing import Any, Callable

from tanet.models.recognizer import ModelCard
from tanet.models.resnet import DEPTHS, ResNet

__all__ = ["register_model", "list_models", "default_card", "model_defaults", "builder",
           "is_registered"]


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., ResNet]
    card: ModelCard
    hidden: bool = False  # buildable by name (checkpoints) but not listed


_REGISTRY: dict[str, _Entry] = {}


def register_model(name: str, builder: Callable[..., ResNet], *, hidden: bool = False,
                   **card: Any) -> None:
    """Register ``builder(*, num_segments, **kw) -> backbone`` under ``name``; ``card`` fields
    (``input_size``, ``short_side``, ``num_segments``, ...) override the ImageNet-224 defaults."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = _Entry(builder, ModelCard(name=name, **card), hidden)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a glob pattern, sorted."""
    return sorted(n for n, e in _REGISTRY.items() if not e.hidden and fnmatch.fnmatch(n, pattern))


def is_registered(name: str) -> bool:
    """Whether ``name`` can be built (hidden entries included)."""
    return name in _REGISTRY


def default_card(name: str) -> ModelCard:
    """A copy of the default card of a registered model (``num_classes`` 0)."""
    return _entry(name).card.copy()


def model_defaults(name: str) -> dict[str, Any]:
    """The default card of a registered model as a dict (``input_size`` a tuple)."""
    card = default_card(name)
    d = card.to_dict()
    d["input_size"], d["mean"], d["std"] = card.input_size, card.mean, card.std
    return d


def builder(name: str) -> Callable[..., ResNet]:
    """The backbone builder registered under ``name``."""
    return _entry(name).builder


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown model {name!r}{hint} (see tanet.list_models())")
    return _REGISTRY[name]


def _resnet(depth: int, temporal: str | None) -> Callable[..., ResNet]:
    def build(*, num_segments: int, tam_kwargs: dict | None = None, **kw: Any) -> ResNet:
        return ResNet(DEPTHS[depth], temporal=temporal, num_segments=num_segments,
                      tam_kwargs=tam_kwargs, **kw)

    return build


def _tiny(temporal: str | None) -> Callable[..., ResNet]:
    def build(*, num_segments: int, tam_kwargs: dict | None = None, layers=(1, 1, 1, 1),
              **kw: Any) -> ResNet:
        kw.setdefault("widths", (16, 32, 64, 128))
        kw.setdefault("stem_width", 16)
        return ResNet(tuple(layers), temporal=temporal, num_segments=num_segments,
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
register_model("tea_r50", _resnet(50, "me"))  # TEA's motion excitation (tanet.models.baselines)
for _kind, _temporal in (("tanet", "tam"), ("tsn", None), ("tsm", "shift"), ("tea", "me")):
    register_model(f"{_kind}_tiny", _tiny(_temporal), input_size=(3, 64, 64), short_side=72)
    register_model(f"{_kind}_resnet", _custom(_temporal), hidden=True)
