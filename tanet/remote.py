"""Files at URLs (``s3://``, ``gs://``, ``https://``, any fsspec protocol): the one seam through
which decoding, sources, annotations, the index cache and shards read and write object storage.

* **Reading** goes through fsspec file objects: seekable, fetched by range requests in blocks
  (:data:`VIDEO_BLOCK` for videos handed to PyAV, :data:`STREAM_BLOCK` for shards read from
  start to end), never by downloading a whole file first. A container that needs the end of the
  file (an MP4 whose index, the ``moov`` box, was written last) costs one more range request:
  FFmpeg seeks to the end, reads the index and seeks back.
* **Settings** come from the environment every AWS tool reads: ``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``,
  ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` (an S3-compatible store: MinIO, SeaweedFS,
  Ceph), ``AWS_MAX_ATTEMPTS``. botocore reads all of them itself (the endpoint variables since
  botocore 1.31); :func:`storage_options` fills the one gap, for an older botocore that ignores
  the endpoint variables. GCS: ``GOOGLE_APPLICATION_CREDENTIALS`` (gcsfs). Beyond those,
  ``TANET_REMOTE_TIMEOUT`` (seconds to connect or wait for a read; default 30) bounds every
  request, so a store that goes away is an error after the retries, never a hang.
* **Errors** are one line naming the URL and the fix (:class:`RemoteError`): access denied,
  no such bucket, the store cannot be reached after N attempts. A missing object is a
  ``FileNotFoundError`` naming the URL.
* **Extras**: fsspec and its protocol packages are optional (``pip install 'tanet[s3]'``,
  ``[gcs]``, ``[http]``); without them tanet imports and works on local files, and a URL that
  needs one says which extra to install.

This module imports nothing of tanet (``io`` and ``data`` import it).
"""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from typing import IO, Any, Iterator

__all__ = ["RemoteError", "RemoteStat", "is_url", "is_remote", "join", "parent", "basename",
           "filesystem", "storage_options", "open_url", "stat", "exists", "read_bytes",
           "read_text", "write_bytes", "expand", "remote_errors", "VIDEO_BLOCK", "STREAM_BLOCK"]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
VIDEO_BLOCK = 1 << 20  # range-request size for videos opened by PyAV (seeks jump around)
STREAM_BLOCK = 8 << 20  # for shards read sequentially from start to end
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "http": "http", "https": "http"}
_FS: dict[tuple, Any] = {}  # (pid, protocol) -> filesystem
_INHERITED: list = []  # a forked child's copies of its parent's filesystems: never closed there


def _after_fork() -> None:
    """In a forked child (a loader worker), the parent's clients belong to the parent's event
    loop: keep them alive, unused (closing them here would touch that loop), and make new ones."""
    _INHERITED.extend(_FS.values())
    _FS.clear()


os.register_at_fork(after_in_child=_after_fork)


class RemoteError(RuntimeError):
    """A URL that cannot be read or written; one line: the URL, the cause, the fix.

    Built with one argument it takes a formatted message (as DataLoader re-raises a worker's
    error, traceback included: only the last line, the error itself, is kept)."""

    def __init__(self, url: str, cause: str | None = None):
        if cause is None:
            text = str(url)
            if "Traceback" in text:  # a worker's error as DataLoader re-raises it
                last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
                text = last.split("RemoteError: ", 1)[-1]
            self.url, self.cause = text.split(": ", 1)[0], text.split(": ", 1)[-1]
            super().__init__(text)
        else:
            self.url, self.cause = str(url), cause
            super().__init__(f"{url}: {cause}")


@dataclass(frozen=True)
class RemoteStat:
    """Size in bytes and a version tag (ETag, else modification time, else "")."""

    size: int
    tag: str


def is_url(path: str | os.PathLike) -> bool:
    """``scheme://...`` (http, https, s3, gs, rtsp, file, ...)."""
    return bool(_URL.match(str(path)))


def is_remote(path: str | os.PathLike) -> bool:
    """A URL read through fsspec: any ``scheme://`` but ``file://``."""
    return is_url(path) and not str(path).startswith("file://")


def local_path(path: str | os.PathLike) -> str:
    """``file:///a/b`` -> ``/a/b``; anything else as it is."""
    s = str(path)
    return s[len("file://"):] if s.startswith("file://") else s


