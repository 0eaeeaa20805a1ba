"""Decoding: frame-exact reads against a reference full decode, on real files written here."""
from __future__ import annotations

import struct

import av
import numpy as np
import pytest

from tanet.data.decode import FrameFolder, VideoDecodeError, open_video, read_frames
from tanet.data.encode import write_video
from tanet.testing.media import sequential_frames, write_audio_only


def _content(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Frames that differ from each other (a moving block on a smooth, changing background)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        base = np.stack([(xx * 3 + i * 5) % 256, (yy * 4 + i * 3) % 256,
                         np.full_like(xx, (i * 17) % 256)], -1)
        x0 = (i * 3) % max(w - 8, 1)
        base[2:10, x0:x0 + 8] = rng.integers(0, 256, 3)
        out[i] = base
    return out


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(1)
    gaps = rng.integers(1500, 9000, 40)  # 90 kHz ticks: 10 to 60 fps, irregular
    v = {
        "gop": write_video(d / "gop.mp4", _content(50, 48, 64), gop=8),
        "single_key": write_video(d / "single.mp4", _content(50, 48, 64), gop=10_000),
        "bframes": write_video(d / "bframes.mp4", _content(50, 48, 64), gop=16, bframes=3,
                               crf=20),
        "odd": write_video(d / "odd.mp4", _content(30, 17, 33)),
        "vfr": write_video(d / "vfr.mp4", _content(40, 48, 64), pts=np.cumsum(gaps)),
        "webm": write_video(d / "v.webm", _content(30, 48, 64), codec="libvpx-vp9", gop=10),
        "avi": write_video(d / "v.avi", _content(30, 48, 64), codec="mpeg4", gop=10),
        "mkv": write_video(d / "v.mkv", _content(30, 48, 64), gop=10),
    }
    return v


@pytest.mark.parametrize("name", ["gop", "single_key", "bframes", "odd", "vfr", "webm", "avi",
                                  "mkv"])
def test_frames_equal_reference_decode(videos, name):
    ref = sequential_frames(videos[name])
    rng = np.random.default_rng(0)
    with open_video(videos[name]) as r:
        assert r.info.num_frames == len(ref)
        assert (r.info.height, r.info.width) == ref.shape[1:3]
        for idx in (np.arange(len(ref)), rng.integers(0, len(ref), 12),
                    np.array([len(ref) - 1, 0, 3, 3, len(ref) // 2, 1])):
            got = r.get_frames(idx)  # unsorted, repeated, backwards: requested order
            assert got.dtype == np.uint8 and got.shape == (len(idx),) + ref.shape[1:]
            np.testing.assert_array_equal(got, ref[idx])


def test_bframes_fixture_really_has_bframes(videos):
    with av.open(str(videos["bframes"])) as c:
        types = {int(f.pict_type) for f in c.decode(video=0)}
    assert 3 in types  # AV_PICTURE_TYPE_B


def test_odd_size_uses_444_and_keeps_size(videos):
    with av.open(str(videos["odd"])) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv444p"
    assert read_frames(videos["odd"], [0, 29]).shape == (2, 17, 33, 3)


def test_odd_size_420_is_refused_by_x264(tmp_path):
    with pytest.raises((av.FFmpegError, ValueError)):
        write_video(tmp_path / "x.mp4", _content(4, 17, 33), pix_fmt="yuv420p")


def test_variable_frame_rate_info(videos):
    with open_video(videos["vfr"]) as r:
        assert r.info.num_frames == 40
        assert 10 < r.info.fps < 60
        assert r.info.duration > 0


def test_rotation_metadata_is_applied(tmp_path):
    x = _content(12, 48, 64)
    p = write_video(tmp_path / "rot.mp4", x, rotation=90)
    ref = sequential_frames(p)  # stored (unrotated) frames
    with open_video(p) as r:
        assert r.info.rotation == 90 and (r.info.height, r.info.width) == (64, 48)
        got = r.get_frames([0, 5, 11])
    np.testing.assert_array_equal(got, np.rot90(ref[[0, 5, 11]], 1, axes=(1, 2)))


def test_wrong_header_frame_count_is_ignored(tmp_path):
    """An AVI whose header claims 999 frames: the count comes from the stream itself."""
    p = write_video(tmp_path / "wrong.avi", _content(20, 48, 64), codec="mpeg4")
    data = bytearray(p.read_bytes())
    i = data.index(b"strh") + 8 + 32  # AVISTREAMHEADER.dwLength
    data[i:i + 4] = struct.pack("<I", 999)
    avih = data.index(b"avih") + 8 + 16  # MainAVIHeader.dwTotalFrames
    data[avih:avih + 4] = struct.pack("<I", 999)
    p.write_bytes(bytes(data))
    with av.open(str(p)) as c:
        assert c.streams.video[0].frames == 999  # the container really says 999
    with open_video(p) as r:
        assert r.info.num_frames == 20
        np.testing.assert_array_equal(r.get_frames([19]), sequential_frames(p)[[19]])


def test_missing_header_frame_count(videos):
    with av.open(str(videos["webm"])) as c:
        assert c.streams.video[0].frames == 0  # WebM stores no frame count
    with open_video(videos["webm"]) as r:
        assert r.info.num_frames == 30


def test_short_side_resize(videos):
    ref = sequential_frames(videos["gop"])
    with open_video(videos["gop"], short_side=24) as r:
        got = r.get_frames([0, 10, 49])
    assert got.shape == (3, 24, 32, 3)
    small = ref[[0, 10, 49]].reshape(3, 24, 2, 32, 2, 3).mean((2, 4))
    assert np.abs(got.astype(float) - small).mean() < 6


def test_index_out_of_range(videos):
    with open_video(videos["gop"]) as r:
        with pytest.raises(IndexError, match="gop.mp4"):
            r.get_frames([50])
        with pytest.raises(IndexError):
            r.get_frames([-1])


def test_frame_folder(tmp_path):
    from PIL import Image

    x = _content(7, 40, 56)
    d = tmp_path / "clip"
    d.mkdir()
    for i, f in enumerate(x):
        Image.fromarray(f).save(d / f"img_{i + 1:05d}.png")  # 1-based, as the authors' tools
    with open_video(d, template="img_{:05d}.png") as r:
        assert isinstance(r, FrameFolder) and r.info.num_frames == 7
        np.testing.assert_array_equal(r.get_frames([6, 0, 0, 3]), x[[6, 0, 0, 3]])
    assert FrameFolder(d, "img_{:05d}.png", short_side=20).get_frames([0]).shape == (1, 20, 28, 3)
    with pytest.raises(VideoDecodeError, match="no frames named"):
        FrameFolder(d)  # .jpg template: nothing matches


# ------------------------------------------------------------------------------ bad input
def _assert_frames_or_named_error(path, indices=(0, 1, 2)):
    """Either frames of the right shape, or a VideoDecodeError naming the file and a cause."""
    try:
        with open_video(path) as r:
            n = r.info.num_frames
            idx = [min(i, n - 1) for i in indices]
            got = r.get_frames(idx)
        assert got.dtype == np.uint8 and got.shape[0] == len(idx) and got.shape[-1] == 3
        return "frames"
    except VideoDecodeError as e:
        assert str(e).startswith(str(path) + ": ") and len(e.cause) > 5
        return "error"


def test_missing_file(tmp_path):
    p = tmp_path / "nope.mp4"
    with pytest.raises(VideoDecodeError, match=r"nope\.mp4: file not found"):
        open_video(p)


def test_zero_bytes(tmp_path):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    with pytest.raises(VideoDecodeError, match=r"empty\.mp4: empty file"):
        open_video(p)


def test_text_file_named_mp4(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoDecodeError, match=r"notes\.mp4: cannot open"):
        open_video(p)


def test_audio_only(tmp_path):
    p = write_audio_only(tmp_path / "audio.mp4")
    with pytest.raises(VideoDecodeError, match=r"audio\.mp4: no video stream \(streams: audio\)"):
        open_video(p)


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
@pytest.mark.parametrize("frac", [0.02, 0.3, 0.6, 0.95])
def test_truncated(videos, tmp_path, ext, frac):
    src = videos["gop" if ext == "mp4" else "mkv"].read_bytes()
    p = tmp_path / f"cut.{ext}"
    p.write_bytes(src[: int(len(src) * frac)])
    outcome = _assert_frames_or_named_error(p, (0, 5, 29))
    if ext == "mp4":
        assert outcome == "error"  # the index (moov) is written last: nothing to play
    elif frac >= 0.3:
        assert outcome == "frames"  # a streamable container plays up to the cut


def test_corrupt_packets_in_the_middle(videos, tmp_path):
    data = bytearray(videos["mkv"].read_bytes())
    rng = np.random.default_rng(0)
    mid = len(data) // 2
    data[mid:mid + 600] = rng.integers(0, 256, 600, dtype=np.uint8).tobytes()
    p = tmp_path / "corrupt.mkv"
    p.write_bytes(bytes(data))
    assert _assert_frames_or_named_error(p, range(0, 30, 3)) == "frames"


def test_fewer_frames_than_segments(tmp_path):
    from tanet.data.sampling import segment_indices

    p = write_video(tmp_path / "three.mp4", _content(3, 48, 64))
    with open_video(p) as r:
        idx = segment_indices(r.info.num_frames, 8, train=True)
        assert r.get_frames(idx).shape == (8, 48, 64, 3)
