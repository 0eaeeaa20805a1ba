"""Dataset and loader: annotations + sampling + decoding + transforms.

``VideoDataset[i]`` returns ``{"video", "label", "index", "path", "warnings"}`` with ``video``
float (T, C, H, W), or (V, T, C, H, W) when clips x crops > 1 (frames chosen and assembled by
:mod:`tanet.data.views`) and ``warnings`` the reader's (``truncated: 16 of 795 frames``); a video
that fails to decode (or takes longer than ``decode_timeout``) gives a :class:`SkippedVideo`
under ``on_error="skip"``, and so does a video with warnings under ``on_warning="skip"``.
:func:`collate` drops those and reports them in the batch (``skipped``, ``warnings``), so the
main process sees every skip and warning even when worker processes did the decoding.

Randomness (sampling offsets, augmentation) is drawn from numpy's and torch's global RNGs, which
DataLoader seeds per worker and an engine may seed per item for exact reproducibility.
"""
from __future__ import annotations

import os
import queue
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from tanet.data.annotations import Record
from tanet.data.decode import MemoryVideo, VideoDecodeError, open_video
from tanet.data.views import read_clips, to_views
from tanet.geometry import SAMPLINGS

__all__ = ["VideoDataset", "SkippedVideo", "DecodeTimeout", "LoaderWorkerError", "collate",
           "multi_hot",
           "build_loader", "VideoLoader", "call_with_timeout"]


class DecodeTimeout(VideoDecodeError):
    """Decoding took longer than the dataset's ``decode_timeout``."""


class LoaderWorkerError(RuntimeError):
    """A data-loader worker process died (or, with a loader ``timeout``, stopped answering)."""


@dataclass(frozen=True)
class SkippedVideo:
    """Placeholder item for a video that failed under ``on_error="skip"``."""

    index: int
    path: str
    error: str