def join(base: str, rel: str) -> str:
    """``rel`` under ``base`` (a URL or a folder): ``s3://b/k`` + ``x/y.mp4`` ->
    ``s3://b/k/x/y.mp4``; a URL or an absolute ``rel`` as it is."""
    if is_url(rel) or rel.startswith("/"):
        return rel
    if is_url(base):
        return f"{base.rstrip('/')}/{rel}"
    return os.path.join(base, rel)


def parent(url: str) -> str:
    """The folder of a URL or path: ``s3://b/k/shards.json`` -> ``s3://b/k``."""
    if is_url(url):
        head, _, _ = url.rstrip("/").rpartition("/")
        return head if not head.endswith(":/") else url.rstrip("/")
    return os.path.dirname(url) or "."


def basename(url: str) -> str:
    """The last part of a URL or path (without a query)."""
    return url.split("?")[0].rstrip("/").rpartition("/")[2]


def protocol(url: str) -> str:
    return str(url).split("://", 1)[0].lower() if is_url(url) else "file"


def storage_options(proto: str) -> dict[str, Any]:
    """fsspec options for ``proto``. S3: bounded timeouts and retries (``AWS_MAX_ATTEMPTS``,
    default 3 here, and ``TANET_REMOTE_TIMEOUT``), and the endpoint of ``AWS_ENDPOINT_URL_S3`` /
    ``AWS_ENDPOINT_URL`` passed explicitly (the same value a recent botocore reads itself; an
    older one ignores these variables). Credentials, profile and region are left to botocore."""
    timeout = float(os.environ.get("TANET_REMOTE_TIMEOUT") or 30)
    if proto in ("s3", "s3a"):
        attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or 3)
        opts: dict[str, Any] = {
            "config_kwargs": {"connect_timeout": timeout, "read_timeout": timeout,
                              "retries": {"max_attempts": attempts, "mode": "standard"}}}
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            opts["endpoint_url"] = endpoint
        return opts
    if proto in ("http", "https"):
        return {"client_kwargs": {"timeout": _aiohttp_timeout(timeout)}}
    return {}


def _aiohttp_timeout(seconds: float):
    import aiohttp

    return aiohttp.ClientTimeout(total=None, connect=seconds, sock_read=seconds)


def filesystem(url: str):
    """The fsspec filesystem of ``url``'s protocol (one per process and protocol)."""
    proto = protocol(url)
    key = (os.getpid(), proto)  # (pid: a spawned child that copied the dict makes its own)
    fs = _FS.get(key)
    if fs is None:
        extra = EXTRAS.get(proto)
        hint = f"pip install 'tanet[{extra}]'" if extra else "install the fsspec package for it"
        try:
            import fsspec
        except ImportError:
            raise RemoteError(url, f"reading {proto}:// URLs needs fsspec: {hint}") from None
        try:
            cls = fsspec.get_filesystem_class(proto)
        except ImportError as e:
            raise RemoteError(url, f"reading {proto}:// URLs needs {e.name or 'a package'}: "
                                   f"{hint}") from None
        except ValueError:
            raise RemoteError(url, f"unknown protocol {proto!r}") from None
        try:
            fs = cls(skip_instance_cache=True, **storage_options(proto))
        except ImportError as e:
            raise RemoteError(url, f"reading {proto}:// URLs needs {e.name}: {hint}") from None
        if hasattr(fs, "retries"):  # s3fs: botocore retries; its own loop would multiply them
            fs.retries = 1
        _FS[key] = fs
    return fs


