"""Training and evaluation: loops, checkpoints, exact resume, and DistributedDataParallel.

``train(cfg)`` and ``test(checkpoint, cfg)`` are what ``tanet train`` / ``tanet test`` call.

Reproducibility: every video item draws its augmentation randomness from RNGs seeded by
``(seed, epoch, index)`` (see :class:`_SeededItems`), so the data a step sees does not depend on
the number of loader workers, on the number of processes, or on where a run was resumed. With
the model's own randomness (dropout) restored from the state file, ``--resume`` reproduces the
uninterrupted run bit for bit on CPU.

Distributed: started by ``torchrun`` (env:// rendezvous; gloo on CPU, nccl on CUDA). Each
process takes ``train.batch_size`` clips per step from a shard of one shared permutation per
epoch; evaluation shards the videos without padding and gathers the scores by video index, so
every video counts exactly once. Only rank 0 writes files.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from tanet.config import Config, config_from_dict, config_to_dict, dump_config
from tanet.metrics import (confusion_matrix, mean_class_accuracy, plot_confusion_matrix,
                           topk_accuracy)

__all__ = ["train", "test", "evaluate", "DistInfo", "init_distributed", "finish_distributed",
           "lr_factor", "build_model", "build_optimizer", "TrainSampler", "ShardSampler",
           "save_checkpoint", "load_train_state", "parse_views", "TrainingInterrupted",
           "NonFiniteLossError"]


# ---------------------------------------------------------------------------------------------
# processes


@dataclass
class DistInfo:
    """This process's place in the job; ``world_size == 1`` without torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the torchrun job described by ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` if there is one.

    Backend: nccl when CUDA is available (one GPU per local rank), else gloo.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def finish_distributed() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _log(info: DistInfo, msg: str, quiet: bool = False) -> None:
    if info.main and not quiet:
        print(msg, file=sys.stderr, flush=True)


