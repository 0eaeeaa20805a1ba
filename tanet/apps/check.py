"""``tanet check``: scan a dataset's videos before training.

Every video of a source (:func:`tanet.data.sources.resolve_videos`: an annotation list of any
format, a plain list, a folder, a split folder, ``-`` for a list on standard input) is
opened and indexed as training would read it (:class:`~tanet.data.decode.VideoReader`), and
the frames training reads (8 segment centres and the last frame) are read by seek on a fresh
reader and compared with one plain sequential decode of the file (the ground truth): its frame
count, rate, codec and container, and its status: ``ok``, ``warning`` (truncated or damaged,
still readable) or ``error`` (cannot be read, or training would read other frames than the
sequential decode emits, or a stand-in). ``deep`` indexes by a full decode (the exact index,
cached on disk, so training pays nothing more). Videos are checked in parallel worker
processes; a decoder crash costs only the video that caused it. :func:`write_fixed_list` writes
the annotation list without the bad videos, in the input's format.
"""
from __future__ import annotations

import concurrent.futures as cf
import csv
import io
import json
import os
import time
from collections import Counter
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TextIO

from tanet.data.sources import Source, resolve_videos

__all__ = ["CheckResult", "check_video", "training_reads", "read_dataset", "check_all",
           "check_iter", "write_csv",
           "write_fixed_list", "summary"]


@dataclass(frozen=True)
class CheckResult:
    """One row of the CSV."""

    path: str
    status: str  # ok | warning | error
    frames: int | None = None
    fps: float | None = None
    duration: float | None = None
    size: int | None = None  # bytes (files) or number of images (frame folders)
    codec: str = ""
    container: str = ""
    cause: str = ""  # the error, or the warnings joined by "; "
    index: str = ""  # packets (timestamps trusted) | decoded (a full decode) | folder


COLUMNS = tuple(f.name for f in fields(CheckResult))


def check_video(path: str, *, deep: bool = False, template: str = "img_{:05d}.jpg",
                listed_frames: int | None = None) -> CheckResult:
    """Open and index one video (``deep``: by a full decode) and compare the frames training
    reads with a sequential decode (:func:`training_reads`); never raises for a bad video.
    ``listed_frames``: the count a frame list states, compared with the folder's."""
    from tanet.data.decode import VideoDecodeError, open_video

    from tanet import remote

    p = Path(path)
    try:
        if remote.is_remote(path):
            size = remote.stat(str(path)).size
        else:
            size = len(os.listdir(p)) if p.is_dir() else p.stat().st_size
    except OSError:  # missing, unreadable: the reader below says which
        size = None
    wrong = ""
    try:
        with open_video(path, template=template, exact=deep) as r:
            info, warnings = r.info, list(r.warnings)
        if info.container != "folder":
            info, read_warnings, wrong = training_reads(path)
            warnings += [w for w in read_warnings if w not in warnings]
    except VideoDecodeError as e:
        return CheckResult(str(path), "error", size=size, cause=e.cause)
    except Exception as e:  # a bug or an unexpected failure: reported, the scan goes on
        return CheckResult(str(path), "error", size=size, cause=f"{type(e).__name__}: {e}")
    if listed_frames is not None and listed_frames != info.num_frames:
        warnings.append(f"the list says {listed_frames} frames, the folder has "
                        f"{info.num_frames}")
    index = "folder" if info.container == "folder" else ("decoded" if info.exact else "packets")
    status = "error" if wrong else ("warning" if warnings else "ok")
    return CheckResult(str(path), status, info.num_frames, round(info.fps, 3),
                       round(info.duration, 3), size, info.codec, info.container,
                       "; ".join(([wrong] if wrong else []) + warnings), index)


TRAINING_SEGMENTS = 8  # segment centres read by training, ``tanet test`` and ``tanet predict``


