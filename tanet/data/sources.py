"""Which videos a source names: the one resolver behind ``tanet train`` / ``test``, ``predict``,
``extract``, ``export --int8`` and ``check``.

A *source* is one of:

* a video file: a name ending in a video extension (:data:`VIDEO_EXTENSIONS`), or a file that
  is not text (any container FFmpeg reads);
* a folder: UCF101 / HMDB51 split files in it → that format (``split``, ``subset``); a
  class-per-folder tree (no video of its own, every video directly inside a class folder, or
  frame folders there) → labelled by folder, format ``tree``; any other folder → every video
  under it, recursively, without labels, format ``folder``;
* a list file (a ``.txt`` / ``.csv`` / ``.json`` / ``.lst`` / ``.list`` name, or any text
  file): an annotation format of :mod:`tanet.data.annotations` (detected, or ``format``), else a
  plain list of paths one a line, format ``paths`` (``#`` comments and blank lines skipped);
* ``-``: such a list read from standard input.

**The rule for paths written in a list** (every command, every format):

* a URL (``scheme://...``) is kept as written, and so is an absolute path;
* a relative path is joined to ``root`` when given (``data.root``, ``--root``), else to the
  list's own folder (standard input: the working directory).

No other folder is tried: a list never names different files for different commands. The
videos of a folder are where the walk finds them (``root`` applies to lists only), and the source
itself is relative to the working directory.

**Existence**: when none of the first :data:`EXISTENCE_SAMPLE` local videos of a list exists,
the paths start from the wrong folder; the resolver raises ``FileNotFoundError`` naming the list,
the line, the path tried and the fix (``data.root`` / ``--root``). Any other missing video is
left to the decoder, where it is one video's error: skipped and listed in training
(``data.on_error``), an error row in ``tanet check``, an error line in ``tanet predict``, a NaN
row in ``tanet extract``.
"""
from __future__ import annotations

import codecs
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence, TextIO

from tanet import remote
from tanet.remote import is_url  # scheme://... (http, https, s3, gs, rtsp): never joined
from tanet.data.annotations import (FORMATS, VIDEO_EXTENSIONS, AnnotationError, Record,
                                    read_annotations, read_class_names, read_class_tree,
                                    sniff_format)
from tanet.data.multilabel import (MULTILABEL_FORMATS, read_multilabel_annotations,
                                   sniff_multilabel)

__all__ = ["Video", "Source", "resolve_videos", "resolve_path", "is_url", "find_videos",
           "LIST_SUFFIXES", "SOURCE_FORMATS", "EXISTENCE_SAMPLE", "STDIN", "ROOT_HINT"]

LIST_SUFFIXES = (".txt", ".csv", ".json", ".lst", ".list")  # always read as lists of videos
SOURCE_FORMATS = FORMATS + MULTILABEL_FORMATS + ("paths", "folder")  # what ``format=`` may force
EXISTENCE_SAMPLE = 8  # a list is refused when none of its first 8 local videos exists
STDIN = "-"
ROOT_HINT = ("give the folder they start from as data.root (train, test) or --root (predict, "
             "extract, check, export --int8)")
_STDIN_READ: list = [None, None]  # (the stream read, its text): "-" twice reads it once


@dataclass(frozen=True)
class Video:
    """One video of a source: ``path`` to open (the listed path after the rule), ``listed`` as
    the source names it (a list: as written; a folder: as found), its label (None without),
    frame count (frame lists) and the list's line naming it (when known); ``labels``: its
    classes in a multi-label list (``label`` None)."""

    path: str
    listed: str
    label: int | None = None
    num_frames: int | None = None
    line: int | None = None
    labels: tuple[int, ...] | None = None


@dataclass
class Source:
    """The videos of a source and what it says about them.

    ``name``: the source as given (``-``: standard input); ``kind``: ``video``, ``folder``,
    ``list`` or ``stdin``; ``format``: an annotation format, ``paths``, ``folder`` (every video
    under a folder) or ``video``; ``base``: the folder relative paths were joined to (None:
    nothing was joined); ``text``: a list's text when it came from standard input."""

    name: str
    kind: str
    format: str
    videos: list[Video]
    class_names: list[str] | None = None
    base: str | None = None
    text: str | None = None

    @property
    def paths(self) -> list[str]:
        """What to open, in order."""
        return [v.path for v in self.videos]

    @property
    def labels(self) -> list[int] | None:
        """Every video's label, or None when some video has none."""
        labels = [v.label for v in self.videos]
        return None if any(lab is None for lab in labels) else labels  # type: ignore[misc]

    @property
    def multilabel(self) -> bool:
        """Every video carries a set of classes (a multi-label format), rather than one."""
        return bool(self.videos) and all(v.labels is not None for v in self.videos)

    def __len__(self) -> int:
        return len(self.videos)


