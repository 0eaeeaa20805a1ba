"""Many videos through one model as a pipeline: ``tanet predict DIR`` and ``tanet extract``.

:meth:`Predictor.predict_many` decodes and classifies one video after another, so the model
waits for the decoder and the decoder for the model. Here

* ``workers`` processes (a ``ProcessPoolExecutor``; forked where the platform can) decode and
  transform the videos ahead of the model, each exactly as :meth:`Predictor.load_views` does
  (by default on CUDA and on CPUs of more than 4 cores: :func:`default_workers`; on a small CPU
  the model's threads already use every core, and 0 workers is the plain loop);
* the queue between them is bounded: at most ``workers x prefetch`` videos (plus one group)
  are handed out ahead, and the next only when one is taken (back-pressure: a slow model stops
  the decoders, so memory does not grow with the number of videos);
* the main process runs the model on each video's views (the default on a CPU), or, with
  ``max_batch`` views (the default on CUDA: :func:`default_max_batch`), on the views of
  consecutive videos together, in groups that depend only on the list and the options (so a
  rerun gives the same numbers), then gives each video its rows.

Results come back in input order, a video that fails as a :class:`Prediction` with ``error``
(the same message :meth:`Predictor.predict_many` gives) and the decoder's warnings on each.
One video per model call is the plain loop's arithmetic: the same numbers bit for bit on any
machine (tested). Batched, PyTorch's CPU kernels may round a clip's sums differently with the
batch size (seen: 1 ulp on an AMD EPYC without AVX-512, none on an AVX-512 Xeon), and batching
was measured slower on a 2-core CPU (``benchmarks/predict.py``): that is why a CPU runs one video
a call unless ``max_batch`` says otherwise.
"""
from __future__ import annotations

import copy
import multiprocessing
import os
import signal
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from tanet.apps.predict import Prediction, Predictor, _trim_heap, failure_message

__all__ = ["predict_pipelined", "features_pipelined", "default_workers", "default_max_batch",
           "check_options", "CUDA_MAX_BATCH"]

CUDA_MAX_BATCH = 32  # views per model call on CUDA: 32 videos at 1x1, 5 at 2x3, 1 at 10x3


def default_max_batch(device: torch.device | str | None) -> int:
    """Views per model call when ``max_batch`` is not given: :data:`CUDA_MAX_BATCH` on CUDA
    (batching pays there), else 1, one video a call (the plain loop's numbers, bit for bit)."""
    return CUDA_MAX_BATCH if device is not None and torch.device(device).type == "cuda" else 1


