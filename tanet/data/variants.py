"""Real-world variants of video files, written with PyAV (tests and benchmarks).

Files made by capture tools, DivX/Xvid-era software and interrupted downloads break rules that
files written by :func:`~tanet.data.encode.write_video` keep. :func:`mpeg4_source` encodes the
MPEG-4 Part 2 streams those tools wrote (B-frames, open or closed GOPs, extra keyframes at the
start); each other function turns a clean file into one such shape by remuxing its packets (no
re-encoding):

* :func:`pack_bframes`: MPEG-4 Part 2 in AVI with DivX-style *packed* B-frames, as DivX 5 and
  Xvid write them (and as FFmpeg's ``mpeg4_unpack_bframes`` filter and its decoder's
  ``divx_packed`` path undo them): every AVI chunk is one frame time, so a reference frame
  followed (in decode order) by B-frames B1..Bm is stored as ``[P B1] [B2] ... [Bm] [N-VOP]``:
  the first B-frame rides in the reference's chunk, each later one moves up a chunk, and a tiny
  "not coded" placeholder chunk (N-VOP) closes the run; the DivX user data ends in ``p``.
  ``placeholders=False`` leaves the N-VOPs out (then FFmpeg's decoder loses frames: the ground
  truth is what it emits). The chunks' timestamps follow decode order.
* :func:`xvid_unpacked`: Xvid's user data, one chunk per frame in decode order (no packing).
* :func:`pts_from_dts`: every packet's pts rewritten to its dts (muxers that drop composition
  times): H.264 with B-frames then "presents" frames in decode order.
* :func:`truncate`: the first bytes of a file (an interrupted download).
* :func:`break_packet`: one packet (by default the last, in decode order) replaced by noise.
* :func:`faststart`: an MP4 with its index (moov) in front, so a truncated copy still plays.
"""
from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np

__all__ = ["mpeg4_source", "pack_bframes", "xvid_unpacked", "vop_types", "pts_from_dts",
           "truncate", "break_packet", "faststart"]

_VOP = b"\x00\x00\x01\xb6"  # MPEG-4 Part 2 video object plane start code
_DIVX_PACKED = b"\x00\x00\x01\xb2DivX503b1393p"  # user data as DivX 5 / Xvid write it; p: packed
_XVID = b"\x00\x00\x01\xb2XviD0064"  # Xvid's own user data (its build number)


