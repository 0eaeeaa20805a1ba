"""Sampling indices equal the authors' ops/dataset.py formulas, index for index.

The reference functions below are transcribed from their ``TSNDataSet`` (``new_length = 1``,
their ``np.random.randint`` replaced by the same calls on a shared ``Generator``, and their
final ``+ 1`` for 1-based image files removed).
"""
from __future__ import annotations

import numpy as np
import pytest

from tanet.data.sampling import (WindowPlan, clip_indices, dense_indices, segment_indices,
                                 uniform_clips_indices)
from tanet.geometry import Geometry


# ---------------------------------------------------------------- the authors' formulas
def ref_sample_indices(num_frames, num_segments, dense, rng):  # _sample_indices
    if dense:
        t_stride = 64 // num_segments
        sample_pos = max(1, 1 + num_frames - t_stride * num_segments)
        start_idx = 0 if sample_pos == 1 else rng.integers(0, sample_pos - 1)
        offsets = [(idx * t_stride + start_idx) % num_frames for idx in range(num_segments)]
        return np.array(offsets)
    average_duration = (num_frames - 1 + 1) // num_segments
    if average_duration > 0:
        offsets = np.multiply(list(range(num_segments)), average_duration) + rng.integers(
            average_duration, size=num_segments)
    elif num_frames > num_segments:
        offsets = np.sort(rng.integers(num_frames - 1 + 1, size=num_segments))
    else:
        offsets = np.zeros((num_segments,))
    return offsets


def ref_val_indices(num_frames, num_segments, dense):  # _get_val_indices
    if dense:
        t_stride = 64 // num_segments
        sample_pos = max(1, 1 + num_frames - t_stride * num_segments)
        start_idx = sample_pos // 2
        return np.array([(idx * t_stride + start_idx) % num_frames
                         for idx in range(num_segments)])
    if num_frames > num_segments + 1 - 1:
        tick = (num_frames - 1 + 1) / float(num_segments)
        return np.array([int(tick / 2.0 + tick * x) for x in range(num_segments)])
    return np.zeros((num_segments,))


def ref_test_indices(num_frames, num_segments, test_sample):  # _get_test_indices
    if "dense" in test_sample:
        num_clips = int(test_sample.split("-")[-1])
        t_stride = 64 // num_segments
        sample_pos = max(1, 1 + num_frames - t_stride * num_segments)
        if num_clips == 1:
            start_idx = sample_pos // 2
            offsets = [(idx * t_stride + start_idx) % num_frames for idx in range(num_segments)]
        else:
            start_list = np.linspace(0, sample_pos - 1, num=num_clips, dtype=int)
            offsets = []
            for start_idx in start_list.tolist():
                offsets += [(idx * t_stride + start_idx) % num_frames
                            for idx in range(num_segments)]
        return np.array(offsets)
    num_clips = int(test_sample.split("-")[-1])
    tick = (num_frames - 1 + 1) / float(num_segments)
    if num_clips == 1:
        offsets = [int(tick / 2.0 + tick * x) for x in range(num_segments)]
    else:
        start_list = np.linspace(0, tick - 1, num=num_clips, dtype=int)
        offsets = []
        for start_idx in start_list.tolist():
            offsets += [int(start_idx + tick * x) % num_frames for x in range(num_segments)]
    return np.array(offsets)


CASES = [(n, t) for n in (1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 63, 64, 65, 100, 250, 301)
         for t in (1, 3, 4, 8, 16)]


@pytest.mark.parametrize("n,t", CASES)
def test_segment_train_matches(n, t):
    for seed in range(5):
        ours = segment_indices(n, t, train=True, rng=np.random.default_rng(seed))
        theirs = ref_sample_indices(n, t, False, np.random.default_rng(seed))
        np.testing.assert_array_equal(ours, theirs.astype(np.int64))
        assert ours.dtype == np.int64 and ours.shape == (t,)
        assert ours.min() >= 0 and ours.max() < n


@pytest.mark.parametrize("n,t", CASES)
def test_segment_val_matches(n, t):
    np.testing.assert_array_equal(segment_indices(n, t, train=False), ref_val_indices(n, t, False))


