"""Features: Predictor.features against the classifier, ``tanet extract`` (labels, failures,
per-frame, resume after a kill), and ``tanet extract`` + ``tanet predict`` under torchrun (two
gloo processes) giving the single-process output."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tanet.apps.extract import load_features
from tanet.apps.predict import Predictor
from tanet.cli import main
from tanet.data.encode import write_video
from tanet.testing.tiny import tiny_checkpoint
from tanet.testing.torchrun import torchrun

NAMES = ["left", "right", "still"]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("features")
    ckpt, m = tiny_checkpoint(d / "tiny.safetensors", NAMES, fc_std=0.05)
    rng = np.random.default_rng(0)
    for i in range(6):
        write_video(d / "clips" / f"c{i}.mp4", rng.integers(0, 255, (10, 32, 40, 3), np.uint8))
    lines = [f"clips/c{i}.mp4 {i % 3}" for i in range(6)]
    (d / "list.txt").write_text("\n".join(lines[:3] + ["clips/missing.mp4 1"] + lines[3:]) + "\n")
    (d / "classes.txt").write_text("\n".join(NAMES) + "\n")
    return {"dir": d, "ckpt": ckpt, "model": m.eval()}


def _expected(media, per_frame=False):
    p = Predictor(media["ckpt"])
    return np.stack([p.features(media["dir"] / "clips" / f"c{i}.mp4", per_frame=per_frame)
                     for i in range(6)])


def test_features_are_the_classifier_input(media):
    p = Predictor(media["ckpt"], views="2x3", amp="off")  # the fp32 classifier below
    video = media["dir"] / "clips" / "c0.mp4"
    feat, frames = p.features(video), p.features(video, per_frame=True)
    assert feat.shape == (128 * 4,) and frames.shape == (4, 128 * 4)
    assert np.allclose(frames.mean(0), feat, atol=1e-6)
    with torch.no_grad():
        probs = media["model"].fc(torch.from_numpy(feat)).softmax(-1).numpy()
    assert np.allclose(probs, p.predict(video).probs, atol=1e-6)  # fc(mean feature) = logits
    assert not np.allclose(feat, p.features(media["dir"] / "clips" / "c1.mp4"), atol=1e-3)


def test_extract_list_with_labels_and_a_failure(media, capsys):
    d, out = media["dir"], media["dir"] / "feats.npz"
    args = ["extract", str(d / "list.txt"), "--checkpoint", str(media["ckpt"]), "--out", str(out),
            "--shard-size", "2", "--quiet"]
    assert main(args) == 1  # one video is missing: reported, the rest written
    f = load_features(out)
    assert f["paths"].tolist()[3] == "clips/missing.mp4" and len(f["paths"]) == 7
    assert f["labels"].tolist() == [0, 1, 2, 1, 0, 1, 2] and f["class_names"].tolist() == NAMES
    assert f["ok"].tolist() == [True] * 3 + [False] + [True] * 3
    assert f["failed"].tolist() == [3] and "missing.mp4" in f["errors"][0]
    assert np.isnan(f["features"][3]).all()
    assert np.allclose(np.delete(f["features"], 3, axis=0), _expected(media), atol=1e-6)
    assert not (d / "feats.npz.parts").exists()
    assert main(args) == 1 and "already complete, kept" in capsys.readouterr().out

    assert main(["extract", str(d / "clips"), "--checkpoint", str(media["ckpt"]), "--out",
                 str(d / "frames.npz"), "--per-frame", "--quiet"]) == 0
    g = load_features(d / "frames.npz")
    assert g["features"].shape == (6, 4, 512) and "labels" not in g
    assert np.allclose(g["features"], _expected(media, per_frame=True), atol=1e-6)


def test_extract_resumes_after_a_kill(media, tmp_path, capsys):
    """A fifo stalls the run at video 5 (shard 2 of 2-video shards); after SIGKILL the rerun
    keeps shards 0 and 1 and computes the rest."""
    d = media["dir"]
    fifo = tmp_path / "stall.mp4"
    os.mkfifo(fifo)
    lst = tmp_path / "list.txt"
    clips = [str(d / "clips" / f"c{i}.mp4") for i in range(6)]
    lst.write_text("\n".join(clips[:5] + [str(fifo)] + clips[5:]) + "\n")
    out = tmp_path / "feats.npz"
    args = ["extract", str(lst), "--checkpoint", str(media["ckpt"]), "--out", str(out),
            "--shard-size", "2", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "tanet", *args], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "feats.npz.parts" / "shard-000001.npz").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no shard written in 120 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not out.exists()
    assert sorted(p.name for p in (tmp_path / "feats.npz.parts").glob("*.npz")) == [
        "shard-000000.npz", "shard-000001.npz"]
    # another definition is not mixed with the partial run
    assert main(args + ["--per-frame"]) == 1
    assert "partial extraction with another" in capsys.readouterr().err
    fifo.unlink()
    shutil.copy(clips[0], fifo)
    assert main(args) == 0
    assert "4 from an earlier partial run" in capsys.readouterr().out
    expected = _expected(media)
    assert np.allclose(load_features(out)["features"],
                       np.concatenate([expected[:5], expected[:1], expected[5:]]), atol=1e-6)


SCRIPT = """
import sys
from tanet.cli import main
from tanet.engine.distributed import finish_distributed, init_distributed
init_distributed()  # one process group for both commands (each leaves it to its owner)
rc = main(["extract", {lst!r}, "--checkpoint", {ckpt!r}, "--out", {out!r}, "--shard-size", "2",
           "--parts", {parts!r}, "--quiet"])
