"""Property: whatever frames are asked for, in whatever order and after whatever earlier reads
on the same reader, ``get_frames`` returns the frames a plain sequential decode emits at those
indices, on every file shape real datasets hold (``tanet.testing.media.real_world_shapes``:
DivX / Xvid packed B-frames with 1-3 B-frames in a row, open and closed GOPs, with and without
N-VOP placeholders, two leading keyframes; unpacked Xvid; H.264 in MP4 and AVI), and never a
stand-in on these undamaged files.

Hypothesis draws read sequences (sorted, unsorted, repeated, sparse, segment centres, the last
frame) and whether each read opens a fresh reader. The budget is ``TANET_FUZZ_EXAMPLES``
examples in all (default 100, split over the shapes; ``make fuzz`` runs 2000), derandomized so
that CI is reproducible.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_data_decode import _content

from tanet.data import index_cache
from tanet.data.decode import open_video
from tanet.data.sampling import segment_indices
from tanet.testing.media import real_world_shapes, sequential_frames

SHAPES = ["divx_b1", "divx_b2", "divx_b3", "divx_b2_closed", "divx_b3_closed",
          "divx_b2_no_nvop", "divx_b3_closed_no_nvop", "divx_b2_two_keys", "xvid_packed_b2",
          "xvid_b2", "xvid_b3_closed", "ffmpeg_avi_b2", "h264_mp4", "h264_mp4_open_gop",
          "h264_mp4_pts_dts", "h264_avi"]
TOTAL_EXAMPLES = int(os.environ.get("TANET_FUZZ_EXAMPLES", "100"))
PER_SHAPE = max(4, TOTAL_EXAMPLES // len(SHAPES))


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    files = real_world_shapes(tmp_path_factory.mktemp("shapes"), _content(60, 48, 64))
    return {name: (files[name], sequential_frames(files[name])) for name in SHAPES}


def _one_read(n: int):
    """One ``get_frames`` call's indices."""
    any_index = st.integers(0, n - 1)
    return st.one_of(
        st.lists(any_index, min_size=1, max_size=12),  # unsorted, repeats
        st.lists(any_index, min_size=1, max_size=12, unique=True).map(sorted),
        st.integers(1, 16).map(lambda t: segment_indices(n, t, train=False).tolist()),
        st.integers(1, 8).map(lambda t: list(range(n - t, n))),  # the end of the file
        st.tuples(any_index, st.integers(1, 8)).map(  # a run backwards
            lambda a: list(range(a[0], max(-1, a[0] - a[1]), -1))),
    )


@pytest.mark.parametrize("name", SHAPES)
@settings(max_examples=PER_SHAPE, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_fuzz_reads_equal_the_sequential_decode(shapes, name, data):
    path, ref = shapes[name]
    n = len(ref)
    reads = data.draw(st.lists(st.tuples(_one_read(n), st.booleans()), min_size=1, max_size=5),
                      label="reads (indices, fresh reader)")
    if data.draw(st.booleans(), label="index from disk"):
        index_cache.clear_memory_cache()
    r = open_video(path)
    try:
        assert r.info.num_frames == n
        for idx, fresh in reads:
            if fresh:
                r.close()
                r = open_video(path)
            got = r.get_frames(idx)
            diff = np.abs(got.astype(int) - ref[idx]).max(axis=(1, 2, 3))
            assert (diff <= 1).all(), (name, idx, [i for i, d in zip(idx, diff) if d > 1])
            assert not [w for w in r.warnings if "stands in" in w], r.warnings
    finally:
        r.close()
