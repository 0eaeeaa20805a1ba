"""A real `tanet serve` subprocess on 127.0.0.1 and a small HTTP client (http.client) for tests
and benchmarks."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multipart(filename: str, data: bytes, field: str = "file") -> tuple[bytes, str]:
    """A multipart/form-data body with one file part: (body, content type)."""
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
            f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    body = head + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class Server:
    """``python -m tanet serve ...`` on a free loopback port; ``stop()`` sends SIGTERM."""

    def __init__(self, checkpoint: Path, tmp_dir: Path, log: Path, *args: str,
                 env: dict[str, str] | None = None, ready_s: float = 90) -> None:
        self.port = free_port()
        self.tmp_dir = tmp_dir
        self.log_path = log
        tmp_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "tanet", "serve", "--checkpoint", str(checkpoint),
               "--host", "127.0.0.1", "--port", str(self.port), "--tmp-dir", str(tmp_dir), *args]
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        deadline = time.monotonic() + ready_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.request("GET", "/healthz", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not answer /healthz within {ready_s:g} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 60
                ) -> tuple[int, dict[str, str], dict | str]:
        """(status, headers, JSON body or text)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            raw = resp.read()
            hdrs = {k.lower(): v for k, v in resp.getheaders()}
        finally:
            conn.close()
        text = raw.decode("utf-8", "replace")
        if hdrs.get("content-type", "").startswith("application/json"):
            return resp.status, hdrs, json.loads(text)
        return resp.status, hdrs, text

    def upload(self, path: str, data: bytes, filename: str = "clip.mp4",
               headers: dict[str, str] | None = None, timeout: float = 60):
        body, ctype = multipart(filename, data)
        return self.request("POST", path, body, {"Content-Type": ctype, **(headers or {})},
                            timeout=timeout)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode
