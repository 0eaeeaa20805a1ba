"""Engine end to end on real tiny mp4s: train + test artifacts, exact resume, atomic state."""
import json
import subprocess
import sys

import pytest
import torch
from _engine_data import CLASSES, make_videos, overrides

from tanet.config import Config, apply_overrides
from tanet.engine import load_train_state, train
from tanet.engine import test as run_test
from tanet.models.checkpoint import load_state_file
from tanet.models.factory import load_model


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_videos(tmp_path_factory.mktemp("videos"))


def cfg_for(data, out, *extra):
    return apply_overrides(Config(), overrides(data, out, *extra)).validate("test")


def test_train_then_test_writes_all_artifacts(data, tmp_path):
    out = tmp_path / "run"
    summary = train(cfg_for(data, out, "train.tensorboard=true"), quiet=True)
    for name in ("config.yaml", "metrics.jsonl", "last.safetensors", "last.state.pt",
                 "best.safetensors"):
        assert (out / name).is_file(), name
    assert any((out / "tb").iterdir())
    recs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [1, 2]
    assert {"train_loss", "train_top1", "lr", "clips_per_s", "skipped", "val_top1", "val_top5",
            "val_mean_class_acc"} <= set(recs[0])
    assert summary["best_top1"] == max(r["val_top1"] for r in recs)
    model = load_model(out / "last.safetensors")  # the checkpoint alone rebuilds the model
    assert model.card.class_names == CLASSES and model.card.input_size == (3, 32, 32)
    state = torch.load(out / "last.state.pt", weights_only=True)
    assert state["epoch"] == 2 and {"optimizer", "scheduler", "rng", "best"} <= set(state)

    res = run_test(out / "last.safetensors", views="2x3", out=tmp_path / "t", quiet=True)
    r = json.loads((tmp_path / "t" / "results.json").read_text())
    assert {"top1", "top5", "mean_class_acc", "num_videos", "num_skipped"} <= set(r)
    assert r["num_videos"] == 6 and r["num_skipped"] == 0 and r["views"] == "2x3"
    assert r["top5"] == 1.0  # 3 classes
    rows = (tmp_path / "t" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[0].startswith("index,path,label")
    assert (tmp_path / "t" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    # multi-view scores are the mean of per-view probabilities: 1 view differs from 6
    one = run_test(out / "last.safetensors", views="1x1", out=tmp_path / "t1", quiet=True)
    assert not torch.allclose(one["eval"].scores, res["eval"].scores)
    assert torch.allclose(res["eval"].scores.sum(1), torch.ones(6))


def test_resume_equals_uninterrupted_run(data, tmp_path):
    extra = ("train.epochs=3", "model.dropout=0.3", "train.workers=1", "data.flip=true",
             "train.warmup_epochs=0.5", "train.lr_steps=[2]")
    straight = tmp_path / "straight"
    train(cfg_for(data, straight, *extra), quiet=True)
    resumed = tmp_path / "resumed"
    train(cfg_for(data, resumed, *extra[1:], "train.epochs=1"), quiet=True)
    train(cfg_for(data, resumed, *extra), resume=True, quiet=True)
    a = load_state_file(straight / "last.safetensors")
    b = load_state_file(resumed / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la = (straight / "metrics.jsonl").read_text().splitlines()
    lb = (resumed / "metrics.jsonl").read_text().splitlines()
    strip = lambda ln: {k: v for k, v in json.loads(ln).items()  # noqa: E731
                        if k not in ("clips_per_s", "epoch_time")}
    assert [strip(x) for x in la] == [strip(x) for x in lb]
    # a different seed really changes the weights (the equality above is not vacuous)
    other = tmp_path / "other"
    train(cfg_for(data, other, *extra, "train.seed=2"), quiet=True)
    c = load_state_file(other / "last.safetensors")
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resume_starts_a_new_run_and_refuses_a_different_one(data, tmp_path, capsys):
    """--resume on a directory with nothing saved starts the run (one job script for the first
    start and every restart); a saved run with other defining settings is refused."""
    out = tmp_path / "fresh"
    train(cfg_for(data, out, "train.epochs=1", "data.val=null"), resume=True)
    assert "nothing saved yet; starting the run" in capsys.readouterr().err
    assert (out / "last.state.pt").is_file()
    with pytest.raises(ValueError, match="different run.*train.seed"):
        train(cfg_for(data, out, "train.epochs=2", "data.val=null", "train.seed=7"),
              resume=True, quiet=True)
    with pytest.raises(FileNotFoundError, match="nothing to resume from"):
        load_train_state(tmp_path / "none")


_KILLED_RUN = """
import sys
from tanet.config import Config, apply_overrides
from tanet.engine import load_train_state, train
sys.path.insert(0, sys.argv[1])
from _engine_data import overrides
from pathlib import Path
cfg = apply_overrides(Config(), overrides(Path(sys.argv[2]), Path(sys.argv[3]), "train.epochs=1000",
                                          "train.max_steps_per_epoch=1", "data.val=null"))
train(cfg, quiet=True)
"""


def test_state_file_always_loadable_under_sigkill(data, tmp_path):
    """Kill a run that checkpoints every ~0.1 s at random moments: both files stay loadable."""
    import random
    import time
    from pathlib import Path

    out = tmp_path / "killed"
    tests_dir = str(Path(__file__).parent)
    rnd = random.Random(0)
    for attempt in range(3):
        p = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, tests_dir, str(data), str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t0 = time.time()
        while not (out / "last.state.pt").exists() and time.time() - t0 < 60:
            if p.poll() is not None:
                raise AssertionError(p.stderr.read().decode())
            time.sleep(0.05)
        time.sleep(rnd.uniform(0.2, 1.0))
        p.kill()
        p.wait()
        state = torch.load(out / "last.state.pt", weights_only=True)
        assert state["epoch"] >= 1
        load_model(out / "last.safetensors")
        leftovers = [f.name for f in out.iterdir() if f.name.endswith(".tmp")]
        # a kill mid-write may leave a temp file, never a torn checkpoint
        assert all(f.startswith(".last.") for f in leftovers)


def test_switches_bf16_accumulate_channels_last_partial_bn(data, tmp_path):
    """AMP bf16 on CPU, gradient accumulation, channels-last, partial BN, label smoothing and a
    step schedule with warm-up train without error and give finite, changed weights."""
    out = tmp_path / "sw"
    cfg = cfg_for(data, out, "train.amp=bf16", "train.accumulate=2", "train.batch_size=2",
                  "train.channels_last=true", "model.partial_bn=true",
                  "train.label_smoothing=0.1", "train.warmup_epochs=1", "train.epochs=1",
                  "data.val=null")
    train(cfg, quiet=True)
    rec = json.loads((out / "metrics.jsonl").read_text())
    assert rec["step"] == 3  # 12 clips / (2 per micro-batch x 2 accumulated)
    w = load_state_file(out / "last.safetensors")
    assert all(torch.isfinite(v.float()).all() for v in w.values())
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        train(cfg_for(data, tmp_path / "fp16", "train.amp=fp16", "data.val=null"), quiet=True)


def test_sqrt_sampler_focal_loss_and_the_per_class_report(data, tmp_path, capsys):
    """data.sampler=sqrt with a class-weighted focal loss trains (the start-up line says so);
    `tanet test` writes the per-class table with the training counts the run recorded."""
    import csv

    out = tmp_path / "focal"
    train(cfg_for(data, out, "train.epochs=1", "data.sampler=sqrt", "train.loss=focal",
                  "train.class_weights=inverse", "train.focal_gamma=1.5"))
    err = capsys.readouterr().err
    assert "loss focal, class weights" in err and "sampler sqrt" in err, err
    run_test(out / "last.safetensors", out=tmp_path / "t", quiet=True)
    rows = list(csv.DictReader(open(tmp_path / "t" / "per_class.csv")))
    assert sorted(r["class"] for r in rows) == sorted(CLASSES)
    assert [r["train"] for r in rows] == ["4", "4", "4"] and [r["support"] for r in rows] == \
        ["2", "2", "2"]
    md = (tmp_path / "t" / "report.md").read_text()
    assert "| class | support | train |" in md and "confusion.png" in md
