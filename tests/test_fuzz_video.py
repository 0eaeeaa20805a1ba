"""Fuzzed videos: mutated real mp4 / avi / webm files decode to frames of the right shape or
raise ``VideoDecodeError`` naming the file; never a crash, a hang or another exception.

Every mutated file is decoded in a separate worker *process* (a small JSON-lines server on a
pipe), so a segfault or an abort in FFmpeg is seen here as a failed example instead of killing
pytest, and a per-case deadline catches hangs. The budget is ``TANET_FUZZ_EXAMPLES`` examples in
all (default 100, split over the formats; ``make fuzz`` runs 2000), derandomized so that CI is
reproducible. Outcome counts go to stdout (``-s``) and to ``fuzz_video_summary.json`` in pytest's
base temp directory.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tanet.data import variants
from tanet.data.encode import available_codecs, write_video

TOTAL_EXAMPLES = int(os.environ.get("TANET_FUZZ_EXAMPLES", "100"))
CASE_DEADLINE = 20.0  # seconds per decode; the unmutated files decode in milliseconds

# (name, suffix, encoder, write_video options)
FORMATS = [
    ("mp4_h264", ".mp4", "libx264", {"gop": 4, "bframes": 2, "crf": 20}),
    ("mp4_h264_faststart", ".mp4", "libx264", {"gop": 4, "bframes": 2, "crf": 20}),
    ("avi_mpeg4", ".avi", "mpeg4", {"gop": 5}),
    ("webm_vp9", ".webm", "libvpx-vp9", {"gop": 6}),
    ("webm_vp8", ".webm", "libvpx", {"gop": 6}),
    # the shapes real datasets hold (tanet.data.variants): DivX packed B-frames, pts = dts
    ("avi_mpeg4_packed", ".avi", "mpeg4", {"gop": 5, "bframes": 2}),
    ("mp4_h264_pts_dts", ".mp4", "libx264", {"gop": 4, "bframes": 2, "crf": 20}),
]
FORMATS = [f for f in FORMATS if f[2] in available_codecs()]
PER_FORMAT = max(5, TOTAL_EXAMPLES // max(1, len(FORMATS)))

# The decode server: one job per line on stdin, one result per line on stdout.
_WORKER = r"""
import json, resource, sys, traceback
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))  # a runaway allocation fails here
from tanet.data.decode import VideoDecodeError, open_video
from tanet.data.convert import resized as _resized
out = sys.stdout
sys.stdout = sys.stderr
out.write("ready\n"); out.flush()
for line in sys.stdin:
    job = json.loads(line)
    res = {}
    try:
        with open_video(job["path"], short_side=job["short_side"]) as r:
            info = r.info
            n = info.num_frames
            idx = [min(n - 1, int(f * n)) for f in job["fracs"]]
            x = r.get_frames(idx)
        w, h = _resized(info.width, info.height, job["short_side"])
        res = {"ok": True, "shape": list(x.shape), "dtype": str(x.dtype),
               "expected": [len(idx), h, w, 3], "num_frames": n}
    except VideoDecodeError as e:
        res = {"ok": False, "vde": True, "type": type(e).__name__, "msg": str(e)}
    except BaseException as e:
        res = {"ok": False, "vde": False, "type": type(e).__name__, "msg": str(e),
               "tb": traceback.format_exc()}
    out.write(json.dumps(res) + "\n"); out.flush()
"""


class DecodeServer:
    """A worker process that decodes one file per request; restarted after a crash or hang."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def _start(self) -> None:
        self.log = open(self.log_dir / f"worker{self.restarts}.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log,
                                     cwd=Path(__file__).resolve().parents[1])
        assert self._readline(120.0) == "ready", "decode worker did not start"

    def _readline(self, timeout: float) -> str | None:
        """A line from the worker, or None on a timeout or its death."""
        fd = self.proc.stdout
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return None
        line = fd.readline()
        return line.decode().strip() if line else None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self.log.close()
            self.restarts += 1

    def decode(self, path: str, fracs: list[float], short_side: int | None) -> dict:
        if self.proc is None:
            self._start()
        t0 = time.monotonic()
        job = {"path": path, "fracs": fracs, "short_side": short_side}
        self.proc.stdin.write((json.dumps(job) + "\n").encode())
        self.proc.stdin.flush()
        line = self._readline(CASE_DEADLINE)
        elapsed = time.monotonic() - t0
        if line is None:
            code = self.proc.poll()
            self.stop()
            if code is None:
                return {"ok": False, "hang": True, "elapsed": elapsed}
            return {"ok": False, "crash": True, "returncode": code, "elapsed": elapsed}
        res = json.loads(line)
        res["elapsed"] = elapsed
        return res


