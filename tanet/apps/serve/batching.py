"""Dynamic batching: a worker pool that decodes uploads and one model thread that runs the views
of concurrent requests as one batch.

Each request is a job on a :class:`WorkerPool` thread that runs the ordinary
``Predictor.predict`` (decode, views, scores, top-k), so an answer equals ``tanet predict``'s by
construction. The predictor's ``backend`` is a :class:`BatchedBackend` (given with
``Predictor.with_backend``): calling it hands the views to the :class:`Batcher` and waits. The
batcher's thread, the only one that runs the model, takes the waiting views in arrival order,
concatenates up to ``max_batch`` views (waiting at most ``max_wait_ms`` for more once one is
there), runs the real backend once and gives every job its rows.

A job holds one of ``decode_slots`` slots while it decodes and gives it back while it waits for
the model, so a few decoders run at a time (not one per request on two cores) and the next
requests are decoded while the model runs the current batch: the model never waits on a decoder.
A cancelled job (deadline passed) stops at its next model call.
"""
from __future__ import annotations

import contextlib
import ctypes
import queue
import statistics
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch

__all__ = ["Batcher", "WorkerPool", "BatchedBackend", "JobCancelled", "Job", "keep_freed_memory",
           "calibrate_batch", "BatchTuner"]


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of handing it back to the OS (one arena,
    no mmap for big blocks, no trimming); returns False where there is no glibc.

    Why batching needs it: PyTorch on the CPU has no caching allocator, and glibc serves every
    block over 32 MB with a fresh mmap that is unmapped on free. One TANet-R50 clip (8 frames at
    224 px) has activations of ~25 MB, which glibc recycles; a batch of 2-4 clips has 50-100 MB
    ones, so every batch page-faults its activations in anew (measured: 0 minor faults per call
    at batch 1, 175k at batch 2, 800k at batch 4; with this, none), which made a batch slower
    per clip than single clips. The cost: the peak stays resident, as with a GPU caching
    allocator. Call it before the model is loaded and before any worker thread starts.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8  # <malloc.h>
    settings = ((m_arena_max, 1), (m_mmap_max, 0), (m_trim_threshold, 2**31 - 1))
    return all(mallopt(key, value) == 1 for key, value in settings)


class JobCancelled(RuntimeError):
    """The request's deadline passed or the server is stopping; its job stops."""


def calibrate_batch(backend: Callable[[torch.Tensor], np.ndarray],
                    example: Callable[[int], torch.Tensor], limit: int, *,
                    gain: float = 0.05) -> tuple[int, dict[int, float]]:
    """The batch size (views) up to which this backend on this machine still gets faster per
    view. Sizes 1, 2, 4, ... are tried in turn, each timed against the best size so far in
    alternation (best of 2 calls each, after a warm-up call, so that load from elsewhere hits
    both alike); it stops at the first size that is not ``gain`` faster per view. Returns
    (batch size, {views: seconds per view}).

    Why: on a GPU bigger batches are cheaper per clip, but on a small CPU they may not be:
    eager PyTorch runs convolution, batch norm and ReLU as separate passes over the
    activations, which for one TANet-R50 clip (8 frames, ~25 MB) can stay in a 32 MB L3 cache
    and for a batch cannot; ONNX Runtime fuses them.
    """
    def seconds(x: torch.Tensor) -> float:
        t0 = time.perf_counter()
        backend(x)
        return time.perf_counter() - t0

    best, inputs = 1, {1: example(1)}  # (n, T, C, H, W)
    backend(inputs[1])  # the first call of a shape sets up kernels
    per_view = {1: min(seconds(inputs[1]) for _ in range(2))}
    n = 2
    while n <= limit:
        inputs[n] = example(n)
        backend(inputs[n])
        pairs = [(seconds(inputs[best]), seconds(inputs[n])) for _ in range(2)]
        per_view[best] = min(per_view[best], min(a for a, _ in pairs) / best)
        per_view[n] = min(b for _, b in pairs) / n
        if per_view[n] >= per_view[best] * (1 - gain):
            break
        best = n
        n *= 2
    return best, per_view


