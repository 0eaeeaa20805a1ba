"""Features of many videos: ``tanet extract DIR_OR_LIST --checkpoint C --out feats.npz``.

The videos are those :func:`tanet.data.sources.resolve_videos` names (a folder, a list, a split
folder, ``-``: a list on standard input).

Per video, the backbone's pooled features (:meth:`Predictor.features`): (D,) averaged over
frames and views, or (T, D) per frame. The output ``.npz`` holds ``features`` (N, D) or
(N, T, D) float32 in input order, ``paths`` (N,) as the source names them, ``labels`` (N,)
and ``class_names`` when the source has them, ``ok`` (N,) (False for a video that failed to
decode; its row is NaN), ``failed`` and ``errors`` (indices and messages of those), and
``meta`` (a JSON string: checkpoint, options).

Resumable: videos are processed in shards of ``shard_size``; each finished shard is written
atomically to ``<out>.parts/``, so a rerun of the same command skips what is done. The parts
are merged, streamed shard by shard (memory: one shard), into ``out`` at the end and removed.
Under torchrun, shard k goes to rank k mod W and rank 0 writes the one output; shards that rank
0 cannot see (no shared file system) are sent to it over the process group.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tanet.apps.pipeline import features_pipelined
from tanet.apps.predict import Predictor
from tanet.apps.sharding import collect_files, owned
from tanet.data.sources import Source
from tanet.engine.distributed import DistInfo, all_gather, all_sum
from tanet.precision import resolve_amp

__all__ = ["extract", "load_features"]


def _meta(videos: Source, checkpoint: str, *, per_frame: bool, views: str,
          shard_size: int, precision: str) -> dict[str, Any]:
    """What defines the output: a partial run with other values is not continued (features
    computed in bf16 and in fp32 differ, so the precision is one of them)."""
    digest = hashlib.sha256("\n".join(videos.paths).encode()).hexdigest()
    meta: dict[str, Any] = {"checkpoint": str(checkpoint), "per_frame": per_frame,
                            "views": views, "videos": len(videos), "list_sha256": digest,
                            "shard_size": shard_size, "precision": precision}
    if os.path.isfile(checkpoint):  # a retrained file at the same path is another model
        st = os.stat(checkpoint)
        meta["checkpoint_stat"] = [st.st_size, st.st_mtime_ns]
    return meta


def load_features(path: str | os.PathLike) -> dict[str, Any]:
    """An output of :func:`extract` as a dict of arrays (``meta`` decoded)."""
    with np.load(path, allow_pickle=False) as z:
        out: dict[str, Any] = {k: z[k] for k in z.files}
    out["meta"] = json.loads(str(out["meta"]))
    return out


def extract(videos: Source, checkpoint: str | os.PathLike, out: str | os.PathLike, *,
            per_frame: bool = False, views: str = "1x1", shard_size: int = 64,
            parts: str | os.PathLike | None = None, device: str = "cpu", amp: str | None = "auto",
            quiet: bool = False, info: DistInfo | None = None, workers: int | None = None,
            max_batch: int | None = None) -> dict[str, Any]:
    """Write the features of ``videos`` to ``out`` (.npz; see the module docstring) and return
    a summary (``videos``, ``failed``, ``out``, ``reused``, ``precision``). ``parts``: the shard
    folder (default ``<out>.parts``; ``{rank}`` in it gives each process its own). ``amp``: the
    precision (:mod:`tanet.precision`; ``auto``: bf16 where the hardware has it); ``workers``,
    ``max_batch``: the decode pipeline's (:mod:`tanet.apps.pipeline`)."""
    info = info or DistInfo()
    out = Path(out)
    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1, got {shard_size}")
    precision = resolve_amp(amp, device)
    meta = _meta(videos, str(checkpoint), per_frame=per_frame, views=views,
                 shard_size=shard_size, precision=precision.name)
    # rank 0's view decides for all (the file stats of a checkpoint copied to each machine
    # differ; the output may be visible to rank 0 only)
    meta, done = all_gather(info, (meta, _finished(out, meta) if info.main else None))[0]
    n = len(videos)
    if done is not None:
        return {"videos": n, "failed": done, "out": str(out), "reused": True, "resumed": n,
                "precision": meta["precision"]}
    if info.main and not quiet:
        print(f"tanet extract: {precision.describe('--amp')}", file=sys.stderr)
    predictor = Predictor(checkpoint, views=views, device=device, amp=amp)
    if not hasattr(predictor.backend, "model"):
        raise ValueError(f"{checkpoint}: features need a PyTorch checkpoint, not an ONNX file")
    dim = predictor.backend.model.fc.in_features
    fshape = (predictor.card.num_segments, dim) if per_frame else (dim,)
    part_dir = Path(str(parts).replace("{rank}", str(info.rank)) if parts else f"{out}.parts")
    _check_parts(part_dir, meta)
    shards = [part_dir / f"shard-{k:06d}.npz" for k in range(math.ceil(n / shard_size))]
    size = [min(n, (k + 1) * shard_size) - k * shard_size for k in range(len(shards))]
    mine = owned(len(shards), info)
    todo = [k for k in mine if not shards[k].is_file()]
    resumed = int(all_sum(info, [sum(size[k] for k in mine if k not in todo)])[0])
    _run_shards(predictor, videos.paths, shards, todo, size, fshape, per_frame,
                total=sum(size[k] for k in mine), quiet=quiet or not info.main,
                workers=workers, max_batch=max_batch)
    collect_files(shards, lambda k: k % info.world_size, info)
    failed = 0
    if info.main:
        failed = _merge(out, shards, videos, fshape, meta, shard_size)
        shutil.rmtree(part_dir, ignore_errors=True)
    failed = int(all_sum(info, [failed])[0])  # every process answers alike, after the merge
    if not info.main:  # its own folder ({rank}), or the shared one rank 0 removed
        shutil.rmtree(part_dir, ignore_errors=True)
    return {"videos": n, "failed": failed, "out": str(out), "reused": False, "resumed": resumed,
            "precision": meta["precision"]}