def _content(t: int, h: int, w: int) -> np.ndarray:
    """Frames that change over time (gradient + a moving block), so every frame codes data."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        out[i] = np.stack([(xx * 5 + i * 7) % 256, (yy * 6 + i * 3) % 256,
                           np.full_like(xx, (i * 29) % 256)], -1)
        x0 = (i * 3) % (w - 8)
        out[i, 4:12, x0:x0 + 8] = (255 - i * 9) % 256
    return out


def _remux(src: Path, dst: Path, options: dict[str, str]) -> Path:
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w", options=options) as o:
        s = o.add_stream_from_template(i.streams.video[0])
        for pk in i.demux(i.streams.video[0]):
            if pk.dts is not None:
                pk.stream = s
                o.mux(pk)
    return dst


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz_src")
    out = {}
    for name, suffix, codec, kw in FORMATS:
        p = write_video(d / f"{name}{suffix}", _content(16, 32, 48), codec=codec, **kw)
        if name.endswith("faststart"):  # the index (moov) before the data, as for streaming
            p = _remux(p, d / f"{name}_fs{suffix}", {"movflags": "faststart"})
        elif name.endswith("packed"):
            p = variants.pack_bframes(p, d / f"{name}_packed{suffix}")
        elif name.endswith("pts_dts"):
            p = variants.pts_from_dts(p, d / f"{name}_pd{suffix}")
        out[name] = p.read_bytes()
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = DecodeServer(tmp_path_factory.mktemp("fuzz_logs"))
    yield s
    s.stop()


OUTCOMES: dict[str, Counter] = {}
CAUSES: Counter = Counter()  # VideoDecodeError causes, details stripped


@pytest.fixture(scope="module", autouse=True)
def summary(tmp_path_factory):
    yield
    if not OUTCOMES:
        return
    total = Counter()
    for c in OUTCOMES.values():
        total.update({k: v for k, v in c.items() if k in ("frames", "VideoDecodeError")})
    report = {"examples_budget": TOTAL_EXAMPLES, "per_format": {k: dict(v) for k, v in
                                                                OUTCOMES.items()},
              "total": dict(total), "error_causes": dict(CAUSES.most_common())}
    path = tmp_path_factory.getbasetemp() / "fuzz_video_summary.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"\nfuzz video summary ({TOTAL_EXAMPLES} budget): "
          + "; ".join(f"{k}: {dict(v)}" for k, v in OUTCOMES.items())
          + f"; total {dict(total)}; causes {dict(CAUSES.most_common())} -> {path}")


# ----------------------------------------------------------------------------- mutations
def _offset(size: int, region: str, frac: float) -> int:
    """An offset in the head (first 1 KiB), the tail (last 1 KiB) or anywhere."""
    if region == "head":
        return int(frac * min(size, 1024))
    if region == "tail":
        return max(0, size - 1024) + int(frac * min(size, 1024))
    return int(frac * size)


_frac = st.floats(0.0, 1.0, allow_nan=False, exclude_max=True)
_region = st.sampled_from(["head", "tail", "any"])

mutation = st.one_of(
    st.tuples(st.just("flip"), _region, _frac, st.integers(1, 8), st.integers(0, 2**31)),
    st.tuples(st.just("truncate"), _region, _frac),
    st.tuples(st.just("zero"), _region, _frac, st.integers(1, 512)),
    st.tuples(st.just("swap"), _region, _frac, _frac, st.integers(4, 64)),
    st.tuples(st.just("duplicate"), _region, _frac, _frac, st.integers(4, 256)),
    st.tuples(st.just("insert"), _region, _frac, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), _region, _frac, st.integers(1, 256)),
)


def mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for op in ops:
        kind, region = op[0], op[1]
        if not b:
            break
        at = _offset(len(b), region, op[2])
        if kind == "flip":  # flip n random bits near ``at``
            rng = np.random.default_rng(op[4])
            for _ in range(op[3]):
                j = min(len(b) - 1, at + int(rng.integers(0, 64)))
                b[j] ^= 1 << int(rng.integers(0, 8))
        elif kind == "truncate":
            del b[at:]
        elif kind == "zero":
            b[at:at + op[3]] = bytes(len(b[at:at + op[3]]))
        elif kind == "swap":  # swap two chunks (e.g. two header boxes' worth of bytes)
            n = op[4]
            other = _offset(len(b), region, op[3])
            i, j = sorted((at, other))
            if j - i >= n and j + n <= len(b):
                b[i:i + n], b[j:j + n] = b[j:j + n], b[i:i + n]
        elif kind == "duplicate":  # copy a chunk and insert it elsewhere
            n = op[4]
            chunk = bytes(b[at:at + n])
            dst = _offset(len(b), region, op[3])
            b[dst:dst] = chunk
        elif kind == "insert":
            b[at:at] = op[3]
        elif kind == "delete":
            del b[at:at + op[3]]
    return bytes(b)


@pytest.mark.parametrize("fmt", [f[0] for f in FORMATS])
def test_fuzz_mutated_video_decodes_or_raises_named_error(fmt, sources, server, tmp_path):
    suffix = next(f[1] for f in FORMATS if f[0] == fmt)
    counts = OUTCOMES.setdefault(fmt, Counter())
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    case = iter(range(10**9))

    @settings(max_examples=PER_FORMAT, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(ops=st.lists(mutation, min_size=1, max_size=4),
           fracs=st.lists(_frac, min_size=1, max_size=10),
           short_side=st.sampled_from([None, None, 24]))
    def check(ops, fracs, short_side):
        data = mutate(sources[fmt], ops)
        path = work / f"case{next(case)}{suffix}"
        path.write_bytes(data)
        res = server.decode(str(path), fracs, short_side)
        path.unlink()
        assert not res.get("hang"), f"{fmt}: decode hung > {CASE_DEADLINE} s; ops={ops}"
        assert not res.get("crash"), (f"{fmt}: decode process died (returncode "
                                      f"{res['returncode']}); ops={ops}")
        if res["ok"]:
            assert res["dtype"] == "uint8" and res["shape"] == res["expected"], res
            counts["frames"] += 1
        else:
            assert res["vde"], f"{fmt}: {res['type']} instead of VideoDecodeError:\n{res['tb']}"
            assert res["msg"].startswith(f"{path}: ") and len(res["msg"]) > len(str(path)) + 5, \
                res["msg"]
            counts["VideoDecodeError"] += 1
            CAUSES[res["msg"][len(str(path)) + 2:].split(" (")[0].split(" near index")[0]] += 1
        counts["max_seconds"] = max(counts["max_seconds"], round(res["elapsed"], 3))

    check()
    counts["worker_restarts"] = server.restarts


# ----------------------------------------------------------------------------- regressions
# Cases the fuzzer found, kept as plain tests (they run in the decode server as well).
FOUND = [
    # a flipped bit in the mp4 index: FFmpeg's demuxer fails with ENOMEM while decoding the
    # first frame; av.error.MemoryError escaped from open_video
    ("mp4_h264", [("flip", "tail", 0.7734375, 1, 0)]),
    # a cut through the sample description: a video stream without a codec context;
    # AttributeError escaped from open_video
    ("mp4_h264", [("truncate", "tail", 0.375)]),
]


@pytest.mark.parametrize("fmt,ops", FOUND)
def test_fuzz_found_cases(fmt, ops, sources, server, tmp_path):
    if fmt not in sources:
        pytest.skip(f"{fmt}: encoder not available")
    suffix = next(f[1] for f in FORMATS if f[0] == fmt)
    path = tmp_path / f"found{suffix}"
    path.write_bytes(mutate(sources[fmt], ops))
    res = server.decode(str(path), [0.0, 0.5, 0.99], None)
    assert res["ok"] or (res.get("vde") and res["msg"].startswith(f"{path}: ")), res
    if res["ok"]:
        assert res["shape"] == res["expected"]


def _concat_streams(parts: list[Path], out: Path) -> Path:
    """One video stream made of the packets of ``parts`` in turn (sizes may differ)."""
    import av

    with av.open(str(out), "w") as o:
        s, offset = None, 0
        for part in parts:
            with av.open(str(part)) as i:
                src = i.streams.video[0]
                if s is None:
                    s = o.add_stream_from_template(src)
                top = 0
                for pk in i.demux(src):
                    if pk.dts is None:
                        continue
                    pk.stream = s
                    pk.pts, pk.dts = pk.pts + offset, pk.dts + offset
                    top = max(top, pk.pts + (pk.duration or 1))
                    o.mux(pk)
                offset = top
    return out


@pytest.mark.parametrize("codec,suffix", [("libvpx", ".webm"), ("mpeg4", ".avi")])
def test_fuzz_resolution_change_midstream_keeps_one_shape(tmp_path, codec, suffix):
    """VP8 / MPEG-4 keyframes carry their own size: a stream that switches from 48x32 to 64x40
    (spliced, or a corrupt keyframe header) used to end in np.stack's ValueError. Every frame
    now comes out at the first frame's size."""
    from tanet.data.decode import open_video

    if codec not in available_codecs():
        pytest.skip(f"{codec} not available")
    a = write_video(tmp_path / f"a{suffix}", _content(8, 32, 48), codec=codec, gop=4)
    b = write_video(tmp_path / f"b{suffix}", _content(8, 40, 64), codec=codec, gop=4)
    mixed = _concat_streams([a, b], tmp_path / f"mixed{suffix}")
    with open_video(mixed) as r:
        assert (r.info.num_frames, r.info.width, r.info.height) == (16, 48, 32)
        x = r.get_frames(range(16))
        assert x.shape == (16, 32, 48, 3) and x.dtype == np.uint8
    with open_video(mixed, short_side=16) as r:
        assert r.get_frames([0, 15]).shape == (2, 16, 24, 3)


