"""Live prediction: ``tanet predict SOURCE --live``.

A reader thread decodes the source (:class:`tanet.data.stream.LiveStream`) into a
:class:`FrameRing`, the latest few seconds of frames. The calling thread waits for each window to
be complete and classifies it with the Predictor's own pipeline (the checkpoint's test transform
and backend, :meth:`~tanet.apps.predict.Predictor.predict_frames`). Windows are those of the
sliding-window mode (one :class:`~tanet.data.sampling.WindowPlan` for both):
``round(window * fps)`` frames every ``round(stride * fps)`` frames at the stream's nominal rate,
each sampled as a test clip of its span (the card's sampling through
:func:`~tanet.data.sampling.clip_indices`: segment centres, or dense frames), and at the end of a
stream one last window over the tail, so a stream gives the same windows, frames and scores as
the same frames read from a file. Times are the frames' own timestamps (stream clock).

Real time: the reader never waits for the model. When the model is slower than the stream,
complete windows queue up; a window is dropped when a newer one is complete and its last frame
arrived more than ``max_lag`` seconds ago (wall clock; default one stride), or when the ring has
already overwritten its frames. Predictions thus trail the stream by at most about ``max_lag`` plus
one inference instead of falling further behind, and :class:`LiveStats` counts the windows and
frames dropped and the real-time factor (inference time per window / stride; above 1 the model
cannot keep up and drops about ``1 - 1/rtf`` of the windows).
"""
from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, TextIO

import numpy as np

from tanet.apps.predict import Prediction, Predictor
from tanet.data.sampling import WindowPlan
from tanet.data.stream import LiveFrame, LiveStream, StreamError

__all__ = ["FrameRing", "WindowResult", "LiveStats", "LiveSession", "run_live"]


