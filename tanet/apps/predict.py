"""Classify videos with a trained model: ``Predictor(checkpoint).predict(path)``.

The checkpoint alone defines the pipeline (its model card): frames T, crop size, test resize,
mean/std, class names. Per video: decode the sampled frames once, build CLIPS x CROPS views
(segment centres for one clip, the authors' ``uniform-N`` starts for several, or dense sampling
when the checkpoint's training config used it), run them as one batch, average the view logits,
softmax, top-k (a multi-label card: a sigmoid per class, and every class whose score is >= the
card's threshold). Nothing is kept between videos, so memory does not grow with their number.

The model runs behind a *backend* (the :class:`Backend` protocol): :class:`TorchBackend`
(PyTorch eager, optionally bf16/fp16 or compiled) or :class:`OnnxBackend` (ONNX Runtime, an
``.onnx`` from ``tanet export``), chosen from the checkpoint, or any object given as
``Predictor(backend=...)`` (``tanet serve`` gives its batcher's, :meth:`Predictor.with_backend`).
"""
from __future__ import annotations

import copy
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol, Sequence

import numpy as np
import torch

from tanet.data.sampling import WindowPlan
from tanet.data.views import parse_views, read_test_clips, test_transform, to_views
from tanet.geometry import Geometry
from tanet.models.recognizer import ModelCard
from tanet.precision import Precision, resolve_amp

__all__ = ["Predictor", "Prediction", "WindowPrediction", "Backend", "TorchBackend", "OnnxBackend",
           "load_backend", "failure_message", "parse_views", "write_timeline"]


@dataclass
class Prediction:
    """Result for one video: ``top`` [(label, prob)], best first; ``error`` if it failed;
    ``warnings`` the decoder's (``truncated: 16 of 795 frames``, ``corrupt data at frame 120``);
    ``labels``: a multi-label model's answer, every class whose score is >= the card's threshold,
    best first (None for a single-label model)."""

    path: str
    top: list[tuple[str, float]] = field(default_factory=list)
    probs: np.ndarray | None = None  # (K,) class probabilities
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    times: np.ndarray | None = None  # (clips, T) seconds of the frames the model sampled
    frames: np.ndarray | None = None  # (clips, T, H, W, 3) uint8 those frames (keep_frames)
    labels: list[tuple[str, float]] | None = None  # multi-label: the classes over the threshold

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path,
                             "top": [{"label": lab, "score": round(s, 6)} for lab, s in self.top],
                             "warnings": list(self.warnings)}
        if self.labels is not None:
            d["labels"] = [{"label": lab, "score": round(s, 6)} for lab, s in self.labels]
        if self.error is not None:
            d["error"] = self.error
        return d

    def __str__(self) -> str:
        if self.error is not None:
            return f"{self.path}: error: {self.error}"
        warned = "".join(f" [warning: {w}]" for w in self.warnings)
        if self.labels is not None:  # multi-label: every class over the threshold
            shown = ", ".join(f"{lab} ({s:.3f})" for lab, s in self.labels) or (
                f"no class over the threshold (top: {self.top[0][0]} {self.top[0][1]:.3f})")
            return f"{self.path}: {shown}{warned}"
        return f"{self.path}: " + ", ".join(f"{lab} ({s:.3f})" for lab, s in self.top) + warned


def failure_message(path: str | os.PathLike, e: BaseException) -> str:
    """How a video that failed is reported (predict, extract, serve): the exception's message
    when it names the file already (a ``VideoDecodeError``), else ``path: Type: message``."""
    msg = str(e)
    return msg if msg.startswith(str(path)) else f"{path}: {type(e).__name__}: {msg}"