class _DeadlineThread:
    """Runs calls on a daemon helper thread and waits at most ``timeout`` seconds.

    PyAV releases the GIL while demuxing and decoding, so the caller's wait is a real deadline.
    A call that overruns is abandoned: its thread stays blocked (a daemon, it never delays the
    process's exit) and the next call gets a fresh thread. One per process (forks included).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._q: queue.SimpleQueue | None = None
        self._pid = -1

    @staticmethod
    def _serve(q: queue.SimpleQueue) -> None:
        while True:
            job = q.get()
            if job is None:
                return
            fn, box, done = job
            try:
                box["out"] = fn()
            except BaseException as e:  # handed back to the caller
                box["err"] = e
            done.set()

    def run(self, fn: Callable[[], Any], timeout: float) -> Any:
        with self._lock:
            if self._q is None or self._pid != os.getpid():
                self._q, self._pid = queue.SimpleQueue(), os.getpid()
                threading.Thread(target=self._serve, args=(self._q,), daemon=True,
                                 name="tanet-decode").start()
            q = self._q
        box: dict[str, Any] = {}
        done = threading.Event()
        q.put((fn, box, done))
        if not done.wait(timeout):
            with self._lock:
                if self._q is q:
                    self._q = None
            q.put(None)  # the stuck thread exits if its call ever returns
            raise TimeoutError
        if "err" in box:
            raise box["err"]
        return box["out"]


_RUNNER = _DeadlineThread()


def call_with_timeout(fn: Callable[[], Any], timeout: float | None) -> Any:
    """``fn()``, or ``TimeoutError`` after ``timeout`` seconds (None or <= 0: no limit)."""
    if timeout is None or timeout <= 0:
        return fn()
    return _RUNNER.run(fn, timeout)


class VideoDataset(torch.utils.data.Dataset):
    """Videos (files or frame folders) as sampled, augmented clips.

    Args:
        records: from :func:`tanet.data.annotations.read_annotations`.
        root: prefix for relative record paths.
        num_segments: frames per clip T.
        sampling: ``"segment"`` (TSN) or ``"dense"`` (fixed ``dense_stride``, default 64 // T).
        train: random offsets (train) or deterministic centres / evenly spaced clips (test).
        transform: ``(clip uint8 (T, C, H, W), label) -> (float tensor, label)``, e.g. from
            :func:`~tanet.data.transforms.build_train_transform`.
        clips: clips per video at test time (``uniform-N`` / ``dense-N``).
        on_error: ``"skip"`` (return :class:`SkippedVideo`) or ``"raise"``.
        on_warning: ``"keep"`` (use a truncated or damaged video, reporting its warnings) or
            ``"skip"`` (a :class:`SkippedVideo` naming the warnings).
        decode_timeout: seconds allowed to open + decode one video (None: no limit).
        frame_template: file names inside frame folders (numbered from 1).
        short_side: optional resize of the short side while decoding (saves work downstream).
        num_classes: K, for multi-label records (``labels``: a tuple of classes each, from
            :mod:`tanet.data.multilabel`): their label is a multi-hot float (K,) vector.
    """

    def __init__(self, records: Sequence[Record], *, root: str | os.PathLike | None = None,
                 num_segments: int, sampling: str = "segment", train: bool,
                 transform: Callable | None = None, clips: int = 1,
                 dense_stride: int | None = None, on_error: str = "skip",
                 decode_timeout: float | None = 30.0, frame_template: str = "img_{:05d}.jpg",
                 short_side: int | None = None, on_warning: str = "keep",
                 num_classes: int | None = None):
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}; got {sampling!r}")
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        if on_warning not in ("keep", "skip"):
            raise ValueError(f"on_warning must be 'keep' or 'skip', got {on_warning!r}")
        if num_segments < 1 or clips < 1:
            raise ValueError("num_segments and clips must be >= 1")
        self.records = list(records)
        self.root = None if root is None else str(root)
        self.num_segments, self.sampling, self.train = num_segments, sampling, train
        self.transform, self.clips, self.dense_stride = transform, clips, dense_stride
        self.on_error, self.decode_timeout = on_error, decode_timeout
        self.on_warning = on_warning
        self.frame_template, self.short_side = frame_template, short_side
        self.multilabel = any(getattr(r, "labels", None) is not None for r in self.records)
        if self.multilabel and not num_classes:
            raise ValueError("multi-label records need num_classes (K of the multi-hot labels)")
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.records)

    def path_of(self, i: int) -> str:
        p = self.records[i].path
        return os.path.join(self.root, p) if self.root and not os.path.isabs(p) else p

    def _decode(self, source, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
        with open_video(source, short_side=self.short_side, template=self.frame_template) as r:
            frames, _ = read_clips(r, self.num_segments, sampling=self.sampling,
                                   dense_stride=self.dense_stride, clips=self.clips,
                                   train=self.train, rng=rng)
            return frames, list(r.warnings)  # (clips, T, H, W, 3), the reader's warnings

    def __getitem__(self, i: int) -> dict[str, Any] | SkippedVideo:
        rec = self.records[i]
        return self.make_item(i, self.path_of(i), rec.labels if self.multilabel else rec.label)

    def make_item(self, i: int, source: str | MemoryVideo,
                  label: int | tuple[int, ...]) -> dict[str, Any] | SkippedVideo:
        """Item ``i`` from ``source`` (a path, a URL or a shard's :class:`MemoryVideo`): the
        one way an item is made, for files and shards (:mod:`.streaming`) alike. ``label``: a
        class, or a multi-label video's tuple of classes (a multi-hot (K,) label)."""
        path = str(source)
        rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))  # from the seeded global
        try:
            try:
                frames, warnings = call_with_timeout(lambda: self._decode(source, rng),
                                                     self.decode_timeout)
            except TimeoutError:
                raise DecodeTimeout(path, f"decoding took longer than {self.decode_timeout:g} s "
                                          f"(data.decode_timeout)") from None
        except VideoDecodeError as e:
            if self.on_error == "raise":
                raise
            return SkippedVideo(i, path, str(e))
        if warnings and self.on_warning == "skip":
            return SkippedVideo(i, path, f"{path}: {'; '.join(warnings)} (data.on_warning=skip)")
        video, label = to_views(frames, self.transform, label)  # (V, T, C, H, W)
        if video.shape[0] == 1:
            video = video[0]  # (T, C, H, W)
        if isinstance(label, tuple):  # a multi-label video's classes
            label = multi_hot(label, self.num_classes)  # (K,)
        else:
            label = int(label)
        return {"video": video, "label": label, "index": i, "path": path, "warnings": warnings}

    def __repr__(self) -> str:
        return (f"VideoDataset({len(self)} videos, T={self.num_segments}, {self.sampling}, "
                f"{'train' if self.train else 'test'}, clips={self.clips}, "
                f"on_error={self.on_error})")


def multi_hot(classes: Sequence[int], num_classes: int) -> torch.Tensor:
    """A multi-label video's classes as a float (K,) vector of 0s and 1s."""
    out = torch.zeros(num_classes)  # (K,)
    out[list(classes)] = 1.0
    return out


def collate(batch: Sequence[dict | SkippedVideo | None]) -> dict[str, Any]:
    """Stack good items; drop skipped ones and report them.

    Returns ``video`` (B, T, C, H, W) or (B, V, T, C, H, W) (None when every item was skipped),
    ``label`` (B,) long (multi-label: (B, K) float multi-hot), ``index`` (B,) long, ``path`` list, ``skipped``: the
    :class:`SkippedVideo` records of the items that failed (the one place skips are reported;
    it reaches the main process from loader workers too) and ``warnings``: (path, message) for
    every warning of the items used.
    """
    good = [b for b in batch if isinstance(b, dict)]
    return {
        "video": torch.stack([b["video"] for b in good]) if good else None,
        "label": (torch.stack([b["label"] for b in good])  # (B, K) multi-hot
                  if good and isinstance(good[0]["label"], torch.Tensor)
                  else torch.tensor([b["label"] for b in good], dtype=torch.long)),
        "index": torch.tensor([b["index"] for b in good], dtype=torch.long),
        "path": [b["path"] for b in good],
        "skipped": [b for b in batch if isinstance(b, SkippedVideo)],
        "warnings": [(b["path"], w) for b in good for w in b.get("warnings", ())],
    }


