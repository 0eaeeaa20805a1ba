"""Loading weights from local files: ImageNet initialisation of the backbone, tanet's own
checkpoint format, and import of the authors' and mmaction2's published checkpoints.

Every load goes through safetensors or ``torch.load(..., weights_only=True)``: a checkpoint is
data, never code. A pickle that tries to run code is refused with :class:`UnsafeCheckpointError`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

__all__ = ["CheckpointError", "UnsafeCheckpointError", "load_state_file", "load_imagenet",
           "LoadReport", "save_model", "load_model", "read_metadata", "ImportedCheckpoint",
           "read_checkpoint", "convert_checkpoint", "convert_official", "convert_mmaction2",
           "detect_source", "infer_architecture", "load_checkpoint_into", "model_from_checkpoint",
           "read_labels"]


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


# ---------------------------------------------------------------------------------------------
# tanet's own checkpoint: one .safetensors file with the model card in its metadata, so the file
# alone rebuilds the model (predict, export, visualize need nothing else).

CARD_KEY = "tanet.card"
CONFIG_KEY = "tanet.config"


def save_model(path: str | os.PathLike, model: nn.Module, *, config: dict | None = None,
               extra: dict[str, str] | None = None) -> Path:
    """Write ``model``'s weights and card atomically to ``path`` (.safetensors)."""
    import json

    from safetensors.torch import save as serialize

    from tanet.utils import atomic_path

    card = getattr(model, "card", None)
    if card is None:
        raise ValueError("model has no card; build it with tanet.create_model")
    meta = {CARD_KEY: json.dumps(card.to_dict()), "format": "pt"}
    if config is not None:
        meta[CONFIG_KEY] = json.dumps(config)
    meta.update(extra or {})
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = serialize(state, metadata=meta)  # bytes; written by Python so OSErrors stay OSErrors
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Card (dict), config (dict or None) and raw metadata of a tanet .safetensors checkpoint."""
    import json

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


def load_model(path: str | os.PathLike, **overrides: Any) -> nn.Module:
    """Rebuild a recognizer from a tanet checkpoint file alone (eval mode)."""
    from tanet.models.recognizer import ModelCard
    from tanet.models.registry import create_model

    card = ModelCard.from_dict(read_metadata(path)["card"])
    kwargs = dict(card.kwargs)
    kwargs.update(overrides)
    model = create_model(card.name, num_classes=card.num_classes, num_segments=card.num_segments,
                         class_names=card.class_names, **kwargs)
    model.card = card
    state = load_state_file(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit {card.name}: {e}") from e
    return model.eval()


# ---------------------------------------------------------------------------------------------
# Published checkpoints: the authors' (liu-zhy/temporal-adaptive-module) and mmaction2's TANet,
# renamed to tanet's parameter names, with the architecture read off the tensor shapes.

SOURCES = ("auto", "official", "mmaction2", "tanet")
# mmaction2 normalises 0-255 pixels with these; tanet feeds 0-1 pixels, so divide by 255.
MMACTION2_MEAN_255 = (123.675, 116.28, 103.53)
MMACTION2_STD_255 = (58.395, 57.12, 57.375)
_BN_EPS = 1e-5


@dataclass
class ImportedCheckpoint:
    """A checkpoint in tanet's parameter names plus everything needed to rebuild its model."""

    path: Path
    source: str  # "official" | "mmaction2" | "tanet"
    state: dict[str, torch.Tensor]  # tanet names: backbone.*, fc.*
    name: str  # registry name, e.g. "tanet_r50" or "tanet_resnet" (custom depth/width)
    num_classes: int
    num_segments: int
    kwargs: dict[str, Any]  # builder arguments (tam_kwargs; layers/widths for custom shapes)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    class_names: list[str] | None = None
    card: dict[str, Any] | None = None  # tanet checkpoints: the stored card
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
    depth from the block counts, widths from conv1 shapes, T/alpha/K/beta from TAM's G and L."""
    from tanet.models.registry import list_models
    from tanet.models.resnet import DEPTHS

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
    g0 = state.get("backbone.layer1.0.temporal.G.0.weight")  # (alpha*T, T)
    kwargs: dict[str, Any] = {}
    num_segments = None
    if g0 is not None:
        prefix = "tanet"
        num_segments = int(g0.shape[1])
        l0 = state["backbone.layer1.0.temporal.L.0.weight"]  # (C/beta, C, q)
        kwargs["tam_kwargs"] = dict(alpha=int(g0.shape[0]) // num_segments,
                                    beta=widths[0] // int(l0.shape[0]),
                                    kernel_size=int(state["backbone.layer1.0.temporal.G.3.weight"].shape[0]),
                                    local_kernel_size=int(l0.shape[2]))
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


def read_checkpoint(path: str | os.PathLike, *, source: str = "auto") -> ImportedCheckpoint:
    """Load any supported checkpoint (tanet .safetensors with a card, a tanet state dict, the
    authors' or mmaction2's .pth) safely and return it in tanet names with its architecture."""
    if source not in SOURCES:
        raise ValueError(f"unknown checkpoint source {source!r}; choose from {SOURCES}")
    path = Path(path)
    obj = load_state_file(path)
    if path.suffix == ".safetensors" or source == "tanet":
        try:
            meta = read_metadata(path)
        except CheckpointError:
            meta = None
        if meta is not None:
            card = meta["card"]
            return ImportedCheckpoint(
                path=path, source="tanet", state=obj, name=card["name"],
                num_classes=card["num_classes"], num_segments=card["num_segments"],
                kwargs=dict(card.get("kwargs") or {}), mean=tuple(card["mean"]),
                std=tuple(card["std"]), class_names=card.get("class_names"), card=card,
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
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    class_names = None
    if found == "official":
        state = convert_official(state)
    elif found == "mmaction2":
        pre = obj.get("state_dict", obj)
        mean = tuple(round(m / 255, 6) for m in MMACTION2_MEAN_255)
        std = tuple(round(s / 255, 6) for s in MMACTION2_STD_255)
        if isinstance(pre.get("data_preprocessor.mean"), torch.Tensor):  # stored 0-255 values
            mean = tuple(float(m) / 255 for m in pre["data_preprocessor.mean"].flatten())
            std = tuple(float(s) / 255 for s in pre["data_preprocessor.std"].flatten())
        dataset_meta = (obj.get("meta") or {}).get("dataset_meta") if isinstance(obj.get("meta"), Mapping) else None
        if isinstance(dataset_meta, Mapping) and isinstance(dataset_meta.get("classes"), (list, tuple)):
            class_names = [str(c) for c in dataset_meta["classes"]]
        state = convert_mmaction2(state)
    arch = infer_architecture(state, shift=shift, path=path)
    if arch["num_segments"] is None:  # TSN/TSM: no tensor carries T; keep the default
        arch["num_segments"] = 8
    if class_names is not None and len(class_names) != arch["num_classes"]:
        class_names = None
    return ImportedCheckpoint(path=path, source=found, state=state, name=arch["name"],
                              num_classes=arch["num_classes"], num_segments=arch["num_segments"],
                              kwargs=arch["kwargs"], mean=mean, std=std, class_names=class_names,
                              info=info)


def load_checkpoint_into(model: nn.Module, ckpt: ImportedCheckpoint, *,
                         keep_head: bool = True) -> LoadReport:
    """Load an imported checkpoint into ``model`` strictly (BN counters may be absent in old
    files). ``keep_head=False`` loads the backbone only (fine-tuning to new classes)."""
    state = dict(ckpt.state)
    if not keep_head:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = model.state_dict()
    for k, v in own.items():  # pre-0.4.1 checkpoints have no BN batch counters
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = v
    shape_errors = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                    for k, v in state.items() if k in own and own[k].shape != v.shape]
    if shape_errors:
        raise CheckpointError(f"{ckpt.path}: shapes do not match {ckpt.name}: "
                              + "; ".join(shape_errors[:5]))
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if keep_head or not k.startswith("fc.")]
    report = LoadReport(missing=missing, unexpected=list(result.unexpected_keys),
                        loaded=len(state) - len(result.unexpected_keys))
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{ckpt.path}: weights do not fit {ckpt.name} ({ckpt.source} "
                              f"layout): {report}")
    return report


def model_from_checkpoint(ckpt: ImportedCheckpoint, *, name: str | None = None,
                          num_classes: int | None = None, num_segments: int | None = None,
                          class_names: list[str] | None = None, **kwargs: Any) -> nn.Module:
    """Build the checkpoint's model and load its weights (see ``create_model(checkpoint=...)``).

    ``num_classes`` different from the checkpoint's keeps a fresh classifier (fine-tuning);
    ``kwargs`` override builder arguments (``tam_kwargs`` entries are merged, e.g. formulation).
    """
    from tanet.models.registry import create_model

    if name is not None and name != ckpt.name:
        raise ValueError(f"{ckpt.path} holds a {ckpt.name} model, not {name}; "
                         f"pass name={ckpt.name!r} or leave it out")
    if num_segments is not None and num_segments != ckpt.num_segments and ckpt.name.startswith("tanet"):
        raise ValueError(f"{ckpt.path}: TAM's weights fix T={ckpt.num_segments} frames, got "
                         f"num_segments={num_segments}")
    build = dict(ckpt.kwargs)
    if "tam_kwargs" in kwargs:
        build["tam_kwargs"] = {**build.get("tam_kwargs", {}), **(kwargs.pop("tam_kwargs") or {})}
    build.update(kwargs)
    n_cls = num_classes or ckpt.num_classes
    keep_head = n_cls == ckpt.num_classes
    if class_names is None and keep_head:
        class_names = ckpt.class_names
    if class_names is not None and len(class_names) != n_cls:
        raise ValueError(f"{len(class_names)} class names for a model with {n_cls} classes")
    model = create_model(ckpt.name, num_classes=n_cls, num_segments=num_segments or ckpt.num_segments,
                         class_names=class_names, **build)
    load_checkpoint_into(model, ckpt, keep_head=keep_head)
    model.card.mean, model.card.std = tuple(ckpt.mean), tuple(ckpt.std)
    if ckpt.card is not None:
        model.card.input_size = tuple(ckpt.card["input_size"])
        model.card.resize = ckpt.card["resize"]
    return model


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *, source: str = "auto",
                       name: str | None = None, class_names: list[str] | None = None) -> Path:
    """Convert a published checkpoint (authors' or mmaction2's .pth) to tanet's format: one
    .safetensors file whose metadata holds the model card (and where it came from)."""
    import json

    ckpt = read_checkpoint(src, source=source)
    model = model_from_checkpoint(ckpt, name=name, class_names=class_names)
    extra = {"tanet.converted_from": json.dumps({"file": Path(src).name, "layout": ckpt.source,
                                                 **{k: v for k, v in ckpt.info.items()
                                                    if k != "source_format"}})}
    return save_model(dst, model, extra=extra)


def read_labels(path: str | os.PathLike) -> list[str]:
    """Class names from a text file, one per line (a leading "index " or "index," is dropped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: labels file not found")
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        m = re.match(r"^\d+[\s,:;]+(.+)$", line)
        names.append(m.group(1).strip() if m else line)
    return names