def default_workers(device: torch.device | str | None = None) -> int:
    """Decode processes when ``workers`` is not given. On CUDA the model leaves the cores to the
    decoders: a quarter of the cores, 1 to 4. On a CPU the model's threads already use every
    core, so a decoder only takes cores from it: none up to 4 cores (measured at 2 cores,
    TANet-R50: the pipeline ran 0.93-1.07x the loop's videos/s, ``benchmarks/predict.py``), one
    per 8 cores above that, at most 4 (where one clip's threads stop scaling; not measured
    here)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    if device is not None and torch.device(device).type == "cuda":
        return max(1, min(4, cores // 4))
    return 0 if cores <= 4 else max(1, min(4, cores // 8))


@dataclass
class _Item:
    """One decoded video (in a worker), or why it could not be."""

    index: int
    path: str
    views: torch.Tensor | None = None  # (V, T, C, s, s)
    times: np.ndarray | None = None  # (clips, T) seconds
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def size(self) -> int:
        return 0 if self.views is None else self.views.shape[0]


_PIPELINE: Predictor | None = None  # a worker's copy of the predictor, without its model


def _start_worker(pipeline: Predictor) -> None:
    """A decode worker: one torch thread (the model's process keeps the cores), Ctrl-C left to
    the main process, and killed with it (a worker blocked in a read must not outlive it)."""
    global _PIPELINE
    _PIPELINE = pipeline
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the pool's own shutdown ends the workers


def _decode(index: int, path: str, pipeline: Predictor | None = None) -> _Item:
    """Video ``path`` decoded and transformed as :meth:`Predictor.load_views` does."""
    item = _Item(index, path)
    try:
        _, item.views, item.times = (pipeline or _PIPELINE).load_views(path,
                                                                       warnings=item.warnings)
    except Exception as e:  # one bad file must not stop a directory run
        item.error = failure_message(path, e)
    return item


def _without_model(predictor: Predictor) -> Predictor:
    """The predictor's pipeline for the workers: a copy without its model (a spawned worker
    would otherwise receive the weights)."""
    pipeline = copy.copy(predictor)
    pipeline.backend = None  # type: ignore[assignment]
    return pipeline


def _groups(predictor: Predictor, paths: Sequence[str], workers: int, cap: int,
            prefetch: int) -> Iterator[list[_Item]]:
    """The videos in input order, in groups to run through the model together: the next video,
    plus those after it while their views fit in ``cap`` (waiting for them to be decoded, so
    that the groups depend only on the list and the options, never on timing). ``workers``
    processes decode ahead, at most ``workers x prefetch`` videos plus one group."""
    if workers == 0 or len(paths) <= 1:  # the plain loop: decode, run, next
        yield from ([_decode(i, p, predictor)] for i, p in enumerate(paths))
        return
    per_video = predictor.clips * predictor.crops
    ahead = workers * prefetch + max(1, cap // per_video)
    context = multiprocessing.get_context("fork" if "fork" in
                                          multiprocessing.get_all_start_methods() else None)
    pool = ProcessPoolExecutor(min(workers, len(paths)), mp_context=context,
                               initializer=_start_worker, initargs=(_without_model(predictor),))
    window: deque[Future] = deque()
    submitted, finished = 0, False
    try:
        while submitted < len(paths) or window:
            while submitted < len(paths) and len(window) < ahead:  # back-pressure
                window.append(pool.submit(_decode, submitted, paths[submitted]))
                submitted += 1
            group = [_result(window.popleft())]
            views = group[0].size
            while window and views + _result(window[0]).size <= cap:  # same groups every run
                group.append(_result(window.popleft()))
                views += group[-1].size
            yield group
        finished = True
    finally:
        if not finished:  # stopped early: a worker may be blocked in a read that never ends
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.kill()
        pool.shutdown(wait=finished, cancel_futures=True)


def _result(future: Future) -> _Item:
    try:
        return future.result()
    except BrokenProcessPool as e:
        raise RuntimeError("a video decoding worker died (killed by the out-of-memory killer? "
                           "fewer --decode-workers or 0 decode in the main process)") from e


def check_options(workers: int | None, max_batch: int | None, prefetch: int = 2) -> None:
    """Refuse pipeline options that cannot work (None: the default), naming the option."""
    if workers is not None and workers < 0:
        raise ValueError(f"--decode-workers (workers) must be >= 0, 0 decoding in the main "
                         f"process; got {workers}")
    if max_batch is not None and max_batch < 1:
        raise ValueError(f"--max-batch (max_batch) must be >= 1; got {max_batch}")
    if prefetch < 1:
        raise ValueError(f"prefetch must be >= 1; got {prefetch}")


def _batched(predictor: Predictor, paths: Sequence[str],
             call: Callable[[torch.Tensor], np.ndarray], *, workers: int | None,
             max_batch: int | None, prefetch: int) -> Iterator[tuple[_Item, np.ndarray | None]]:
    """``(item, rows)`` per video in input order: ``rows`` its views' rows of ``call`` (run on
    the views of consecutive decoded videos together, up to ``max_batch`` views), None on an
    error."""
    check_options(workers, max_batch, prefetch)
    device = getattr(predictor.backend, "device", None)  # None: ONNX Runtime, on the CPU
    workers = default_workers(device) if workers is None else workers
    cap = default_max_batch(device) if max_batch is None else max_batch
    done = 0
    for group in _groups(predictor, paths, workers, cap, prefetch):
        yield from _run(group, call)
        done += len(group)
        if done // 32 > (done - len(group)) // 32:
            _trim_heap()  # every 32 videos, as Predictor.predict_many


def _run(items: list[_Item], call: Callable[[torch.Tensor], np.ndarray]
         ) -> Iterator[tuple[_Item, np.ndarray | None]]:
    """``call`` on the views of ``items`` at once, split back per video. If that fails, each
    video alone, so that a failure is that video's error (as in the plain loop)."""
    batch = [it.views for it in items if it.views is not None]
    try:
        out = call(torch.cat(batch)) if len(batch) > 1 else None  # (sum V, ...)
    except Exception:
        out = None
    start = 0
    for it in items:
        if it.views is None:
            yield it, None
            continue
        n = it.views.shape[0]
        if out is not None:
            yield it, out[start:start + n]
            start += n
            continue
        rows = None
        try:
            rows = call(it.views)
        except Exception as e:
            it.error = failure_message(it.path, e)
        yield it, rows


def predict_pipelined(predictor: Predictor, paths: Sequence[str | os.PathLike], *,
                      workers: int | None = None, max_batch: int | None = None,
                      prefetch: int = 2) -> Iterator[Prediction]:
    """:meth:`Predictor.predict_many` as a pipeline (see the module docstring): predictions in
    input order, a video that fails with ``error`` set. ``workers``: decode processes (None:
    :func:`default_workers`; 0 decodes in this process); ``max_batch``: views per model call
    (None: :func:`default_max_batch`); ``prefetch``: videos each worker decodes ahead."""
    for item, rows in _batched(predictor, [os.fspath(p) for p in paths], predictor.backend,
                               workers=workers, max_batch=max_batch, prefetch=prefetch):
        if rows is None:
            yield Prediction(item.path, error=item.error)
            continue
        probs = predictor._probs(rows)  # (K,)
        yield predictor.answer(item.path, probs, warnings=item.warnings, times=item.times)


def features_pipelined(predictor: Predictor, paths: Sequence[str | os.PathLike], *,
                       per_frame: bool = False, workers: int | None = None,
                       max_batch: int | None = None, prefetch: int = 2
                       ) -> Iterator[tuple[np.ndarray | None, str | None]]:
    """:meth:`Predictor.features` of each video as a pipeline, in input order: ``(features,
    None)`` ((D,), or (T, D) with ``per_frame``) or ``(None, error message)``."""
    features: Any = getattr(predictor.backend, "features", None)
    if features is None:
        raise ValueError(f"{predictor.checkpoint}: features need a PyTorch checkpoint "
                         f"(.safetensors or .pth); this predictor runs {predictor.kind}")
    for item, rows in _batched(predictor, [os.fspath(p) for p in paths], features,
                               workers=workers, max_batch=max_batch, prefetch=prefetch):
        if rows is None:
            yield None, item.error
            continue
        feats = rows.mean(0)  # (T, D): the views' average, as Predictor.features
        yield (feats if per_frame else feats.mean(0)), None
