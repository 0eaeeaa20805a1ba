"""Worker faults: a data-loader worker killed by SIGKILL (by itself or from outside, in the
loaders of build_loader and of a real ``tanet train``) is a clear error within seconds, not a
hang; a stopped worker is cut by the loader ``timeout``; a video that blocks for ever is cut by
the decode timeout and counted as skipped in a real ``tanet train`` run with workers."""
from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _engine_data import make_videos, overrides  # noqa: E402

from tanet.data.annotations import Record
from tanet.data.dataset import LoaderWorkerError, VideoDataset, build_loader
from tanet.data.transforms import build_train_transform

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_videos(tmp_path_factory.mktemp("fault_data"), per_class=4, val_per_class=2)


def _children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (from /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(d))
    return out


class _KillsItsWorker(VideoDataset):
    """Item ``kill_at`` SIGKILLs the worker process that loads it (as the OOM killer would)."""

    def __init__(self, *a, kill_at: int, **kw):
        super().__init__(*a, **kw)
        self.kill_at = kill_at

    def __getitem__(self, i):
        if i == self.kill_at and torch.utils.data.get_worker_info() is not None:
            self.pid_file.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__getitem__(i)


def _records(data: Path) -> list[Record]:
    return [Record(str(p), i % 3) for i, p in enumerate(sorted((data / "train").rglob("*.mp4")))]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("persistent,kill_at", [(True, 0), (True, 7), (False, 7)])
def test_worker_sigkill_is_a_clear_error_not_a_hang(data, tmp_path, persistent, kill_at):
    """The error names the dead worker's pid and says it was killed. (torch may also raise it
    from its SIGCHLD handler outside the loader, as a plain RuntimeError with the pid.)"""
    ds = _KillsItsWorker(_records(data), num_segments=4, train=True, kill_at=kill_at,
                         transform=build_train_transform(size=32, mean=MEAN, std=STD))
    ds.pid_file = tmp_path / "victim.pid"
    before = set(_children(os.getpid()))
    loader = build_loader(ds, batch_size=2, workers=2, persistent_workers=persistent,
                          shuffle=False)
    t0 = time.perf_counter()
    seen = []
    with pytest.raises(RuntimeError) as e:
        for epoch in range(2):
            for batch in loader:
                seen += batch["index"].tolist()
    elapsed = time.perf_counter() - t0
    msg, pid = str(e.value), ds.pid_file.read_text()
    assert f"DataLoader worker (pid {pid})" in msg or f"(pid(s) {pid})" in msg, msg
    assert "killed by signal" in msg or "killed by SIGKILL" in msg, msg
    if isinstance(e.value, LoaderWorkerError):
        assert "train.workers=0" in msg  # says what to do
    assert elapsed < 30, f"took {elapsed:.1f} s to notice"
    assert kill_at not in seen
    del loader, e
    gc.collect()
    deadline = time.time() + 20
    while set(_children(os.getpid())) - before and time.time() < deadline:
        time.sleep(0.1)  # the other worker is shut down
    assert not set(_children(os.getpid())) - before, "loader workers left running"


@pytest.mark.timeout(120)
def test_stopped_worker_is_cut_by_the_loader_timeout(data):
    """A worker that hangs outside decoding (here SIGSTOPped: alive, never answering) would
    block for ever; build_loader(timeout=...) turns it into an error."""
    ds = VideoDataset(_records(data), num_segments=4, train=True,
                      transform=build_train_transform(size=32, mean=MEAN, std=STD))
    before = set(_children(os.getpid()))
    loader = build_loader(ds, batch_size=2, workers=1, timeout=3, prefetch_factor=1)
    it = iter(loader)
    next(it)
    workers = sorted(set(_children(os.getpid())) - before)
    assert len(workers) == 1
    os.kill(workers[0], signal.SIGSTOP)
    try:
        t0 = time.perf_counter()
        with pytest.raises(LoaderWorkerError, match="timed out after 3 seconds") as e:
            for _ in it:
                pass
        assert time.perf_counter() - t0 < 20
    finally:
        os.kill(workers[0], signal.SIGCONT)
        del it, loader, e
        gc.collect()  # the loader shuts its worker down (torch then stops watching its pid)
    deadline = time.time() + 20
    while workers[0] in _children(os.getpid()) and time.time() < deadline:
        time.sleep(0.1)
    assert workers[0] not in _children(os.getpid())


def _train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    cfg = REPO / "configs" / "synthetic_tanet_tiny.yaml"
    sets = [a for o in overrides(data, out, *extra) for a in ("--set", o)]
    return [sys.executable, "-m", "tanet", "train", "--config", str(cfg), *sets, "--quiet"]


@pytest.mark.timeout(180)
def test_tanet_train_worker_killed_from_outside_exits_with_a_clear_error(data, tmp_path):
    """SIGKILL a loader worker of a real ``tanet train`` (2 workers) mid-run: the run stops
    with an error naming the dead worker, within seconds, instead of hanging."""
    out = tmp_path / "run"
    p = subprocess.Popen(_train_cmd(data, out, "train.epochs=10000", "train.workers=2",
                                    "data.val=null"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        t0 = time.time()
        victims: list[int] = []
        while time.time() - t0 < 90 and p.poll() is None:
            victims = [c for c in _children(p.pid)
                       if "python" in Path(f"/proc/{c}/comm").read_text()
                       or "pt_" in Path(f"/proc/{c}/comm").read_text()]
            if len(victims) >= 2 and (out / "metrics.jsonl").exists():
                break  # at least one epoch done: workers in full swing
            time.sleep(0.1)
        assert p.poll() is None, p.stderr.read()
        assert len(victims) >= 2, "no loader workers found"
        os.kill(victims[0], signal.SIGKILL)
        killed_at = time.time()
        try:
            _, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("tanet train hung after its loader worker was killed")
        assert time.time() - killed_at < 30
        print(f"\ntanet train after its worker was killed: exit {p.returncode}, "
              f"{err.strip().splitlines()[-1]}")
        assert p.returncode not in (0, None), err
        assert f"DataLoader worker (pid {victims[0]})" in err or \
            f"DataLoader worker (pid(s) {victims[0]})" in err, err[-2000:]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.mark.timeout(180)
def test_tanet_train_counts_a_video_that_decodes_for_ever(data, tmp_path):
    """A FIFO named .mp4 that nobody writes to blocks its reader for ever. In a real
    ``tanet train`` with 2 loader workers and data.decode_timeout=1 it is cut, skipped and
    counted in every epoch; the run finishes."""
    fifo = tmp_path / "stuck.mp4"
    os.mkfifo(fifo)
    train_list = tmp_path / "train.txt"
    videos = sorted((data / "train").rglob("*.mp4"))
    lines = [f"{v} {['left', 'right', 'still'].index(v.parent.name)}" for v in videos]
    lines.insert(5, f"{fifo} 0")
    train_list.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    t0 = time.time()
    try:
        r = subprocess.run(_train_cmd(data, out, "train.epochs=2", "train.workers=2",
                                      f"data.train={train_list}", "data.decode_timeout=1",
                                      "data.val=null"),
                           capture_output=True, text=True, timeout=150, cwd=REPO)
    finally:
        try:  # release the abandoned reader thread, if its process still lives
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    assert r.returncode == 0, r.stderr[-3000:]
    assert time.time() - t0 < 150
    epochs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["skipped"] for e in epochs] == [1, 1]
    assert (out / "skipped.txt").read_text() == f"epoch 1\t{fifo}\nepoch 2\t{fifo}\n"
