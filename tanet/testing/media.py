"""Small media files the tests write themselves, and the ground truth they are read against."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def write_audio_only(path: Path, *, frames: int = 20) -> Path:
    """An .mp4 with one AAC stream and no video stream."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        for i in range(frames):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")
            f.sample_rate, f.pts = 16000, i * 1024
            for pk in s.encode(f):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    return path


def sequential_frames(path) -> np.ndarray:
    """Every frame a plain sequential decode emits, in its output order (the ground truth):
    every non-empty packet in file order, a packet the decoder rejects dropped (as the ffmpeg
    tool does), then a flush."""
    out = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for packet in c.demux(s):
            if packet.size == 0:
                continue
            try:
                out += [f.to_ndarray(format="rgb24") for f in s.decode(packet)]
            except av.FFmpegError:
                continue
        out += [f.to_ndarray(format="rgb24") for f in s.decode(None)]
    return np.stack(out)


def real_world_shapes(d: Path, frames: np.ndarray, *, gop: int = 12) -> dict[str, Path]:
    """Files of the shapes real datasets hold, written from ``frames`` (T, H, W, 3) into folder
    ``d`` with :mod:`tanet.data.variants` (name -> path): DivX 5 / Xvid packed B-frames with 1,
    2 and 3 B-frames in a row, open and closed GOPs, with and without N-VOP placeholders, two
    keyframes at the start; Xvid without packing; FFmpeg's own MPEG-4 AVI; H.264 in MP4 (closed
    and open GOPs, composition times dropped) and in AVI."""
    from tanet.data import variants as V
    from tanet.data.encode import write_video

    d = Path(d)

    def src(name: str, **kw) -> Path:
        return V.mpeg4_source(d / f"src_{name}.avi", frames, gop=gop, **kw)

    b1, b2, b3 = (src(f"b{b}", bframes=b) for b in (1, 2, 3))
    b2c, b3c = (src(f"b{b}c", bframes=b, closed_gop=True) for b in (2, 3))
    mp4 = write_video(d / "h264.mp4", frames, gop=gop, bframes=3, crf=20)
    return {
        "divx_b1": V.pack_bframes(b1, d / "divx_b1.avi"),
        "divx_b2": V.pack_bframes(b2, d / "divx_b2.avi"),
        "divx_b3": V.pack_bframes(b3, d / "divx_b3.avi"),
        "divx_b2_closed": V.pack_bframes(b2c, d / "divx_b2_closed.avi"),
        "divx_b3_closed": V.pack_bframes(b3c, d / "divx_b3_closed.avi"),
        "divx_b2_no_nvop": V.pack_bframes(b2, d / "divx_b2_no_nvop.avi", placeholders=False),
        "divx_b3_closed_no_nvop": V.pack_bframes(b3c, d / "divx_b3c_no_nvop.avi",
                                                 placeholders=False),
        "divx_b2_two_keys": V.pack_bframes(src("b2k", bframes=2, leading_keyframes=2),
                                           d / "divx_b2_two_keys.avi"),  # the DivX 5 of issue 19
        "xvid_packed_b2": V.pack_bframes(b2, d / "xvid_packed_b2.avi", xvid=True),
        "xvid_b2": V.xvid_unpacked(b2, d / "xvid_b2.avi"),
        "xvid_b3_closed": V.xvid_unpacked(b3c, d / "xvid_b3_closed.avi"),
        "ffmpeg_avi_b2": b2,  # FFmpeg's own muxing of MPEG-4 with B-frames
        "h264_mp4": mp4,
        "h264_mp4_open_gop": write_video(d / "h264_open.mp4", frames, gop=gop, bframes=3,
                                         crf=20, options={"x264-params": "open-gop=1"}),
        "h264_mp4_pts_dts": V.pts_from_dts(mp4, d / "h264_pts_dts.mp4"),
        "h264_avi": write_video(d / "h264.avi", frames, gop=gop, bframes=3, crf=20),
    }


def write_parts_video(path: Path, *, fps: int = 10, seconds: int = 2) -> Path:
    """An H.264 video of four ``seconds``-long parts that look unlike each other (dark, bright,
    noise, stripes; 64x48), so that a small random model's sliding windows change their minds
    along it (segments tests)."""
    from tanet.data.encode import write_video

    n = fps * seconds
    rng = np.random.default_rng(3)
    stripes = (np.arange(64) // 4 % 2 * 255).astype(np.uint8)[None, None, :, None]  # (1,1,64,1)
    parts = [np.full((n, 48, 64, 3), 20, np.uint8), np.full((n, 48, 64, 3), 230, np.uint8),
             rng.integers(0, 255, (n, 48, 64, 3), np.uint8), np.tile(stripes, (n, 48, 1, 3))]
    return write_video(path, np.concatenate(parts), fps=fps)  # (4n, 48, 64, 3)
