"""Building models: ``create_model(name | checkpoint=...)``, ``load_model(path)``, conversion.

The one way from a name, a card or a file to a :class:`Recognizer`. The factory calls the
registry (builders, default cards) and the loaders (:mod:`.checkpoint`, :mod:`.convert`); they
never call it back.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tanet.models.checkpoint import load_imagenet, load_state_into, save_model
from tanet.models.convert import ImportedCheckpoint, read_checkpoint
from tanet.models.hub import pretrained_spec, resolve_file
from tanet.models.recognizer import ModelCard, Recognizer
from tanet.models.registry import builder, default_card

__all__ = ["create_model", "load_model", "model_from_card", "model_from_checkpoint",
           "convert_checkpoint"]


def create_model(
    name: str | None = None,
    *,
    num_classes: int | None = None,
    num_segments: int | None = None,
    dropout: float = 0.5,
    partial_bn: bool = False,
    pretrained: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
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
        pretrained: ``"imagenet"`` (torchvision's ResNet of the same depth, the paper's
            init, downloaded once) or the name, path or URL of an ImageNet ResNet state dict
            (torchvision ``.pth`` or ``.safetensors``), loaded into the backbone; or a tag of
            published video weights, ``"k400"`` meaning ``<name>.k400`` (see
            ``tanet models --pretrained``), loaded like ``checkpoint=``.
        checkpoint: a trained video model: tanet's ``.safetensors``, or the authors' or
            mmaction2's ``.pth`` (renamed on the fly); a registered weights name
            (``tanet_r50.k400``) or an http(s) URL (downloaded, verified and converted once,
            see :mod:`tanet.models.hub`). The architecture, num_classes and num_segments are
            read from it; ``name`` may be left out. A different ``num_classes`` keeps a fresh
            classifier (fine-tuning to new classes).
        checkpoint_source: ``"auto"`` | ``"official"`` | ``"mmaction2"`` | ``"tanet"``.
        class_names: stored in the model card.
        **kwargs: builder arguments, e.g. ``tam_kwargs={"kernel_size": 5}``.
    """
    if checkpoint is not None and pretrained:
        raise ValueError("pass either pretrained= (ImageNet backbone) or checkpoint=, not both")
    if pretrained and name is not None:
        kind, pretrained = pretrained_spec(name, pretrained)
        if kind == "video":  # published video weights of this model (checked by the hub)
            checkpoint, pretrained, name = pretrained, None, None
    if checkpoint is not None:
        ckpt = read_checkpoint(checkpoint, source=checkpoint_source)
        return model_from_checkpoint(ckpt, name=name, num_classes=num_classes,
                                     num_segments=num_segments, class_names=class_names,
                                     dropout=dropout, partial_bn=partial_bn, **kwargs)
    if name is None or num_classes is None:
        raise TypeError("create_model needs a model name and num_classes (or checkpoint=PATH)")
    card = default_card(name)
    t = num_segments if num_segments is not None else card.num_segments
    model = model_from_card(card.copy(num_classes=num_classes, num_segments=t,
                                      class_names=class_names,
                                      kwargs=dict(kwargs, dropout=dropout)),
                            partial_bn=partial_bn)
    if pretrained:
        load_imagenet(model, resolve_file(pretrained))
    return model


def model_from_card(card: ModelCard, *, partial_bn: bool = False) -> Recognizer:
    """A freshly initialised model of ``card``'s architecture, carrying (a copy of) ``card``."""
    if card.num_classes < 1:
        raise ValueError(f"{card.name}: the card has no classes (num_classes={card.num_classes})")
    kwargs = dict(card.kwargs)
    dropout = kwargs.pop("dropout", 0.5)
    backbone = builder(card.name)(num_segments=card.num_segments, **kwargs)
    model = Recognizer(backbone, num_classes=card.num_classes, num_segments=card.num_segments,
                       dropout=dropout, partial_bn=partial_bn)
    model.card = card.copy()
    return model


def model_from_checkpoint(ckpt: ImportedCheckpoint, *, name: str | None = None,
                          num_classes: int | None = None, num_segments: int | None = None,
                          class_names: list[str] | None = None, partial_bn: bool = False,
                          **kwargs: Any) -> Recognizer:
    """Build the checkpoint's model and load its weights (see ``create_model(checkpoint=...)``).

    ``num_classes`` different from the checkpoint's keeps a fresh classifier (fine-tuning);
    ``kwargs`` override builder arguments (``tam_kwargs`` entries are merged, e.g. formulation).
    """
    card = ckpt.card
    if name is not None and name != card.name:
        raise ValueError(f"{ckpt.path} holds a {card.name} model, not {name}; "
                         f"pass name={card.name!r} or leave it out")
    if num_segments is not None and num_segments != card.num_segments \
            and card.name.startswith("tanet"):
        raise ValueError(f"{ckpt.path}: TAM's weights fix T={card.num_segments} frames, got "
                         f"num_segments={num_segments}")
    build = dict(card.kwargs)
    if "tam_kwargs" in kwargs:
        build["tam_kwargs"] = {**build.get("tam_kwargs", {}), **(kwargs.pop("tam_kwargs") or {})}
    build.update(kwargs)
    n_cls = num_classes or card.num_classes
    keep_head = n_cls == card.num_classes
    if class_names is None and keep_head:
        class_names = card.class_names
    if class_names is not None and len(class_names) != n_cls:
        raise ValueError(f"{len(class_names)} class names for a model with {n_cls} classes")
    model = model_from_card(card.copy(num_classes=n_cls,
                                      num_segments=num_segments or card.num_segments,
                                      class_names=class_names, kwargs=build),
                            partial_bn=partial_bn)
    load_state_into(model, ckpt.state, keep_head=keep_head, source=ckpt.path,
                    what=f"{card.name} ({ckpt.source} layout)")
    return model


def load_model(path: str | os.PathLike, **overrides: Any) -> Recognizer:
    """Rebuild a recognizer from a checkpoint file (or weights name, or URL) alone, in eval
    mode."""
    return create_model(checkpoint=path, **overrides).eval()


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *, source: str = "auto",
                       name: str | None = None, class_names: list[str] | None = None) -> Path:
    """Convert a published checkpoint (authors' or mmaction2's .pth) to tanet's format: one
    .safetensors file whose metadata holds the model card (and where it came from)."""
    ckpt = read_checkpoint(src, source=source)
    model = model_from_checkpoint(ckpt, name=name, class_names=class_names)
    extra = {"tanet.converted_from": json.dumps({"file": Path(src).name, "layout": ckpt.source,
                                                 **{k: v for k, v in ckpt.info.items()
                                                    if k != "source_format"}})}
    return save_model(dst, model, extra=extra)