def _warn(info: DistInfo, msg: str) -> None:
    if info.main:
        print(f"warning: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# samplers and seeded items


class TrainSampler(torch.utils.data.Sampler):
    """This rank's share of one seeded permutation per epoch; yields ``(epoch, index)``.

    The permutation depends only on ``(seed, epoch)``; it is padded by wrapping around to a
    multiple of ``world_size`` and rank ``r`` takes positions ``r, r + W, ...``, so W processes
    with batch B see, step for step, the same clips as one process with batch W*B.
    """

    def __init__(self, n: int, *, world_size: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True) -> None:
        self.n, self.world_size, self.rank = n, world_size, rank
        self.seed, self.shuffle, self.epoch, self.start = seed, shuffle, 0, 0
        self.per_rank = math.ceil(n / world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Use epoch ``epoch``'s permutation from this rank's item ``start`` on (a resume in
        the middle of an epoch)."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return max(self.per_rank - self.start, 0)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world_size
        order = (order * math.ceil(total / max(self.n, 1)))[:total]
        mine = order[self.rank::self.world_size][self.start:]
        return iter([(self.epoch, i) for i in mine])


class ShardSampler(torch.utils.data.Sampler):
    """Evaluation shard ``rank, rank + W, ...`` without padding: no video twice, none dropped."""

    def __init__(self, n: int, *, world_size: int = 1, rank: int = 0) -> None:
        self.indices = list(range(rank, n, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(0, i) for i in self.indices])


class _SeededItems(torch.utils.data.Dataset):
    """Wrap a dataset so item ``(epoch, i)`` draws its randomness from RNGs seeded by
    ``(seed, epoch, i)`` (torch, numpy and python ``random``); the caller's RNG states are
    restored afterwards in the main process."""

    def __init__(self, dataset: torch.utils.data.Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, i = key
        s = (self.seed * 1_000_003 + epoch * 10_007_179 + i) % (2**63 - 1)
        in_worker = torch.utils.data.get_worker_info() is not None
        saved = None if in_worker else _rng_state_raw()
        torch.default_generator.manual_seed(s)  # CPU only; torch.manual_seed costs ~5 ms
        np.random.seed(s % (2**32))
        random.seed(s)
        try:
            return self.dataset[i]
        finally:
            if saved is not None:
                _set_rng_state_raw(saved)


def _rng_state_raw() -> tuple:
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _set_rng_state_raw(state: tuple) -> None:
    torch.set_rng_state(state[0])
    np.random.set_state(state[1])
    random.setstate(state[2])


def rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), numpy and python as tensors / plain lists."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# data (adapter over tanet.data)


@dataclass
class _Split:
    dataset: torch.utils.data.Dataset
    class_names: list[str]
    source: str


def _input_geometry(cfg: Config, card: Any) -> tuple[int, int]:
    """(crop size, test short side) from the config, else the model card."""
    size = cfg.model.input_size or card.input_size[-1]
    if cfg.data.short_side:
        short = cfg.data.short_side
    elif cfg.model.input_size:
        short = int(round(size * card.resize / card.input_size[-1]))
    else:
        short = card.resize
    return size, short


def build_split(cfg: Config, split: str, *, train: bool, size: int, short_side: int,
                mean: Sequence[float], std: Sequence[float],
                class_names: list[str] | None = None, clips: int = 1, crops: int = 1) -> _Split:
    """Dataset of ``data.<split>`` with the train or test transform."""
    from tanet.data.annotations import read_annotations
    from tanet.data.dataset import VideoDataset
    from tanet.data.transforms import build_test_transform, build_train_transform

    src = getattr(cfg.data, split)
    if not src:
        raise ValueError(f"data.{split} is not set: give an annotation file or a class-per-folder "
                         f"directory (--set data.{split}=PATH)")
    root = cfg.data.root
    src_path = Path(src)
    if not src_path.exists() and root and (Path(root) / src).exists():
        src_path = Path(root) / src
    if not src_path.exists():
        raise FileNotFoundError(f"{src}: data.{split} does not exist")
    records, names = read_annotations(src_path, root=root, labels=class_names or cfg.data.labels,
                                      format=cfg.data.format)
    names = list(names)
    if train:
        flip_map = None
        if cfg.data.flip_label_map:
            index = {n: i for i, n in enumerate(names)}
            unknown = [k for kv in cfg.data.flip_label_map.items() for k in kv if k not in index]
            if unknown:
                raise ValueError(f"data.flip_label_map: unknown class {unknown[0]!r}")
            flip_map = {index[a]: index[b] for a, b in cfg.data.flip_label_map.items()}
        transform = build_train_transform(size=size, mean=mean, std=std, flip=cfg.data.flip,
                                          flip_label_map=flip_map, scales=tuple(cfg.data.scales))
    else:
        transform = build_test_transform(size=size, mean=mean, std=std, short_side=short_side,
                                         crops=crops)
    ds = VideoDataset(records, root=root, num_segments=cfg.model.num_segments,
                      sampling=cfg.data.sampling, train=train, transform=transform,
                      clips=clips, on_error=cfg.data.on_error,
                      decode_timeout=cfg.data.decode_timeout,
                      frame_template=cfg.data.frame_template)
    return _Split(ds, names, str(src_path))


def _loader(split: _Split, sampler: torch.utils.data.Sampler, *, batch_size: int, workers: int,
            seed: int) -> torch.utils.data.DataLoader:
    from tanet.data.dataset import build_loader

    return build_loader(_SeededItems(split.dataset, seed), batch_size=batch_size, workers=workers,
                        sampler=sampler, seed=seed, prefetch_factor=4 if workers > 0 else None)


# ---------------------------------------------------------------------------------------------
# model and optimiser


def build_model(cfg: Config, class_names: list[str]) -> nn.Module:
    """The recognizer of ``model.*`` with ``len(class_names)`` outputs; names go on its card."""
    from tanet.models import create_model

    model = create_model(cfg.model.name, num_classes=len(class_names),
                         num_segments=cfg.model.num_segments, dropout=cfg.model.dropout,
                         partial_bn=cfg.model.partial_bn, pretrained=cfg.model.pretrained,
                         class_names=list(class_names))
    if cfg.model.input_size:
        s = cfg.model.input_size
        card = model.card
        card.resize = int(round(s * card.resize / card.input_size[-1]))
        card.input_size = (3, s, s)
    return model


def _is_classifier(name: str) -> bool:
    return name.startswith("fc.")


def build_optimizer(model: nn.Module, cfg: Config, lr: float) -> torch.optim.Optimizer:
    """SGD with momentum (or AdamW, ``train.optimizer``); four groups: backbone weights (decay),
    backbone biases and norms (no decay), classifier weight and bias at ``fc_lr_mult`` x lr
    (bias without decay)."""
    groups: dict[str, list[nn.Parameter]] = {"decay": [], "no_decay": [], "fc_w": [], "fc_b": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if _is_classifier(name):
            groups["fc_w" if p.dim() > 1 else "fc_b"].append(p)
        else:
            groups["decay" if p.dim() > 1 else "no_decay"].append(p)
    t = cfg.train
    spec = {"decay": (1.0, t.weight_decay), "no_decay": (1.0, 0.0),
            "fc_w": (t.fc_lr_mult, t.weight_decay), "fc_b": (t.fc_lr_mult, 0.0)}
    param_groups = [{"params": ps, "lr": lr * spec[k][0], "weight_decay": spec[k][1], "name": k}
                    for k, ps in groups.items() if ps]
    if t.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=lr)
    return torch.optim.SGD(param_groups, lr=lr, momentum=t.momentum)


def lr_factor(step: int, steps_per_epoch: int, cfg: Config) -> float:
    """Multiplier of the base lr at optimiser step ``step`` (0-based): linear warm-up, then
    step decay at ``train.lr_steps`` epochs or a cosine to 0 at ``train.epochs``."""
    t = cfg.train
    epoch = step / max(steps_per_epoch, 1)  # fractional epoch
    warm = t.warmup_epochs
    if warm > 0 and epoch < warm:
        return (step + 1) / (warm * steps_per_epoch)
    if t.schedule == "cosine":
        span = max(t.epochs - warm, 1e-8)
        return 0.5 * (1.0 + math.cos(math.pi * min((epoch - warm) / span, 1.0)))
    return t.lr_gamma ** sum(epoch >= s for s in t.lr_steps)


def _set_bn_mode(model: nn.Module, cfg: Config) -> None:
    """``train.freeze_bn``: every BatchNorm normalises with its running statistics."""
    if cfg.train.freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _autocast(cfg: Config, device: torch.device) -> contextlib.AbstractContextManager:
    if cfg.train.amp == "off":
        return contextlib.nullcontext()
    if cfg.train.amp == "fp16" and device.type != "cuda":
        raise ValueError("train.amp=fp16 needs CUDA; use train.amp=bf16 on CPU")
    dtype = torch.bfloat16 if cfg.train.amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# checkpoints


def save_checkpoint(out: Path, tag: str, model: nn.Module, cfg: Config, *,
                    state: dict[str, Any] | None = None) -> Path:
    """``<out>/<tag>.safetensors`` (weights + card + config, atomic) and, given ``state``,
    ``<out>/<tag>.state.pt`` (atomic): optimiser, scheduler, position (epoch, step, micro-step
    within the epoch), RNG states, best top-1 and a copy of the weights.

    The state file is written first and is self-contained, so a kill between the two writes
    leaves a state that resumes exactly (the weights file is only the user-facing model)."""
    from tanet.models.weights import save_model
    from tanet.utils import atomic_path

    extra = None
    if state is not None:
        full = {**state, "model": {k: v.detach().cpu()  # serialised at once: no copy needed
                                   for k, v in _unwrap(model).state_dict().items()}}
        with atomic_path(out / f"{tag}.state.pt") as tmp:
            torch.save(full, tmp)
        extra = {"tanet.epoch": str(state["epoch"]), "tanet.step": str(state["step"])}
    return save_model(out / f"{tag}.safetensors", model, config=config_to_dict(cfg), extra=extra)


def load_train_state(out: Path, tag: str = "last") -> tuple[dict[str, torch.Tensor], dict]:
    """Weights and training state of ``<out>/<tag>`` to resume from.

    The weights come from the state file (older runs without them there: from the weights file,
    checked to be of the same epoch)."""
    from tanet.models.weights import CheckpointError, load_state_file, read_metadata

    weights_path, state_path = out / f"{tag}.safetensors", out / f"{tag}.state.pt"
    if not state_path.is_file():
        raise FileNotFoundError(f"{state_path}: nothing to resume from (train without --resume, "
                                f"or point output at the run directory)")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{state_path}: unreadable training state ({type(e).__name__}: "
                              f"{e})") from e
    if "model" in state:
        return state.pop("model"), state
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path}: nothing to resume from")
    w_epoch = read_metadata(weights_path)["raw"].get("tanet.epoch")
    if w_epoch != str(state["epoch"]):
        raise CheckpointError(f"{out}: {weights_path.name} is from epoch {w_epoch} but "
                              f"{state_path.name} from epoch {state['epoch']} (interrupted "
                              f"while saving); resume from an earlier copy of the run")
    return load_state_file(weights_path), state


# ---------------------------------------------------------------------------------------------
# loops


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _all_sum(info: DistInfo, values: Sequence[float]) -> list[float]:
    t = torch.tensor(list(values), dtype=torch.float64)
    if info.distributed:
        dev = info.device if dist.get_backend() == "nccl" else torch.device("cpu")
        t = t.to(dev)
        dist.all_reduce(t)
    return t.cpu().tolist()


@dataclass
class EvalResult:
    """Scores of every evaluated video, ordered by dataset index (on every rank)."""

    scores: torch.Tensor  # (N, K) probabilities averaged over views
    labels: torch.Tensor  # (N,)
    indices: torch.Tensor  # (N,) dataset index
    paths: list[str]
    num_skipped: int
    skipped_paths: list[str]
    loss: float

    def metrics(self, num_classes: int) -> dict[str, Any]:
        acc = topk_accuracy(self.scores, self.labels, (1, 5))
        cm = confusion_matrix(self.scores.argmax(1), self.labels, num_classes)
        return {"top1": acc[1], "top5": acc[5], "mean_class_acc": mean_class_accuracy(cm),
                "num_videos": int(self.labels.numel()), "num_skipped": self.num_skipped,
                "loss": self.loss}


@torch.no_grad()
def evaluate(model: nn.Module, loader: torch.utils.data.DataLoader, info: DistInfo, *,
             cfg: Config, desc: str = "eval", quiet: bool = False) -> EvalResult:
    """Multi-view scores: (B, V, T, C, H, W) clips are scored per view, softmaxed and averaged."""
    from tqdm import tqdm

    model.eval()
    scores, labels, indices, paths, skipped = [], [], [], [], []
    num_skipped, loss_sum = 0, 0.0
    bar = tqdm(loader, desc=desc, disable=quiet or not info.main, leave=False, dynamic_ncols=True)
    for batch in bar:
        num_skipped += int(batch.get("num_skipped", 0))
        skipped += list(batch.get("skipped_paths", []))
        video = batch.get("video")
        if video is None or len(batch["label"]) == 0:
            continue
        video = video.to(info.device, non_blocking=True)
        if video.dim() == 5:
            video = video.unsqueeze(1)  # (B, 1, T, C, H, W)
        b, v = video.shape[:2]
        with _autocast(cfg, info.device):
            logits = model(video.flatten(0, 1))  # (B*V, K)
        logits = logits.float().view(b, v, -1)  # (B, V, K)
        label = batch["label"].to(info.device)
        loss_sum += F.cross_entropy(logits.mean(1), label, reduction="sum").item()
        scores.append(logits.softmax(-1).mean(1).cpu())  # (B, K)
        labels.append(label.cpu())
        indices.append(torch.as_tensor(batch["index"]).cpu())
        paths += [str(p) for p in batch["path"]]
    k = _unwrap(model).num_classes
    local = (torch.cat(scores) if scores else torch.zeros(0, k),
             torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long),
             torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long),
             paths, num_skipped, skipped, loss_sum)
    parts = [local]
    if info.distributed:
        parts = [None] * info.world_size
        dist.all_gather_object(parts, local)
    s = torch.cat([p[0] for p in parts])
    lab = torch.cat([p[1] for p in parts])
    idx = torch.cat([p[2] for p in parts])
    all_paths = [x for p in parts for x in p[3]]
    order = idx.argsort()
    n = max(int(idx.numel()), 1)
    return EvalResult(scores=s[order], labels=lab[order], indices=idx[order],
                      paths=[all_paths[i] for i in order.tolist()],
                      num_skipped=sum(p[4] for p in parts),
                      skipped_paths=[x for p in parts for x in p[5]],
                      loss=sum(p[6] for p in parts) / n)