class BatchTuner:
    """Keeps the batch cap right while serving: the start-up calibration times the model on an
    idle process, but what pays depends on the load the machine is under (measured: with other
    jobs at load 6-13 the calibration chose 8 views for eager PyTorch, and serving at 8 gave
    0.89x the requests/s of one at a time; beside 6 busy loops it chose 16 and gained 1.40x).

    Every ``every`` calls of 2+ views it runs one probe batch of half the last call's views, or,
    when batches come full (the cap binds) and the cap is below ``limit``, of twice the cap (in
    turn), and pairs that probe's time per view with the next call's: adjacent calls share the
    load, as in :func:`calibrate_batch`'s alternation. After ``votes`` pairs of one kind it
    moves by their median, with the calibration's rule: a bigger batch is kept only when it is
    at least ``gain`` faster per view (down: the cap becomes the probe's size; up: twice the
    cap). ``cap`` stays within 1..``limit``; ``changes`` records each move.
    """

    def __init__(self, cap: int, limit: int, *, gain: float = 0.05, every: int = 8,
                 votes: int = 3,
                 on_change: Callable[[int, int, float], None] | None = None) -> None:
        if not 1 <= cap <= limit:
            raise ValueError(f"the batch cap must be within 1..{limit}, got {cap}")
        self.cap, self.limit, self.gain, self.every = cap, limit, gain, every
        self.on_change = on_change  # (old cap, new cap, median ratio), on the model thread
        self.changes: list[tuple[int, int, float]] = []  # (from, to, median ratio)
        self._votes: dict[str, deque] = {"down": deque(maxlen=votes), "up": deque(maxlen=votes)}
        self._calls = 0  # calls that could be probed since the last move
        self._probe: tuple[str, int] | None = None  # the next call is this probe
        self._pending: tuple[str, int, int, float] | None = None  # a probe awaiting its pair

    def next_limit(self) -> int:
        """Most views for the batch being collected now."""
        return self._probe[1] if self._probe is not None else self.cap

    def observe(self, views: int, seconds: float) -> None:
        """One model call of ``views`` views took ``seconds``."""
        per_view = seconds / views
        if self._probe is not None:
            kind, size = self._probe
            self._probe = None
            # a probe that found too few views waiting tells nothing
            self._pending = (kind, size, views, per_view) if 2 * views > size else None
            return
        if self._pending is not None:
            kind, size, probe_views, probe_per_view = self._pending
            self._pending = None
            if (views > probe_views) if kind == "down" else (views < probe_views):
                self._vote(kind, size, probe_per_view / per_view)
        binding = 2 * views > self.cap  # the batch came full: the cap limits it
        if views < 2 and not binding:
            return
        self._calls += 1
        if self._calls % self.every == 0:
            if self._calls % (2 * self.every) == 0 and binding and self.cap < self.limit:
                self._probe = ("up", min(self.limit, 2 * self.cap))
            elif views >= 2:
                self._probe = ("down", views // 2)

    def _vote(self, kind: str, size: int, ratio: float) -> None:
        """``ratio``: the probe's time per view over its pair's."""
        votes = self._votes[kind]
        votes.append(ratio)
        if len(votes) < votes.maxlen:
            return
        r = statistics.median(votes)
        # down: keep the bigger batches only if they are `gain` faster; up: grow only then
        down = min(size, max(1, self.cap // 2))  # (a request bigger than the cap runs alone)
        new = down if kind == "down" else min(self.limit, 2 * self.cap)
        if new != self.cap and (r <= 1 / (1 - self.gain) if kind == "down" else r < 1 - self.gain):
            self.changes.append((self.cap, new, round(r, 3)))
            if self.on_change is not None:
                self.on_change(self.cap, new, r)
            self.cap, self._calls = new, 0
            for v in self._votes.values():
                v.clear()


@dataclass
class _Item:
    views: torch.Tensor  # (V, T, C, H, W)
    future: Future = field(default_factory=Future)


class Batcher:
    """The model thread: ``infer(views)`` from any thread, batched with other callers' views.

    Args:
        backend: views (N, T, C, H, W) -> logits (N, K) numpy (a Predictor's backend).
        max_batch: most views per model call (1: no batching); a request with more views than
            this runs alone.
        max_wait_ms: how long a batch that is not full waits for more views.
        on_batch: called after every model call with (views, requests, seconds).
    """

    def __init__(self, backend: Callable[[torch.Tensor], np.ndarray], *, max_batch: int = 16,
                 max_wait_ms: float = 5.0,
                 on_batch: Callable[[int, int, float], None] | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.backend = backend
        self.max_batch = max_batch
        self.max_wait = max(0.0, max_wait_ms) / 1000
        self.on_batch = on_batch
        self.tuner: BatchTuner | None = None  # set before start(): the cap then follows it
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._held: _Item | None = None  # the item that did not fit into the previous batch
        self._closed = False
        self._lock = threading.Lock()  # orders puts before and after the closing sentinel
        self._thread = threading.Thread(target=self._loop, name="tanet-model", daemon=True)

    def start(self) -> "Batcher":
        self._thread.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        """Finish the running batch, fail the waiting ones, stop the thread."""
        with self._lock:
            self._closed = True
            self._queue.put(None)
        self._thread.join(timeout)

    @property
    def queued(self) -> int:
        """Calls waiting for a batch (not counting the running one)."""
        return self._queue.qsize() + (self._held is not None)

    def infer(self, views: torch.Tensor) -> np.ndarray:
        """Logits (V, K) of ``views`` (V, T, C, H, W); blocks until its batch has run."""
        item = _Item(views)
        with self._lock:
            if self._closed:
                raise JobCancelled("the server is shutting down")
            self._queue.put(item)
        return item.future.result()

    def _collect(self) -> list[_Item] | None:
        """The next batch in arrival order, or None when closed."""
        first = self._held if self._held is not None else self._queue.get()
        self._held = None
        if first is None:
            return None
        batch, n = [first], len(first.views)
        limit = self.max_batch if self.tuner is None else self.tuner.next_limit()
        deadline = time.monotonic() + self.max_wait
        while n < limit:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None or n + len(item.views) > limit:
                self._held = item  # the sentinel too: it ends the loop after this batch
                break
            batch.append(item)
            n += len(item.views)
        return batch

    def _loop(self) -> None:
        while (batch := self._collect()) is not None:
            self._run(batch)
        while True:  # closed: nobody will run what is still queued
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item.future.set_exception(JobCancelled("the server is shutting down"))

    def _run(self, batch: list[_Item]) -> None:
        sizes = [len(it.views) for it in batch]
        views = batch[0].views if len(batch) == 1 else torch.cat([it.views for it in batch])
        t0 = time.perf_counter()
        try:
            logits = self.backend(views)  # (sum V, K)
        except BaseException as e:  # every waiter gets the error; the thread lives on
            for it in batch:
                it.future.set_exception(e)
            return
        seconds = time.perf_counter() - t0
        start = 0
        for it, v in zip(batch, sizes):
            it.future.set_result(logits[start:start + v])  # (V, K)
            start += v
        if self.tuner is not None:
            self.tuner.observe(start, seconds)
            self.max_batch = self.tuner.cap
        if self.on_batch is not None:
            self.on_batch(start, len(batch), seconds)


class Job:
    """One request's work on the pool: ``cancel()`` makes it stop at its next model call."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.future: Future | None = None

    def cancel(self) -> None:
        self.cancelled.set()
        if self.future is not None:
            self.future.cancel()  # only succeeds while the job has not started


class WorkerPool:
    """Threads that run jobs; at most ``decode_slots`` of them work outside the model at once.

    ``threads`` bounds the jobs in progress (those waiting for the model included); make it
    ``max_batch + decode_slots`` so that a full batch can wait while the next ones decode.
    """

    def __init__(self, threads: int, decode_slots: int) -> None:
        if threads < 1 or decode_slots < 1:
            raise ValueError(f"need threads >= 1 and decode_slots >= 1, got {threads}, "
                             f"{decode_slots}")
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="tanet-worker")
        self._slots = threading.Semaphore(decode_slots)
        self._local = threading.local()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Job:
        """Run ``fn(*args)`` on a pool thread holding a decode slot; ``job.future`` has the
        result."""
        job = Job()

        def run() -> Any:
            if job.cancelled.is_set():
                raise JobCancelled("cancelled before it started")
            self._local.job = job
            with self._slots:
                try:
                    return fn(*args)
                finally:
                    self._local.job = None

        job.future = self._executor.submit(run)
        return job

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Give the calling job's decode slot back for the duration (it waits for the model);
        raises :class:`JobCancelled` before and after if its job was cancelled."""
        job: Job | None = getattr(self._local, "job", None)
        if job is None:  # not a pool thread: nothing to give back
            yield
            return
        if job.cancelled.is_set():
            raise JobCancelled("deadline passed")
        self._slots.release()
        try:
            yield
        finally:
            self._slots.acquire()
        if job.cancelled.is_set():
            raise JobCancelled("deadline passed")

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class BatchedBackend:
    """A ``Predictor`` backend (:class:`tanet.apps.predict.Backend`): views (V, T, C, H, W) ->
    logits (V, K) through the batcher, with the job's decode slot given back while it waits.
    ``kind``, ``card`` and ``model`` are the batcher's backend's (``model``: None for ONNX); it
    has no ``features``: only the batcher's thread runs the model."""

    def __init__(self, batcher: Batcher, pool: WorkerPool) -> None:
        self.batcher = batcher
        self.pool = pool

    @property
    def kind(self) -> str:
        return getattr(self.batcher.backend, "kind", "custom")

    @property
    def card(self) -> Any:
        return getattr(self.batcher.backend, "card", None)

    @property
    def model(self) -> torch.nn.Module | None:
        return getattr(self.batcher.backend, "model", None)

    def __call__(self, views: torch.Tensor) -> np.ndarray:
        with self.pool.waiting():
            return self.batcher.infer(views)
