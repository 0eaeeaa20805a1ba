"""Under load: the real ``tanet predict`` CLI over a folder of 1,000 short videos, 10 % of them
bad in ten different ways, finishes, reports every bad one (``--json`` lines with ``error``),
exits 1 as documented for a run with failures, and its resident memory does not grow with the
number of videos (VmRSS of the subprocess sampled from /proc while it runs)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tanet.data.encode import write_video
from tanet.testing.media import write_audio_only

N_VIDEOS = 1000
N_DISTINCT = 12  # distinct good videos; the rest are hard links to them (a fast fixture)
CLASSES = ["a", "b", "c", "d"]


def _frames(seed: int, t: int = 12, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    x = np.repeat(base, t, 0)
    for i in range(t):  # a block that moves
        x[i, 8:16, (2 * i) % (size - 8):(2 * i) % (size - 8) + 8] = 255 - 20 * (seed % 5)
    return x


def _bad_makers(src: bytes, avi: bytes, tmp: Path):
    """Ten ways a file named like a video is not one (each decodes to VideoDecodeError)."""
    audio = write_audio_only(tmp / "audio.mp4", frames=10)
    rng = np.random.default_rng(0)
    return {
        "empty": lambda k: b"",
        "text": lambda k: f"not a video {k}\n".encode() * 40,
        "random": lambda k: rng.integers(0, 256, 3000 + k, dtype=np.uint8).tobytes(),
        "header_only": lambda k: src[:48 + k],
        "no_index": lambda k: src[: len(src) // 2],  # mp4 index (moov) is written last
        "zeroed": lambda k: bytes(len(src)),
        "audio_only": lambda k: audio.read_bytes(),
        "avi_header_only": lambda k: avi[:200 + k],
        "html": lambda k: b"<html><body>404 Not Found</body></html>\n" * (k + 1),
        "json": lambda k: json.dumps({"video": k, "frames": []}).encode(),
    }


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from tanet.models import create_model
    from tanet.models.checkpoint import save_model

    root = tmp_path_factory.mktemp("load")
    ckpt = root / "tiny.safetensors"
    model = create_model("tanet_tiny", num_classes=len(CLASSES), num_segments=4,
                         class_names=CLASSES).eval()
    model.card.input_size, model.card.short_side = (3, 32, 32), 32
    save_model(ckpt, model)
    d = root / "videos"
    d.mkdir()
    srcs = [write_video(root / f"src{i}.mp4", _frames(i)) for i in range(N_DISTINCT)]
    avi = write_video(root / "src.avi", _frames(99), codec="mpeg4").read_bytes()
    makers = _bad_makers(srcs[0].read_bytes(), avi, root)
    n_bad = N_VIDEOS // 10
    bad: set[str] = set()
    for k in range(n_bad):
        kind = list(makers)[k % len(makers)]
        p = d / f"{(k * 10 + 3):04d}_{kind}.{'avi' if 'avi' in kind else 'mp4'}"
        p.write_bytes(makers[kind](k))
        bad.add(str(p))
    good = 0
    for k in range(N_VIDEOS):
        if k % 10 == 3:
            continue  # a bad one sits here
        os.link(srcs[k % N_DISTINCT], d / f"{k:04d}_good.mp4")
        good += 1
    assert good + len(bad) == N_VIDEOS
    return ckpt, d, bad


def _rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


@pytest.mark.timeout(300)
def test_predict_1000_videos_reports_every_bad_one_in_flat_memory(folder):
    ckpt, d, bad = folder
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "tanet", "predict", str(d), "--checkpoint",
                          str(ckpt), "--json", "--topk", "2", "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    samples: list[tuple[int, int]] = []  # (videos done, VmRSS kB)
    done = threading.Event()

    def sample():
        while not done.is_set():
            rss = _rss_kb(p.pid)
            if rss is not None:
                samples.append((len(lines), rss))
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    err_box: list[str] = []
    threading.Thread(target=lambda: err_box.append(p.stderr.read()), daemon=True).start()
    try:
        for line in p.stdout:
            lines.append(line)
        p.wait(timeout=240)
    finally:
        done.set()
        if p.poll() is None:
            p.kill()
    elapsed = time.perf_counter() - t0
    time.sleep(0.1)
    stderr = err_box[0] if err_box else ""
    assert p.returncode == 1, stderr[-3000:]  # documented: 1 when any video failed
    out = [json.loads(x) for x in lines]
    assert len(out) == N_VIDEOS, "a video was lost"
    assert len({x["path"] for x in out}) == N_VIDEOS
    errors = {x["path"]: x["error"] for x in out if "error" in x}
    assert set(errors) == bad, (sorted(set(errors) ^ bad))[:5]
    for path, msg in errors.items():
        assert msg.startswith(f"{path}: "), msg  # names the file, then the cause
    for x in out:
        if "error" not in x:
            assert len(x["top"]) == 2 and x["top"][0]["label"] in CLASSES
            assert 0 <= x["top"][1]["score"] <= x["top"][0]["score"] <= 1

    # memory: RSS once 200 videos are done vs at the end, after 1,000
    def rss_at(n: int) -> int:
        after = [r for k, r in samples if k >= n]
        return max(after[:5]) if after else max(r for _, r in samples)

    at200 = rss_at(200)
    tail = [r for k, r in samples if k >= 950]
    end = max(tail) if tail else samples[-1][1]
    growth_mb = (end - at200) / 1024
    causes = {}
    for msg in errors.values():
        cause = msg.split(": ", 1)[1].split(" (")[0]
        causes[cause] = causes.get(cause, 0) + 1
    print(f"\npredict load: {N_VIDEOS} videos ({len(bad)} bad) in {elapsed:.1f} s, "
          f"{N_VIDEOS / elapsed:.0f} videos/s; VmRSS at 200: {at200 / 1024:.1f} MB, at "
          f"1000: {end / 1024:.1f} MB (growth {growth_mb:+.1f} MB, {len(samples)} samples); "
          f"errors by cause: {causes}")
    assert growth_mb < 30, f"memory grew {growth_mb:.1f} MB between video 200 and 1000"