def _endpoint(url: str) -> str:
    fs = _FS.get((os.getpid(), protocol(url)))
    client = getattr(fs, "client_kwargs", None) or {}
    where = (getattr(fs, "endpoint_url", None) or client.get("endpoint_url")
             or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
    return f" at {where}" if where and protocol(url) in ("s3", "s3a") else ""


def _bucket(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


def translate(e: BaseException, url: str) -> BaseException:
    """A one-line error for what ``url``'s filesystem raised (the same object if unknown)."""
    if isinstance(e, RemoteError):
        return e
    text = f"{type(e).__name__} {e}"
    low = text.lower()
    if "nosuchbucket" in low or "bucket does not exist" in low or "no such bucket" in low:
        return RemoteError(url, f"no such bucket {_bucket(url)!r}{_endpoint(url)} (create it, "
                                f"or check the URL)")
    if "unable to locate credentials" in low or "nocredentials" in low:
        return RemoteError(url, "no credentials found: set AWS_ACCESS_KEY_ID and "
                                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")
    if isinstance(e, PermissionError) or any(w in low for w in (
            "accessdenied", "access denied", "invalidaccesskeyid", "signaturedoesnotmatch",
            "forbidden", "403", "credentials")):
        return RemoteError(url, f"access denied{_endpoint(url)}: check the credentials "
                                f"(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)")
    if isinstance(e, FileNotFoundError) or "nosuchkey" in low or "404" in low:
        if str(e).startswith(f"{url}: "):
            return e
        return FileNotFoundError(f"{url}: no such file at that URL")
    if isinstance(e, (ConnectionError, TimeoutError, OSError)) or any(w in low for w in (
            "connect", "timeout", "timed out", "endpoint", "disconnected", "reset")):
        attempts = os.environ.get("AWS_MAX_ATTEMPTS") or "3"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return RemoteError(url, f"cannot reach the store{_endpoint(url)} after {attempts} "
                                f"attempts ({first[:160]})")
    return e


@contextlib.contextmanager
def remote_errors(url: str) -> Iterator[None]:
    """Turn what a filesystem raises inside the block into :func:`translate`'s error."""
    try:
        yield
    except RemoteError:
        raise
    except Exception as e:  # botocore, aiohttp and fsspec errors have no common base
        err = translate(e, url)
        if err is e:
            raise
        raise err from None


def _path(fs, url: str) -> str:
    return fs._strip_protocol(url)


def open_url(url: str, mode: str = "rb", *, block_size: int = VIDEO_BLOCK) -> IO[bytes]:
    """A seekable binary file object on ``url`` (range requests of ``block_size``), or (``wb``)
    a writer whose object appears whole when it is closed (S3: a multipart upload)."""
    fs = filesystem(url)
    with remote_errors(url):
        if "r" in mode:
            return fs.open(_path(fs, url), mode, block_size=block_size, cache_type="readahead")
        return fs.open(_path(fs, url), mode)


def stat(url: str) -> RemoteStat:
    """Size and version tag of the object at ``url`` (FileNotFoundError if there is none)."""
    fs = filesystem(url)
    with remote_errors(url):
        info = fs.info(_path(fs, url))
    if info.get("type") == "directory":
        raise IsADirectoryError(f"{url}: a folder, not a file")
    tag = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime")
    return RemoteStat(int(info.get("size") or 0), str(tag or "").strip('"'))


def exists(url: str) -> bool:
    fs = filesystem(url)
    with remote_errors(url):
        return bool(fs.exists(_path(fs, url)))


def read_bytes(url: str) -> bytes:
    """The whole object (for small files: lists, manifests, class names)."""
    fs = filesystem(url)
    with remote_errors(url):
        return fs.cat_file(_path(fs, url))


def read_text(url: str) -> str:
    """A small text object as UTF-8 (BOM dropped)."""
    return read_bytes(url).decode("utf-8-sig")


def write_bytes(url: str, data: bytes) -> None:
    """Write ``data`` to ``url`` (the object appears whole, or not at all)."""
    fs = filesystem(url)
    with remote_errors(url):
        fs.pipe_file(_path(fs, url), data)


def listdir(url: str) -> list[str]:
    """Names of the objects directly under the folder ``url`` (empty if there is none)."""
    fs = filesystem(url)
    with remote_errors(url):
        try:
            return sorted(basename(p) for p in fs.ls(_path(fs, url), detail=False))
        except FileNotFoundError:
            return []


def expand(pattern: str) -> list[str]:
    """A brace pattern as its names: ``train-{000000..000511}.tar`` (zero-padded ranges),
    ``{a,b}``; a name without braces as itself."""
    if "{" not in pattern:
        return [pattern]
    try:
        from braceexpand import braceexpand
    except ImportError:
        raise RemoteError(pattern, "brace patterns need braceexpand: pip install "
                                   "'tanet[shards]'") from None
    return list(braceexpand(pattern))
