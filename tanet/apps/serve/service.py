"""What one ``tanet serve`` holds (:class:`Service`): its models by name, the admission queue and
the metrics they share, and the private folder requests spool their videos to; and the one way a
request is run (:meth:`Service.run`), whichever API it came in through (``/v1`` or the Open
Inference Protocol): admitted or refused with 503, its body received within the deadline, its
jobs run on its model's worker pool, its temporary files deleted and its queue slot freed when
the last job has ended, whatever happened."""
from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence, TypeVar

from tanet.apps.serve.batching import JobCancelled, keep_freed_memory
from tanet.apps.serve.errors import ApiError
from tanet.apps.serve.metrics import Admission, ServeMetrics
from tanet.apps.serve.models import ServedModel
from tanet.apps.serve.settings import ServeSettings
from tanet.apps.serve.uploads import UploadError

__all__ = ["Service", "Spool"]

T = TypeVar("T")
Work = Sequence[tuple[Callable[..., Any], tuple]]  # (function, arguments) per pool job


class Spool:
    """The temporary files of one request (``tanet-upload-*`` in the server's folder), deleted
    together by :meth:`clear`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.paths: list[Path] = []
        self._lock = threading.Lock()

    def new(self) -> tuple[int, Path]:
        """A new empty file: (open descriptor, path); the caller closes the descriptor."""
        fd, name = tempfile.mkstemp(prefix="tanet-upload-", suffix=".bin", dir=self.directory)
        self.add(Path(name))
        return fd, Path(name)

    def add(self, path: Path) -> Path:
        with self._lock:
            self.paths.append(path)
        return path

    def clear(self) -> None:
        with self._lock:
            paths, self.paths = self.paths, []
        for p in paths:
            p.unlink(missing_ok=True)


class Service:
    """The models (``models``, the default first), the admission queue, the metrics, the spool
    folder ``tmp``; ``ready`` once every model's batcher runs."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = s = settings
        specs = s.model_specs()  # names checked before anything loads
        if s.keep_memory:
            keep_freed_memory()
        self.metrics = ServeMetrics()
        self.models: dict[str, ServedModel] = {}
        try:
            for name, checkpoint in specs:
                self.models[name] = ServedModel(name, checkpoint, s, self.metrics)
        except BaseException:
            self._stop_models()
            raise
        self.default = specs[0][0]
        self.admission = Admission(s.max_queue, self.metrics.queue_depth)
        self._own_tmp = s.tmp_dir is None
        self.tmp = Path(s.tmp_dir or tempfile.mkdtemp(prefix="tanet-serve-"))
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.ready = False

    def start(self) -> None:
        for m in self.models.values():
            m.start()
        self.ready = True

    def _stop_models(self) -> None:
        for m in self.models.values():
            m.stop()

    def stop(self) -> None:
        self.ready = False
        self._stop_models()
        if self._own_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def model(self, name: str | None) -> ServedModel:
        """The model called ``name`` (None: the default), or 404 naming the ones there are."""
        if name is None or name == "":
            return self.models[self.default]
        if name not in self.models:
            raise ApiError(404, f"unknown model {name!r}; this server has "
                                f"{', '.join(map(repr, self.models))}")
        return self.models[name]

    async def run(self, model: ServedModel, receive: Callable[[Spool], Awaitable[T]],
                  work: Callable[[T], Work],
                  timeout_of: Callable[[T], float | None] | None = None) -> list[Any]:
        """Admit the request (else 503 + Retry-After), ``receive(spool)`` its body within the
        deadline (408 after; ``UploadError`` becomes its status), run every job of
        ``work(received)`` on ``model``'s pool and return their results in order (504 past the
        deadline, the jobs cancelled; a job's exception, the others cancelled). ``timeout_of``:
        a deadline the request sets itself, when shorter than ``--timeout``."""
        if not self.admission.enter():
            wait = self.admission.retry_after()
            raise ApiError(503, f"server busy: {self.admission.limit} requests in progress "
                                f"(--max-queue); retry in {wait} s", {"Retry-After": str(wait)})
        t0 = time.monotonic()
        deadline = self.settings.timeout_s
        spool = Spool(self.tmp)
        submitted = False
        try:
            try:
                received = await asyncio.wait_for(receive(spool), deadline)
            except UploadError as e:
                raise ApiError(e.status, e.message) from None
            except asyncio.TimeoutError:
                raise ApiError(408, f"request body not complete within the {deadline:g} s "
                                    "deadline (--timeout)") from None
            own = timeout_of(received) if timeout_of is not None else None
            deadline = min(deadline, own) if own else deadline
            jobs = [model.pool.submit(fn, *args) for fn, args in work(received)]
            left = [len(jobs)]
            lock = threading.Lock()

            def done(_: Any) -> None:
                with lock:
                    left[0] -= 1
                    last = left[0] == 0
                if last:
                    spool.clear()
                    self.admission.leave(time.monotonic() - t0)

            for job in jobs:
                job.future.add_done_callback(done)
            submitted = bool(jobs)
            try:
                return await asyncio.wait_for(
                    asyncio.gather(*(asyncio.wrap_future(j.future) for j in jobs)),
                    max(0.0, t0 + deadline - time.monotonic()))
            except BaseException as e:  # the request's other jobs stop too
                for job in jobs:
                    job.cancel()
                if isinstance(e, asyncio.TimeoutError):
                    raise ApiError(504, f"no result within the {deadline:g} s deadline "
                                        "(--timeout): the server is overloaded or the video is "
                                        "long") from None
                if isinstance(e, JobCancelled):
                    raise ApiError(503, f"not run: {e}", {"Retry-After": "5"}) from None
                raise
        finally:
            if not submitted:
                spool.clear()
                self.admission.leave()