def training_reads(path: str | os.PathLike) -> tuple:
    """Read the frames that training reads (the centres of :data:`TRAINING_SEGMENTS` segments
    and the last frame) by seek on a fresh reader, and compare them with a plain sequential
    decode: on the packets route one decode of the whole file here; on the exact route the
    index is that decode's record, and the reader has compared every frame it returned with
    its pixel digest there (a frame that differs is read again, else reported). Returns (the
    reader's info after the reads, its warnings, the cause of a disagreement or ``""``): a
    count other than the decode's, a stand-in, or a frame other than the decode's frame at
    that index."""
    import numpy as np

    from tanet.data.decode import open_video
    from tanet.data.sampling import segment_indices
    from tanet.data.verify import reference_frames

    with open_video(path) as r:  # the index from the cache: a fresh reader, as a worker's
        n = r.info.num_frames
        wanted = sorted({*segment_indices(n, TRAINING_SEGMENTS, train=False).tolist(), n - 1})
        got = r.get_frames(wanted)  # (T, H, W, 3)
        info, warnings = r.info, list(r.warnings)
    ref, count = ({}, info.num_frames) if info.exact else reference_frames(path, wanted)
    if count != info.num_frames:
        return info, warnings, (f"the index disagrees with a sequential decode: it counts "
                                f"{info.num_frames} frames, the decode emits {count} "
                                f"(`tanet check --deep` indexes the video by a full decode)")
    stand_ins = list(dict.fromkeys(w for w in warnings if "stands in" in w
                                   or "decodes differently" in w))
    if stand_ins:
        more = f" (+{len(stand_ins) - 3} more)" if len(stand_ins) > 3 else ""
        return info, warnings, "training reads a stand-in: " + "; ".join(stand_ins[:3]) + more
    for i, frame in zip(wanted, got):
        if i not in ref:  # (exact route) checked by the reader
            continue
        diff = int(np.abs(frame.astype(np.int16) - ref[i]).max())
        if diff > 1:
            return info, warnings, (f"training reads a wrong frame: frame {i} read by seek "
                                    f"differs from the sequential decode's (max |diff| {diff})")
    return info, warnings, ""


def _job(args: tuple) -> CheckResult:
    path, deep, template, listed = args
    return check_video(path, deep=deep, template=template, listed_frames=listed)


# ------------------------------------------------------------------------------ input
def read_dataset(source: str | os.PathLike, *, root: str | os.PathLike | None = None,
                 labels: str | None = None, format: str = "auto", split: int = 1,
                 subset: str = "all", stdin: TextIO | None = None) -> Source:
    """The videos to check: those of :func:`~tanet.data.sources.resolve_videos` (the one rule
    for relative paths: ``root``, else the list's folder), by default both subsets (train,
    then test) of a UCF101 / HMDB51 split folder."""
    return resolve_videos(source, root=root, labels=labels, format=format, split=split,
                          subset=subset, stdin=stdin)


# ------------------------------------------------------------------------------ the scan
def check_all(jobs: Sequence[tuple], *, workers: int,
              progress: Callable[[], None] = lambda: None) -> list[CheckResult]:
    """:func:`check_video` of every job in ``workers`` processes (results in input order).
    A worker that dies (a crash in the decoder) is replaced; the videos it had in hand are
    checked again one by one, each alone in a process, so only the culprit is marked."""
    results: list[Any] = [None] * len(jobs)
    for i, res in check_iter(jobs, workers=workers):
        results[i] = res
        progress()
    return results


def check_iter(jobs: Sequence[tuple], *, workers: int,
               fn: Callable[[tuple], Any] = _job) -> Iterator[tuple[int, Any]]:
    """``(i, fn(jobs[i]))`` as they finish, in ``workers`` processes (``fn``: a module-level
    function of a job whose first item is the path; default :func:`check_video`'s job), at
    most ``4 * workers`` in flight. A crash isolates as :func:`check_all` says (the culprit
    gets a :class:`CheckResult` error row)."""
    if workers <= 1:
        for i, job in enumerate(jobs):
            yield i, fn(job)
        return
    todo = iter(range(len(jobs)))
    pool = cf.ProcessPoolExecutor(workers)
    inflight: dict[cf.Future, int] = {}
    try:
        while True:
            while len(inflight) < 4 * workers and (i := next(todo, None)) is not None:
                inflight[pool.submit(fn, jobs[i])] = i
            if not inflight:
                break
            done, _ = cf.wait(inflight, return_when=cf.FIRST_COMPLETED)
            broken = []
            for f in done:
                i = inflight.pop(f)
                try:
                    yield i, f.result()
                except cf.process.BrokenProcessPool:
                    broken.append(i)
            if broken:
                broken += inflight.values()
                inflight.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                for i in broken:
                    yield i, _isolated(jobs[i], fn)
                pool = cf.ProcessPoolExecutor(workers)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _isolated(job: tuple, fn: Callable[[tuple], Any] = _job) -> Any:
    """One job alone in a fresh process: its result, or an error row if that process dies."""
    with cf.ProcessPoolExecutor(1) as pool:
        try:
            return pool.submit(fn, job).result()
        except cf.process.BrokenProcessPool:
            return CheckResult(job[0], "error", cause="the decoder crashed on this file (its "
                                                      "process died)")


# ------------------------------------------------------------------------------ output
def write_csv(path: str | os.PathLike, results: Sequence[CheckResult]) -> Path:
    """The CSV (one row per video, :data:`COLUMNS`), atomically."""
    from tanet.io import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for r in results:
        w.writerow(["" if v is None else v for v in astuple(r)])
    return atomic_write_text(path, buf.getvalue())