class VideoLoader(torch.utils.data.DataLoader):
    """DataLoader whose worker deaths are a :class:`LoaderWorkerError` naming the worker."""

    def __iter__(self) -> Iterator[Any]:
        # torch's iterator enters record_function, whose first use imports a module; torch's
        # SIGCHLD handler raises a worker's death as an exception, and one raised inside that
        # import is logged and swallowed. Do the import now, before any worker can die.
        with torch.autograd.profiler.record_function("tanet.VideoLoader"):
            pass
        it = None
        while True:
            try:
                if it is None:
                    it = super().__iter__()  # persistent workers: may wait on a dead one
                batch = next(it)
            except StopIteration:
                return
            except (RuntimeError, OSError, EOFError) as e:  # OSError: a dead worker's socket
                live = it if it is not None else getattr(self, "_iterator", None)  # no len()
                workers = getattr(live, "_workers", ())
                err = _worker_error(e, workers)
                if err is e:
                    raise
                raise err from e
            yield batch


def _worker_error(e: BaseException, workers: Sequence[Any]) -> BaseException:
    """torch's worker-death and timeout errors (or the broken pipe a dying worker leaves) as a
    :class:`LoaderWorkerError` with how each worker ended, the likely cause and what to do."""
    msg = str(e)
    dead: list[str] = []
    deadline = time.monotonic() + (2.0 if workers else 0.0)
    while True:  # a worker killed a moment ago may not have been reaped yet
        for w in workers:
            code = getattr(w, "exitcode", None)
            if code:  # None: running, 0: finished normally
                how = (f"killed by {signal.Signals(-code).name}" if code < 0 and
                       -code in signal.valid_signals() else f"exit code {code}")
                dead.append(f"pid {w.pid}: {how}")
        if dead or time.monotonic() >= deadline or isinstance(e, RuntimeError):
            break
        time.sleep(0.05)
    if dead or ("DataLoader worker" in msg and ("killed by signal" in msg
                                                 or "exited unexpectedly" in msg)):
        return LoaderWorkerError(
            f"{msg.strip() or type(e).__name__}{' (' + '; '.join(dead) + ')' if dead else ''}. "
            f"A data-loader worker process died: most often the out-of-memory killer (see "
            f"`dmesg`; lower train.batch_size or train.workers), else a crash in the decoder "
            f"(rerun with train.workers=0 to see which video).")
    if "DataLoader timed out" in msg:
        return LoaderWorkerError(
            f"{msg.strip()}: no batch came from the data-loader workers in that time (a worker "
            f"is stuck or stopped; decoding alone is bounded by data.decode_timeout).")
    return e


def _ignore_sigint(worker_id: int) -> None:
    """Ctrl-C reaches the whole process group: a worker leaves the stop to the main process
    (which saves a checkpoint and shuts the workers down) instead of dying mid-batch."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_loader(dataset: torch.utils.data.Dataset, *, batch_size: int, workers: int = 0,
                 shuffle: bool = False, sampler: torch.utils.data.Sampler | None = None,
                 drop_last: bool = False, pin_memory: bool | None = None,
                 persistent_workers: bool | None = None, seed: int | None = None,
                 prefetch_factor: int | None = None, timeout: float = 0) -> VideoLoader:
    """A :class:`VideoLoader` with :func:`collate`.

    ``pin_memory`` None: on when CUDA is available; ``persistent_workers`` None: on when
    ``workers > 0``; ``seed``: fixes the shuffle order and the workers' RNGs. A worker that
    dies (SIGKILL, out-of-memory killer, segfault) is a :class:`LoaderWorkerError` within
    seconds; ``timeout`` (seconds, 0: none) also bounds the wait for one batch from the workers,
    for workers that hang outside decoding (which ``decode_timeout`` already bounds).
    """
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    if persistent_workers is None:
        persistent_workers = workers > 0
    extra: dict[str, Any] = {}
    if workers > 0:
        extra["worker_init_fn"] = _ignore_sigint
        extra["prefetch_factor"] = prefetch_factor or 2
        extra["persistent_workers"] = persistent_workers
        extra["timeout"] = timeout
    return VideoLoader(dataset, batch_size=batch_size, shuffle=shuffle if sampler is None else False,
                       sampler=sampler, num_workers=workers, collate_fn=collate,
                       pin_memory=pin_memory, drop_last=drop_last, generator=generator, **extra)