def resolve_path(listed: str, base: str | os.PathLike | None) -> str:
    """The one rule: a URL or an absolute path as written, else ``base / listed`` (a URL
    base: ``s3://b/k`` + ``x/y.mp4`` -> ``s3://b/k/x/y.mp4``)."""
    if base is None or is_url(listed) or os.path.isabs(listed):
        return listed
    if is_url(base):
        return remote.join(str(base), listed)
    return str(Path(base) / listed)


def find_videos(root: str | os.PathLike) -> list[Path]:
    """Video files under ``root`` (recursive, sorted), by extension; hidden files and folders
    (names starting with ".", e.g. macOS's "._clip.mp4" resource forks) are left out."""
    root = Path(root)
    return sorted(p for p in root.rglob("*")
                  if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def resolve_videos(source: str | os.PathLike, *, root: str | os.PathLike | None = None,
                   labels: str | os.PathLike | Sequence[str] | None = None,
                   format: str = "auto", split: int = 1, subset: str = "train",
                   stdin: TextIO | None = None) -> Source:
    """The videos ``source`` names (see the module docstring for sources and the path rule).

    ``labels``: class names (a list or a class-names file) fixing the label order; ``format``:
    force an annotation format (or ``paths``, ``folder``); ``split`` / ``subset`` (``train``,
    ``test`` or ``all``: train then test): the videos of UCF101 / HMDB51 split folders;
    ``stdin``: the stream ``-`` reads (default ``sys.stdin``)."""
    if format not in ("auto",) + SOURCE_FORMATS:
        raise ValueError(f"unknown source format {format!r}; choose one of auto, "
                         f"{', '.join(SOURCE_FORMATS)}")
    if subset not in ("train", "test", "all"):
        raise ValueError(f"subset must be train, test or all, not {subset!r}")
    name = str(source)
    if name == STDIN:
        text = _read_stdin(stdin if stdin is not None else sys.stdin)
        src = _list(Path("<stdin>"), text, root, format, labels, split, subset)
        return replace(src, name=STDIN, kind="stdin", text=text)
    if is_url(name):
        if Path(name.split("?")[0]).suffix.lower() in LIST_SUFFIXES:
            return _url_list(name, root, format, labels, split, subset)
        return Source(name, "video", "video", [Video(name, name)])
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory (relative to the working "
                                f"directory {os.getcwd()})")
    if path.is_dir():
        return _folder(path, root, format, labels, split, subset)
    if format == "auto" and not _is_list_file(path):
        return Source(name, "video", "video", [Video(name, name)])
    return _list(path, None, root, format, labels, split, subset)


# ------------------------------------------------------------------------------ lists
def _url_list(url: str, root, format: str, labels, split: int, subset: str) -> Source:
    """A list at a URL (read through :mod:`tanet.remote`): relative paths start from ``root``,
    else from the URL's folder (``s3://b/k/train.txt``: ``s3://b/k/``)."""
    text = remote.read_text(url)
    name = Path(remote.basename(url))
    try:
        src = _list(name, text, root if root is not None else remote.parent(url), format,
                    labels, split, subset)
    except AnnotationError as e:  # name the list by its URL
        raise AnnotationError(url, e.line, str(e).split(": ", 1)[-1]) from None
    return replace(src, name=url, kind="list", text=None)


def _read_stdin(stream: TextIO) -> str:
    if _STDIN_READ[0] is not stream:
        _STDIN_READ[:] = [stream, stream.read()]
    return _STDIN_READ[1]


def _is_list_file(path: Path) -> bool:
    """A list by its name, a video by its name, else a list when its first 4 KiB are text
    (UTF-8 without NUL bytes, or UTF-16 with a BOM)."""
    suffix = path.suffix.lower()
    if suffix in LIST_SUFFIXES or suffix in VIDEO_EXTENSIONS:
        return suffix in LIST_SUFFIXES
    if not path.is_file():  # a pipe or a device: read by the decoder, never sniffed
        return False
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return True
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return b"\x00" not in head


def _list(path: Path, text: str | None, root, format: str, labels, split: int,
          subset: str) -> Source:
    """The videos of a list file, a split folder or ``text`` (a list from standard input)."""
    folder = text is None and path.is_dir()
    if root is not None:
        base, where = str(root), "the root"
    elif text is not None:
        base, where = ".", "the working directory (the list came from standard input)"
    elif folder:
        base, where = str(path), "the split folder"
    else:
        base, where = str(path.parent), "the list's folder"
    fmt = format if format != "auto" else (
        sniff_multilabel(path, text=text) or sniff_format(path, text=text) or "paths")
    if fmt == "folder":
        raise ValueError(f"{path}: format 'folder' is for folders, not lists")
    if fmt == "paths":
        records, names = _path_list(path, text), _names(labels)
    elif fmt in MULTILABEL_FORMATS:
        records, names = read_multilabel_annotations(path, format=fmt, root=base, labels=labels,
                                                     text=text)
    elif text is None and (fmt == "hmdb51" or (fmt == "ucf101" and folder)):
        records, names = _split_records(path, fmt, labels, split, subset)
    else:
        records, names = read_annotations(path, root=base, labels=labels, format=fmt,
                                          split=split, text=text,
                                          subset="test" if subset == "test" else "train")
    videos = [Video(resolve_path(r.path, base), r.path, None if r.label < 0 else r.label,
                    r.num_frames, r.line, r.labels) for r in records]
    named = path  # the file naming the first video, for the error
    if fmt == "ucf101" and folder:
        named = path / f"{'test' if subset == 'test' else 'train'}list{split:02d}.txt"
    _check_some_exist(videos, named, base, where)
    return Source(str(path), "folder" if folder else "list", fmt, videos, names, base)


def _path_list(path: Path, text: str | None) -> list[Record]:
    """A plain list of paths, one a line (``#`` comments and blank lines skipped)."""
    from tanet.io import read_text

    text = read_text(path, error=AnnotationError) if text is None else text
    records = [Record(s, -1, line=no) for no, raw in enumerate(text.split("\n"), 1)
               if (s := raw.strip()) and not s.startswith("#")]
    if not records:
        raise AnnotationError(path, None, "an empty list (no paths)")
    return records


def _names(labels) -> list[str] | None:
    if labels is None:
        return None
    return read_class_names(labels) if isinstance(labels, (str, os.PathLike)) else list(labels)


def _split_records(path: Path, fmt: str, labels, split: int,
                   subset: str) -> tuple[list[Record], list[str]]:
    """UCF101 / HMDB51 official splits: one subset, or ``"all"`` (train then test)."""
    records, names = [], []
    for s in (("train", "test") if subset == "all" else (subset,)):
        recs, names = read_annotations(path, labels=labels, format=fmt, split=split, subset=s)
        records += recs
    return records, names


def _check_some_exist(videos: Sequence[Video], path: Path, base: str, where: str) -> None:
    """Refuse a list none of whose first :data:`EXISTENCE_SAMPLE` local videos exists."""
    local = [v for v in videos if not is_url(v.path)][:EXISTENCE_SAMPLE]
    if not local or any(_exists(v.path) for v in local):
        return
    first = local[0]
    at = f"{path}:{first.line}" if first.line is not None else str(path)
    more = f" (nor do the next {len(local) - 1} listed)" if len(local) > 1 else ""
    raise FileNotFoundError(
        f"{at}: {first.listed!r} -> {first.path}: no such file or directory{more}. Relative "
        f"paths start from {where} ({base or '.'}); if the videos are elsewhere, {ROOT_HINT}")


def _exists(p: str) -> bool:
    try:
        return os.path.exists(p)
    except (OSError, ValueError):
        return False


# ------------------------------------------------------------------------------ folders
def _folder(path: Path, root, format: str, labels, split: int, subset: str) -> Source:
    """A split folder, a class-per-folder tree or any folder of videos."""
    fmt = format
    if fmt == "auto":
        fmt = sniff_format(path) or "folder"
        if fmt == "tree" and not _is_class_tree(path):
            fmt = "folder"
    if fmt in ("ucf101", "hmdb51"):
        return _list(path, None, root, fmt, labels, split, subset)
    if fmt == "tree":
        records, names = read_class_tree(path, labels=labels)
        videos = [Video(r.path, r.path, r.label) for r in records]
        return Source(str(path), "folder", "tree", videos, names)
    if fmt != "folder":
        raise ValueError(f"{path}: a folder; format {fmt!r} reads a list file (folders are "
                         f"tree, folder, ucf101 or hmdb51)")
    found = find_videos(path)
    if not found:
        raise FileNotFoundError(f"{path}: no video files found (looked for "
                                f"{', '.join(VIDEO_EXTENSIONS[:4])}, ... recursively)")
    return Source(str(path), "folder", "folder", [Video(str(p), str(p)) for p in found])


def _is_class_tree(path: Path) -> bool:
    """No video of its own and none deeper than a class folder; a tree of frame folders (no
    video files, class folders holding folders) is one too."""
    videos = find_videos(path)
    if videos:
        return all(len(v.relative_to(path).parts) == 2 for v in videos)
    classes = [d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")]
    return any(sub.is_dir() and not sub.name.startswith(".")
               for d in classes for sub in d.iterdir())