def _write_metrics_line(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_metrics(path: Path, epoch: int) -> None:
    """Drop records after ``epoch`` (written before an interruption, not in the checkpoint)."""
    if not path.is_file():
        return
    from tanet.utils import atomic_path

    keep = [ln for ln in path.read_text().splitlines()
            if ln.strip() and json.loads(ln).get("epoch", 0) <= epoch]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(ln + "\n" for ln in keep))


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM stopped :func:`train` after saving a resumable checkpoint."""

    def __init__(self, signum: int | None, out: Path, epoch: int, micro: int, step: int) -> None:
        import signal

        self.signum = signum or signal.SIGINT
        name = signal.Signals(self.signum).name
        where = f"epoch {epoch}" + (f" + {micro} batches" if micro else "")
        super().__init__(f"{name}: stopped at {where} (step {step}); checkpoint saved in "
                         f"{out}; continue with --resume")
        self.exit_code = 128 + int(self.signum)


class NonFiniteLossError(FloatingPointError):
    """A NaN/Inf loss or gradient with ``train.on_nonfinite=stop``; names the step and videos."""


class _StopRequest:
    """While active, the first SIGINT/SIGTERM only sets ``requested`` (the loop saves and
    stops at the next step boundary); the previous handler is back for a second signal."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._saved: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: Any) -> None:
        import signal

        self.signum = signum
        for s, h in self._saved.items():
            signal.signal(s, h)
        os.write(2, f"\n{signal.Signals(signum).name}: saving a checkpoint at the next step, "
                    f"then stopping (signal again to stop at once)\n".encode())

    def __enter__(self) -> "_StopRequest":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._saved[s] = signal.getsignal(s)
                signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        import signal

        for s, h in self._saved.items():
            signal.signal(s, h)