def test_fuzz_degenerate_display_matrix_is_ignored(tmp_path):
    """A zeroed mp4 display matrix: PyAV reports its NaN angle as INT_MIN, which read as a
    180-degree rotation; it is now ignored (rotation 0)."""
    import struct

    from tanet.data.decode import open_video

    src = bytearray(write_video(tmp_path / "r.mp4", _content(8, 32, 48), gop=4).read_bytes())
    m = src.find(b"tkhd") - 4 + 48  # version-0 tkhd: the 3x3 matrix starts at byte 48
    ref = _content(8, 32, 48)
    for matrix in ([0] * 9, [0] * 8 + [1 << 30]):
        src[m:m + 36] = struct.pack(">9i", *matrix)
        p = tmp_path / "zero_matrix.mp4"
        p.write_bytes(bytes(src))
        with open_video(p) as r:
            assert r.info.rotation == 0 and (r.info.width, r.info.height) == (48, 32)
            x = r.get_frames([0])
        assert np.abs(x[0].astype(int) - ref[0]).mean() < 8  # upright, not turned over


def test_fuzz_failed_write_video_keeps_the_previous_file(tmp_path):
    """write_video encodes to a temporary name: an encoder error midway (x264 refuses 4:2:0 at
    an odd size) leaves the previous file as it was, and no debris."""
    path = write_video(tmp_path / "v.mp4", _content(4, 32, 48))
    before = path.read_bytes()
    with pytest.raises(Exception):
        write_video(path, _content(4, 33, 47), pix_fmt="yuv420p")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]
