"""Annotation formats: one small reader per format, each returning ``(records, class_names)``.

Formats (``format=`` name, auto-detected by :func:`read_annotations` where unambiguous):

* ``frames``: the authors' / TSN frame list, ``folder num_frames label`` per line.
* ``videos``: mmaction2 video list, ``relative/path.mp4 label`` per line.
* ``kinetics``: Kinetics CSV ``label,youtube_id,time_start,time_end,split[,is_cc]`` ->
  ``{youtube_id}_{start:06d}_{end:06d}.mp4`` (inside ``<label>/`` when the videos are laid out
  in class folders), classes sorted by name.
* ``sthv2``: Something-Something v2 JSON list of ``{"id", "template", ...}`` plus its labels
  JSON ``{"class name": "index"}``; the class is the template without brackets; ``{id}.webm``.
* ``sthv1``: Something-Something v1 CSV ``id;label``; videos are frame folders ``{id}``.
* ``tree``: a class-per-folder directory ``root/<class>/<video or frame folder>``, classes sorted.
* ``ucf101``: UCF101's official splits: ``classInd.txt`` (``1 ApplyEyeMakeup``, 1-based),
  ``trainlist0N.txt`` (``Class/v_Class_g08_c01.avi 1``) and ``testlist0N.txt`` (paths only: the
  class is the folder name); the list file itself, or the folder holding them with ``split=N``.
* ``hmdb51``: HMDB51's official splits, the folder of ``<class>_test_splitN.txt`` files
  (``video.avi 1`` per line: 1 train, 2 test, 0 unused) or one of them; ``split`` and ``subset``
  (``"train"``/``"test"``) choose the videos, ``<class>/video.avi``; classes sorted by name.

Record paths are as written in the file, except for ``tree``, whose records hold the paths
found; which file a relative path names is decided in one place, :mod:`tanet.data.sources`
(``root``, else the list's folder). ``text=``: the contents of a list that is not a file (one
read from standard input); the path then names it in errors and its folder is where files
beside it (``classes.txt``, ``classInd.txt``, labels JSON) are looked for.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tanet import io as _io
from tanet.io import TextFileError

__all__ = ["Record", "AnnotationError", "read_annotations", "read_frame_list",
           "read_path_label_list", "read_kinetics_csv", "read_sthv2_json", "read_sthv1_csv",
           "read_class_tree", "read_ucf101_split", "read_hmdb51_split", "read_class_names",
           "write_class_names", "write_video_list", "detect_format", "sniff_format",
           "VIDEO_EXTENSIONS", "FORMATS"]

# what a folder walk takes for a video (a file named on the command line or in a list is read
# whatever its name: GIFs, for one, are not walked into since most are stills)
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv",
                    ".ts", ".mts", ".m2ts", ".3gp", ".3g2", ".wmv", ".asf", ".ogv", ".vob",
                    ".mxf", ".f4v", ".divx")
FORMATS = ("frames", "videos", "kinetics", "sthv2", "sthv1", "tree", "ucf101", "hmdb51")
_UCF_LIST = re.compile(r"^(train|test)list0*(\d+)\.txt$", re.IGNORECASE)
_HMDB_LIST = re.compile(r"^(.+)_test_split(\d+)\.txt$")
MAX_CLASSES = 1_000_000  # integer labels above this are a broken file, not a class count


@dataclass(frozen=True)
class Record:
    """One video: its path, integer label and (frame lists only) its frame count; ``line``: where
    the list names it (None for folders, JSON and HMDB51's per-class files; not compared);
    ``labels``: its classes in a multi-label list (:mod:`tanet.data.multilabel`; ``label`` -1)."""

    path: str
    label: int
    num_frames: int | None = None
    line: int | None = field(default=None, compare=False)
    labels: tuple[int, ...] | None = None


class AnnotationError(TextFileError):
    """A malformed annotation file; the message names the file and line."""


# ------------------------------------------------------------------------------ class names
def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names (see :func:`tanet.io.read_class_names`, the one reader); errors are
    :class:`AnnotationError`."""
    return _io.read_class_names(path, error=AnnotationError)


def write_class_names(path: str | os.PathLike, names: Sequence[str]) -> Path:
    """Write class names one a line (index = line number - 1), atomically."""
    path = Path(path)
    for n in names:
        if "\n" in n or "\r" in n or not n.strip():
            raise ValueError(f"{path}: class name {n!r} is empty or contains a newline")
    return _io.atomic_write_text(path, "".join(f"{n}\n" for n in names))


def write_video_list(path: str | os.PathLike, records: Sequence[Record]) -> Path:
    """Write an mmaction2 video list (``path label`` per line), atomically."""
    path = Path(path)
    for r in records:
        if "\n" in r.path or "\r" in r.path or not r.path.strip():
            raise ValueError(f"{path}: video path {r.path!r} is empty or contains a newline")
    return _io.atomic_write_text(path, "".join(f"{r.path} {r.label}\n" for r in records))


def _names_for(path: Path, labels, max_label: int, line: int | None = None) -> list[str]:
    """Class names for integer-labelled lists: given, a ``classes.txt`` beside, or "0".."K-1".
    ``line``: where ``max_label`` was read (for the error)."""
    if labels is not None:
        names = read_class_names(labels) if isinstance(labels, (str, os.PathLike)) else list(labels)
    elif (path.parent / "classes.txt").is_file():
        names = read_class_names(path.parent / "classes.txt")
    elif max_label >= MAX_CLASSES:
        raise AnnotationError(path, line, f"label {max_label} would mean {max_label + 1} classes; "
                                          f"labels are 0..K-1 (or pass class names)")
    else:
        names = [str(i) for i in range(max_label + 1)]
    if max_label >= len(names):
        raise AnnotationError(path, line, f"label {max_label} out of range for {len(names)} "
                                          f"class names")
    return names


def _read_text(path: Path, text: str | None = None) -> str:
    return _io.read_text(path, error=AnnotationError) if text is None else text


def _json(path: Path, text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise AnnotationError(path, e.lineno, f"invalid JSON ({e.msg})") from None
    except RecursionError:
        raise AnnotationError(path, None, "invalid JSON (nested too deeply)") from None


def _lines(path: Path, text: str | None = None):
    """(line number, stripped text) of non-empty, non-comment lines."""
    for no, raw in enumerate(_read_text(path, text).split("\n"), 1):
        s = raw.strip()
        if s and not s.startswith("#"):
            yield no, s


def _exists(p: Path) -> bool:
    """``p.exists()``, False for names the OS refuses (too long, ...) as well."""
    try:
        return p.exists()
    except (OSError, ValueError):
        return False


def _int(path: Path, no: int, text: str, what: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise AnnotationError(path, no, f"{what} must be an integer, got {text!r}") from None
    if v < 0:
        raise AnnotationError(path, no, f"{what} must be >= 0, got {v}")
    return v


# ------------------------------------------------------------------------------ readers
def read_frame_list(path: str | os.PathLike, *, labels=None,
                    text: str | None = None) -> tuple[list[Record], list[str]]:
    """The authors' frame list: ``folder num_frames label`` per line."""
    path = Path(path)
    records, nos = [], []
    for no, s in _lines(path, text):
        parts = s.rsplit(None, 2)
        if len(parts) != 3:
            raise AnnotationError(path, no, f"expected 'folder num_frames label', got {s!r}")
        records.append(Record(parts[0], _int(path, no, parts[2], "label"),
                              _int(path, no, parts[1], "num_frames"), line=no))
        nos.append(no)
    return records, _names_of_records(path, labels, records, nos)


def read_path_label_list(path: str | os.PathLike, *, labels=None,
                         text: str | None = None) -> tuple[list[Record], list[str]]:
    """mmaction2 video list (format ``videos``): ``relative/path.mp4 label`` per line."""
    path = Path(path)
    records, nos = [], []
    for no, s in _lines(path, text):
        parts = s.rsplit(None, 1)
        if len(parts) != 2:
            raise AnnotationError(path, no, f"expected 'path label', got {s!r}")
        records.append(Record(parts[0], _int(path, no, parts[1], "label"), line=no))
        nos.append(no)
    return records, _names_of_records(path, labels, records, nos)


def _names_of_records(path: Path, labels, records: list[Record], nos: list[int]) -> list[str]:
    if not records:
        raise AnnotationError(path, None, "no entries")
    k = max(range(len(records)), key=lambda i: records[i].label)
    return _names_for(path, labels, records[k].label, nos[k])


def read_kinetics_csv(path: str | os.PathLike, *, root=None, labels=None, ext: str = ".mp4",
                      text: str | None = None) -> tuple[list[Record], list[str]]:
    """Kinetics CSV (``label,youtube_id,time_start,time_end,split``), classes sorted by name.

    A record's path is ``<label>/<id>_<start>_<end>.mp4`` when the first video is found in a
    class folder under ``root`` (or beside the CSV), else ``<id>_<start>_<end>.mp4``.
    """
    path = Path(path)
    rows = []
    reader = csv.reader(io.StringIO(_read_text(path, text), newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise AnnotationError(path, 1, "empty file")
        cols = {c.strip(): i for i, c in enumerate(header)}
        need = ("label", "youtube_id", "time_start", "time_end")
        missing = [c for c in need if c not in cols]
        if missing:
            raise AnnotationError(path, 1, f"Kinetics CSV header lacks {', '.join(missing)} "
                                           f"(got {', '.join(header)})")
        for row in reader:
            no = reader.line_num
            if not row or not "".join(row).strip():
                continue
            if len(row) < len(header):
                raise AnnotationError(path, no, f"expected {len(header)} fields, got {len(row)}")
            try:
                start = int(float(row[cols["time_start"]]))
                end = int(float(row[cols["time_end"]]))
            except (ValueError, OverflowError):
                raise AnnotationError(path, no, "time_start/time_end must be numbers") from None
            label, vid = row[cols["label"]].strip(), row[cols["youtube_id"]].strip()
            if not label or not vid:
                raise AnnotationError(path, no, "empty label or youtube_id")
            rows.append((no, label, f"{vid}_{start:06d}_{end:06d}{ext}"))
    except csv.Error as e:
        raise AnnotationError(path, reader.line_num, f"malformed CSV ({e})") from None
    if not rows:
        raise AnnotationError(path, None, "no entries")
    if labels is not None:
        names = read_class_names(labels) if isinstance(labels, (str, os.PathLike)) else list(labels)
    else:
        names = sorted({lab for _, lab, _ in rows})
    index = {n: i for i, n in enumerate(names)}
    base = Path(root) if root else path.parent
    _, first_label, first_name = rows[0]
    in_folders = (not _exists(base / first_name)) and any(
        _exists(base / d / first_name) for d in (first_label, first_label.replace(" ", "_")))
    underscore = in_folders and not _exists(base / first_label / first_name)
    records = []
    for no, label, name in rows:
        if label not in index:
            raise AnnotationError(path, no, f"label {label!r} is not in the class names")
        folder = label.replace(" ", "_") if underscore else label
        records.append(Record(f"{folder}/{name}" if in_folders else name, index[label], line=no))
    return records, names


def _sthv2_class(template: str) -> str:
    return template.replace("[", "").replace("]", "")


def read_sthv2_json(path: str | os.PathLike, *, labels=None, ext: str = ".webm",
                    text: str | None = None) -> tuple[list[Record], list[str]]:
    """Something-Something v2 JSON; class names from ``labels`` (their labels JSON), else the
    ``something-something-v2-labels.json`` / ``labels.json`` beside the file."""
    path = Path(path)
    if labels is None:
        for cand in ("something-something-v2-labels.json", "labels.json"):
            if (path.parent / cand).is_file():
                labels = path.parent / cand
                break
        else:
            raise AnnotationError(path, None, "no labels JSON given or found beside it (pass "
                                              "labels=something-something-v2-labels.json)")
    names = read_class_names(labels) if isinstance(labels, (str, os.PathLike)) else list(labels)
    index = {n: i for i, n in enumerate(names)}
    items = _json(path, _read_text(path, text))
    if not isinstance(items, list):
        raise AnnotationError(path, None, "expected a JSON list of {id, template, ...}")
    records = []
    for k, it in enumerate(items):
        if not isinstance(it, dict) or "id" not in it or "template" not in it:
            raise AnnotationError(path, None, f"entry {k}: needs 'id' and 'template' (a test "
                                              f"split without labels cannot be used here)")
        cls = _sthv2_class(str(it["template"]))
        if cls not in index:
            raise AnnotationError(path, None, f"entry {k} (id {it['id']}): class {cls!r} is "
                                              f"not in the labels")
        records.append(Record(f"{it['id']}{ext}", index[cls]))
    if not records:
        raise AnnotationError(path, None, "no entries")
    return records, names


def read_sthv1_csv(path: str | os.PathLike, *, labels=None,
                   text: str | None = None) -> tuple[list[Record], list[str]]:
    """Something-Something v1 CSV (``id;label``); class names from ``labels``, else the
    ``something-something-v1-labels.csv`` beside the file, else sorted."""
    path = Path(path)
    rows = []
    for no, s in _lines(path, text):
        parts = s.split(";")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise AnnotationError(path, no, f"expected 'id;label', got {s!r}")
        rows.append((no, parts[0].strip(), parts[1].strip()))
    if not rows:
        raise AnnotationError(path, None, "no entries")
    if labels is None and (path.parent / "something-something-v1-labels.csv").is_file():
        labels = path.parent / "something-something-v1-labels.csv"
    if labels is not None:
        names = read_class_names(labels) if isinstance(labels, (str, os.PathLike)) else list(labels)
    else:
        names = sorted({lab for _, _, lab in rows})
    index = {n: i for i, n in enumerate(names)}
    records = []
    for no, vid, lab in rows:
        if lab not in index:
            raise AnnotationError(path, no, f"label {lab!r} is not in the class names")
        records.append(Record(vid, index[lab], line=no))
    return records, names


def read_class_tree(path: str | os.PathLike, *, labels=None) -> tuple[list[Record], list[str]]:
    """``path/<class>/<video file or frame folder>``, in path order; classes sorted (or as
    ``labels``)."""
    path = Path(path)
    if not path.is_dir():
        raise AnnotationError(path, None, "not a directory")
    dirs = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if labels is not None:
        names = read_class_names(labels) if isinstance(labels, (str, os.PathLike)) else list(labels)
        extra = [d for d in dirs if d not in names]
        if extra:
            raise AnnotationError(path, None, f"folder {extra[0]!r} is not in the class names")
    else:
        names = dirs
    if not names:
        raise AnnotationError(path, None, "no class folders (expected root/<class>/<video>)")
    records = []
    index = {n: i for i, n in enumerate(names)}
    for name in sorted(names):  # path order, whatever the label order
        d, i = path / name, index[name]
        if not d.is_dir():
            continue
        for v in sorted(d.iterdir()):
            if v.name.startswith("."):
                continue
            if v.is_dir() or v.suffix.lower() in VIDEO_EXTENSIONS:
                records.append(Record(str(v), i))
    if not records:
        raise AnnotationError(path, None, f"no videos ({', '.join(VIDEO_EXTENSIONS[:4])}, ...) "
                                          f"in the class folders")
    return records, names


def read_ucf101_split(path: str | os.PathLike, *, labels=None, split: int = 1,
                      subset: str = "train",
                      text: str | None = None) -> tuple[list[Record], list[str]]:
    """UCF101's ``trainlist0N.txt`` / ``testlist0N.txt`` (or the folder holding them: ``split``
    and ``subset`` pick the file), classes from ``classInd.txt`` beside it (or ``labels``).
    Labels come from the class folder of each path; a train list's 1-based label must agree."""
    path = Path(path)
    if text is None and path.is_dir():
        path = path / f"{'train' if subset == 'train' else 'test'}list{split:02d}.txt"
    if labels is None and not (path.parent / "classInd.txt").is_file():
        raise AnnotationError(path, None, "a UCF101 split list needs classInd.txt beside it "
                                          "(or pass it as the class names: data.labels)")
    labels = path.parent / "classInd.txt" if labels is None else labels
    names = read_class_names(labels) if isinstance(labels, (str, os.PathLike)) else list(labels)
    index = {n: i for i, n in enumerate(names)}
    records = []
    for no, s in _lines(path, text):
        parts = s.split()
        rel = parts[0].replace("\\", "/")  # Class/v_Class_g01_c01.avi
        cls = rel.split("/")[0]
        if cls not in index or "/" not in rel:
            raise AnnotationError(path, no, f"expected 'Class/video.avi [label]' with a class of "
                                            f"classInd.txt, got {s!r}")
        if len(parts) > 1 and _int(path, no, parts[1], "label") != index[cls] + 1:
            raise AnnotationError(path, no, f"label {parts[1]} disagrees with classInd.txt "
                                            f"({cls} is {index[cls] + 1})")
        records.append(Record(rel, index[cls], line=no))
    if not records:
        raise AnnotationError(path, None, "no entries")
    return records, names


def read_hmdb51_split(path: str | os.PathLike, *, labels=None, split: int = 1,
                      subset: str = "train") -> tuple[list[Record], list[str]]:
    """HMDB51's ``<class>_test_split<split>.txt`` files of a folder (or the folder of one such
    file, whose name then gives the split): ``subset="train"`` takes the lines marked 1,
    ``"test"`` those marked 2; records ``<class>/<video>``, classes sorted (or ``labels``)."""
    path = Path(path)
    if path.is_file():
        m = _HMDB_LIST.match(path.name)
        split, path = (int(m.group(2)) if m else split), path.parent
    files = {m.group(1): f for f in sorted(path.glob(f"*_test_split{split}.txt"))
             if (m := _HMDB_LIST.match(f.name))}
    if not files:
        raise AnnotationError(path, None, f"no <class>_test_split{split}.txt files")
    names = sorted(files) if labels is None else (
        read_class_names(labels) if isinstance(labels, (str, os.PathLike)) else list(labels))
    want = "1" if subset == "train" else "2"
    records = []
    for i, name in enumerate(names):
        if name not in files:
            raise AnnotationError(path, None, f"no {name}_test_split{split}.txt for class {name!r}")
        for no, s in _lines(files[name]):
            parts = s.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise AnnotationError(files[name], no, f"expected 'video.avi 0|1|2', got {s!r}")
            if parts[1] == want:
                records.append(Record(f"{name}/{parts[0]}", i))
    if not records:
        raise AnnotationError(path, None, f"no {subset} videos in split {split}")
    return records, names


# ------------------------------------------------------------------------------ dispatch
def sniff_format(path: str | os.PathLike, *, text: str | None = None) -> str | None:
    """The format of a folder or list from its name and first entry, or None when the first
    entry fits no format (a plain list of paths, say); raises for a missing or empty file."""
    path = Path(path)
    if text is None and path.is_dir():
        if any(_HMDB_LIST.match(f.name) for f in path.glob("*_test_split*.txt")):
            return "hmdb51"
        if (path / "classInd.txt").is_file():
            return "ucf101"
        return "tree"
    if text is None and not path.is_file():
        raise AnnotationError(path, None, "annotation file not found")
    if path.suffix.lower() == ".json":
        return "sthv2"
    if _UCF_LIST.match(path.name):  # UCF101's own names; its labels are 1-based
        return "ucf101"
    if _HMDB_LIST.match(path.name):
        return "hmdb51"
    first = next(_lines(path, text), None)
    if first is None:
        raise AnnotationError(path, None, "empty annotation file")
    s = first[1]
    if "youtube_id" in s and "," in s:
        return "kinetics"
    if ";" in s and len(s.split(";")) == 2:
        return "sthv1"
    if text is not None and s.startswith("["):  # JSON without a .json name
        return "sthv2"
    parts = s.rsplit(None, 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return "frames"
    if len(parts) >= 2 and parts[-1].isdigit():
        return "videos"
    return None


def detect_format(path: str | os.PathLike, *, text: str | None = None) -> str:
    """Guess the format from the path and its first entry; raises when ambiguous."""
    fmt = sniff_format(path, text=text)
    if fmt is None:
        no, s = next(_lines(Path(path), text))
        raise AnnotationError(path, no, f"cannot tell the annotation format from {s!r}; pass "
                                        f"format= one of {', '.join(FORMATS)}")
    return fmt


def read_annotations(path: str | os.PathLike, *, root: str | os.PathLike | None = None,
                     labels: str | os.PathLike | Sequence[str] | None = None,
                     format: str = "auto", split: int = 1, subset: str = "train",
                     text: str | None = None) -> tuple[list[Record], list[str]]:
    """Read any supported annotation file (or class-per-folder directory).

    ``labels``: class names (a list or a class-names file) fixing the label order; ``root``:
    where the videos are (used to find Kinetics class folders); ``split`` / ``subset``
    (``"train"`` or ``"test"``): which official split UCF101/HMDB51 split folders give;
    ``text``: the list's contents when it is not a file (see the module docstring).
    Returns (records, class_names).
    """
    fmt = detect_format(path, text=text) if format == "auto" else format
    if text is not None and fmt in ("hmdb51", "tree"):
        raise AnnotationError(path, None, f"a {fmt} source is a folder, not a list to read "
                                          f"from standard input")
    if fmt == "ucf101":
        return read_ucf101_split(path, labels=labels, split=split, subset=subset, text=text)
    if fmt == "hmdb51":
        return read_hmdb51_split(path, labels=labels, split=split, subset=subset)
    if fmt == "frames":
        return read_frame_list(path, labels=labels, text=text)
    if fmt == "videos":
        return read_path_label_list(path, labels=labels, text=text)
    if fmt == "kinetics":
        return read_kinetics_csv(path, root=root, labels=labels, text=text)
    if fmt == "sthv2":
        return read_sthv2_json(path, labels=labels, text=text)
    if fmt == "sthv1":
        return read_sthv1_csv(path, labels=labels, text=text)
    if fmt == "tree":
        return read_class_tree(path, labels=labels)
    raise ValueError(f"unknown annotation format {format!r}; choose one of auto, "
                     f"{', '.join(FORMATS)}")
