"""Published checkpoints in tanet's names: the authors' (liu-zhy/temporal-adaptive-module) and
mmaction2's TANet/TSN/TSM layouts, with the architecture read off the tensor shapes.

:func:`read_checkpoint` reads any supported file (tanet's ``.safetensors`` too) into an
:class:`ImportedCheckpoint`: a state dict in tanet's names and the :class:`ModelCard` that
rebuilds its model. Building the model is :mod:`tanet.models.factory`'s job.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from tanet.models.checkpoint import (CARD_KEY, CheckpointError, load_state_file, read_metadata,
                                    save_state)
from tanet.models.hub import Located, class_names, locate
from tanet.models.recognizer import ModelCard
from tanet.models.registry import default_card, list_models
from tanet.models.resnet import DEPTHS

__all__ = ["ImportedCheckpoint", "read_checkpoint", "detect_source", "convert_official",
           "convert_mmaction2", "infer_architecture", "SOURCES"]

SOURCES = ("auto", "official", "mmaction2", "tanet")
# mmaction2 normalises 0-255 pixels with these; tanet feeds 0-1 pixels, so divide by 255.
MMACTION2_MEAN_255 = (123.675, 116.28, 103.53)
MMACTION2_STD_255 = (58.395, 57.12, 57.375)
_BN_EPS = 1e-5


@dataclass
class ImportedCheckpoint:
    """A checkpoint in tanet's parameter names plus the card that rebuilds its model."""

    path: Path
    source: str  # "official" | "mmaction2" | "tanet"
    state: dict[str, torch.Tensor]  # tanet names: backbone.*, fc.*
    card: ModelCard
    config: dict[str, Any] | None = None  # tanet checkpoints: the training config
    info: dict[str, Any] = field(default_factory=dict)  # epoch, best_prec1, ...


def detect_source(state: Mapping[str, Any]) -> str:
    """``"official"``, ``"mmaction2"`` or ``"tanet"`` from the key names of a state dict."""
    keys = [k.removeprefix("module.") for k in state]
    if any(k.startswith("base_model.") for k in keys):
        return "official"
    if any(k.startswith("backbone.") and (".conv.weight" in k or ".bn.weight" in k) for k in keys) \
            or any(k.startswith("cls_head.") for k in keys):
        return "mmaction2"
    if any(k.startswith("backbone.") for k in keys) and "fc.weight" in keys:
        return "tanet"
    sample = ", ".join(list(keys)[:4])
    raise ValueError(f"unrecognised checkpoint layout (first keys: {sample}); expected the authors' "
                     "(module.base_model.*), mmaction2's (backbone.*.conv.*, cls_head.*) or tanet's "
                     "(backbone.*, fc.*)")


def _sub(key: str, pairs: Sequence[tuple[str, str]]) -> str:
    for a, b in pairs:
        key = re.sub(a, b, key)
    return key


