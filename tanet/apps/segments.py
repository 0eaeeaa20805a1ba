"""Action segments of a long video: its sliding windows (``Predictor.predict_windows``) joined
into ``(start, end, label, score)`` segments, and the files they are written to (JSON, CSV, SRT
and WebVTT subtitles a video player shows over the video).

The rule (:func:`merge_windows`), in order:

1. **Time cells.** Windows overlap (a 2 s window every 1 s), so each instant is given to the
   window whose centre is nearest: window ``i`` owns the cell from the midpoint between its centre
   and the previous window's to the midpoint between its centre and the next one's; the first
   cell starts at the first window's start, the last ends at the last window's end. Cells tile
   the video without overlap, so segments never overlap either.
2. **Labels.** A window's label is its top-1 class; a window whose top-1 probability is below
   ``min_score`` is *background* (no label).
3. **Runs.** Consecutive windows with the same label (or background) form a run, spanning their
   cells.
4. **Flickers and gaps.** Left to right, a run that lies between two runs of one label ``L`` is
   absorbed into them (the three become one run of ``L``) when it is shorter than
   ``min_duration`` (a run of another label: a flicker) or than ``max_gap`` (a background run: a
   gap). Both default to one window length, so at the default stride (half a window) a single
   window that disagrees with both neighbours is absorbed, two in a row are not.
5. **Segments.** Every labelled run is a segment from its first cell's start to its last cell's
   end; its score is the mean probability *of its label* over all its windows (absorbed ones
   included, which lowers it honestly). Background runs are not segments.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["SegmentRule", "Segment", "merge_windows", "segments_of", "window_cells",
           "segments_json", "segments_csv", "segments_srt", "segments_vtt", "write_segments",
           "SEGMENT_FORMATS"]

SEGMENT_FORMATS = ("json", "csv", "srt", "vtt")


@dataclass(frozen=True)
class SegmentRule:
    """The knobs of :func:`merge_windows` (seconds; None: one window length)."""

    min_score: float = 0.0
    min_duration: float | None = None
    max_gap: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be within 0..1, got {self.min_score}")
        for name in ("min_duration", "max_gap"):
            v = getattr(self, name)
            if v is not None and not v >= 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {v}")

    def to_json(self, window: float) -> dict[str, float]:
        """The rule with its defaults filled in for windows of ``window`` seconds."""
        return {"min_score": self.min_score,
                "min_duration": window if self.min_duration is None else self.min_duration,
                "max_gap": window if self.max_gap is None else self.max_gap}


@dataclass(frozen=True)
class Segment:
    start: float  # seconds
    end: float
    label: str
    score: float  # mean probability of `label` over the segment's windows

    def to_json(self) -> dict[str, Any]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "label": self.label,
                "score": round(self.score, 6)}


def window_cells(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Boundaries (W + 1,) of the time each window owns: midpoints between neighbouring window
    centres, the first window's start and the last one's end (windows in time order)."""
    starts, ends = np.asarray(starts, float), np.asarray(ends, float)  # (W,)
    centres = (starts + ends) / 2  # (W,)
    if len(centres) > 1 and np.any(np.diff(centres) < 0):
        raise ValueError("windows must be in time order (window centres not increasing)")
    b = np.empty(len(starts) + 1)  # (W + 1,)
    b[0], b[-1] = starts[0], ends[-1]
    b[1:-1] = (centres[:-1] + centres[1:]) / 2
    return b


def merge_windows(starts: Sequence[float], ends: Sequence[float], probs: np.ndarray,
                  class_names: Sequence[str], rule: SegmentRule = SegmentRule()) -> list[Segment]:
    """Segments of windows (start s, end s, class probabilities (W, K)) by the module's rule."""
    starts, ends = np.asarray(starts, float), np.asarray(ends, float)  # (W,)
    probs = np.asarray(probs, float)  # (W, K)
    if len(starts) == 0:
        return []
    if probs.shape != (len(starts), len(class_names)) or len(ends) != len(starts):
        raise ValueError(f"{len(starts)} starts, {len(ends)} ends and probabilities of shape "
                         f"{probs.shape} for {len(class_names)} classes do not match")
    b = window_cells(starts, ends)  # (W + 1,)
    window = float(np.max(ends - starts))
    min_duration = window if rule.min_duration is None else rule.min_duration
    max_gap = window if rule.max_gap is None else rule.max_gap
    labels = np.where(probs.max(1) >= rule.min_score, probs.argmax(1), -1)  # (W,) -1: background
    runs: list[list[int]] = []  # [label, first window, end window (exclusive)]
    for i, lab in enumerate(labels.tolist()):
        if runs and runs[-1][0] == lab:
            runs[-1][2] = i + 1
        else:
            runs.append([lab, i, i + 1])
    merged: list[list[int]] = []
    for run in runs:
        merged.append(run)
        while len(merged) >= 3:
            a, x, z = merged[-3:]
            limit = max_gap if x[0] == -1 else min_duration
            if a[0] == z[0] != -1 and b[x[2]] - b[x[1]] < limit:
                merged[-3:] = [[a[0], a[1], z[2]]]
            else:
                break
    return [Segment(float(b[i0]), float(b[i1]), str(class_names[lab]),
                    float(probs[i0:i1, lab].mean()))
            for lab, i0, i1 in merged if lab != -1]


def segments_of(result: Any, rule: SegmentRule = SegmentRule()) -> list[Segment]:
    """:func:`merge_windows` of a :class:`~tanet.apps.predict.WindowPrediction`."""
    return merge_windows(result.starts, result.ends, result.probs, result.class_names, rule)


# ------------------------------------------------------------------------------- writers
def segments_json(segments: Sequence[Segment], **about: Any) -> str:
    """``{**about, "segments": [{start, end, label, score}, ...]}`` (e.g. about: path, window,
    stride, rule)."""
    return json.dumps({**about, "segments": [s.to_json() for s in segments]}, indent=1) + "\n"


def segments_csv(segments: Sequence[Segment]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["start_s", "end_s", "label", "score"])
    for s in segments:
        w.writerow([f"{s.start:.3f}", f"{s.end:.3f}", s.label, f"{s.score:.6f}"])
    return buf.getvalue()


def _clock(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _cue_text(s: Segment) -> str:
    """One line: the label (newlines and the cue arrow taken out) and the score."""
    label = " ".join(s.label.split()).replace("-->", "->")
    return f"{label} ({s.score:.2f})"


def segments_srt(segments: Sequence[Segment]) -> str:
    """SubRip: numbered cues ``HH:MM:SS,mmm --> HH:MM:SS,mmm`` with ``label (score)``."""
    return "".join(f"{k}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{_cue_text(s)}\n\n"
                   for k, s in enumerate(segments, 1))


def segments_vtt(segments: Sequence[Segment]) -> str:
    """WebVTT (what browsers' ``<track>`` reads): ``WEBVTT``, then one cue per segment."""
    def text(s: Segment) -> str:
        return _cue_text(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    return "WEBVTT\n\n" + "".join(
        f"{k}\n{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{text(s)}\n\n"
        for k, s in enumerate(segments, 1))


def write_segments(segments: Sequence[Segment], dest: str | os.PathLike, fmt: str | None = None,
                   *, about: dict[str, Any] | None = None) -> Path:
    """Write ``segments`` to ``dest`` (atomically) in ``fmt`` (default: from the suffix: .json,
    .csv, .srt, .vtt); ``about`` (path, window, ...) goes into a JSON file beside them."""
    from tanet.io import atomic_write_text

    dest = Path(dest)
    fmt = fmt or dest.suffix.lstrip(".").lower()
    if fmt not in SEGMENT_FORMATS:
        raise ValueError(f"{dest}: unknown segments format {fmt!r}; use one of "
                         f"{', '.join('.' + f for f in SEGMENT_FORMATS)}")
    text = {"json": lambda: segments_json(segments, **(about or {})),
            "csv": lambda: segments_csv(segments), "srt": lambda: segments_srt(segments),
            "vtt": lambda: segments_vtt(segments)}[fmt]()
    return atomic_write_text(dest, text)
