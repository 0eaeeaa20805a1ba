"""Published weights by name or URL: the registry of checkpoints tanet can import, and the one
function that turns a checkpoint spec (a path, a name, a URL) into a local file.

Names are ``<model>.<tag>`` (``tanet_r50.k400``), or the publisher's own name
(``tanet_imagenet-pretrained-r50_8xb8-dense-1x1x8-100e_kinetics400-rgb``). Files are downloaded
and verified by :mod:`tanet.models.download` into ``torch.hub.get_dir()/checkpoints``; a video
checkpoint is converted once to tanet's ``.safetensors`` beside it (by
:func:`tanet.models.convert.read_checkpoint`), with the entry's class names, mean/std and test
pipeline on its card. The entries live in :mod:`tanet.models.hub_entries`.
"""
from __future__ import annotations

import difflib
import fnmatch
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tanet.models import hub_entries
from tanet.models.checkpoint import CheckpointError
from tanet.models.download import (DownloadError, cache_dir, check_sha256, fetch_file, file_name,
                                   sha256_of, url_hash)

__all__ = ["Weights", "ClassList", "Located", "register_weights", "unregister_weights",
           "register_class_list", "unregister_class_list", "get_class_list", "list_weights",
           "get_weights",
           "find_weights", "class_names", "locate", "resolve_file", "pretrained_spec",
           "validate_entry", "is_url", "cache_state", "LAYOUTS"]

LAYOUTS = ("mmaction2", "official", "torchvision", "tanet")
_CLASSES_DIR = Path(__file__).with_name("classes")  # package data: class lists shipped inside
_VIEWS = re.compile(r"^\d+x(1|3|10)$")


@dataclass(frozen=True)
class ClassList:
    """A published class list (one name a line, index = line), fetched and verified like
    weights unless shipped in ``tanet/models/classes/<file>``."""

    name: str  # e.g. "kinetics400"
    url: str
    sha256: str  # full hex digest
    count: int
    file: str  # its file name in the package data and in the cache
    source: str = ""


@dataclass(frozen=True)
class Weights:
    """One published checkpoint: where it is, what it is, how well it did and how it was
    tested. ``card`` holds the card fields of its converted checkpoint (``mean``/``std`` of
    0-1 pixels, ``short_side``: the test short side, ``sampling``, ``dense_stride``)."""

    name: str  # "<model>.<tag>", e.g. "tanet_r50.k400"
    url: str
    sha256: str  # full hex digest, or the prefix the file name carries
    layout: str  # one of LAYOUTS: how its tensors are named
    model: str  # tanet model name (tanet_r50), or the ImageNet network (resnet50)
    dataset: str  # kinetics400 | sthv1 | sthv2 | imagenet1k
    num_classes: int
    frames: int | None  # T; None for image (ImageNet) weights
    top1: float | None  # the publisher's reported accuracy (%) under ``views``/``protocol``
    top5: float | None
    views: str  # clips x crops of the reported accuracy, e.g. "10x3"
    protocol: str  # the test protocol in words
    classes: str | None  # a ClassList name; None for image weights (their head is dropped)
    full_name: str = ""  # the publisher's name for it
    release: str = ""  # e.g. "mmaction2 1.x"
    card: Mapping[str, Any] = field(default_factory=dict)
    notes: str = ""

    @property
    def image_only(self) -> bool:
        """ImageNet backbone weights (for ``pretrained=``), not a video model."""
        return self.frames is None

    @property
    def file(self) -> str:
        return file_name(self.url)


@dataclass(frozen=True)
class Located:
    """A checkpoint spec made local: the file to read, the entry it is (if registered) and
    where its converted ``.safetensors`` is or goes (None: the file is read as it is)."""

    path: Path
    entry: Weights | None
    converted: Path | None

    @property
    def needs_conversion(self) -> bool:
        return self.converted is not None and self.path != self.converted


_WEIGHTS: dict[str, Weights] = {}
_NAMES: dict[str, str] = {}  # short and full names -> short name
_CLASS_LISTS: dict[str, ClassList] = {}


def register_class_list(cl: ClassList, *, replace: bool = False) -> None:
    if cl.name in _CLASS_LISTS and not replace:
        raise ValueError(f"class list {cl.name!r} is already registered")
    _CLASS_LISTS[cl.name] = cl