def _any_rank(info: DistInfo, flag: bool) -> bool:
    return _all_sum(info, [float(flag)])[0] > 0 if info.distributed else flag


def _flush_paths(info: DistInfo, out: Path, epoch: int, lists: dict[str, list[str]]) -> None:
    """Append ``epoch<TAB>path`` lines of every rank to ``<out>/<name>`` for each
    ``name: paths`` of ``lists`` (collective: one gather for all of them); empties the lists."""
    gathered: list = [lists]
    if info.distributed:
        gathered = [None] * info.world_size
        dist.all_gather_object(gathered, lists)
    for name in lists:
        paths = [p for g in gathered for p in g[name]]
        if paths and info.main:
            out.mkdir(parents=True, exist_ok=True)
            with open(out / name, "a") as f:
                f.writelines(f"epoch {epoch + 1}\t{p}\n" for p in paths)
    for paths in lists.values():
        paths.clear()


def _nonfinite(info: DistInfo, out: Path, cfg: Config, epoch: int, step: int, value: float,
               paths: list[str]) -> None:
    """Report a non-finite loss/gradient: raise (``on_nonfinite=stop``) or warn (``skip``)."""
    what = f"loss {value}" if paths else "gradient norm (loss finite on this rank)"
    where = f"epoch {epoch + 1}, step {step + 1}"
    videos = ", ".join(paths) if paths else "(the batch of another process)"
    if cfg.train.on_nonfinite == "stop":
        last = (f"the last checkpoint is {out / 'last.safetensors'} (continue with --resume)"
                if (out / "last.state.pt").is_file() else "no checkpoint was saved yet")
        raise NonFiniteLossError(
            f"non-finite {what} at {where}; the batch's videos: {videos}. Nothing of this step "
            f"was applied; {last}. Lower train.lr, set train.clip_grad, or set "
            f"train.on_nonfinite=skip to skip such batches.")
    if paths or info.main:
        print(f"warning: skipped a batch with non-finite {what} at {where}: {videos} "
              f"(listed in {out / 'nonfinite.txt'})", file=sys.stderr, flush=True)


