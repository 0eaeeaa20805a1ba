"""A training run never loses its work: SIGKILL at random moments (also in the middle of a
checkpoint write), SIGINT/SIGTERM, and NaN/Inf losses.

The kill and signal tests drive the real ``tanet train`` CLI in subprocesses and compare the
final weights, bit for bit, with an uninterrupted run of the same command.
"""
from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _engine_data import make_videos, overrides

from tanet.config import Config, apply_overrides
from tanet.engine import NonFiniteLossError, TrainingInterrupted, load_train_state, train
from tanet.models.checkpoint import load_state_file
from tanet.models.factory import load_model
from tanet.models.recognizer import Recognizer

# 12 training videos, batch 2: 6 steps per epoch, 4 epochs, `last` saved after every step
RUN = ("train.epochs=4", "train.batch_size=2", "train.checkpoint_every=1", "train.workers=1",
       "model.dropout=0.2", "train.eval_every=2", "train.warmup_epochs=0.5")
KILLS_RANDOM, KILLS_IN_WRITE = 3, 3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_videos(tmp_path_factory.mktemp("videos"))


def _cmd(data: Path, out: Path, *extra: str, resume: bool = False) -> list[str]:
    cfg = out.parent / f"{out.name}.yaml"
    cfg.write_text("model:\n  name: tanet_tiny\n")
    sets = [x for kv in overrides(data, out, *RUN, *extra) for x in ("--set", kv)]
    return [sys.executable, "-m", "tanet", "train", "--config", str(cfg), "--quiet", *sets,
            *(["--resume"] if resume else [])]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The uninterrupted run: its final weights and per-epoch metrics."""
    out = tmp_path_factory.mktemp("reference") / "run"
    p = subprocess.run(_cmd(data, out), env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def _same_run(a: Path, b: Path) -> None:
    wa, wb = load_state_file(a / "last.safetensors"), load_state_file(b / "last.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs from the uninterrupted run"

    def records(d: Path) -> list[dict]:
        return [{k: v for k, v in json.loads(ln).items() if k not in ("clips_per_s", "epoch_time")}
                for ln in (d / "metrics.jsonl").read_text().splitlines()]

    assert records(a) == records(b)


def _check_loadable(out: Path) -> None:
    """Whatever a kill left behind resumes: the state is whole and the weights file loads."""
    if (out / "last.state.pt").exists():
        weights, state = load_train_state(out)
        assert weights and "optimizer" in state
    if (out / "last.safetensors").exists():
        load_model(out / "last.safetensors")


def _temp_files(out: Path) -> list[str]:
    try:
        return [n for n in os.listdir(out) if n.endswith(".tmp")]
    except FileNotFoundError:
        return []


@pytest.mark.timeout(600)
def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(data, reference, tmp_path):
    out = tmp_path / "killed"
    rnd = random.Random(7)
    in_write = done = 0
    plan = ["random"] * KILLS_RANDOM + ["in_write"] * KILLS_IN_WRITE
    rnd.shuffle(plan)
    for how in plan:
        resume = (out / "last.state.pt").exists()
        before = (out / "last.state.pt").stat().st_mtime_ns if resume else 0
        p = subprocess.Popen(_cmd(data, out, resume=resume), env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # wait until this process has saved one checkpoint of its own (it made progress)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120:
            st = out / "last.state.pt"
            if st.exists() and st.stat().st_mtime_ns != before:
                break
            if p.poll() is not None:
                break
            time.sleep(0.005)
        if p.poll() is not None:  # finished before the kill: the plan is too long
            assert p.returncode == 0, p.stderr.read().decode()[-3000:]
            break
        if how == "random":
            time.sleep(rnd.uniform(0.0, 0.4))
        else:  # the moment a checkpoint's temporary file appears
            deadline = time.monotonic() + 20
            while not _temp_files(out) and time.monotonic() < deadline and p.poll() is None:
                pass
        p.kill()
        p.wait()
        p.stderr.close()
        done += 1
        in_write += bool(_temp_files(out))  # still there: the kill cut a write short
        _check_loadable(out)
    assert done >= KILLS_RANDOM + KILLS_IN_WRITE - 1, "the run ended before it could be killed"
    assert in_write >= 1, "no kill landed inside a checkpoint write"
    p = subprocess.run(_cmd(data, out, resume=True), env=_env(), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert not _temp_files(out)  # stale temp files of cut writes are cleared on resume
    _same_run(reference, out)
    print(f"\nkilled {done} times ({in_write} inside a checkpoint write); resumed run equals the "
          f"uninterrupted one")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_sigint_sigterm_save_and_exit_cleanly(data, reference, tmp_path, sig):
    out = tmp_path / "sig"
    # SIGINT as a terminal's Ctrl-C sends it: to the whole process group, loader worker too
    p = subprocess.Popen(_cmd(data, out, "train.checkpoint_every=null"), env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    t0 = time.monotonic()
    while not (out / "last.state.pt").exists() and time.monotonic() - t0 < 120:
        assert p.poll() is None, p.stderr.read()[-3000:]
        time.sleep(0.005)
    if sig == signal.SIGINT:
        os.killpg(p.pid, sig)
    else:
        p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + sig, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "checkpoint saved" in err and "--resume" in err, err
    state = torch.load(out / "last.state.pt", weights_only=True)
    assert 1 <= state["epoch"] < 4
    p = subprocess.run(_cmd(data, out, "train.checkpoint_every=null", resume=True), env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    _same_run(reference, out)


class _OnForward:
    """A global forward hook that acts on the Nth forward pass of a Recognizer."""

    def __init__(self, n: int, action) -> None:
        self.n, self.action, self.calls = n, action, 0

    def __call__(self, module, args, output):
        if isinstance(module, Recognizer) and module.training:
            self.calls += 1
            if self.calls == self.n:
                return self.action(output)
        return None

    def __enter__(self):
        self.handle = torch.nn.modules.module.register_module_forward_hook(self)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.mark.timeout(900)
def test_sigkill_then_resume_under_bf16_equals_uninterrupted_bf16(data, tmp_path):
    """bf16 training (what ``train.amp: auto`` picks on a CPU with avx512_bf16): a run killed
    at a random moment after one of its checkpoints and resumed gives, bit for bit, the weights
    and metrics of the uninterrupted bf16 run."""
    bf16 = ("train.amp=bf16", "train.epochs=2")
    ref = tmp_path / "reference"
    p = subprocess.run(_cmd(data, ref, *bf16), env=_env(), capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = tmp_path / "killed"
    p = subprocess.Popen(_cmd(data, out, *bf16), env=_env(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    t0 = time.monotonic()
    while not (out / "last.state.pt").exists() and p.poll() is None \
            and time.monotonic() - t0 < 300:
        time.sleep(0.005)
    time.sleep(random.Random(3).uniform(0.0, 0.3))
    p.kill()
    p.wait()
    p.stderr.close()
    _, state = load_train_state(out)
    assert state["precision"] == "bf16" and state["step"] < 12  # killed before the end
    p = subprocess.run(_cmd(data, out, *bf16, resume=True), env=_env(), capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    _same_run(ref, out)
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["precision"] == "bf16"


def _cfg(data, out, *extra):
    return apply_overrides(Config(), overrides(data, out, "data.val=null", "train.epochs=2",
                                               "model.dropout=0.2", *extra)).validate("test")


@pytest.mark.parametrize("accumulate, nth, micro", [(1, 2, 2), (2, 2, 2), (2, 3, 4)])
def test_signal_mid_epoch_stops_at_the_step_boundary_and_resumes_exactly(
        data, tmp_path, accumulate, nth, micro):
    """A SIGTERM delivered during the Nth forward pass stops after that optimiser step (with
    accumulation: after the window it falls in), saves the position within the epoch, and the
    resumed run equals the uninterrupted one."""
    extra = (f"train.accumulate={accumulate}", "train.batch_size=1")
    straight = tmp_path / "straight"
    train(_cfg(data, straight, *extra), quiet=True)

    out = tmp_path / "stopped"

    def send(output):
        os.kill(os.getpid(), signal.SIGTERM)

    with _OnForward(nth, send), pytest.raises(TrainingInterrupted) as exc:
        train(_cfg(data, out, *extra), quiet=True)
    assert exc.value.exit_code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored
    state = torch.load(out / "last.state.pt", weights_only=True)
    assert (state["epoch"], state["micro"], state["step"]) == (0, micro, micro // accumulate)
    assert not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text()
    with pytest.raises(ValueError, match="middle of an epoch.*train.batch_size=1"):
        train(_cfg(data, out, f"train.accumulate={accumulate}", "train.batch_size=2"),
              resume=True, quiet=True)
    train(_cfg(data, out, *extra), resume=True, quiet=True)
    _same_run(straight, out)


def test_nan_loss_stops_with_step_and_videos(data, tmp_path):
    out = tmp_path / "nan"
    nan = lambda output: output * float("nan")  # noqa: E731
    with _OnForward(3, nan), pytest.raises(NonFiniteLossError) as exc:
        train(_cfg(data, out, "train.batch_size=4"), quiet=True)
    msg = str(exc.value)
    assert "non-finite loss nan at epoch 1, step 3" in msg, msg
    paths = msg.split("the batch's videos: ")[1].split(". Nothing")[0].split(", ")
    assert len(paths) == 4 and all(Path(x).is_file() for x in paths), msg
    assert "train.on_nonfinite=skip" in msg


def test_nan_loss_skipped_when_configured(data, tmp_path):
    out = tmp_path / "skip"
    inf = lambda output: output + float("inf")  # noqa: E731
    with _OnForward(2, inf):
        train(_cfg(data, out, "train.batch_size=4", "train.on_nonfinite=skip"), quiet=True)
    recs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert recs[0]["nonfinite_batches"] == 1 and "nonfinite_batches" not in recs[1]
    assert all(math.isfinite(r["train_loss"]) for r in recs)
    assert recs[0]["step"] == 3  # the skipped batch still counts as a (null) step
    lines = (out / "nonfinite.txt").read_text().splitlines()
    assert len(lines) == 4 and all(ln.startswith("epoch 1\t") for ln in lines)
    assert all(Path(ln.split("\t")[1]).is_file() for ln in lines)
    w = load_state_file(out / "last.safetensors")
    assert all(torch.isfinite(v.float()).all() for v in w.values())


def test_diverging_run_stops_through_the_cli(data, tmp_path):
    """A real divergence (absurd learning rate, no clipping) ends `tanet train` with exit 1 and
    the step and videos, not a traceback or a run of NaN weights."""
    out = tmp_path / "diverge"
    p = subprocess.run(_cmd(data, out, "train.lr=1e12", "train.clip_grad=null",
                            "train.optimizer=sgd"),
                       env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    assert "error: non-finite loss" in p.stderr and "step" in p.stderr, p.stderr[-3000:]
    assert str(data) in p.stderr  # the batch's video paths


def _lopsided_list(data: Path, out: Path) -> Path:
    """A video list of the training videos with a long tail: left 4, right 2, still 1."""
    keep = {"left": 4, "right": 2, "still": 1}
    lines = [f"train/{name}/{i}.mp4 {c}" for c, name in enumerate(("left", "right", "still"))
             for i in range(keep[name])]
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.mark.timeout(600)
def test_sigkill_then_resume_with_the_balanced_sampler(data, tmp_path):
    """data.sampler=balanced (draws with replacement, one per (seed, epoch)) with a weighted
    loss on a lopsided list: SIGKILLs after mid-epoch checkpoints, then --resume, give the
    uninterrupted run's weights bit for bit; a uniform-sampler run differs (not vacuous)."""
    lst = _lopsided_list(data, tmp_path / "lopsided.txt")
    extra = (f"data.train={lst}", "data.sampler=balanced", "train.loss=weighted_ce",
             "train.epochs=3", "train.eval_every=3")
    ref = tmp_path / "reference"
    p = subprocess.run(_cmd(data, ref, *extra), env=_env(), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = tmp_path / "killed"
    rnd = random.Random(3)
    kills = 0
    for _ in range(2):
        resume = (out / "last.state.pt").exists()
        before = (out / "last.state.pt").stat().st_mtime_ns if resume else 0
        p = subprocess.Popen(_cmd(data, out, *extra, resume=resume), env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120 and p.poll() is None:
            st = out / "last.state.pt"
            if st.exists() and st.stat().st_mtime_ns != before:
                break
            time.sleep(0.005)
        if p.poll() is not None:
            break
        time.sleep(rnd.uniform(0.0, 0.3))
        p.kill()
        p.wait()
        kills += 1
    assert kills >= 1, "the run ended before it could be killed"
    state = torch.load(out / "last.state.pt", weights_only=True)
    assert state["epoch"] < 3
    p = subprocess.run(_cmd(data, out, *extra, resume=True), env=_env(), capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    _same_run(ref, out)
    uniform = tmp_path / "uniform"
    p = subprocess.run(_cmd(data, uniform, *extra, "data.sampler=uniform"), env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    wa, wu = load_state_file(ref / "last.safetensors"), load_state_file(uniform / "last.safetensors")
    assert not all(torch.equal(wa[k], wu[k]) for k in wa)