@pytest.mark.parametrize("n,t", CASES)
def test_dense_train_and_val_match(n, t):
    for seed in range(5):
        ours = dense_indices(n, t, train=True, rng=np.random.default_rng(seed))
        np.testing.assert_array_equal(ours, ref_sample_indices(n, t, True,
                                                               np.random.default_rng(seed)))
    np.testing.assert_array_equal(dense_indices(n, t, train=False), ref_val_indices(n, t, True))


@pytest.mark.parametrize("n,t", CASES)
@pytest.mark.parametrize("clips", [1, 2, 3, 10])
def test_multi_clip_test_matches(n, t, clips):
    ours_u = uniform_clips_indices(n, t, clips)
    assert ours_u.shape == (clips, t)
    np.testing.assert_array_equal(ours_u.reshape(-1), ref_test_indices(n, t, f"uniform-{clips}"))
    ours_d = dense_indices(n, t, train=False, num_clips=clips).reshape(-1)
    np.testing.assert_array_equal(ours_d, ref_test_indices(n, t, f"dense-{clips}"))


def test_train_offsets_vary_and_stay_in_segments():
    n, t = 100, 8
    draws = np.stack([segment_indices(n, t, train=True, rng=np.random.default_rng(s))
                      for s in range(200)])
    seg = n // t
    assert (draws // seg == np.arange(t)).all()  # one frame from each segment
    assert len({tuple(d) for d in draws}) > 150  # random, not fixed


def test_short_video_behaviour_is_theirs():
    """N < T: training gives all zeros (the authors' formula), validation too."""
    assert segment_indices(5, 8, train=True, rng=np.random.default_rng(0)).tolist() == [0] * 8
    assert segment_indices(8, 8, train=True, rng=np.random.default_rng(0)).tolist() == list(range(8))
    assert dense_indices(5, 8, train=True, rng=np.random.default_rng(0)).max() < 5


def test_dense_custom_stride():
    # sample_pos = 1 + 100 - 2 * 4 = 93, centre start 93 // 2 = 46
    assert dense_indices(100, 4, train=False, stride=2).tolist() == [46, 48, 50, 52]


def test_bad_arguments():
    with pytest.raises(ValueError):
        segment_indices(0, 8, train=False)
    with pytest.raises(ValueError):
        uniform_clips_indices(10, 8, 0)


# ---------------------------------------------------------------- windows: clips of their span
@pytest.mark.parametrize("sampling", ["segment", "dense"])
@pytest.mark.parametrize("t", [1, 4, 8])
def test_window_is_sampled_as_a_test_clip_of_its_span(sampling, t):
    """Every window span, shorter than T included, gets the frames the authors' test sampling
    gives a video of that many frames, offset by the window's first frame."""
    plan = WindowPlan.from_seconds(2.0, 1.0, 25, Geometry(num_segments=t, sampling=sampling))
    assert (plan.length, plan.step, plan.sampling) == (50, 25, sampling)
    for start in (0, 7, 100):
        for length in (1, 2, 3, t, t + 1, 25, 50, 64, 65, 130):
            ref = ref_val_indices(length, t, sampling == "dense").astype(int) + start
            assert plan.sample(start, length) == ref.tolist(), (start, length)
            idx = clip_indices(length, t, sampling=sampling)[0] + start
            assert plan.sample(start, length) == idx.tolist()


def test_short_windows_agree_with_the_index_functions():
    """4 frames, T=8: a clip of 4 frames is frame 0 eight times (the authors' test rule), not the
    segment centres of a stretched span ([0, 0, 1, 1, 2, 2, 3, 3], the old window rule)."""
    seg = WindowPlan.from_seconds(1.0, 0.5, 25, Geometry(num_segments=8))
    assert seg.sample(0, 4) == segment_indices(4, 8, train=False).tolist() == [0] * 8
    assert seg.sample(10, 4) == [10] * 8
    dense = WindowPlan.from_seconds(1.0, 0.5, 25, Geometry(num_segments=4, sampling="dense",
                                                           dense_stride=2))
    # sample_pos = max(1, 1 + 3 - 2 * 4) = 1: start 0, frames 0, 2, 4, 6 modulo 3
    short = dense_indices(3, 4, train=False, stride=2).tolist()
    assert dense.sample(0, 3) == short == [0, 2, 1, 0]
    # 25 frames: sample_pos = 1 + 25 - 8 = 18, centre start 9
    assert dense.sample(12, 25) == [21, 23, 25, 27]
    assert dense.spans(30) == [(0, 25), (5, 25)]  # the tail: the last 25 frames
