"""Frame-exact on the files real datasets hold: lying timestamps, packed B-frames, truncation,
damage. Each case is made here with PyAV (tanet.data.variants) and checked against a plain
sequential decode: the count, and every frame for random index sets read in random orders."""
from __future__ import annotations

import os

import av
import numpy as np
import pytest
from test_data_decode import _content

from tanet.data import frame_index, index_cache
from tanet.data import variants as V
from tanet.data.decode import FrameIndexError, VideoDecodeError, open_video
from tanet.data.encode import write_video
from tanet.data.sampling import segment_indices
from tanet.testing.media import real_world_shapes, sequential_frames

N = 60  # frames of the clean sources (more than frame_index.SMALL: the fast route is open)
PACKED = ("divx_b2", "divx_b3", "divx_b2_closed", "divx_b2_no_nvop", "divx_b3_closed_no_nvop",
          "divx_b2_two_keys", "xvid_packed_b2")  # each read wrong by the reader of 0.x


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("realworld")
    x = _content(N, 48, 64)
    mp4 = write_video(d / "h264_b.mp4", x, gop=12, bframes=3, crf=20)
    avi_b = write_video(d / "mpeg4_b2.avi", x, codec="mpeg4", gop=12, bframes=2)
    avi_b1 = write_video(d / "mpeg4_b1.avi", x, codec="mpeg4", gop=12, bframes=1)
    shapes = real_world_shapes(d / "shapes", x)
    return {
        **{k: shapes[k] for k in PACKED + ("xvid_b2", "xvid_b3_closed")},
        "mp4": mp4,
        "avi_bframes": avi_b,  # FFmpeg's own AVI muxing of MPEG-4 with B-frames
        "avi_packed": V.pack_bframes(avi_b1, d / "packed.avi"),  # DivX / Xvid style
        "mp4_pts_dts": V.pts_from_dts(mp4, d / "pts_dts.mp4"),  # composition times dropped
        "avi_h264": write_video(d / "h264_b.avi", x, gop=12, bframes=3, crf=20),
        "avi_truncated": V.truncate(avi_b, d / "cut.avi", 0.6),
        "mp4_truncated": V.truncate(V.faststart(mp4, d / "fs.mp4"), d / "cut.mp4", 0.6),
        "mp4_last_packet": V.break_packet(mp4, d / "last.mp4"),
        "h264_raw": write_video(d / "raw.h264", x, gop=12, bframes=3, crf=20),  # no timestamps
    }


def _check_reads(path, ref, seed: int) -> None:
    """Random index sets (repeats, any order) in a random order of calls on one reader."""
    rng = np.random.default_rng(seed)
    with open_video(path) as r:
        assert r.info.num_frames == len(ref)
        sets = [rng.integers(0, len(ref), int(rng.integers(1, 12))) for _ in range(6)]
        sets += [np.arange(len(ref)), np.arange(len(ref))[::-1][:7]]
        for k in rng.permutation(len(sets)):
            got = r.get_frames(sets[k])
            diff = np.abs(got.astype(int) - ref[sets[k]]).max()
            assert diff <= 1, (path.name, sets[k], diff)


@pytest.mark.parametrize("name", ["mp4", "avi_bframes", "avi_packed", "mp4_pts_dts", "avi_h264",
                                  "avi_truncated", "mp4_truncated", "mp4_last_packet",
                                  "h264_raw", *PACKED, "xvid_b2", "xvid_b3_closed"])
def test_count_and_frames_equal_a_sequential_decode(files, name):
    ref = sequential_frames(files[name])
    _check_reads(files[name], ref, seed=len(name))
    index_cache.clear_memory_cache()  # again from the disk cache (or a rebuild): same frames
    _check_reads(files[name], ref, seed=len(name) + 1)


@pytest.mark.parametrize("name", PACKED)
def test_training_reads_on_packed_files(files, name):
    """What training reads (segment centres, 12 random frames, the last frame), each set on a
    fresh reader: every frame is the sequential decode's and none is a stand-in (issue 19: a
    DivX 5 AVI with I B B P lost every B-frame reached after a seek)."""
    ref = sequential_frames(files[name])
    n = len(ref)
    rng = np.random.default_rng(19)
    sets = [segment_indices(n, 8, train=False), rng.integers(0, n, 12), [n - 1],
            segment_indices(n, 8, train=True, rng=rng)]
    for idx in sets:
        index_cache.clear_memory_cache()
        with open_video(files[name]) as r:
            got = r.get_frames(idx)
            assert not r.warnings, (name, r.warnings)
        assert np.abs(got.astype(int) - ref[idx]).max() <= 1, (name, idx)


