"""What ``tanet serve`` is started with (:class:`ServeSettings`, its options one to one) and the
names its models are served under (``--name``, ``--model NAME=CHECKPOINT``)."""
from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import PurePosixPath

__all__ = ["ServeSettings", "default_model_name", "parse_model_option", "check_model_name"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_SUFFIXES = (".safetensors", ".onnx", ".pth.tar", ".pth", ".pt", ".bin", ".ckpt", ".tar")


def check_model_name(name: str, where: str = "--name") -> str:
    """``name`` if it can be a model's name in URLs (``/v2/models/NAME``, ``?model=NAME``):
    letters, digits, ``_``, ``.``, ``-``, starting with a letter or digit, at most 128."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"{where}: model name {name!r} cannot be used in URLs: use letters, "
                         "digits, '_', '.' and '-' (starting with a letter or digit, at most 128)")
    return name


def default_model_name(checkpoint: str | os.PathLike) -> str:
    """The name a checkpoint is served under without ``--name``: a published weights name as it
    is (``tanet_r50.k400``: the dot and tag are part of it, and its URL gives the same name),
    else the file's name without its checkpoint suffix (``runs/x/best.safetensors`` -> ``best``,
    ``model.int8.onnx`` -> ``model.int8``, ``TSM_k400.pth.tar`` -> ``TSM_k400``; for a URL the
    last part of its path)."""
    from tanet.models.hub import find_weights, is_url

    text = os.fspath(checkpoint)
    entry = find_weights(text) if not os.path.exists(text) else None
    if entry is not None:
        return entry.name
    base = (PurePosixPath(urllib.parse.urlsplit(text).path).name if is_url(text)
            else os.path.basename(text.rstrip("/\\")))
    for suffix in _SUFFIXES:
        if base.lower().endswith(suffix) and len(base) > len(suffix):
            return base[:-len(suffix)]
    return base


def parse_model_option(value: str) -> tuple[str, str]:
    """``--model NAME=CHECKPOINT`` -> (NAME, CHECKPOINT); a value without a ``NAME=`` prefix
    (a URL's ``=`` or a path's ``/`` come later) is a checkpoint with its default name."""
    head, sep, rest = value.partition("=")
    if sep and rest and _NAME.fullmatch(head):
        return head, rest
    return default_model_name(value), value


@dataclass
class ServeSettings:
    """What ``tanet serve`` is started with (its options, one to one)."""

    checkpoint: str | None = None  # a checkpoint path, a registry name or URL, or an .onnx
    name: str | None = None  # the checkpoint's model name (default: default_model_name)
    models: tuple[str, ...] = ()  # more models: "NAME=CHECKPOINT" (--model, repeatable)
    views: str = "1x1"  # default CLIPSxCROPS
    topk: int = 5
    labels: str | None = None  # class names for every model (their counts must match)
    device: str = "cpu"
    amp: str = "auto"  # precision (tanet.precision): bf16 where the hardware has it, else fp32
    max_batch: int = 16  # views per model call at most; 1 turns batching off
    calibrate: bool = True  # lower max_batch to the size that is still faster per view
    max_wait_ms: float = 5.0
    decode_workers: int = 2
    sequential: bool = False  # one request at a time (decode, then model): the baseline
    max_queue: int = 64  # requests in progress, all models together; more get 503
    max_upload_mb: float = 200.0  # a /v1 upload, or a whole v2 request body
    max_views: int = 30  # clips x crops per request (v2: summed over its videos)
    timeout_s: float = 120.0  # per-request deadline (upload, queue, decode, model)
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    tmp_dir: str | None = None  # where uploads are spooled (default: a new temporary folder)
    keep_memory: bool = True  # glibc keeps freed memory for the next batch (keep_freed_memory)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    def model_specs(self) -> list[tuple[str, str]]:
        """(name, checkpoint) of every model, the default (``/v1`` without ``?model=``) first:
        ``checkpoint`` (named ``name``), then ``models`` in order. Names are checked and
        unique."""
        specs = []
        if self.checkpoint is not None:
            specs.append((check_model_name(self.name or default_model_name(self.checkpoint),
                                           "--name" if self.name else "--checkpoint"),
                          self.checkpoint))
        elif self.name is not None:
            raise ValueError("--name names the --checkpoint model; for --model give "
                             "NAME=CHECKPOINT")
        for value in self.models:
            name, ckpt = parse_model_option(value)
            specs.append((check_model_name(name, f"--model {value}"), ckpt))
        if not specs:
            raise ValueError("no model to serve: give --checkpoint CHECKPOINT or "
                             "--model NAME=CHECKPOINT")
        seen: set[str] = set()
        for name, _ in specs:
            if name in seen:
                raise ValueError(f"two models are named {name!r}: give each its own name "
                                 "(--name, --model NAME=CHECKPOINT)")
            seen.add(name)
        return specs