def train(cfg: Config, *, resume: bool = False, quiet: bool = False,
          info: DistInfo | None = None) -> dict[str, Any]:
    """Train per ``cfg``; returns the final summary (best and last validation metrics).

    Files under ``cfg.output``: ``config.yaml``, ``metrics.jsonl`` (one record per epoch),
    ``last.safetensors`` + ``last.state.pt``, ``best.safetensors`` (by validation top-1),
    ``skipped.txt`` (videos that failed to decode), ``nonfinite.txt`` (videos of batches with a
    NaN/Inf loss, ``train.on_nonfinite=skip``) and ``tb/`` (TensorBoard, optional).

    ``last`` is saved after every epoch and every ``train.checkpoint_every`` steps; the first
    SIGINT/SIGTERM saves it at the next step and raises :class:`TrainingInterrupted`. Resuming
    from any of these, even after a SIGKILL, gives the weights of the uninterrupted run.
    """
    from tqdm import tqdm

    info = info or init_distributed()
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    out = Path(cfg.output)
    if cfg.train.sync_bn and info.distributed and info.device.type != "cuda":
        raise ValueError("train.sync_bn: SyncBatchNorm needs CUDA (torch has no CPU kernel); "
                         "set train.sync_bn=false or train.freeze_bn=true on CPU")
    torch.manual_seed(t.seed)
    np.random.seed(t.seed % 2**32)
    random.seed(t.seed)

    # --- data and model
    from tanet.models import model_defaults

    d = model_defaults(cfg.model.name)
    size = cfg.model.input_size or d["input_size"][-1]
    short = cfg.data.short_side or int(round(size * d["resize"] / d["input_size"][-1]))
    train_split = build_split(cfg, "train", train=True, size=size, short_side=short,
                              mean=d["mean"], std=d["std"])
    class_names = train_split.class_names
    val_split = (build_split(cfg, "val", train=False, size=size, short_side=short, mean=d["mean"],
                             std=d["std"], class_names=class_names) if cfg.data.val else None)
    model = build_model(cfg, class_names).to(info.device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if t.sync_bn and info.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)

    n_train = len(train_split.dataset)  # type: ignore[arg-type]
    if n_train == 0:
        raise ValueError(f"{train_split.source}: no training videos")
    sampler = TrainSampler(n_train, world_size=info.world_size, rank=info.rank, seed=t.seed)
    loader = _loader(train_split, sampler, batch_size=t.batch_size, workers=t.workers, seed=t.seed)
    val_loader = None
    if val_split is not None:
        n_val = len(val_split.dataset)  # type: ignore[arg-type]
        val_loader = _loader(val_split, ShardSampler(n_val, world_size=info.world_size,
                                                     rank=info.rank),
                             batch_size=t.batch_size, workers=t.workers, seed=t.seed)
    micro_per_epoch = len(loader)
    if t.max_steps_per_epoch:
        micro_per_epoch = min(micro_per_epoch, t.max_steps_per_epoch * t.accumulate)
    steps_per_epoch = math.ceil(micro_per_epoch / t.accumulate)
    global_batch = t.batch_size * info.world_size * t.accumulate
    lr = t.lr * global_batch / t.lr_batch if t.lr_batch else t.lr
    optimizer = build_optimizer(model, cfg, lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps_per_epoch, cfg))
    scaler = torch.amp.GradScaler(info.device.type, enabled=t.amp == "fp16")

    # --- resume
    start_epoch, start_micro, step, best = 0, 0, 0, -1.0
    carried: dict[str, float] = {}  # running sums of an epoch interrupted mid-way
    metrics_path = out / "metrics.jsonl"
    if resume:
        weights, state = load_train_state(out)
        model.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        start_epoch, step, best = int(state["epoch"]), int(state["step"]), float(state["best"])
        start_micro = int(state.get("micro", 0))
        carried = dict(state.get("running", {}))
        saved_world = int(state.get("world_size", 1))
        saved_batch = (saved_world, int(state.get("batch_size", t.batch_size)),
                       int(state.get("accumulate", t.accumulate)))
        if start_micro and saved_batch != (info.world_size, t.batch_size, t.accumulate):
            raise ValueError(f"{out}: saved in the middle of an epoch with {saved_batch[0]} "
                             f"process(es) x train.batch_size={saved_batch[1]} x "
                             f"train.accumulate={saved_batch[2]}; resume with the same (now "
                             f"{info.world_size} x {t.batch_size} x {t.accumulate}), or from an "
                             f"epoch-end checkpoint")
        set_rng_state(state["rng"][info.rank] if info.rank < len(state["rng"])
                      else state["rng"][0])
        where = f"epoch {start_epoch}" + (f" + {start_micro} batches" if start_micro else "")
        _log(info, f"resumed {out} at {where} (step {step}, best top-1 {best:.4f})", quiet)
        if start_epoch >= t.epochs:
            _warn(info, f"{out}: already trained {start_epoch} epochs (train.epochs={t.epochs})")
    elif info.main and (out / "last.state.pt").exists():
        _warn(info, f"{out} holds a previous run; starting over (use --resume to continue)")

    ddp_model = model
    if info.distributed:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if info.device.type == "cuda" else None)

    writer = None
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(".*.tmp"):  # temp files of writes cut short by a kill
            stale.unlink(missing_ok=True)
        dump_config(cfg, out / "config.yaml")
        if resume:
            _truncate_metrics(metrics_path, start_epoch)
        elif metrics_path.exists():
            metrics_path.unlink()
        if t.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tb"))
    _log(info, f"train: {n_train} videos, {len(class_names)} classes; {cfg.model.name} "
               f"T={cfg.model.num_segments} {size}px; {info.world_size} process(es) x batch "
               f"{t.batch_size} x accumulate {t.accumulate} = {global_batch}; lr {lr:g}", quiet)

    def checkpoint(epoch_done: int, micro: int, running: dict[str, float],
                   improved: bool = False) -> None:
        """Save ``last`` (and ``best``) at a position: ``epoch_done`` whole epochs plus
        ``micro`` micro-batches of the next one. Collective: every rank calls it."""
        rngs: list = [rng_state()]
        if info.distributed:
            rngs = [None] * info.world_size
            dist.all_gather_object(rngs, rng_state())
        if info.main:
            state = {"epoch": epoch_done, "micro": micro, "step": step, "best": best,
                     "running": running, "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "rng": rngs,
                     "world_size": info.world_size, "batch_size": t.batch_size,
                     "accumulate": t.accumulate}
            if scaler.is_enabled():
                state["scaler"] = scaler.state_dict()
            if improved:
                save_checkpoint(out, "best", model, cfg)
            save_checkpoint(out, "last", model, cfg, state=state)
        if info.distributed:
            dist.barrier()

    summary: dict[str, Any] = {"best_top1": best if best >= 0 else None}
    with _StopRequest() as stop:
        for epoch in range(start_epoch, t.epochs):
            first_micro = start_micro if epoch == start_epoch else 0
            sampler.set_epoch(epoch, start=first_micro * t.batch_size)
            ddp_model.train()
            _set_bn_mode(model, cfg)
            run = {"loss": 0.0, "correct": 0.0, "seen": 0.0, "skipped": 0.0, "nonfinite": 0.0,
                   "time": 0.0}
            if first_micro:
                run.update(carried)
            skipped_paths: list[str] = []
            bad_paths: list[str] = []  # videos of batches whose loss was not finite
            lists = {"skipped.txt": skipped_paths, "nonfinite.txt": bad_paths}
            window_bad: list[str] = []  # ... in the current accumulation window
            window_nonfinite = 0.0
            t0 = time.perf_counter() - run["time"]
            bar = tqdm(total=steps_per_epoch, initial=first_micro // t.accumulate,
                       desc=f"epoch {epoch + 1}/{t.epochs}", disable=quiet or not info.main,
                       dynamic_ncols=True, leave=False)
            it = iter(loader)
            for micro in range(first_micro, micro_per_epoch):
                batch = next(it)
                run["skipped"] += int(batch.get("num_skipped", 0))
                skipped_paths += list(batch.get("skipped_paths", []))
                video = batch.get("video")
                n_local = 0 if video is None else int(video.shape[0])
                last_micro = (micro + 1) % t.accumulate == 0 or micro + 1 == micro_per_epoch
                # every rank must take part in each gradient all-reduce: skip a step everywhere
                # if any rank's batch came back empty (all its videos failed to decode)
                empty = float(n_local == 0)
                if info.distributed:
                    empty = _all_sum(info, [empty])[0]
                if not empty:
                    video = video.to(info.device, non_blocking=True)  # (B, T, C, H, W)
                    label = batch["label"].to(info.device)
                    sync = contextlib.nullcontext()
                    if info.distributed and not last_micro:
                        sync = ddp_model.no_sync()
                    with sync:
                        with _autocast(cfg, info.device):
                            logits = ddp_model(video)  # (B, K)
                            loss = F.cross_entropy(logits.float(), label,
                                                   label_smoothing=t.label_smoothing)
                        scaler.scale(loss / t.accumulate).backward()
                    loss_value = loss.item()
                    if math.isfinite(loss_value):
                        run["loss"] += loss_value * n_local
                        run["correct"] += (logits.argmax(1) == label).sum().item()
                        run["seen"] += n_local
                    else:
                        window_nonfinite = loss_value
                        window_bad += [str(p) for p in batch["path"]]
                if not last_micro:
                    continue
                grad_norm = None
                if not empty and t.clip_grad:
                    scaler.unscale_(optimizer)
                    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip_grad)
                # a non-finite loss on any rank (or gradient, without fp16 loss scaling, which
                # handles its own overflows) and a stop request (SIGINT/SIGTERM on any rank):
                # agreed by all ranks at the step boundary
                bad = float(bool(window_bad) and not empty)
                if grad_norm is not None and t.amp != "fp16":
                    bad = max(bad, float(not math.isfinite(grad_norm.item())))
                agreed = [bad, float(stop.requested)]
                if info.distributed:
                    agreed = _all_sum(info, agreed)
                stopping = agreed[1] > 0
                if empty:  # the window's gradients were not all-reduced: drop them everywhere
                    optimizer.zero_grad(set_to_none=True)
                elif agreed[0] > 0:
                    _nonfinite(info, out, cfg, epoch, step, window_nonfinite, window_bad)
                    run["nonfinite"] += 1
                    bad_paths += window_bad
                    optimizer.zero_grad(set_to_none=True)
                    if scaler.is_enabled():  # fp16: count it as an overflow
                        if grad_norm is None:
                            scaler.unscale_(optimizer)
                        scaler.update()
                else:
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                step += 1
                window_bad, window_nonfinite = [], 0.0
                bar.update(1)
                elapsed = time.perf_counter() - t0
                bar.set_postfix(loss=f"{run['loss'] / max(run['seen'], 1):.3f}",
                                acc=f"{run['correct'] / max(run['seen'], 1):.3f}",
                                lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                                clips_s=f"{run['seen'] * info.world_size / max(elapsed, 1e-9):.1f}")
                mid_epoch = micro + 1 < micro_per_epoch
                if mid_epoch and (stopping or (t.checkpoint_every
                                               and step % t.checkpoint_every == 0)):
                    run["time"] = time.perf_counter() - t0
                    _flush_paths(info, out, epoch, lists)
                    checkpoint(epoch, micro + 1, dict(run))
                    if stopping:
                        bar.close()
                        raise TrainingInterrupted(stop.signum, out, epoch, micro + 1, step)
            bar.close()
            epoch_time = time.perf_counter() - t0
            tot = _all_sum(info, [run["loss"], run["correct"], run["seen"], run["skipped"],
                                  run["nonfinite"]])
            record: dict[str, Any] = {
                "epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[0]["lr"],
                "train_loss": tot[0] / max(tot[2], 1), "train_top1": tot[1] / max(tot[2], 1),
                "clips_per_s": tot[2] / max(epoch_time, 1e-9), "epoch_time": epoch_time,
                "skipped": int(tot[3])}
            if int(tot[4]):
                record["nonfinite_batches"] = int(tot[4])
            _flush_paths(info, out, epoch, lists)
            if int(tot[3]):
                _warn(info, f"epoch {epoch + 1}: skipped {int(tot[3])} video(s) that failed to "
                            f"decode (listed in {out / 'skipped.txt'})")
            is_last = epoch + 1 == t.epochs
            improved = False
            if val_loader is not None and ((epoch + 1) % t.eval_every == 0 or is_last):
                # the bare model: DDP's buffer broadcast would hang on uneven evaluation shards
                res = evaluate(model, val_loader, info, cfg=cfg, desc="val", quiet=quiet)
                m = res.metrics(len(class_names))
                record.update({f"val_{k}": v for k, v in m.items()})
                improved = m["top1"] > best
                best = max(best, m["top1"])
                summary.update({f"val_{k}": v for k, v in m.items()})
            record["best_top1"] = best if best >= 0 else None
            summary["best_top1"] = record["best_top1"]
            summary["epoch"] = epoch + 1
            msg = (f"epoch {epoch + 1}/{t.epochs}: loss {record['train_loss']:.4f} acc "
                   f"{record['train_top1']:.4f} lr {record['lr']:.2e} "
                   f"{record['clips_per_s']:.1f} clips/s")
            if "val_top1" in record:
                msg += (f" | val top-1 {record['val_top1']:.4f} top-5 {record['val_top5']:.4f} "
                        f"mean-class {record['val_mean_class_acc']:.4f}")
            _log(info, msg, quiet)
            if info.main:
                _write_metrics_line(metrics_path, record)
                if writer is not None:
                    for k, v in record.items():
                        if isinstance(v, (int, float)) and k not in ("epoch", "step"):
                            writer.add_scalar(k, v, epoch + 1)
                    writer.flush()
            checkpoint(epoch + 1, 0, {}, improved)
            if not is_last and _any_rank(info, stop.requested):
                raise TrainingInterrupted(stop.signum, out, epoch + 1, 0, step)
    if writer is not None:
        writer.close()
    summary["output"] = str(out)
    summary["is_main"] = info.main
    return summary


