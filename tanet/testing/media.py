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