class FrameRing:
    """The latest ``capacity`` frames of a stream, indexed 0, 1, 2 ...: one reader thread pushes
    them in order, one consumer waits for a frame and takes windows out."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"ring capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._slots: list[LiveFrame | None] = [None] * capacity
        self._cond = threading.Condition()
        self.count = 0  # frames pushed so far; the next index
        self.done = False  # the stream ended (or failed: ``error``)
        self.error: str | None = None

    def push(self, frame: LiveFrame) -> None:
        with self._cond:
            if frame.index != self.count:
                raise ValueError(f"frame {frame.index} pushed after {self.count - 1}")
            self._slots[frame.index % self.capacity] = frame
            self.count += 1
            self._cond.notify_all()

    def finish(self, error: str | None = None) -> None:
        with self._cond:
            self.done, self.error = True, error
            self._cond.notify_all()

    def wait_for(self, index: int, timeout: float) -> bool:
        """True once frame ``index`` has arrived; False after ``timeout`` seconds or when the
        stream ended without it."""
        with self._cond:
            self._cond.wait_for(lambda: self.count > index or self.done, timeout)
            return self.count > index

    def take(self, indices: list[int]) -> list[LiveFrame] | None:
        """The frames at ``indices``, or None if one is not there (overwritten or not yet)."""
        with self._cond:
            lo = self.count - self.capacity
            if any(not lo <= i < self.count for i in indices):
                return None
            return [self._slots[i % self.capacity] for i in indices]  # type: ignore[misc]


@dataclass
class WindowResult:
    """One classified window: stream seconds [start, end), the sampled frame indices, the
    prediction, the inference time and the latency (last frame decoded -> result ready)."""

    window: int
    start: float
    end: float
    frames: list[int]
    prediction: Prediction
    infer_s: float
    latency_s: float

    def to_json(self) -> dict[str, Any]:
        return {"window": self.window, "start": round(self.start, 4), "end": round(self.end, 4),
                "frames": self.frames, "top": self.prediction.to_json()["top"],
                "timing": {"infer_ms": round(self.infer_s * 1e3, 2),
                           "latency_ms": round(self.latency_s * 1e3, 2)}}


class _Coverage:
    """Frames covered by a union of windows added in order of their start."""

    def __init__(self) -> None:
        self.until, self.total = 0, 0

    def add(self, start: int, end: int) -> None:
        self.total += max(0, end - max(start, self.until))
        self.until = max(self.until, end)


@dataclass
class LiveStats:
    """Counters of a live run. ``rtf``: mean inference seconds per window / stride seconds;
    ``pace``: stream seconds received per wall second since the source was opened."""

    stride_s: float
    frames: int = 0
    stream_s: float = 0.0
    wall_s: float = 0.0
    windows: int = 0
    windows_dropped: int = 0
    infer_s: float = 0.0
    latency_max_s: float = 0.0
    end: str = ""  # eos | interrupted | output closed | error: ...
    _all: _Coverage = field(default_factory=_Coverage, repr=False)
    _done: _Coverage = field(default_factory=_Coverage, repr=False)

    @property
    def frames_dropped(self) -> int:
        """Frames in dropped windows that no classified window covers."""
        return self._all.total - self._done.total

    @property
    def rtf(self) -> float:
        return self.infer_s / self.windows / self.stride_s if self.windows else 0.0

    def to_json(self) -> dict[str, Any]:
        d = {"frames": self.frames, "stream_s": round(self.stream_s, 3),
             "wall_s": round(self.wall_s, 3),
             "pace": round(self.stream_s / self.wall_s, 3) if self.wall_s > 0 else 0.0,
             "windows": self.windows, "windows_dropped": self.windows_dropped,
             "frames_dropped": self.frames_dropped, "rtf": round(self.rtf, 4),
             "infer_ms": round(1e3 * self.infer_s / max(1, self.windows), 2),
             "latency_ms_max": round(1e3 * self.latency_max_s, 2)}
        if self.end:
            d["end"] = self.end
        return d


class LiveSession:
    """A live source being classified: open it (``with LiveSession(...) as s``), then iterate
    :meth:`windows` for :class:`WindowResult` records until the stream ends; ``stats`` counts.

    ``window``/``stride`` seconds as in the sliding-window mode (stride default: window / 2);
    ``max_lag`` seconds (default: the stride) a complete window may wait while a newer one is
    ready; the ring holds one window, one stride and twice ``max_lag`` of frames (at least 32
    more than a window, for the burst of frames FFmpeg buffers while probing a stream).
    ``format``/``options``/``timeout``/``realtime`` go to :class:`~tanet.data.stream.LiveStream`.
    ``warm_up``: model calls on blank frames before the source is opened.
    """

    def __init__(self, predictor: Predictor, source: str, *, window: float = 2.0,
                 stride: float | None = None, max_lag: float | None = None,
                 format: str | None = None, options: Mapping[str, str] | None = None,
                 timeout: float = 30.0, realtime: bool | None = None, warm_up: int = 2) -> None:
        stride = stride or window / 2
        if window <= 0 or stride <= 0:
            raise ValueError(f"--window and --stride must be > 0 seconds, got {window}, {stride}")
        self.predictor, self.source = predictor, source
        self._warm_up(warm_up)
        self.opened = time.monotonic()
        self.stream = LiveStream(source, short_side=predictor.short_side, format=format,
                                 options=options, timeout=timeout, realtime=realtime)
        self.fps = self.stream.info.fps
        self.plan = WindowPlan.from_seconds(window, stride, self.fps, predictor.geometry)
        self.max_lag = stride if max_lag is None else max_lag
        extra = max(32, math.ceil(2 * self.max_lag * self.fps))
        self.ring = FrameRing(self.plan.length + self.plan.step + extra)
        self.stats = LiveStats(stride_s=self.plan.step / self.fps)
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, name="tanet-live-reader", daemon=True)

    def _warm_up(self, calls: int) -> None:
        """Run the model on blank frames first: its first calls are several times slower (lazy
        initialisation), and on a live stream they would make the first windows late."""
        g = self.predictor.geometry
        blank = np.zeros((1, g.num_segments, g.short_side, g.short_side, 3),
                         np.uint8)  # (1, T, H, W, 3)
        for _ in range(calls):
            self.predictor.predict_frames(blank)

    def describe(self) -> str:
        i, p = self.stream.info, self.plan
        rate = f"{i.fps:.3g} fps" if i.fps_known else "frame rate unknown, 25 fps assumed"
        return (f"{i.source} ({i.kind}, {i.format}, {i.codec} {i.width}x{i.height}, {rate}); "
                f"windows of {p.length} frames every {p.step} frames, {p.num_segments} sampled "
                f"({p.sampling}); "
                f"dropping windows over {self.max_lag:g} s late")

    # ---------------------------------------------------------------------------- reader
    def _read(self) -> None:
        """Reader thread: decode into the ring until the stream ends or the session stops."""
        error = None
        try:
            for frame in self.stream:
                self.ring.push(frame)
                if self._stop.is_set():
                    break
        except StreamError as e:
            error = str(e)
        except Exception as e:  # reported in the summary; the consumer must not hang
            error = f"{self.source}: {type(e).__name__}: {e}"
        finally:
            self.ring.finish(error)
            self.stream.close()

    def __enter__(self) -> "LiveSession":
        self._reader.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self, wait: float = 1.0) -> None:
        """Stop reading; the reader thread ends after its current read (a daemon thread, so a
        source that sends nothing more cannot keep the process alive)."""
        self._stop.set()
        if self._reader.ident is None:  # never started: the stream is still ours to close
            self.stream.close()
        elif self._reader.is_alive():
            self._reader.join(wait)

    # ---------------------------------------------------------------------------- windows
    def windows(self, on_tick: Callable[[], None] | None = None) -> Iterator[WindowResult]:
        """Classified windows, each as soon as it is complete (late ones dropped, see the
        module docstring); ``on_tick`` is called at least every 0.25 s while waiting."""
        plan, ring = self.plan, self.ring
        k = 0
        while True:
            if on_tick is not None:
                on_tick()
            if not ring.wait_for(plan.last(k), timeout=0.25):
                if ring.done:
                    break
                continue
            k = self._skip_late(k)
            res = self._classify(k, plan.start(k), plan.length)
            if res is not None:
                yield res
            k += 1
        tail = plan.tail(ring.count)
        if tail is not None:
            res = self._classify(k, *tail)
            if res is not None:
                yield res
        self._account()

    def _skip_late(self, k: int) -> int:
        """The first window from ``k`` on that is to be classified; the ones before it are
        dropped: late while a newer window is complete."""
        plan, ring = self.plan, self.ring
        while ring.count > plan.last(k + 1):  # a newer window is complete
            last = ring.take([plan.last(k)])
            if last is not None and time.monotonic() - last[0].arrival <= self.max_lag:
                return k
            self._drop(plan.start(k), plan.length)
            k += 1
        return k

    def _drop(self, start: int, length: int) -> None:
        self.stats.windows_dropped += 1
        self.stats._all.add(start, start + length)

    def _classify(self, k: int, start: int, length: int) -> WindowResult | None:
        """Classify frames [start, start + length); None (and dropped) if they are gone."""
        idx = self.plan.sample(start, length)
        got = self.ring.take([start, start + length - 1, *idx])
        if got is None:
            self._drop(start, length)
            return None
        first, last, sampled = got[0], got[1], got[2:]
        frames = np.stack([f.rgb for f in sampled])[None]  # (1, T, H, W, 3)
        t0 = time.perf_counter()
        pred = self.predictor.predict_frames(frames, name=self.source)
        infer = time.perf_counter() - t0
        latency = time.monotonic() - last.arrival
        st = self.stats
        st.windows += 1
        st.infer_s += infer
        st.latency_max_s = max(st.latency_max_s, latency)
        st._all.add(start, start + length)
        st._done.add(start, start + length)
        self._account()
        return WindowResult(window=k, start=first.time, end=last.time + 1 / self.fps,
                            frames=idx, prediction=pred, infer_s=infer, latency_s=latency)

    def _account(self) -> None:
        """Bring the frame and time counters up to date with the ring."""
        n = self.ring.count
        newest = self.ring.take([n - 1]) if n else None
        if newest is not None:
            self.stats.frames = n
            self.stats.stream_s = newest[0].time + 1 / self.fps
            self.stats.wall_s = newest[0].arrival - self.opened


def run_live(predictor: Predictor, source: str, *, window: float = 2.0,
             stride: float | None = None, max_lag: float | None = None,
             format: str | None = None, options: Mapping[str, str] | None = None,
             timeout: float = 30.0, status_every: float = 10.0, quiet: bool = False,
             warm_up: int = 2, out: TextIO | None = None, err: TextIO | None = None
             ) -> LiveStats:
    """Classify a live source, one JSON line per window on ``out`` (stdout), status lines every
    ``status_every`` seconds (unless ``quiet``) and one summary line on ``err`` (stderr). Ends
    at the end of the stream, on Ctrl-C or when ``out`` is closed; returns the counters
    (``stats.end`` says how it ended)."""
    out = out or sys.stdout
    err = err or sys.stderr
    with LiveSession(predictor, source, window=window, stride=stride, max_lag=max_lag,
                     format=format, options=options, timeout=timeout,
                     warm_up=warm_up) as session:
        stats = session.stats
        if not quiet:
            print(f"live: {session.describe()}", file=err, flush=True)
        next_status = time.monotonic() + status_every

        def tick() -> None:
            nonlocal next_status
            now = time.monotonic()
            if not quiet and now >= next_status:
                session._account()
                print("live status: " + json.dumps(stats.to_json()), file=err, flush=True)
                next_status = now + status_every

        try:
            for res in session.windows(on_tick=tick):
                print(json.dumps(res.to_json()), file=out, flush=True)
                tick()
            stats.end = "eos" if session.ring.error is None else f"error: {session.ring.error}"
        except KeyboardInterrupt:
            stats.end = "interrupted"
        except BrokenPipeError:
            stats.end = "output closed"
            if out is sys.stdout:  # no second BrokenPipeError when Python flushes at exit
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        session._account()
    print("live summary: " + json.dumps(stats.to_json()), file=err, flush=True)
    return stats