def unregister_class_list(name: str) -> None:
    _CLASS_LISTS.pop(name, None)


def register_weights(entry: Weights, *, replace: bool = False) -> None:
    """Add an entry (checked by :func:`validate_entry`) under its name and full name."""
    problems = validate_entry(entry)
    if problems:
        raise ValueError(f"weights {entry.name!r}: " + "; ".join(problems))
    for key in {entry.name, entry.full_name} - {""}:
        if key in _NAMES and not replace:
            raise ValueError(f"weights name {key!r} is already registered")
    if replace and entry.name in _WEIGHTS:
        unregister_weights(entry.name)
    _WEIGHTS[entry.name] = entry
    for key in {entry.name, entry.full_name} - {""}:
        _NAMES[key] = entry.name


def unregister_weights(name: str) -> None:
    entry = _WEIGHTS.pop(_NAMES.get(name, name), None)
    if entry is not None:
        for key in (entry.name, entry.full_name):
            _NAMES.pop(key, None)


def list_weights(pattern: str = "*") -> list[Weights]:
    """Registered weights whose name or full name matches a glob pattern, sorted by name."""
    return [w for n, w in sorted(_WEIGHTS.items())
            if fnmatch.fnmatch(n, pattern) or fnmatch.fnmatch(w.full_name, pattern)]


def get_weights(name: str) -> Weights:
    """The entry called ``name`` (short or full name); KeyError with close names."""
    if name in _NAMES:
        return _WEIGHTS[_NAMES[name]]
    raise KeyError(f"unknown weights {name!r}{_did_you_mean(name)} "
                   "(see `tanet models --pretrained`)")