def _finished(out: Path, meta: dict[str, Any]) -> int | None:
    """The number of failed videos if ``out`` is a finished extraction with the same
    definition, else None (reads two small members, not the features)."""
    if not out.is_file():
        return None
    try:
        with np.load(out, allow_pickle=False) as z:
            if json.loads(str(z["meta"])) != meta:
                return None
            return int((~z["ok"]).sum())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def _check_parts(part_dir: Path, meta: dict[str, Any]) -> None:
    """Create the shard folder, or check that the partial run in it is this one."""
    from tanet.io import atomic_write_text

    manifest = part_dir / "manifest.json"
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if old != meta:
            raise ValueError(f"{part_dir}: holds a partial extraction with another list, "
                             f"checkpoint or options; delete it (or choose another --out) to "
                             f"start afresh")
        return
    atomic_write_text(manifest, json.dumps(meta))


def _run_shards(predictor: Predictor, files: Sequence[str], shards: Sequence[Path],
                todo: Sequence[int], size: Sequence[int], fshape: tuple[int, ...],
                per_frame: bool, *, total: int, quiet: bool, workers: int | None,
                max_batch: int | None) -> None:
    """Compute and write the shards ``todo`` (``size[k]`` videos from ``sum(size[:k])``), their
    videos decoded ahead and batched (:func:`~tanet.apps.pipeline.features_pipelined`); a video
    that fails gets a NaN row."""
    from tqdm import tqdm

    from tanet.io import atomic_path

    bar = tqdm(total=total, initial=total - sum(size[k] for k in todo), desc="extract",
               unit="video", disable=quiet, file=sys.stderr, dynamic_ncols=True)
    ranges = {k: range(k * size[0], k * size[0] + size[k]) for k in todo}
    results = features_pipelined(predictor, [files[i] for k in todo for i in ranges[k]],
                                 per_frame=per_frame, workers=workers, max_batch=max_batch)
    for k in todo:
        lo = ranges[k].start
        feats = np.full((size[k], *fshape), np.nan, np.float32)  # (S, D) or (S, T, D)
        failed, errors = [], []
        for i in ranges[k]:
            feat, error = next(results)
            if error is None:
                feats[i - lo] = feat
            else:  # one bad file must not stop a long run
                failed.append(i)
                errors.append(error)
            bar.update(1)
        with atomic_path(shards[k]) as tmp, open(tmp, "wb") as f:
            np.savez(f, features=feats, start=np.int64(lo), failed=np.array(failed, np.int64),
                     errors=np.array(errors, dtype=str))
    bar.close()


def _put(zf: zipfile.ZipFile, name: str, arr: np.ndarray) -> None:
    with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)


def _merge(out: Path, shards: Sequence[Path], videos: Source, fshape: tuple[int, ...],
           meta: dict[str, Any], shard_size: int) -> int:
    """Stream the shards into one ``.npz`` (atomically); returns the number of failed videos."""
    from tanet.io import atomic_path

    n = len(videos)
    failed: list[int] = []
    errors: list[str] = []
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
        with zf.open("features.npy", "w", force_zip64=True) as f:
            header = {"descr": "<f4", "fortran_order": False, "shape": (n, *fshape)}
            np.lib.format.write_array_header_2_0(f, header)
            for k, shard in enumerate(shards):
                with np.load(shard, allow_pickle=False) as z:
                    size = min(n, (k + 1) * shard_size) - k * shard_size
                    feats = z["features"]  # (S, D) or (S, T, D)
                    if int(z["start"]) != k * shard_size or feats.shape != (size, *fshape):
                        raise ValueError(f"{shard}: not shard {k} of this extraction; delete "
                                         f"{shard.parent} and run again")
                    f.write(np.ascontiguousarray(feats, dtype="<f4").tobytes())
                    failed += z["failed"].tolist()
                    errors += z["errors"].tolist()
        ok = np.ones(n, bool)
        ok[failed] = False
        _put(zf, "paths", np.array([v.listed for v in videos.videos], dtype=str))
        if videos.labels is not None:
            _put(zf, "labels", np.array(videos.labels, np.int64))
        if videos.class_names is not None:
            _put(zf, "class_names", np.array(videos.class_names, dtype=str))
        _put(zf, "ok", ok)
        _put(zf, "failed", np.array(failed, np.int64))
        _put(zf, "errors", np.array(errors, dtype=str))
        _put(zf, "meta", np.array(json.dumps(meta)))
    return len(failed)
