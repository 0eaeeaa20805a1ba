"""Small media files the tests write themselves."""
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
