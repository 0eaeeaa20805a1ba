"""File input/output shared by every layer: atomic writes (files and figures) and the one
reader of text files and class-name lists."""
from __future__ import annotations

import codecs
import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

from tanet import remote

__all__ = ["atomic_path", "atomic_write_text", "save_figure", "TextFileError", "read_text",
           "read_class_names"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    A crash, a kill or a full disk at any point leaves either the old file or the new one,
    never a half-written file. On failure the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        with contextlib.suppress(OSError):  # persist the rename itself
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 110, tight: bool = False) -> Path:
    """Write a matplotlib figure as PNG atomically (a reader never sees half an image)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


class TextFileError(ValueError):
    """A text file that cannot be used; the message names the file (and line when known)."""

    def __init__(self, path: str | os.PathLike, line: int | None, message: str):
        self.path, self.line = str(path), line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


def read_text(path: str | os.PathLike, *, error: type[TextFileError] = TextFileError) -> str:
    """A text file as str with newlines as "\\n": UTF-8 (optional BOM) or UTF-16 with a BOM.

    Other bytes, NUL bytes, a missing file or a directory raise ``error`` (a
    :class:`TextFileError`) naming the file and, for bad bytes, the line. ``path`` may be a
    URL (:mod:`tanet.remote`).
    """
    if remote.is_remote(path):
        try:
            data = remote.read_bytes(str(path))
        except FileNotFoundError:
            raise error(path, None, "file not found (no object at that URL)") from None
        return _decode_text(str(path), data, error)
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(path, None, "file not found") from None
    except IsADirectoryError:
        raise error(path, None, "is a directory, not a text file") from None
    except OSError as e:
        raise error(path, None, f"cannot read ({e.strerror or e})") from None
    return _decode_text(path, data, error)


def _decode_text(path: str | os.PathLike, data: bytes, error: type[TextFileError]) -> str:
    utf16 = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    enc = "utf-16" if utf16 else "utf-8-sig"
    try:
        text = data.decode(enc)
    except UnicodeDecodeError as e:
        line = data[:e.start].decode(enc, errors="replace").count("\n") + 1
        raise error(path, line, f"not {'UTF-16' if utf16 else 'UTF-8'} text (byte "
                                f"0x{data[e.start]:02x} at offset {e.start}); save the file as "
                                f"UTF-8") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        raise error(path, text.count("\n", 0, text.index("\x00")) + 1,
                    "NUL byte in the text (a binary file?)")
    return text


_NUMBERED = re.compile(r"^(\d+)[\s,:;]+(\S.*)$")


def read_class_names(path: str | os.PathLike, *,
                     error: type[TextFileError] = TextFileError) -> list[str]:
    """Class names, index = position: the one reader for ``--labels``, ``data.labels``,
    ``classes.txt`` and the shipped class lists.

    * ``.json``: a list of names, or ``{name: index}`` (Something-Something v2's labels file).
    * text: one name a line (blank lines ignored). When *every* line is ``<number> <name>``
      (also ``,``/``:``/``;`` separated) and the numbers count up from 0 or 1 (UCF101's
      ``classInd.txt``), the numbers are dropped; otherwise lines are kept as written.
    """
    text = read_text(path, error=error)
    if str(path).split("?")[0].lower().endswith(".json"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise error(path, e.lineno, f"invalid JSON ({e.msg})") from None
        except RecursionError:
            raise error(path, None, "invalid JSON (nested too deeply)") from None
        if isinstance(obj, dict):
            try:
                pairs = sorted((int(v), str(k)) for k, v in obj.items())
            except (TypeError, ValueError, OverflowError):
                raise error(path, None, "expected {class name: integer index}") from None
            if [i for i, _ in pairs] != list(range(len(pairs))):
                raise error(path, None, "class indices must be 0..K-1 without gaps")
            return [k for _, k in pairs]
        if isinstance(obj, list):
            return [str(x) for x in obj]
        raise error(path, None, "expected a JSON list or object of class names")
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    matches = [_NUMBERED.match(ln) for ln in lines]
    if lines and all(matches):
        numbers = [int(m.group(1)) for m in matches]  # type: ignore[union-attr]
        if numbers[0] in (0, 1) and numbers == list(range(numbers[0], numbers[0] + len(lines))):
            return [m.group(2).strip() for m in matches]  # type: ignore[union-attr]
    return lines


def shipped_yaml(package: str) -> list[str]:
    """Names (without ``.yaml``) of the YAML files shipped in ``package`` (recipes, studies)."""
    from importlib.resources import files

    return sorted(p.name.removesuffix(".yaml") for p in files(package).iterdir()
                  if p.name.endswith(".yaml"))


def find_yaml(path_or_name: str | os.PathLike, package: str) -> Path | None:
    """``path_or_name`` itself if it is a file, else the YAML file of that name shipped in
    ``package`` (``name``, ``name.yaml`` or ``some/dir/name.yaml``), else None."""
    from importlib.resources import as_file, files

    path = Path(path_or_name)
    if path.is_file():
        return path
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    if name not in shipped_yaml(package):
        return None
    with as_file(files(package) / f"{name}.yaml") as found:  # a real file: not zip-imported
        return Path(found)