def convert_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Authors' TSN(base_model=TANet) names -> tanet names.

    ``module.base_model.layer1.0.net.conv1.weight`` -> ``backbone.layer1.0.conv1.weight``,
    ``...layer1.0.tam.G.0.weight`` -> ``...layer1.0.temporal.G.0.weight`` (TAM names are kept),
    ``module.new_fc.*`` -> ``fc.*``; the TSM code's shift wrapper ``conv1.net`` is unwrapped too.
    """
    pairs = [(r"^module\.", ""), (r"^base_model\.fc\.", "fc."), (r"^base_model\.", "backbone."),
             (r"^new_fc\.", "fc."), (r"(layer\d+\.\d+)\.net\.", r"\1."),
             (r"(layer\d+\.\d+)\.tam\.", r"\1.temporal."), (r"\.conv1\.net\.", ".conv1.")]
    return {_sub(k, pairs): v for k, v in state.items()}


def convert_mmaction2(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mmaction2 TANet/TSN/TSM names -> tanet names.

    ConvModules (``conv1.conv``/``conv1.bn``) become torchvision's ``conv1``/``bn1``, the
    ``TABlock.block`` wrapper disappears, ``tam`` becomes ``temporal``, ``cls_head.fc_cls`` becomes
    ``fc``. mmaction2's TAM has no BatchNorm in its local branch (``L.0`` conv, ``L.2`` conv): it
    is given an identity BN at ``L.1`` (running_var = 1 - eps), so the maths is unchanged.
    """
    pairs = [(r"^module\.", ""), (r"^cls_head\.fc_cls\.", "fc."), (r"\.block\.", "."),
             (r"\.conv1\.net\.", ".conv1."), (r"^backbone\.conv1\.conv\.", "backbone.conv1."),
             (r"^backbone\.conv1\.bn\.", "backbone.bn1."),
             (r"\.conv(\d)\.conv\.", r".conv\1."), (r"\.conv(\d)\.bn\.", r".bn\1."),
             (r"\.downsample\.conv\.", ".downsample.0."), (r"\.downsample\.bn\.", ".downsample.1."),
             (r"(layer\d+\.\d+)\.tam\.", r"\1.temporal.")]
    out = {_sub(k, pairs): v for k, v in state.items()
           if not k.startswith(("data_preprocessor.", "cls_head.loss"))}
    for key in [k for k in out if k.endswith(".temporal.L.2.weight")]:
        prefix = key.removesuffix("L.2.weight")
        if prefix + "L.1.weight" in out:  # a BN variant: names already match tanet's
            continue
        w = out.pop(key)  # (C, C/beta, 1): the second Conv1d
        hidden = w.shape[1]
        out[prefix + "L.3.weight"] = w
        out[prefix + "L.1.weight"] = torch.ones(hidden, dtype=w.dtype)
        out[prefix + "L.1.bias"] = torch.zeros(hidden, dtype=w.dtype)
        out[prefix + "L.1.running_mean"] = torch.zeros(hidden, dtype=w.dtype)
        out[prefix + "L.1.running_var"] = torch.full((hidden,), 1 - _BN_EPS, dtype=w.dtype)
        out[prefix + "L.1.num_batches_tracked"] = torch.tensor(0)
    return out


def infer_architecture(state: Mapping[str, torch.Tensor], *, shift: bool = False,
                       path: str | os.PathLike = "checkpoint") -> dict[str, Any]:
    """Read name, num_classes, num_segments and builder kwargs off a tanet-named state dict:
    depth from the block counts, widths from conv1 shapes, T/alpha/K/beta from TAM's G and L,
    TAM's switches from which blocks and branches have tensors (:func:`_tam_switches`)."""
    if "fc.weight" not in state or "backbone.conv1.weight" not in state:
        raise CheckpointError(f"{path}: no classifier (fc) or stem (conv1) after renaming; is it a "
                              "full video model checkpoint rather than an ImageNet backbone?")
    layers, widths = [], []
    for s in range(1, 5):
        blocks = {int(m.group(1)) for k in state
                  if (m := re.match(rf"backbone\.layer{s}\.(\d+)\.", k))}
        if not blocks:
            raise CheckpointError(f"{path}: no layer{s} blocks found")
        layers.append(max(blocks) + 1)
        w = state[f"backbone.layer{s}.0.conv1.weight"]  # (width, in, 1, 1)
        if f"backbone.layer{s}.0.conv3.weight" not in state:
            raise CheckpointError(f"{path}: layer{s} has no conv3: only bottleneck ResNets "
                                  "(ResNet-50/101/152 style) are supported, not ResNet-18/34")
        widths.append(int(w.shape[0]))
    stem = int(state["backbone.conv1.weight"].shape[0])
    kwargs: dict[str, Any] = {}
    num_segments = None
    tam_key = re.compile(r"backbone\.layer(\d)\.(\d+)\.temporal\.(?:G\.|L\.|kernel_logits)")
    tam_blocks = sorted({(int(m.group(1)), int(m.group(2))) for k in state
                         if (m := tam_key.match(k))})
    if tam_blocks:
        prefix = "tanet"
        num_segments, kwargs["tam_kwargs"] = _tam_switches(state, tam_blocks, layers, widths, path)
    elif any(re.match(r"backbone\.layer\d\.\d+\.temporal\.conv2\.", k) for k in state):
        prefix = "tea"
    else:
        prefix = "tsm" if shift else "tsn"
    depth = next((d for d, lay in DEPTHS.items() if tuple(layers) == lay), None)
    standard = tuple(widths) == (64, 128, 256, 512) and stem == 64
    name = f"{prefix}_r{depth}"
    if depth is None or not standard or name not in list_models():
        name = f"{prefix}_resnet"
        kwargs.update(layers=list(layers), widths=list(widths), stem_width=stem)
    return dict(name=name, num_classes=int(state["fc.weight"].shape[0]), num_segments=num_segments,
                kwargs=kwargs)


