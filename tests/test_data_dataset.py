"""VideoDataset / collate / build_loader: outputs, skip policy across workers, decode deadline."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from tanet.data.annotations import Record
from tanet.data.dataset import SkippedVideo, VideoDataset, build_loader, collate
from tanet.data.decode import VideoDecodeError
from tanet.data.encode import write_video
from tanet.data.transforms import build_test_transform, build_train_transform

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _frames(t, seed):
    rng = np.random.default_rng(seed)
    x = np.repeat(rng.integers(0, 256, (1, 36, 48, 3), dtype=np.uint8), t, 0)
    x[:, :4, :4] = np.arange(t, dtype=np.uint8)[:, None, None, None] * 10  # frame id in a corner
    return x


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Six good videos and five bad files of the issue's list."""
    d = tmp_path_factory.mktemp("ds")
    good = [write_video(d / f"good{i}.mp4", _frames(12 + i, i), gop=4).name for i in range(6)]
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("not a video\n" * 20)
    data = (d / "good0.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])
    bad = ["missing.mp4", "empty.mp4", "text.mp4", "truncated.mp4"]
    short = write_video(d / "short.mp4", _frames(3, 9)).name  # fewer frames than T: fine
    return d, good + [short], bad


def _dataset(d, names, **kw):
    recs = [Record(n, i % 3) for i, n in enumerate(names)]
    kw.setdefault("transform", build_train_transform(size=32, mean=MEAN, std=STD))
    return VideoDataset(recs, root=d, num_segments=8, train=True, **kw)


def test_item_shapes_and_fields(tree):
    d, good, _ = tree
    ds = _dataset(d, good)
    item = ds[1]
    assert item["video"].shape == (8, 3, 32, 32) and item["video"].dtype == torch.float32
    assert item["label"] == 1 and item["index"] == 1 and item["path"] == str(d / good[1])
    short = ds[len(good) - 1]  # 3-frame video, T = 8
    assert short["video"].shape == (8, 3, 32, 32)


def test_multi_clip_multi_crop_views(tree):
    d, good, _ = tree
    tf = build_test_transform(size=24, mean=MEAN, std=STD, short_side=28, crops=3)
    for sampling in ("segment", "dense"):
        ds = VideoDataset([Record(good[0], 0)], root=d, num_segments=4, sampling=sampling,
                          train=False, transform=tf, clips=2)
        assert ds[0]["video"].shape == (6, 4, 3, 24, 24)  # (clips x crops, T, C, H, W)


def test_frames_follow_the_sampled_indices(tree):
    """Without a transform, the clip holds the frames at the segment centres."""
    d, good, _ = tree
    ds = VideoDataset([Record(good[0], 0)], root=d, num_segments=4, train=False, transform=None)
    video = ds[0]["video"]  # (T, C, H, W) uint8; 12 frames -> centres 1, 4, 7, 10
    ids = (video[:, 0, 1, 1].float() / 10).round().int().tolist()
    assert ids == [1, 4, 7, 10]


def test_seeded_items_are_reproducible(tree):
    d, good, _ = tree
    ds = _dataset(d, good)
    outs = []
    for _ in range(2):
        np.random.seed(3), torch.manual_seed(3)
        outs.append(ds[2]["video"])
    assert torch.equal(outs[0], outs[1])


def test_skip_policy_counts_every_bad_video_with_workers(tree):
    d, good, bad = tree
    names = good + bad
    ds = _dataset(d, names)
    loader = build_loader(ds, batch_size=3, workers=2, shuffle=True, seed=0)
    seen, skipped = [], []
    for batch in loader:
        skipped += batch["skipped"]
        seen += batch["index"].tolist()
        if batch["video"] is not None:
            assert batch["video"].shape[1:] == (8, 3, 32, 32)
            assert batch["video"].shape[0] == len(batch["label"]) == len(batch["path"])
    assert sorted(seen) == list(range(len(good)))
    assert len(skipped) == len(bad)
    assert sorted(os.path.basename(s.path) for s in skipped) == sorted(bad)
    causes = {s.path: s.error for s in skipped}
    assert causes[str(d / "missing.mp4")].endswith("missing.mp4: file not found")
    assert "empty file" in causes[str(d / "empty.mp4")]


def test_raise_policy(tree):
    d, _, bad = tree
    ds = _dataset(d, bad, on_error="raise")
    with pytest.raises(VideoDecodeError, match="missing.mp4: file not found"):
        ds[0]
    loader = build_loader(ds, batch_size=2, workers=1)
    with pytest.raises(VideoDecodeError, match="missing.mp4"):
        next(iter(loader))


def test_collate_drops_skipped():
    item = {"video": torch.zeros(8, 3, 4, 4), "label": 2, "index": 5, "path": "a.mp4"}
    b = collate([item, SkippedVideo(1, "b.mp4", "b.mp4: boom"), None, item])
    assert b["video"].shape == (2, 8, 3, 4, 4) and b["label"].tolist() == [2, 2]
    assert [s.path for s in b["skipped"]] == ["b.mp4"] and b["path"] == ["a.mp4", "a.mp4"]
    empty = collate([SkippedVideo(1, "b.mp4", "b.mp4: boom")])
    assert empty["video"] is None and empty["label"].numel() == 0 and len(empty["skipped"]) == 1


@pytest.mark.timeout(60)
def test_workers_after_decoding_in_the_main_process(tree):
    """Decoding in the parent must not leave state (swscale threads) that hangs forked workers."""
    d, good, _ = tree
    ds = _dataset(d, good)
    ds[0]
    n = sum(len(b["label"]) for b in build_loader(ds, batch_size=4, workers=2))
    assert n == len(good)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [0, 2])
def test_hanging_decode_is_cut_by_the_timeout(tree, tmp_path, workers):
    """A FIFO named .mp4 that nobody writes to blocks the open() for ever."""
    d, good, _ = tree
    fifo = tmp_path / "hang.mp4"
    os.mkfifo(fifo)
    recs = [Record(str(d / good[0]), 0), Record(str(fifo), 1), Record(str(d / good[1]), 2)]
    ds = VideoDataset(recs, num_segments=4, train=True, decode_timeout=1.0,
                      transform=build_train_transform(size=16, mean=MEAN, std=STD))
    try:
        t0 = time.perf_counter()
        batches = list(build_loader(ds, batch_size=3, workers=workers))
        elapsed = time.perf_counter() - t0
        assert elapsed < 20
        skipped = [s for b in batches for s in b["skipped"]]
        assert len(skipped) == 1 and skipped[0].path == str(fifo)
        assert sum(len(b["label"]) for b in batches) == 2
        assert skipped[0].error.startswith(str(fifo)) and "longer than 1 s" in skipped[0].error
    finally:  # release the abandoned reader thread (it is blocked in open())
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass
