"""Multi-label annotation formats: several classes per video (a clip can show more than one
action at once). Each reader returns ``(records, class_names)`` like the single-label readers of
:mod:`tanet.data.annotations`; a record's ``labels`` holds its classes (a tuple of indices,
possibly empty: a video with none of the classes is a negative for every class) and its
``label`` is -1.

Formats (``data.format`` / ``format=`` name; detected from the CSV header):

* ``multilabel``: a CSV with the header ``path,labels``; ``labels`` is class names separated by
  ``;`` (``clips/a.mp4,walk;phone``). Classes: the given class names (``data.labels``), else the
  sorted union of the names used.
* ``charades``: the Charades layout (``Charades_v1_train.csv``): a header with ``id`` and
  ``actions`` among its columns; ``actions`` is ``cXXX start end`` entries separated by ``;``
  (``c092 11.90 21.20;c147 0.00 12.60``). A video's labels are every class it shows at any
  time (clip-level labels); its path is ``{id}.mp4`` (or the frame folder ``{id}`` when that is
  what is found under the root). Classes: the given class names, where lines of Charades'
  ``Charades_v1_classes.txt`` (``c000 Holding some clothes``) map each code to its line and
  name the class by its text; else that file beside the CSV; else the sorted codes.
"""
from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import Sequence

from tanet import io as _io
from tanet.data.annotations import AnnotationError, Record, read_class_names

__all__ = ["MULTILABEL_FORMATS", "read_multilabel_csv", "read_charades_csv", "sniff_multilabel",
           "read_multilabel_annotations", "CHARADES_CLASSES"]

MULTILABEL_FORMATS = ("multilabel", "charades")
CHARADES_CLASSES = "Charades_v1_classes.txt"
_CODE = re.compile(r"^c\d{3}$")


def _rows(path: Path, text: str | None) -> tuple[dict[str, int], list[tuple[int, list[str]]]]:
    """The header (column -> index) and the (line, fields) of every non-empty row."""
    text = _io.read_text(path, error=AnnotationError) if text is None else text
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise AnnotationError(path, 1, "empty file")
        cols = {c.strip().lstrip("\ufeff"): i for i, c in enumerate(header)}
        rows = []
        for row in reader:
            if not row or not "".join(row).strip():
                continue
            if len(row) < len(header):
                raise AnnotationError(path, reader.line_num,
                                      f"expected {len(header)} fields, got {len(row)}")
            rows.append((reader.line_num, row))
    except csv.Error as e:
        raise AnnotationError(path, reader.line_num, f"malformed CSV ({e})") from None
    if not rows:
        raise AnnotationError(path, None, "no entries")
    return cols, rows


def _given_names(labels) -> list[str] | None:
    if labels is None:
        return None
    return read_class_names(labels) if isinstance(labels, (str, os.PathLike)) else list(labels)


def read_multilabel_csv(path: str | os.PathLike, *, labels=None,
                        text: str | None = None) -> tuple[list[Record], list[str]]:
    """``path,labels`` CSV, class names separated by ``;`` (see the module docstring)."""
    path = Path(path)
    cols, rows = _rows(path, text)
    if "path" not in cols or "labels" not in cols:
        raise AnnotationError(path, 1, f"a multi-label CSV needs the header 'path,labels' "
                                       f"(got {', '.join(cols)})")
    parsed = []
    for no, row in rows:
        video = row[cols["path"]].strip()
        if not video:
            raise AnnotationError(path, no, "empty path")
        names = [n.strip() for n in row[cols["labels"]].split(";") if n.strip()]
        parsed.append((no, video, names))
    classes = _given_names(labels) or sorted({n for _, _, names in parsed for n in names})
    index = {n: i for i, n in enumerate(classes)}
    records = []
    for no, video, names in parsed:
        unknown = [n for n in names if n not in index]
        if unknown:
            raise AnnotationError(path, no, f"class {unknown[0]!r} is not in the class names")
        records.append(Record(video, -1, line=no, labels=tuple(sorted({index[n] for n in names}))))
    return records, classes


def _charades_names(path: Path, labels) -> tuple[dict[str, int] | None, list[str] | None]:
    """(code -> index, names) from the class names given or ``Charades_v1_classes.txt`` beside
    the CSV; (None, None) when there are none (the codes become the classes)."""
    if labels is None and (path.parent / CHARADES_CLASSES).is_file():
        labels = path.parent / CHARADES_CLASSES
    lines = _given_names(labels)
    if lines is None:
        return None, None
    codes, names = {}, []
    for i, line in enumerate(lines):
        code, _, rest = line.partition(" ")
        if _CODE.match(code) and rest.strip():
            codes[code], name = i, rest.strip()
        else:
            codes[line], name = i, line
        names.append(name)
    return codes, names


def read_charades_csv(path: str | os.PathLike, *, root=None, labels=None, ext: str = ".mp4",
                      text: str | None = None) -> tuple[list[Record], list[str]]:
    """Charades CSV (``id,...,actions``): clip-level labels from the ``cXXX start end`` entries
    (see the module docstring)."""
    path = Path(path)
    cols, rows = _rows(path, text)
    if "id" not in cols or "actions" not in cols:
        raise AnnotationError(path, 1, f"a Charades CSV needs the columns 'id' and 'actions' "
                                       f"(got {', '.join(cols)})")
    parsed = []
    for no, row in rows:
        vid = row[cols["id"]].strip()
        if not vid:
            raise AnnotationError(path, no, "empty id")
        codes = []
        for entry in filter(None, (e.strip() for e in row[cols["actions"]].split(";"))):
            parts = entry.split()
            if len(parts) != 3 or not _CODE.match(parts[0]):
                raise AnnotationError(path, no, f"action {entry!r}: expected 'cXXX start end'")
            try:
                float(parts[1]), float(parts[2])
            except ValueError:
                raise AnnotationError(path, no, f"action {entry!r}: start and end must be "
                                                f"seconds") from None
            codes.append(parts[0])
        parsed.append((no, vid, codes))
    code_index, names = _charades_names(path, labels)
    if code_index is None:
        names = sorted({c for _, _, codes in parsed for c in codes})
        code_index = {c: i for i, c in enumerate(names)}
    base = Path(root) if root else path.parent
    first = parsed[0][1]
    folders = not (base / f"{first}{ext}").exists() and (base / first).is_dir()
    records = []
    for no, vid, codes in parsed:
        unknown = [c for c in codes if c not in code_index]
        if unknown:
            raise AnnotationError(path, no, f"class {unknown[0]!r} is not in the class names")
        records.append(Record(vid if folders else f"{vid}{ext}", -1, line=no,
                              labels=tuple(sorted({code_index[c] for c in codes}))))
    return records, list(names)  # type: ignore[arg-type]


def sniff_multilabel(path: str | os.PathLike, *, text: str | None = None) -> str | None:
    """``multilabel`` or ``charades`` when the first line of a list is their header, else None."""
    path = Path(path)
    if text is None and not path.is_file():
        return None
    head = (_io.read_text(path, error=AnnotationError) if text is None else text)
    first = next((s.strip() for s in head.split("\n", 8)[:8] if s.strip()), "")
    cols = [c.strip().lstrip("\ufeff") for c in first.split(",")]
    if cols[:2] == ["path", "labels"]:
        return "multilabel"
    if "id" in cols and "actions" in cols:
        return "charades"
    return None


def read_multilabel_annotations(path: str | os.PathLike, *, format: str, root=None,
                                labels: str | os.PathLike | Sequence[str] | None = None,
                                text: str | None = None) -> tuple[list[Record], list[str]]:
    """Read a list of one of :data:`MULTILABEL_FORMATS`."""
    if format == "multilabel":
        return read_multilabel_csv(path, labels=labels, text=text)
    if format == "charades":
        return read_charades_csv(path, root=root, labels=labels, text=text)
    raise ValueError(f"unknown multi-label format {format!r}; choose one of "
                     f"{', '.join(MULTILABEL_FORMATS)}")