def _chunks(path) -> list[tuple[str, int, bool, bytes]]:
    """(VOP types, size, keyframe, data) of every non-empty packet, in file order."""
    with av.open(str(path)) as c:
        return [(V.vop_types(bytes(p)), p.size, p.is_keyframe, bytes(p))
                for p in c.demux(video=0) if p.size]


@pytest.mark.parametrize("name, bframes, open_gop, nvop",
                         [("divx_b2", 2, True, True), ("divx_b3", 3, True, True),
                          ("divx_b2_closed", 2, False, True), ("divx_b2_no_nvop", 2, True, False),
                          ("divx_b3_closed_no_nvop", 3, False, False)])
def test_packed_shapes_are_what_they_claim(files, name, bframes, open_gop, nvop):
    """[P B1] [B2] .. [Bm] [N-VOP]: runs of ``bframes`` B-frames, the first one in the
    reference's chunk; open GOPs pack a B-frame into the keyframe's chunk."""
    chunks = _chunks(files[name])
    types = [t for t, _, _, _ in chunks]
    assert b"DivX503b1393p" in chunks[0][3] and types[0] == "I"
    runs = [j for j, t in enumerate(types) if len(t) == 2]
    assert runs and all(types[j][1] == "B" for j in runs)
    j = runs[1]
    assert types[j + 1:j + bframes] == ["B"] * (bframes - 1)
    tiny = [size for t, size, _, _ in chunks if size <= 19]
    assert (types[j + bframes] == "P" and chunks[j + bframes][1] <= 19) == nvop
    assert bool(tiny) == nvop
    assert any(t == "IB" and key for t, _, key, _ in chunks) == open_gop


def test_other_shapes_are_what_they_claim(files):
    two = _chunks(files["divx_b2_two_keys"])
    assert [(t, k) for t, _, k, _ in two[:3]] == [("I", True), ("I", True), ("PB", False)]
    assert b"XviD" in _chunks(files["xvid_packed_b2"])[0][3]
    unpacked = _chunks(files["xvid_b2"])
    assert b"XviD" in unpacked[0][3] and b"DivX" not in unpacked[0][3]
    assert all(len(t) == 1 for t, _, _, _ in unpacked) and "BB" in "".join(
        t for t, _, _, _ in unpacked)


def _pts_sorted_frames(path) -> np.ndarray:
    """What sorting the frames by their timestamps gives (the old promise)."""
    with av.open(str(path)) as c:
        fr = sorted(c.decode(video=0), key=lambda f: f.pts)
        return np.stack([f.to_ndarray(format="rgb24") for f in fr])


@pytest.mark.parametrize("name", ["avi_packed", "mp4_pts_dts", "avi_h264"])
def test_the_lying_files_really_lie(files, name):
    """These files would defeat a pts-sorted index: the cases are not vacuous."""
    ref, naive = sequential_frames(files[name]), _pts_sorted_frames(files[name])
    with av.open(str(files[name])) as c:
        packets = [p for p in c.demux(video=0) if p.size]
    n = min(len(ref), len(naive))
    assert len(packets) != len(ref) or np.abs(naive[:n].astype(int) - ref[:n]).max() > 32
    if name == "avi_packed":
        assert any(bytes(p).count(b"\x00\x00\x01\xb6") == 2 for p in packets)
        assert b"DivX503b1393p" in bytes(packets[0])
    if name == "mp4_pts_dts":
        assert all(p.pts == p.dts for p in packets) and len(packets) == N > len(ref)
    with open_video(files[name]) as r:
        assert r.info.exact and r.warnings == []


def test_frames_without_timestamps_are_counted_from_the_start(files):
    with av.open(str(files["h264_raw"])) as c:
        assert all(p.pts is None for p in c.demux(video=0))
    with open_video(files["h264_raw"]) as r:
        assert r.info.exact and not r._index.seekable and r.info.num_frames == N


def test_clean_files_keep_the_fast_index(files):
    for name in ("mp4", "avi_bframes"):
        with open_video(files[name]) as r:
            assert not r.info.exact and r.warnings == [], name