# ---------------------------------------------------------------------------------------------
# test


def parse_views(text: str) -> tuple[int, int]:
    """``"10x3"`` -> (clips 10, crops 3)."""
    try:
        clips, crops = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--views {text!r}: expected CLIPSxCROPS, e.g. 10x3 or 2x3") from None
    if clips < 1 or crops not in (1, 3, 10):
        raise ValueError(f"--views {text!r}: clips must be >= 1 and crops 1, 3 or 10")
    return clips, crops


def test(checkpoint: str | os.PathLike, cfg: Config | None = None, *,
         overrides: Sequence[str] = (), views: str | None = None, out: str | os.PathLike | None = None,
         quiet: bool = False, info: DistInfo | None = None) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on ``data.val`` with clips x crops views per video.

    ``cfg`` defaults to the config stored in the checkpoint (``--set`` overrides apply on
    top). Writes ``results.json``, ``predictions.csv`` and ``confusion.png`` to ``out``
    (default: ``<checkpoint dir>/test``) and returns the results.
    """
    from tanet.config import apply_overrides
    from tanet.models.weights import load_model, read_metadata

    info = info or init_distributed()
    checkpoint = Path(checkpoint)
    meta = read_metadata(checkpoint)
    if cfg is None:
        if meta["config"] is None:
            raise ValueError(f"{checkpoint}: no config stored in the checkpoint; pass --config")
        cfg = config_from_dict(meta["config"], source=f"{checkpoint} (stored config)")
        apply_overrides(cfg, list(overrides))
        cfg.validate(str(checkpoint))
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    clips, crops = parse_views(views) if views else (cfg.data.test_clips, cfg.data.test_crops)
    model = load_model(checkpoint).to(info.device)
    card = model.card
    if not card.class_names:
        raise ValueError(f"{checkpoint}: the model card has no class names")
    size, short = _input_geometry(cfg, card)
    size = card.input_size[-1]  # the network was trained at this size
    split = build_split(cfg, "val", train=False, size=size, short_side=short, mean=card.mean,
                        std=card.std, class_names=list(card.class_names), clips=clips,
                        crops=crops)
    n = len(split.dataset)  # type: ignore[arg-type]
    loader = _loader(split, ShardSampler(n, world_size=info.world_size, rank=info.rank),
                     batch_size=cfg.test.batch_size, workers=cfg.test.workers,
                     seed=cfg.train.seed)
    _log(info, f"test: {checkpoint} on {split.source}: {n} videos x {clips} clips x {crops} "
               f"crops", quiet)
    t0 = time.perf_counter()
    res = evaluate(model, loader, info, cfg=cfg, desc="test", quiet=quiet)
    k = card.num_classes
    m = res.metrics(k)
    results = {"top1": m["top1"], "top5": m["top5"], "mean_class_acc": m["mean_class_acc"],
               "num_videos": m["num_videos"], "num_skipped": m["num_skipped"],
               "views": f"{clips}x{crops}", "checkpoint": str(checkpoint), "data": split.source,
               "seconds": time.perf_counter() - t0}
    if info.main:
        from tanet.utils import atomic_path

        out_dir = Path(out) if out is not None else checkpoint.parent / "test"
        out_dir.mkdir(parents=True, exist_ok=True)
        names = list(card.class_names)
        with atomic_path(out_dir / "predictions.csv") as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["index", "path", "label", "label_name", "pred", "pred_name", "score",
                        "top5"])
            top = res.scores.topk(min(5, k), dim=1)
            for row in range(res.labels.numel()):
                lab, pred = int(res.labels[row]), int(top.indices[row, 0])
                w.writerow([int(res.indices[row]), res.paths[row], lab, names[lab], pred,
                            names[pred], f"{float(top.values[row, 0]):.5f}",
                            " ".join(str(int(x)) for x in top.indices[row])])
        cm = confusion_matrix(res.scores.argmax(1), res.labels, k)
        plot_confusion_matrix(cm, out_dir / "confusion.png", class_names=names,
                              title=f"{card.name}: top-1 {100 * m['top1']:.1f} %")
        if res.skipped_paths:
            with atomic_path(out_dir / "skipped.txt") as tmp:
                tmp.write_text("".join(p + "\n" for p in res.skipped_paths))
        with atomic_path(out_dir / "results.json") as tmp:
            tmp.write_text(json.dumps(results, indent=2) + "\n")
        results["out"] = str(out_dir)
    results["eval"] = res  # scores per video for callers (not written to results.json)
    return results