class _Bits:
    """MSB-first bit reader over bytes."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def read(self, n: int) -> int:
        v = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]
            v = (v << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v


def _time_increment_bits(data: bytes) -> int:
    """``vop_time_increment`` width from the first video object layer header in ``data``."""
    at = next((i for i in range(len(data) - 4) if data[i:i + 3] == b"\x00\x00\x01"
               and 0x20 <= data[i + 3] <= 0x2F), -1)
    if at < 0:
        raise ValueError("no MPEG-4 video object layer header in the first keyframe")
    b = _Bits(data[at + 4:])
    b.read(1 + 8)  # random_accessible_vol, video_object_type_indication
    if b.read(1):  # is_object_layer_identifier
        b.read(4 + 3)
    if b.read(4) == 15:  # aspect_ratio_info: extended PAR
        b.read(16)
    if b.read(1):  # vol_control_parameters
        b.read(2 + 1)
        if b.read(1):  # vbv_parameters
            b.read(79)
    b.read(2 + 1)  # video_object_layer_shape (rectangular), marker
    resolution = b.read(16)
    return max(1, (resolution - 1).bit_length())


def _not_coded_vop(time_bits: int) -> bytes:
    """A P-VOP header with ``vop_coded = 0`` (DivX's placeholder chunk), byte-aligned."""
    bits = "01" + "0" + "1" + "0" * time_bits + "1" + "0"  # type P, time base, marker, coded 0
    bits += "0" + "1" * ((8 - (len(bits) + 1) % 8) % 8)  # stuffing: 0 then 1s
    return _VOP + int(bits, 2).to_bytes(len(bits) // 8, "big")


def _packets(src: Path) -> list[tuple[bytes, bool, int | None, int | None]]:
    """(data, keyframe, pts, dts) of every non-empty video packet in file (decode) order."""
    with av.open(str(src)) as c:
        s = c.streams.video[0]
        return [(bytes(p), p.is_keyframe, p.pts, p.dts) for p in c.demux(s) if p.size]


def _write(src: Path, dst: Path, packets, *, options: dict | None = None) -> Path:
    """Mux ``packets`` [(data, keyframe, pts, dts)] into ``dst`` with ``src``'s stream setup."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as i, av.open(str(dst), "w", options=options or {}) as o:
        tpl = i.streams.video[0]
        s = o.add_stream_from_template(tpl)
        for data, key, pts, dts in packets:
            p = av.Packet(data)
            p.stream, p.time_base = s, tpl.time_base
            p.pts, p.dts = pts, dts
            p.is_keyframe = key
            o.mux(p)
    return dst


def vop_types(data: bytes) -> str:
    """The coding types of the video object planes in one packet, in order (``I``, ``P``,
    ``B`` or ``S``): ``"PB"`` for a DivX packed chunk."""
    out, at = [], data.find(_VOP)
    while 0 <= at < len(data) - 4:
        out.append("IPBS"[data[at + 4] >> 6])
        at = data.find(_VOP, at + 4)
    return "".join(out)


def mpeg4_source(path: str | os.PathLike, frames: np.ndarray, *, bframes: int = 2,
                 gop: int = 12, closed_gop: bool = False, leading_keyframes: int = 1,
                 fps: float = 25, qscale: int | None = None) -> Path:
    """An MPEG-4 Part 2 AVI (FFmpeg's encoder) with up to ``bframes`` B-frames between
    references. Open GOPs by default: the B-frames after a keyframe (in decode order) refer to
    the GOP before it, as DivX and Xvid encode; ``closed_gop`` keeps each GOP to itself.
    ``leading_keyframes`` > 1: that many keyframes in a row at the start."""
    from tanet.data.encode import write_video

    opts = {"flags": "+cgop", "sc_threshold": "1000000000"} if closed_gop else {}
    return write_video(path, frames, fps=fps, codec="mpeg4", gop=gop, bframes=bframes,
                       crf=qscale, options=opts, keyframes=range(leading_keyframes))


def _tagged(data: bytes, tag: bytes) -> bytes:
    """``data`` with user data ``tag`` before its first video object plane."""
    at = data.index(_VOP)
    return data[:at] + tag + data[at:]


def _mpeg4_packets(src: Path) -> list[tuple[bytes, bool, int | None, int | None]]:
    pk = _packets(src)
    if not pk or _VOP not in pk[0][0]:
        raise ValueError(f"{src}: not an MPEG-4 Part 2 stream")
    return pk


def pack_bframes(src: str | os.PathLike, dst: str | os.PathLike, *,
                 placeholders: bool = True, xvid: bool = False) -> Path:
    """An MPEG-4 Part 2 AVI with B-frames (any number in a row; :func:`mpeg4_source`)
    rewritten as DivX 5 packs it: ``[I] [P B1] [B2] [N-VOP] [P B1] ...``, DivX user data with
    the packed flag in every keyframe (``xvid``: Xvid's user data too, as Xvid writes it).
    ``placeholders=False``: no N-VOP chunks (a file whose decode loses frames)."""
    src = Path(src)
    pk = _mpeg4_packets(src)
    nvop = _not_coded_vop(_time_increment_bits(pk[0][0]))
    tag = _DIVX_PACKED + (_XVID if xvid else b"")
    chunks: list[tuple[bytes, bool]] = []
    i = 0
    while i < len(pk):
        data, key = pk[i][0], pk[i][1]
        if key:
            data = _tagged(data, tag)
        j = i + 1
        while j < len(pk) and vop_types(pk[j][0]) == "B":
            j += 1
        run = [p[0] for p in pk[i + 1:j]]  # the B-frames that follow this reference
        if not run:
            chunks.append((data, key))
        else:
            chunks.append((data + run[0], key))
            chunks += [(b, False) for b in run[1:]]
            if placeholders:
                chunks.append((nvop, False))
        i = j
    return _write(src, dst, [(d, k, n, n) for n, (d, k) in enumerate(chunks)])


def xvid_unpacked(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """An MPEG-4 Part 2 AVI remuxed as Xvid writes it without packing: Xvid's user data in
    every keyframe, one chunk per frame in decode order, timestamps in decode order."""
    src = Path(src)
    pk = _mpeg4_packets(src)
    return _write(src, dst, [(_tagged(d, _XVID) if k else d, k, n, n)
                             for n, (d, k, _, _) in enumerate(pk)])


def pts_from_dts(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """``src`` remuxed with every packet's pts set to its dts (composition times dropped)."""
    pk = _packets(Path(src))
    return _write(Path(src), dst, [(d, k, dts, dts) for d, k, _, dts in pk if dts is not None])


def faststart(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """An MP4 remuxed with its index (moov box) before the media data."""
    pk = _packets(Path(src))
    return _write(Path(src), dst, [p for p in pk if p[3] is not None],
                  options={"movflags": "faststart"})


def break_packet(src: str | os.PathLike, dst: str | os.PathLike, which: int = -1, *,
                 seed: int = 0) -> Path:
    """``src`` remuxed with packet number ``which`` (decode order; -1: the last) replaced by
    random bytes of the same size: the container is intact, the decoder rejects that packet."""
    pk = _packets(Path(src))
    pk = [p for p in pk if p[3] is not None]
    data, key, pts, dts = pk[which]
    noise = np.random.default_rng(seed).integers(0, 256, len(data), dtype=np.uint8).tobytes()
    pk[which] = (noise, key, pts, dts)
    return _write(Path(src), dst, pk)


def truncate(src: str | os.PathLike, dst: str | os.PathLike, keep: float | int) -> Path:
    """The first ``keep`` bytes of ``src`` (a float in (0, 1): that fraction of its size)."""
    data = Path(src).read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else int(keep)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    Path(dst).write_bytes(data[:n])
    return Path(dst)