def _did_you_mean(name: str) -> str:
    """``"; did you mean a, b?"`` with up to three registered names close to ``name``, or ``""``."""
    close = difflib.get_close_matches(name, list(_NAMES), n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""


def is_url(spec: str) -> bool:
    return urllib.parse.urlsplit(spec).scheme in ("http", "https")


def find_weights(spec: str) -> Weights | None:
    """The entry a name or URL refers to (a URL matches its entry's URL), else None."""
    if spec in _NAMES:
        return _WEIGHTS[_NAMES[spec]]
    if is_url(spec):
        bare = urllib.parse.urlsplit(spec)._replace(fragment="").geturl()
        return next((w for w in _WEIGHTS.values() if w.url == bare), None)
    return None


def get_class_list(name: str) -> ClassList:
    if name not in _CLASS_LISTS:
        raise KeyError(f"unknown class list {name!r}; registered: {sorted(_CLASS_LISTS)}")
    return _CLASS_LISTS[name]


def class_names(name: str) -> list[str]:
    """A registered class list: from the package data if shipped there, else from the cache
    (downloaded and verified on first use)."""
    from tanet.io import read_class_names

    cl = get_class_list(name)
    path = _CLASSES_DIR / cl.file
    if path.is_file():
        check_sha256(sha256_of(path), cl.sha256, what=str(path),
                     fix=f"the package data is not the published list; replace it with {cl.url}")
    else:
        path = fetch_file(cl.url, name=cl.file, sha256=cl.sha256)
    names = read_class_names(path)
    if len(names) != cl.count:
        raise CheckpointError(f"{path}: {len(names)} class names, expected {cl.count}")
    return names


def cache_state(entry: Weights) -> str:
    """``"converted"``, ``"downloaded"`` or ``""``: what of ``entry`` is in the cache."""
    raw = cache_dir() / entry.file
    if not entry.image_only and _converted_path(raw).is_file():
        return "converted"
    return "downloaded" if raw.is_file() else ""


def _converted_path(raw: Path) -> Path:
    """tanet's ``.safetensors`` beside a downloaded file: ``x-1a2b3c4d.pth`` ->
    ``x-1a2b3c4d.safetensors``."""
    name = raw.name
    for ext in (".pth.tar", ".pth", ".pt", ".bin", ".ckpt", ".tar"):
        if name.endswith(ext):
            return raw.with_name(name[: -len(ext)] + ".safetensors")
    return raw.with_name(name + ".safetensors")


def locate(spec: str | os.PathLike, *, convert: bool = True) -> Located:
    """A local file for ``spec``: an existing path as it is; a registered name or an
    http(s) URL from the cache (downloaded and verified first if needed). With ``convert``, a
    video checkpoint that already has its converted ``.safetensors`` in the cache resolves to
    that file (no network, no hashing)."""
    text = os.fspath(spec)
    if not is_url(text) and (Path(text).exists() or text not in _NAMES):
        if not Path(text).exists():
            raise CheckpointError(f"{text}: no such file, and not a registered weights "
                                  f"name{_did_you_mean(text)} (see `tanet models --pretrained`)")
        return Located(Path(text), None, None)
    entry = find_weights(text)
    url = entry.url if entry else text
    raw = cache_dir() / (entry.file if entry else file_name(url))
    converted = None
    if convert and not (entry and entry.image_only) and raw.suffix != ".safetensors":
        converted = _converted_path(raw)
        if converted.is_file():
            return Located(converted, entry, converted)
    sha = entry.sha256 if entry else url_hash(text)
    return Located(fetch_file(url, name=raw.name, sha256=sha), entry, converted)


def resolve_file(spec: str | os.PathLike) -> Path:
    """A local file for ``spec`` (path, name or URL), downloaded if needed, never converted."""
    return locate(spec, convert=False).path


def pretrained_spec(model: str, pretrained: str | os.PathLike) -> tuple[str, str]:
    """What ``create_model(model, pretrained=...)`` loads: ``("video", spec)`` for the weights
    of a whole video model (``"k400"`` means ``<model>.k400``), ``("imagenet", spec)`` for a
    backbone state dict (``"imagenet"``: torchvision's ResNet of the model's depth; a name, a
    path or a URL)."""
    text = os.fspath(pretrained)
    if text == "imagenet":
        m = re.search(r"_r(\d+)$", model)
        name = f"resnet{m.group(1)}.imagenet" if m else ""
        if name not in _NAMES:
            have = ", ".join(w.name for w in _WEIGHTS.values() if w.image_only)
            raise KeyError(f"no registered ImageNet weights for {model!r} (have: {have}); pass "
                           f"a torchvision-format ResNet state dict (path or URL) instead")
        return "imagenet", name
    entry = find_weights(f"{model}.{text}") or find_weights(text)
    if entry is None:
        return "imagenet", text
    if not entry.image_only and entry.model != model:
        raise ValueError(f"weights {entry.name} are a {entry.model} model, not {model}")
    return ("imagenet" if entry.image_only else "video"), entry.name


def validate_entry(w: Weights) -> list[str]:
    """What is wrong with an entry (empty: well formed): URL, hash, layout, sizes, classes."""
    problems = []
    parts = urllib.parse.urlsplit(w.url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
        problems.append(f"URL {w.url!r} is not a plain http(s) URL")
    else:
        try:
            named = url_hash(w.url)
            if named and not (w.sha256.startswith(named) or named.startswith(w.sha256)):
                problems.append(f"sha256 {w.sha256} disagrees with the file name's {named}")
        except DownloadError as e:
            problems.append(str(e))
    if not re.fullmatch(r"[0-9a-f]{8}|[0-9a-f]{64}", w.sha256):
        problems.append(f"sha256 {w.sha256!r} is neither 8 nor 64 lower-case hex digits")
    if w.layout not in LAYOUTS:
        problems.append(f"layout {w.layout!r} not in {LAYOUTS}")
    if w.num_classes < 1:
        problems.append("num_classes < 1")
    if not _VIEWS.match(w.views):
        problems.append(f"views {w.views!r} is not CLIPSxCROPS with 1, 3 or 10 crops")
    if w.image_only:
        return problems
    if w.frames < 1 or "." not in w.name or w.name.split(".", 1)[0] != w.model:
        problems.append("a video entry needs frames >= 1 and a name '<model>.<tag>'")
    if w.classes is None or w.classes not in _CLASS_LISTS:
        problems.append(f"class list {w.classes!r} is not registered")
    elif _CLASS_LISTS[w.classes].count != w.num_classes:
        problems.append(f"class list {w.classes} has {_CLASS_LISTS[w.classes].count} names for "
                        f"{w.num_classes} classes")
    return problems


def _register_published() -> None:
    for d in hub_entries.CLASS_LISTS:
        register_class_list(ClassList(**d))
    for d in hub_entries.WEIGHTS:
        register_weights(Weights(**d))


_register_published()