rc2 = main(["predict", {lst!r}, "--checkpoint", {ckpt!r}, "--json", "--topk", "3", "--quiet"])
info = init_distributed()
finish_distributed()
# each rank's return codes go to its own file: two processes share one stdout pipe, and a
# line printed by rank 1 may land inside rank 0's buffered JSON output
with open({rcs!r}.format(rank=info.rank), "w") as f:
    f.write(f"{{rc}} {{rc2}}")
"""


def test_torchrun_two_processes_give_the_single_process_output(media, tmp_path, capsys):
    """extract and predict under ``torch.distributed.run --nproc_per_node=2`` (gloo): one
    merged .npz and one list of predictions, in input order; rank 1's shards live in its own
    folder (no shared file system) and reach rank 0 over the process group."""
    d = media["dir"]
    lst = d / "list.txt"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun process
    try:
        assert main(["extract", str(lst), "--checkpoint", str(media["ckpt"]), "--out",
                     str(tmp_path / "one.npz"), "--quiet"]) == 1
        capsys.readouterr()
        assert main(["predict", str(lst), "--checkpoint", str(media["ckpt"]), "--json",
                     "--topk", "3", "--quiet"]) == 1
    finally:
        torch.set_num_threads(threads)
    single = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    script = tmp_path / "job.py"
    script.write_text(SCRIPT.format(lst=str(lst), ckpt=str(media["ckpt"]),
                                    out=str(tmp_path / "two.npz"),
                                    parts=str(tmp_path / "parts-{rank}"),
                                    rcs=str(tmp_path / "rc-{rank}.txt")))
    proc = torchrun(2, str(script))
    for rank in (0, 1):  # both ranks report the missing video
        assert (tmp_path / f"rc-{rank}.txt").read_text() == "1 1", rank
    a, b = load_features(tmp_path / "one.npz"), load_features(tmp_path / "two.npz")
    assert b["paths"].tolist() == a["paths"].tolist() and b["ok"].tolist() == a["ok"].tolist()
    assert np.array_equal(a["features"], b["features"], equal_nan=True)
    assert b["errors"].tolist() == a["errors"].tolist()
    assert not (tmp_path / "parts-0").exists() and not (tmp_path / "parts-1").exists()
    two = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert [p["path"] for p in two] == [p["path"] for p in single] and len(two) == 7
    for p, q in zip(single, two):
        assert [t["label"] for t in p["top"]] == [t["label"] for t in q["top"]]
        assert p.get("error") == q.get("error")
        assert np.allclose([t["score"] for t in p["top"]], [t["score"] for t in q["top"]],
                           atol=2e-6)