def summary(results: Sequence[CheckResult], seconds: float, workers: int) -> str:
    """What a person reads after a scan: counts, rate, the commonest causes."""
    n = len(results)
    status = Counter(r.status for r in results)
    lines = [f"checked {n} videos in {seconds:.1f} s ({n / max(seconds, 1e-9):.0f} videos/s, "
             f"{workers} process{'es' if workers > 1 else ''}): {status['ok']} ok, "
             f"{status['warning']} warning, {status['error']} error"]
    for kind in ("error", "warning"):
        causes = Counter(c.split(" (")[0].split(":")[0] for r in results if r.status == kind
                         for c in (r.cause.split("; ") if kind == "warning" else [r.cause]))
        if causes:
            lines.append(f"  {kind} causes: " + "; ".join(f"{c}: {k}" for c, k in
                                                          causes.most_common(6)))
    decoded = sum(r.index == "decoded" for r in results)
    if decoded:
        lines.append(f"  {decoded} video(s) indexed by a full decode (short, timestamps not to "
                     f"be trusted, damaged, or --deep)")
    return "\n".join(lines)


def write_fixed_list(ds: Source, keep: Sequence[bool], out: str | os.PathLike) -> int:
    """The annotation list of ``ds`` without the entries whose ``keep`` is False, in the input's
    format (a class-per-folder tree, HMDB51's split files or a UCF101 split folder become a
    ``path label`` video list; a flat folder a list of paths). Returns the number of entries written."""
    from tanet.io import atomic_write_text, read_text

    if len(keep) != len(ds.videos):
        raise ValueError("one keep flag per video")
    kept = [v for v, k in zip(ds.videos, keep) if k]
    source = ds.text if ds.text is not None else (
        read_text(ds.name) if ds.kind == "list" else None)
    if ds.format in ("tree", "folder", "video", "hmdb51") or source is None:
        text = "".join(f"{v.listed}\n" if v.label is None else f"{v.listed} {v.label}\n"
                       for v in kept)
    elif ds.format == "sthv2":
        items = json.loads(source)
        text = json.dumps([it for it, k in zip(items, keep) if k], indent=1) + "\n"
    elif ds.format in ("kinetics", "multilabel", "charades"):  # CSVs with a header row
        rows = list(csv.reader(io.StringIO(source, newline="")))
        entries = [row for row in rows[1:] if row and "".join(row).strip()]
        _same_count(ds, len(entries))
        flags = iter(keep)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(rows[0])
        w.writerows(row for row in entries if next(flags))
        text = buf.getvalue()
    else:  # one entry a line; comments and blank lines kept
        lines = source.split("\n")
        entry = [bool(s.strip()) and not s.strip().startswith("#") for s in lines]
        _same_count(ds, sum(entry))
        flags = iter(keep)
        text = "\n".join(s for s, e in zip(lines, entry) if not e or next(flags))
    atomic_write_text(out, text)
    return len(kept)


def _same_count(ds: Source, entries: int) -> None:
    if entries != len(ds.videos):
        raise ValueError(f"{ds.name}: found {entries} entries but read {len(ds.videos)} "
                         f"videos; cannot write a fixed list safely")


def run_check(source: str | os.PathLike, *, out: str | os.PathLike, root=None, labels=None,
              format: str = "auto", deep: bool = False, workers: int | None = None,
              template: str = "img_{:05d}.jpg", fix_list: str | os.PathLike | None = None,
              drop_warnings: bool = False, quiet: bool = False, split: int = 1,
              subset: str = "all",
              stdin: TextIO | None = None) -> tuple[list[CheckResult], str]:
    """Read the dataset, check every video (progress bar unless ``quiet``), write the CSV (and
    the fixed list); returns the results and the summary text."""
    from tqdm import tqdm

    ds = read_dataset(source, root=root, labels=labels, format=format, split=split,
                      subset=subset, stdin=stdin)
    workers = max(1, min(workers or os.cpu_count() or 1, len(ds.paths)))
    listed = [v.num_frames if ds.format == "frames" else None for v in ds.videos]
    jobs = [(p, deep, template, n) for p, n in zip(ds.paths, listed)]
    t0 = time.perf_counter()
    with tqdm(total=len(jobs), desc="check", unit="video", disable=quiet,
              dynamic_ncols=True) as bar:
        results = check_all(jobs, workers=workers, progress=lambda: bar.update(1))
    text = summary(results, time.perf_counter() - t0, workers)
    write_csv(out, results)
    text += f"\n  table -> {out}"
    if fix_list is not None:
        bad = ("error", "warning") if drop_warnings else ("error",)
        n = write_fixed_list(ds, [r.status not in bad for r in results], fix_list)
        text += f"\n  fixed list: {n} of {len(results)} entries -> {fix_list}"
    return results, text