def test_truncation_and_damage_are_reported(files):
    with open_video(files["avi_truncated"]) as r:
        n = r.info.num_frames
        assert r.warnings == [f"truncated: {n} of {N} frames"] and 20 < n < N
    with open_video(files["mp4_truncated"]) as r:
        n = r.info.num_frames
        assert r.warnings == [f"truncated: {n} of {N} frames"] and 20 < n < N
    with open_video(files["mp4_last_packet"]) as r:
        assert r.info.num_frames == N - 1
        assert len(r.warnings) == 1 and r.warnings[0].startswith("corrupt data at frame ")


def test_cut_mp4_without_index_names_the_cause(files, tmp_path):
    p = V.truncate(files["mp4"], tmp_path / "cut_plain.mp4", 0.6)
    with pytest.raises(VideoDecodeError, match=r"cut_plain\.mp4: .*moov box\) is missing"):
        open_video(p)


def test_index_past_the_end_names_file_index_and_count(files):
    with open_video(files["mp4_pts_dts"]) as r:
        n = r.info.num_frames
        assert n == N - 2  # two packets precede the edit list's start: no frame
        with pytest.raises(FrameIndexError, match=rf"pts_dts\.mp4: frame index {n} is past the "
                                                  rf"end: the video has {n} frames"):
            r.get_frames([0, n])
        with pytest.raises(IndexError):  # also an IndexError (and a VideoDecodeError)
            r.get_frames([n + 5])


def test_hidden_damage_switches_the_file_to_the_exact_index(tmp_path):
    """A broken packet in the middle of a long GOP passes the open-time probes; the first read
    that decodes through it switches the file to the exact index (and records a warning)."""
    x = _content(120, 48, 64)
    src = write_video(tmp_path / "long.mp4", x, gop=40, bframes=2, crf=20)
    p = V.break_packet(src, tmp_path / "mid.mp4", 50)
    ref = sequential_frames(p)
    assert len(ref) == 119
    with open_video(p) as r:
        assert (r.info.num_frames, r.info.exact, r.warnings) == (120, False, [])
        got = r.get_frames([45, 60, 100])  # 45 -> 60 decodes through packet 50
        assert r.info.num_frames == 119 and r.info.exact
        assert r.warnings and r.warnings[0].startswith("corrupt data at frame 4")
        assert np.abs(got.astype(int) - ref[[45, 60, 100]]).max() <= 1
        with pytest.raises(FrameIndexError, match="has 119 frames"):
            r.get_frames([119])
    index_cache.clear_memory_cache()
    with open_video(p) as r:  # from the disk cache
        assert r.info.num_frames == 119 and r.info.exact and r.warnings
    _check_reads(p, ref, seed=3)


def test_zero_filled_hole_is_damage(files, tmp_path):
    data = bytearray(files["mp4"].read_bytes())
    with av.open(str(files["mp4"])) as c:
        pos = [pk.pos for pk in c.demux(video=0) if pk.size][30]
    data[pos:pos + 300] = bytes(300)
    p = tmp_path / "hole.mp4"
    p.write_bytes(bytes(data))
    with open_video(p) as r:
        assert r.info.exact and any(w.startswith("corrupt data at frame") for w in r.warnings)
    _check_reads(p, sequential_frames(p), seed=4)


def test_exact_index_is_cached_on_disk_by_path_size_and_mtime(files, monkeypatch):
    p = files["avi_packed"]
    open_video(p).close()
    cached = list((index_cache.cache_dir() / "video-index").rglob("*.json"))
    assert cached and str(index_cache.cache_dir()) == os.environ["TANET_CACHE_DIR"]
    index_cache.clear_memory_cache()

    def no_build(*a, **k):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(frame_index, "build", no_build)
    with open_video(p) as r:  # read back: no decode pass
        assert r.info.exact and r.info.num_frames == N
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched: stale
    with pytest.raises(AssertionError, match="rebuilt"):
        open_video(p)


def test_exact_on_request(files):
    ref = sequential_frames(files["mp4"])
    with open_video(files["mp4"], exact=True) as r:
        assert r.info.exact and r.info.num_frames == N
        assert np.abs(r.get_frames([59, 0, 31]).astype(int) - ref[[59, 0, 31]]).max() <= 1