@dataclass
class WindowPrediction:
    """Sliding-window result: per window (start s, end s), the T frames sampled from it (the
    indices :func:`~tanet.data.sampling.clip_indices` gives a clip of its span, offset by its
    first frame) and class probabilities (W, K)."""

    path: str
    starts: np.ndarray  # (W,)
    ends: np.ndarray  # (W,)
    indices: np.ndarray  # (W, T) the frames each window sampled, indices in the video
    probs: np.ndarray  # (W, K)
    class_names: list[str]
    warnings: list[str] = field(default_factory=list)  # the decoder's
    threshold: float | None = None  # multi-label: a window's labels score >= it

    def window_json(self, k: int, topk: int) -> dict[str, Any]:
        """Window ``k`` as ``tanet predict --window --json`` prints it (the keys of a live
        window, :class:`tanet.apps.live.WindowResult`, less the timing)."""
        order = np.argsort(-self.probs[k])[:topk]
        return {"path": self.path, "window": k, "start": round(float(self.starts[k]), 4),
                "end": round(float(self.ends[k]), 4),
                "frames": [int(i) for i in self.indices[k]],
                "top": [{"label": self.class_names[i], "score": round(float(self.probs[k, i]), 6)}
                        for i in order],
                **({} if self.threshold is None else {"labels": [
                    {"label": self.class_names[i], "score": round(float(self.probs[k, i]), 6)}
                    for i in np.argsort(-self.probs[k]) if self.probs[k, i] >= self.threshold]})}


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None where there is no glibc."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _trim_heap() -> None:
    """Return free heap pages to the OS (glibc ``malloc_trim``; a no-op elsewhere)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class Backend(Protocol):
    """What a :class:`Predictor` runs its views through.

    * ``backend(views)``: views (V, T, C, H, W) float32 -> logits (V, K) float32 numpy;
    * ``kind``: what runs them, ``"torch"`` or ``"onnx"`` here (a wrapper, such as the server's
      batcher, says its inner backend's);
    * ``card``: the :class:`~tanet.models.recognizer.ModelCard` (frames, size, classes, ...),
      which defines the predictor's pipeline.

    Optional: ``model``, the ``torch.nn.Module`` (what :mod:`tanet.apps.visualize` draws; absent
    or None where there is none, as in ONNX Runtime), and ``features(views)`` -> pooled features
    (V, T, D) numpy (:meth:`Predictor.features`).
    """

    kind: str
    card: ModelCard

    def __call__(self, views: torch.Tensor) -> np.ndarray: ...


class TorchBackend:
    """A PyTorch model as a :class:`Backend` in the precision ``amp`` names
    (:func:`tanet.precision.resolve_amp`; ``"auto"``, the default: bf16 where the hardware
    computes in bf16 natively, else fp32; ``"off"`` or None: fp32). bf16 on a CPU runs a bf16
    copy (BN folded, channels-last; :mod:`tanet.apps.accel`), bf16/fp16 elsewhere autocast;
    ``compile``: ``torch.compile`` (the first batch compiles). ``precision`` says which."""

    kind = "torch"

    def __init__(self, model: torch.nn.Module, *, device: str = "cpu", amp: str | None = "auto",
                 compile: bool = False) -> None:
        self.model = model.eval().to(device)
        self.card: ModelCard | None = getattr(model, "card", None)  # Predictor needs one
        self.device = torch.device(device)
        self.precision: Precision = resolve_amp(amp, self.device)
        self.amp = self.precision.dtype
        self.forward = self.model
        self._features = self.model.forward_features
        bf16 = self.precision.amp == "bf16" and self.device.type == "cpu"  # a bf16 model
        if compile or bf16:
            from tanet.apps.accel import prepare

            self.forward = prepare(self.model, bf16=bf16, compile=compile)
            self._features = self.forward.features
            self.amp = None if bf16 else self.amp

    def __call__(self, clips: torch.Tensor) -> np.ndarray:  # (V, T, C, H, W) -> (V, K)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.amp,
                                                     enabled=self.amp is not None):
            return self.forward(clips.to(self.device)).float().cpu().numpy()

    def features(self, clips: torch.Tensor) -> np.ndarray:  # (V, T, C, H, W) -> (V, T, D)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.amp,
                                                     enabled=self.amp is not None):
            return self._features(clips.to(self.device)).float().cpu().numpy()


class OnnxBackend:
    """An ``.onnx`` from ``tanet export`` on ONNX Runtime as a :class:`Backend` (no ``model``:
    the file holds the graph only)."""

    kind = "onnx"

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        from tanet.apps.export import OnnxRecognizer

        self.session = OnnxRecognizer(path, threads=threads)
        self.card: ModelCard = self.session.card

    def __call__(self, clips: torch.Tensor) -> np.ndarray:  # (V, T, C, H, W) -> (V, K)
        return self.session(clips.numpy())


def load_backend(checkpoint: str | os.PathLike, *, device: str = "cpu", amp: str | None = "auto",
                 threads: int | None = None, compile: bool = False) -> Backend:
    """The backend for a checkpoint: :class:`OnnxBackend` for an ``.onnx``, else
    :class:`TorchBackend` of the model ``create_model`` loads (a path, a published ``.pth``, a
    weights name or URL). The one place that decides which."""
    checkpoint = os.fspath(checkpoint)
    if checkpoint.endswith(".onnx"):
        return OnnxBackend(checkpoint, threads)
    from tanet.models.factory import create_model

    return TorchBackend(create_model(checkpoint=checkpoint), device=device, amp=amp,
                        compile=compile)


class Predictor:
    """Video classifier: a model (loaded from one file, or a given backend) and the test
    pipeline its card defines.

    Args:
        checkpoint: a tanet ``.safetensors`` checkpoint, a published ``.pth`` (authors' or
            mmaction2's; converted on the fly), a weights name (``tanet_r50.k400``) or an
            http(s) URL (downloaded and converted once), or an ``.onnx`` from ``tanet export``;
            optional when ``backend`` is given.
        views: ``"CLIPSxCROPS"``, e.g. ``"1x1"`` (default) or ``"10x3"`` (Kinetics protocol).
        topk: classes reported per video.
        labels: class names overriding the checkpoint's (a list or a file, one per line).
        device: torch device for PyTorch checkpoints.
        amp: PyTorch checkpoints: ``"auto"`` (default: bf16 where the hardware computes in
            bf16 natively, fp32 elsewhere; :mod:`tanet.precision`), ``"off"`` (or None: fp32),
            ``"bf16"`` or ``"fp16"``; bf16 on CPU runs a bf16 copy of the model (BN folded,
            channels-last; :mod:`tanet.apps.accel`), else autocast. ``precision`` says which
            runs.
        compile: ``torch.compile`` the PyTorch model (Inductor, freezing); the first batch
            compiles (tens of seconds on CPU), later ones reuse it.
        threads: intra-op threads for ONNX Runtime (None: its default).
        sampling: ``"segment"`` or ``"dense"`` for clips and windows alike; None keeps the
            checkpoint card's (:meth:`~tanet.geometry.Geometry.with_overrides`).
        backend: run the views through this :class:`Backend` instead of loading ``checkpoint``
            (which then only names the model in messages; device, amp, threads and compile
            are the backend's business). Its ``card`` defines the pipeline.
    """

    def __init__(self, checkpoint: str | os.PathLike | None = None, *,
                 views: str | tuple[int, int] = "1x1", topk: int = 5,
                 labels: Sequence[str] | str | os.PathLike | None = None, device: str = "cpu",
                 amp: str | None = "auto", threads: int | None = None,
                 sampling: str | None = None, compile: bool = False,
                 backend: Backend | None = None) -> None:
        self.clips, self.crops = parse_views(views)  # a bad option fails before the loading
        if backend is None:
            if checkpoint is None:
                raise ValueError("Predictor needs a checkpoint or a backend")
            backend = load_backend(checkpoint, device=device, amp=amp, threads=threads,
                                   compile=compile)
        elif device != "cpu" or amp not in (None, "auto") or threads is not None or compile:
            raise ValueError("device, amp, threads and compile set up the backend Predictor "
                             "loads; a given backend has its own (TorchBackend(model, device=..., "
                             "amp=..., compile=...), OnnxBackend(path, threads=...))")
        card = getattr(backend, "card", None)
        if not isinstance(card, ModelCard):
            raise ValueError(f"backend {type(backend).__name__} has no model card (its `card` "
                             "attribute: a ModelCard, which defines the test pipeline)")
        # a path, a weights name or a URL; what messages call the model
        self.checkpoint = os.fspath(checkpoint) if checkpoint is not None else card.name
        self.backend: Backend = backend
        self.card: ModelCard = card
        self.topk = max(1, min(topk, card.num_classes))
        self.class_names = self._names(labels, card)
        self.geometry: Geometry = card.geometry.with_overrides(sampling=sampling)
        self.transform = test_transform(self.geometry, self.crops)

    @property
    def kind(self) -> str:
        """What runs the model: ``"torch"``, ``"onnx"``, or what an injected backend says."""
        return getattr(self.backend, "kind", "custom")

    @property
    def model(self) -> torch.nn.Module | None:
        """The PyTorch model behind this predictor, or None (ONNX Runtime). Shared, not a copy:
        hooks put on it (TAM capture) see every prediction that runs meanwhile."""
        return getattr(self.backend, "model", None)

    @property
    def precision(self) -> Precision | None:
        """What the model computes in (:class:`tanet.precision.Precision`), or None where the
        backend does not say (ONNX Runtime: the file decides)."""
        return getattr(self.backend, "precision", None)

    @property
    def sampling(self) -> str:
        return self.geometry.sampling

    @property
    def short_side(self) -> int:
        return self.geometry.short_side

    @staticmethod
    def _names(labels, card: ModelCard) -> list[str]:
        if labels is not None and not isinstance(labels, (list, tuple)):
            from tanet.io import read_class_names

            labels = read_class_names(labels)
        names = list(labels) if labels is not None else card.class_names
        if names is None:
            return [f"class_{i}" for i in range(card.num_classes)]
        if len(names) != card.num_classes:
            raise ValueError(f"{len(names)} class names for a model with {card.num_classes} "
                             "classes; check --labels")
        return [str(n) for n in names]

    def _scores(self, views: torch.Tensor) -> np.ndarray:
        return self._probs(self.backend(views))  # (K,)

    def _probs(self, logits: np.ndarray) -> np.ndarray:
        """A video's class probabilities (K,) from its views' logits (V, K) (also
        :mod:`tanet.apps.pipeline`'s, which runs the views of several videos at once)."""
        mean = torch.from_numpy(logits).mean(0)  # (K,): average of the views' scores
        return (mean.sigmoid() if self.card.multilabel else mean.softmax(-1)).numpy()

    def _top(self, probs: np.ndarray) -> list[tuple[str, float]]:
        order = np.argsort(-probs)[:self.topk]
        return [(self.class_names[i], float(probs[i])) for i in order]

    def _labels(self, probs: np.ndarray) -> list[tuple[str, float]] | None:
        """A multi-label model's classes with a score >= the card's threshold, best first."""
        if not self.card.multilabel:
            return None
        order = [i for i in np.argsort(-probs) if probs[i] >= self.card.threshold]
        return [(self.class_names[i], float(probs[i])) for i in order]

    def answer(self, name: str, probs: np.ndarray, **extra: Any) -> Prediction:
        """The :class:`Prediction` of scores ``probs`` (K,): top-k, and a multi-label model's
        classes over the threshold; ``extra``: its other fields (warnings, times, frames)."""
        return Prediction(name, self._top(probs), probs, labels=self._labels(probs), **extra)

    # ------------------------------------------------------------------------ public
    def with_options(self, *, views: str | tuple[int, int] | None = None,
                     topk: int | None = None) -> "Predictor":
        """A predictor sharing this one's model and backend (nothing reloaded) with other views
        and/or top-k; the server makes one per request."""
        p = copy.copy(self)
        if views is not None:
            p.clips, p.crops = parse_views(views)
            p.transform = test_transform(p.geometry, p.crops)
        if topk is not None:
            p.topk = max(1, min(topk, p.card.num_classes))
        return p

    def with_backend(self, backend: Backend) -> "Predictor":
        """A predictor with this one's pipeline, class names, views and top-k that runs its views
        through ``backend`` (e.g. ``tanet serve``'s batcher in front of this one's backend)."""
        card = getattr(backend, "card", None)
        if card is not None and card.num_classes != self.card.num_classes:
            raise ValueError(f"backend {type(backend).__name__} has {card.num_classes} classes, "
                             f"this predictor's model {self.card.num_classes}")
        p = copy.copy(self)
        p.backend = backend
        return p

    def load_views(self, path: str | os.PathLike, *, warnings: list[str] | None = None
                   ) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
        """Decode and transform one video (the clip-views policy of :mod:`tanet.data.views`):
        the sampled frames (clips, T, H, W, 3) uint8 (after the test resize), the views
        (clips*crops, T, C, s, s) float, and the frames' times in seconds (clips, T). The
        decoder's warnings (truncation, damage) are appended to ``warnings`` when given."""
        from tanet.data.decode import open_video

        with open_video(path, short_side=self.short_side) as reader:
            frames, idx = read_test_clips(reader, self.geometry, self.clips)  # (clips, T, ...)
            fps = reader.info.fps or 25.0
            if warnings is not None:
                warnings += reader.warnings
        views, _ = to_views(frames, self.transform)  # (clips*crops, T, C, s, s)
        return frames, views, idx / fps

    def predict(self, path: str | os.PathLike, *, keep_frames: bool = False) -> Prediction:
        """Top-k classes of one video; raises ``VideoDecodeError`` if it cannot be read.
        ``keep_frames``: the answer keeps the sampled frames (``frames``; the server draws them)."""
        warnings: list[str] = []
        frames, views, times = self.load_views(path, warnings=warnings)
        probs = self._scores(views)  # (K,)
        return self.answer(str(path), probs, warnings=warnings, times=times,
                           frames=frames if keep_frames else None)

    def features(self, path: str | os.PathLike, *, per_frame: bool = False) -> np.ndarray:
        """Pooled backbone features of one video, averaged over the views: (D,) averaged over
        the frames too (the classifier's input: ``fc`` of it gives the video's logits), or
        (T, D) with ``per_frame``. PyTorch checkpoints only (an ONNX file holds no features)."""
        features = getattr(self.backend, "features", None)
        if features is None:
            raise ValueError(f"{self.checkpoint}: features need a PyTorch checkpoint "
                             f"(.safetensors or .pth); this predictor runs {self.kind}")
        _, views, _ = self.load_views(path)
        feats = features(views).mean(0)  # (T, D)
        return feats if per_frame else feats.mean(0)  # (T, D) or (D,)

    def predict_frames(self, frames: np.ndarray, name: str = "") -> Prediction:
        """Top-k of decoded frames (clips, T, H, W, 3) uint8 whose short side is already
        ``short_side`` (as the decoder gives them): the rest of :meth:`predict`'s pipeline, for
        frames from elsewhere (the live mode's ring buffer)."""
        views, _ = to_views(frames, self.transform)  # (clips*crops, T, C, s, s)
        probs = self._scores(views)  # (K,)
        return self.answer(name, probs)

    def predict_many(self, paths: Iterable[str | os.PathLike]) -> Iterator[Prediction]:
        """Predictions one by one; a video that fails gives a Prediction with ``error`` set.

        Every 32 videos freed heap memory goes back to the system: opening and closing decoders
        makes glibc raise its mmap threshold, after which their buffers come from the heap and
        fragment it, and resident memory crept up by ~30 MB per 1,000 videos before it
        levelled off."""
        for k, p in enumerate(paths, 1):
            try:
                yield self.predict(p)
            except Exception as e:  # one bad file must not stop a directory run
                yield Prediction(str(p), error=failure_message(p, e))
            if k % 32 == 0:
                _trim_heap()

    def predict_windows(self, path: str | os.PathLike, window: float, *,
                        stride: float | None = None) -> WindowPrediction:
        """Classify ``window``-second windows every ``stride`` seconds (default: window / 2),
        then one over the tail (:class:`~tanet.data.sampling.WindowPlan`): each window is
        sampled exactly as a test clip of its span (the card's sampling through
        :func:`~tanet.data.sampling.clip_indices`), one clip per window with this predictor's
        crops. Live streams and the server's timeline take the same windows."""
        from tanet.data.decode import open_video

        if window <= 0:
            raise ValueError(f"window must be > 0 seconds, got {window}")
        stride = stride or window / 2
        starts, ends, rows, picked = [], [], [], []
        with open_video(path, short_side=self.short_side) as reader:
            info = reader.info
            fps = info.fps or 25.0
            plan = WindowPlan.from_seconds(window, stride, fps, self.geometry)
            for s, length in plan.spans(info.num_frames):  # regular windows, then the tail
                idx = plan.sample(s, length)  # (T,)
                picked.append(idx)
                frames = reader.get_frames(idx)[None]  # (1, T, H, W, 3)
                rows.append(self._scores(to_views(frames, self.transform)[0]))  # (K,)
                starts.append(s / fps)
                ends.append((s + length) / fps)
            warnings = list(reader.warnings)
        return WindowPrediction(str(path), starts=np.array(starts), ends=np.array(ends),
                                indices=np.array(picked, dtype=np.int64),  # (W, T)
                                probs=np.stack(rows), class_names=self.class_names,
                                warnings=warnings,
                                threshold=self.card.threshold if self.card.multilabel else None)


def write_timeline(result: WindowPrediction, out_dir: str | os.PathLike, *,
                   top: int = 5) -> tuple[Path, Path]:
    """Write ``<video>.windows.csv`` (start, end, top-1, score, the sampled frames separated by
    spaces, then every class's probability) and ``<video>.timeline.png`` (the probabilities of
    the ``top`` classes over time)."""
    import csv

    from matplotlib.figure import Figure

    from tanet.io import atomic_path, save_figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(result.path).stem
    csv_path, png_path = out_dir / f"{stem}.windows.csv", out_dir / f"{stem}.timeline.png"
    names = result.class_names
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["start_s", "end_s", "top1", "top1_score", "frames", *names])
        for s, e, idx, p in zip(result.starts, result.ends, result.indices, result.probs):
            best = int(p.argmax())
            w.writerow([f"{s:.3f}", f"{e:.3f}", names[best], f"{p[best]:.6f}",
                        " ".join(str(int(i)) for i in idx), *(f"{v:.6f}" for v in p)])
    classes = np.argsort(-result.probs.max(0))[:top]  # classes that peak highest
    mid = (result.starts + result.ends) / 2
    fig = Figure(figsize=(10, 3.4))
    ax = fig.subplots()
    for c in classes:
        ax.plot(mid, result.probs[:, c], marker="o", ms=3, label=names[c])
    ax.set_xlabel("time (s, window centre)")
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    ax.set_title(f"{Path(result.path).name}: sliding-window predictions", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    save_figure(fig, png_path)
    return csv_path, png_path