def _tam_switches(state: Mapping[str, torch.Tensor], blocks: list[tuple[int, int]],
                  layers: list[int], widths: list[int],
                  path: str | os.PathLike) -> tuple[int | None, dict[str, Any]]:
    """T and ``tam_kwargs`` off the TAM tensors of ``blocks`` ((stage, index) pairs): alpha, beta,
    K and the local kernel always (the authors' defaults included), and the switches (branches,
    kernel, stages, every, position) only where they differ from the paper's TANet. T is only
    in G's weights (None without G); ``after_conv2`` has ``after_conv1``'s shapes (and G alone
    has no channel axis at all), so only a tanet checkpoint's card tells them apart."""
    s0, i0 = blocks[0]
    pre = f"backbone.layer{s0}.{i0}.temporal."
    g0, l0 = state.get(pre + "G.0.weight"), state.get(pre + "L.0.weight")  # (aT, T), (C/b, C, q)
    fixed = state.get(pre + "kernel_logits")  # (C, K)
    num_segments = int(g0.shape[1]) if g0 is not None else None
    tam: dict[str, Any] = {}
    if g0 is not None:
        tam["alpha"] = int(g0.shape[0]) // num_segments
    if l0 is not None:
        tam["beta"] = int(l0.shape[1]) // int(l0.shape[0])
    if fixed is not None or g0 is not None:  # local only: no kernel, K is moot
        tam["kernel_size"] = int(fixed.shape[1] if fixed is not None
                                 else state[pre + "G.3.weight"].shape[0])
    if l0 is not None:
        tam["local_kernel_size"] = int(l0.shape[2])
    if l0 is None:
        tam["branches"] = "global"
    elif g0 is None and fixed is None:
        tam["branches"] = "local"
    if fixed is not None:
        tam["kernel"] = "fixed"
    sl, il = blocks[-1]  # past layer1.0, a block's input is wider than its bottleneck
    last = f"backbone.layer{sl}.{il}.temporal."
    chan = next((int(state[last + k].shape[i]) for k, i in (("L.0.weight", 1), ("kernel_logits", 0))
                 if last + k in state), None)  # G alone has no channel axis
    if chan is not None and chan != widths[sl - 1]:
        tam["position"] = "before_conv1"
    stages = sorted({s for s, _ in blocks})
    every = next((n for n in range(1, max(layers) + 1)
                  if all({i for s, i in blocks if s == st} == set(range(0, layers[st - 1], n))
                         for st in stages)), None)
    if every is None:
        raise CheckpointError(f"{path}: TAM sits in blocks {blocks}, which no stages/every "
                              "placement describes")
    if stages != [1, 2, 3, 4]:
        tam["stages"] = stages
    if every != 1:
        tam["every"] = every
    return num_segments, tam


