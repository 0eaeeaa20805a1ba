"""A live MPEG-TS stream for the tests: an HTTP server on 127.0.0.1 that sends a file at the
pace of its timestamps (each packet once the wall clock reaches its time), chunked like a live
HTTP/1.1 source, and a writer that feeds a pipe at the same pace."""
from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path
from typing import BinaryIO

import av


def packet_schedule(path: Path) -> list[tuple[int, float]]:
    """(byte offset, seconds) of each video packet of ``path``, in file order."""
    out = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for p in c.demux(s):
            if p.pos is not None and p.pts is not None:
                out.append((p.pos, float(p.pts * p.time_base)))
    t0 = min(t for _, t in out)
    return [(pos, t - t0) for pos, t in out]


def paced_write(data: bytes, schedule: list[tuple[int, float]], write, *, rate: float = 1.0,
                stop: threading.Event | None = None) -> None:
    """Write ``data`` through ``write(bytes)``, the bytes before each packet once its time (at
    ``rate`` x real time) has come."""
    start, sent = time.monotonic(), 0
    for pos, t in schedule:
        if stop is not None and stop.is_set():
            return
        delay = start + t / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if pos > sent:
            write(data[sent:pos])
            sent = pos
    write(data[sent:])


class StreamServer:
    """``with StreamServer(ts_path, rate=1.0) as url:`` serves the file at ``url`` paced."""

    def __init__(self, path: Path, *, rate: float = 1.0) -> None:
        data, schedule = Path(path).read_bytes(), packet_schedule(Path(path))
        self.stop = threading.Event()
        stop = self.stop

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

                def chunk(b: bytes) -> None:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
                    self.wfile.flush()

                try:
                    paced_write(data, schedule, chunk, rate=rate, stop=stop)
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/live.ts"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        return self.url

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


def feed_pipe(path: Path, pipe: BinaryIO, *, rate: float = 1.0, upto: float | None = None,
              close: bool = True) -> threading.Thread:
    """A thread writing ``path`` into ``pipe`` paced (only the packets before ``upto`` seconds
    when given), then closing it when ``close``."""
    data, schedule = Path(path).read_bytes(), packet_schedule(Path(path))
    if upto is not None:
        cut = next((pos for pos, t in schedule if t >= upto), len(data))
        data, schedule = data[:cut], [(p, t) for p, t in schedule if p < cut]

    def run() -> None:
        try:
            paced_write(data, schedule, lambda b: (pipe.write(b), pipe.flush()), rate=rate)
            if close:
                pipe.close()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the reader exited

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t
