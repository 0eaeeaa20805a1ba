"""Downloads that verify and cache: urllib, a progress bar, the sha256 checked before a file
takes its name in ``torch.hub.get_dir()/checkpoints`` (the cache torchvision and timm share).

A download goes to a temporary file beside its destination and is renamed only after its size
and sha256 match, so a mismatch, a cut connection or Ctrl-C leaves nothing behind. A cached file
is used without touching the network. ``TANET_OFFLINE=1`` forbids the network;
``TANET_WEIGHTS_MIRROR=BASE_URL`` fetches every file from ``BASE_URL/<file name>`` instead (the
hash is still the publisher's). Knows no models: :mod:`tanet.models.hub` names the files.
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import http.client
import os
import re
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator

from tanet.models.checkpoint import CheckpointError

__all__ = ["DownloadError", "HashMismatchError", "OFFLINE_ENV", "MIRROR_ENV", "cache_dir",
           "is_offline", "mirror_base", "url_hash", "file_name", "fetch_file", "download",
           "sha256_of", "check_sha256", "show_progress"]

OFFLINE_ENV = "TANET_OFFLINE"
MIRROR_ENV = "TANET_WEIGHTS_MIRROR"
# torch.hub's convention: ``name-<first hex digits of the sha256>.ext`` (mmaction2's
# tools/deployment/publish_model.py writes ``..._<date>-<sha256[:8]>.pth`` the same way).
_NAME_HASH = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9.]+$")
_FRAGMENT_HASH = re.compile(r"^sha256=([0-9a-fA-F]{8,64})$")
_CHUNK = 1 << 20
_TIMEOUT = 60.0  # seconds without a byte before a download fails
_progress: contextvars.ContextVar[bool | None] = contextvars.ContextVar("tanet_download_progress",
                                                                       default=None)


class DownloadError(CheckpointError):
    """A file that could not be fetched; the message names the URL and where a copy
    downloaded by hand is picked up."""


class HashMismatchError(DownloadError):
    """Downloaded or cached bytes whose sha256 is not the expected one."""


@contextlib.contextmanager
def show_progress(enabled: bool | None) -> Iterator[None]:
    """Within the block, download bars are shown (True), hidden (False, ``--quiet``) or shown
    only on a terminal (None, the default)."""
    token = _progress.set(enabled)
    try:
        yield
    finally:
        _progress.reset(token)


def cache_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def is_offline() -> bool:
    """Whether ``TANET_OFFLINE`` forbids the network."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def mirror_base() -> str | None:
    """``TANET_WEIGHTS_MIRROR`` without its trailing slash, or None."""
    base = os.environ.get(MIRROR_ENV, "").strip()
    return base.rstrip("/") or None


def url_hash(url: str) -> str | None:
    """The sha256 (or its prefix) a URL promises: ``#sha256=<hex>`` at its end, else the
    ``-<hex>.`` before the file name's extension (torch.hub's convention); lower case."""
    parts = urllib.parse.urlsplit(url)
    m = _FRAGMENT_HASH.match(parts.fragment)
    if m:
        return m.group(1).lower()
    m = _NAME_HASH.search(Path(urllib.parse.unquote(parts.path)).name)
    return m.group(1) if m else None


def file_name(url: str) -> str:
    """The file name a URL is cached under: the last path segment (query and fragment
    dropped)."""
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    if not name or name in (".", ".."):
        raise DownloadError(f"{url}: the URL names no file")
    return name


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_sha256(digest: str, expected: str | None, *, what: str, fix: str) -> None:
    """Raise :class:`HashMismatchError` unless ``digest`` starts with ``expected``."""
    if expected and not digest.startswith(expected.lower()):
        raise HashMismatchError(f"{what}: sha256 {digest[:max(len(expected), 8)]}... does not "
                                f"match the expected {expected}; {fix}")


def fetch_file(url: str, *, name: str | None = None, sha256: str | None = None,
               progress: bool | None = None) -> Path:
    """The cached copy of ``url`` (downloaded and verified first if missing).

    ``name`` is the file name in :func:`cache_dir` (default: the URL's); ``sha256`` the full
    hash or a prefix (default: the one the URL carries). A cached file with a known hash is
    checked, so a wrong file put there by hand is reported rather than used.
    """
    sha256 = (sha256 or url_hash(url) or "").lower() or None
    dst = cache_dir() / (name or file_name(url))
    if dst.is_file():
        check_sha256(sha256_of(dst), sha256, what=str(dst),
                     fix=f"delete it (or replace it with the file from {url})")
        return dst
    source = url
    if mirror_base():
        source = f"{mirror_base()}/{dst.name}"
    if is_offline():
        raise DownloadError(
            f"{OFFLINE_ENV}=1 and {dst.name} is not in the cache; on a machine with a network "
            f"download {source} and put it at {dst}" + _hash_hint(sha256))
    return download(source, dst, sha256=sha256, progress=progress, hint_url=url)


def _hash_hint(sha256: str | None) -> str:
    return f" (its sha256 starts with {sha256[:16]})" if sha256 else ""


def download(url: str, dst: str | os.PathLike, *, sha256: str | None = None,
             progress: bool | None = None, hint_url: str | None = None) -> Path:
    """Download ``url`` to ``dst`` atomically: into a temporary file beside it, renamed over
    ``dst`` only when the byte count (Content-Length) and the sha256 (prefix) match."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _stream(url, out, dst, progress)
        check_sha256(digest, sha256, what=f"download of {url}",
                     fix="nothing was kept. Try again; if it persists the file at that "
                         "address changed or is corrupt")
        os.replace(tmp, dst)
    except KeyboardInterrupt:
        tmp.unlink(missing_ok=True)
        print(f"download of {url} interrupted; the partial file was removed", file=sys.stderr)
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        by_hand = "it" if hint_url in (None, url) else hint_url
        raise DownloadError(
            f"could not download {url} ({_reason(e)}); nothing was kept. Without a network, "
            f"download {by_hand} by hand and put it at {dst}" + _hash_hint(sha256)
            + "; tanet picks it up from there") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dst


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return str(e) or type(e).__name__


def _stream(url: str, out, dst: Path, progress: bool | None) -> str:
    """Copy the response body of ``url`` into ``out``; return its sha256. A body shorter than
    its Content-Length (a cut connection) is an error."""
    from tqdm import tqdm

    req = urllib.request.Request(url, headers={"User-Agent": "tanet (python-urllib)"})
    h = hashlib.sha256()
    got = 0
    with urllib.request.urlopen(req, timeout=_TIMEOUT) as resp:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        show = progress if progress is not None else _progress.get()
        with tqdm(total=total, desc=dst.name, unit="B", unit_scale=True, unit_divisor=1024,
                  disable=(None if show is None else not show), file=sys.stderr,
                  dynamic_ncols=True, leave=False) as bar:
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                h.update(chunk)
                got += len(chunk)
                bar.update(len(chunk))
    if total is not None and got != total:
        raise DownloadError(f"download of {url} stopped after {got} of {total} bytes (the "
                            f"connection was cut); nothing was kept. Try again")
    return h.hexdigest()