def read_checkpoint(path: str | os.PathLike, *, source: str = "auto") -> ImportedCheckpoint:
    """Load any supported checkpoint (tanet .safetensors with a card, a tanet state dict, the
    authors' or mmaction2's .pth) safely and return it in tanet names with its card.

    ``path`` may also be a registered weights name (``tanet_r50.k400``, see
    :mod:`tanet.models.hub`) or an http(s) URL: the file is downloaded and verified into the
    torch.hub cache once, and converted once to tanet's ``.safetensors`` beside it (with the
    entry's class names, mean/std and test pipeline); later reads use that file alone.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown checkpoint source {source!r}; choose from {SOURCES}")
    found = locate(path)
    if found.entry is not None and found.entry.image_only:
        raise CheckpointError(f"{found.entry.name}: ImageNet backbone weights, not a video model; "
                              f"use them as pretrained= (model.pretrained) instead")
    ckpt = _read_file(found.path, source)
    if found.needs_conversion:
        ckpt = _cache_converted(ckpt, found)
    return ckpt


def _cache_converted(ckpt: ImportedCheckpoint, found: Located) -> ImportedCheckpoint:
    """Give a downloaded checkpoint its entry's card fields and write it, once, as tanet's
    ``.safetensors`` beside the download (later reads need neither network nor conversion)."""
    card, entry = ckpt.card, found.entry
    origin: dict[str, Any] = {"file": found.path.name, "layout": ckpt.source}
    if entry is not None:
        if entry.num_classes != card.num_classes or \
                (card.name.startswith("tanet") and entry.frames != card.num_segments):
            raise CheckpointError(
                f"{found.path}: holds {card.num_classes} classes and T={card.num_segments}, but "
                f"{entry.name} is registered with {entry.num_classes} and T={entry.frames}; "
                f"delete the file (it is not the published one)")
        card = card.copy(num_segments=entry.frames, class_names=class_names(entry.classes),
                         **dict(entry.card))
        origin.update(weights=entry.name, url=entry.url, sha256=entry.sha256)
    origin.update({k: v for k, v in ckpt.info.items() if k != "source_format"})
    save_state(found.converted, ckpt.state, card.to_dict(),
               extra={"tanet.converted_from": json.dumps(origin)})
    return ImportedCheckpoint(path=found.converted, source=ckpt.source, state=ckpt.state,
                              card=card, info=ckpt.info)


def _read_file(path: Path, source: str) -> ImportedCheckpoint:
    """:func:`read_checkpoint` of one local file."""
    obj = load_state_file(path)
    if path.suffix == ".safetensors" or source == "tanet":
        try:
            meta = read_metadata(path)
        except CheckpointError:
            meta = None
        if meta is not None:
            return ImportedCheckpoint(
                path=path, source="tanet", state=obj, card=_stored_card(meta),
                config=meta["config"],
                info={k: v for k, v in meta["raw"].items() if k not in (CARD_KEY, "format")})
    info = {k: v for k, v in obj.items() if isinstance(v, (int, float, str)) and k != "state_dict"}
    state = obj["state_dict"] if isinstance(obj.get("state_dict"), Mapping) else obj
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"{path}: no tensors found")
    found = detect_source(state)
    if source != "auto" and source != found:
        raise CheckpointError(f"{path}: looks like a {found!r} checkpoint, not {source!r}; "
                              f"pass --from {found} (or auto)")
    shift = any(".conv1.net." in k for k in state)
    extra: dict[str, Any] = {}
    if found == "official":
        state = convert_official(state)
    elif found == "mmaction2":
        extra = _mmaction2_meta(obj)
        state = convert_mmaction2(state)
    arch = infer_architecture(state, shift=shift, path=path)
    card = default_card(arch["name"]).copy(
        num_classes=arch["num_classes"], kwargs=arch["kwargs"],
        num_segments=arch["num_segments"] or 8)  # TSN/TSM: no tensor carries T
    names = extra.pop("class_names", None)
    if names is not None and len(names) == card.num_classes:
        card.class_names = names
    for key, value in extra.items():
        setattr(card, key, value)
    return ImportedCheckpoint(path=path, source=found, state=state, card=card, info=info)


def _stored_card(meta: dict[str, Any]) -> ModelCard:
    """The card of a tanet checkpoint; cards written before ``sampling`` was on the card take
    the test pipeline from the stored training config."""
    raw = dict(meta["card"])
    data = (meta.get("config") or {}).get("data") or {}
    if "sampling" not in raw:  # an older card: its pipeline lived partly in the config
        if data.get("sampling"):
            raw["sampling"] = data["sampling"]
        if data.get("short_side"):
            raw["short_side"] = int(data["short_side"])
    return ModelCard.from_dict(raw)


def _mmaction2_meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Normalisation (0-255 values / 255) and class names of an mmaction2 checkpoint."""
    pre = obj.get("state_dict", obj)
    mean = tuple(round(m / 255, 6) for m in MMACTION2_MEAN_255)
    std = tuple(round(s / 255, 6) for s in MMACTION2_STD_255)
    if isinstance(pre.get("data_preprocessor.mean"), torch.Tensor):  # stored 0-255 values
        mean = tuple(float(m) / 255 for m in pre["data_preprocessor.mean"].flatten())
        std = tuple(float(s) / 255 for s in pre["data_preprocessor.std"].flatten())
    out: dict[str, Any] = {"mean": mean, "std": std}
    meta = obj.get("meta")
    dataset_meta = meta.get("dataset_meta") if isinstance(meta, Mapping) else None
    if isinstance(dataset_meta, Mapping) and isinstance(dataset_meta.get("classes"), (list, tuple)):
        out["class_names"] = [str(c) for c in dataset_meta["classes"]]
    return out
