"""Real-world variants of video files, written with PyAV (tests and benchmarks).

Files made by capture tools, DivX/Xvid-era software and interrupted downloads break rules that
files written by :func:`~tanet.data.encode.write_video` keep. Each function here turns a clean
file into one such shape, by remuxing its packets (no re-encoding):

* :func:`pack_bframes`: MPEG-4 Part 2 in AVI with DivX-style *packed* B-frames (a B-frame rides
  in the chunk of the reference frame before it, followed by a small "not coded" placeholder
  chunk; the DivX user data ends in ``p``). The chunks' timestamps follow decode order.
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

__all__ = ["pack_bframes", "pts_from_dts", "truncate", "break_packet", "faststart"]

_VOP = b"\x00\x00\x01\xb6"  # MPEG-4 Part 2 video object plane start code
_DIVX_PACKED = b"\x00\x00\x01\xb2DivX503b1393p"  # user data as DivX 5 / Xvid write it; p: packed


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


def pack_bframes(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """An MPEG-4 Part 2 AVI with one B-frame between references (``write_video(...,
    codec="mpeg4", bframes=1)``) rewritten as DivX packs it: ``[I] [P B] [N-VOP] [P B] ...``,
    one chunk per frame time, DivX user data with the packed flag in every keyframe."""
    src = Path(src)
    pk = _packets(src)
    if not pk or _VOP not in pk[0][0]:
        raise ValueError(f"{src}: not an MPEG-4 Part 2 stream")
    nvop = _not_coded_vop(_time_increment_bits(pk[0][0]))
    chunks: list[bytes] = []
    keys: list[bool] = []
    i = 0
    while i < len(pk):
        data, key, pts, _ = pk[i]
        if key:
            at = data.index(_VOP)
            data = data[:at] + _DIVX_PACKED + data[at:]
        nxt = pk[i + 1] if i + 1 < len(pk) else None
        if nxt is not None and pts is not None and nxt[2] is not None and nxt[2] < pts:
            after = pk[i + 2] if i + 2 < len(pk) else None
            if after is not None and after[2] is not None and after[2] < pts:
                raise ValueError(f"{src}: two B-frames in a row; encode with bframes=1")
            chunks += [data + nxt[0], nvop]
            keys += [key, False]
            i += 2
        else:
            chunks.append(data)
            keys.append(key)
            i += 1
    return _write(src, dst, [(d, k, n, n) for n, (d, k) in enumerate(zip(chunks, keys))])


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
