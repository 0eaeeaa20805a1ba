"""A truncated or damaged video never yields a clip or a prediction without a warning naming it:
dataset items and batches, ``tanet predict --json``, training's ``warnings.txt`` (or
``skipped.txt`` under ``data.on_warning=skip``) and ``tanet test``'s ``results.json``."""
from __future__ import annotations

import json

import numpy as np
import pytest
from _engine_data import CLASSES, _clip, make_videos, overrides

from tanet.cli import main
from tanet.config import Config, apply_overrides
from tanet.data import variants as V
from tanet.data.annotations import Record
from tanet.data.dataset import SkippedVideo, VideoDataset, collate
from tanet.data.decode import open_video
from tanet.data.encode import write_video
from tanet.engine import test as run_test
from tanet.engine import train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_videos(tmp_path_factory.mktemp("warn"), per_class=2, val_per_class=1)
    rng = np.random.default_rng(5)
    full = write_video(root / "full.avi", np.concatenate([_clip(1, rng)] * 2), codec="mpeg4")
    cut = V.truncate(full, root / "cut.avi", 0.55)
    with open_video(cut) as r:
        assert r.info.num_frames < 24
        msg = f"truncated: {r.info.num_frames} of 24 frames"
        assert r.warnings == [msg]
    lines = [f"{v} {CLASSES.index(v.parent.name)}" for v in sorted((root / "train").rglob("*.mp4"))]
    (root / "train.txt").write_text("\n".join(lines + [f"{cut} 1"]) + "\n")
    val = (root / "val.txt").read_text()
    (root / "val_cut.txt").write_text(val + f"{cut} 1\n")
    return {"root": root, "cut": cut, "msg": msg, "good": root / "val" / "left_0.mp4"}


def test_items_and_batches_carry_warnings(data):
    recs = [Record(str(data["good"]), 0), Record(str(data["cut"]), 1)]
    ds = VideoDataset(recs, num_segments=4, train=False)
    items = [ds[0], ds[1]]
    assert items[0]["warnings"] == [] and items[1]["warnings"] == [data["msg"]]
    batch = collate(items)
    assert batch["warnings"] == [(str(data["cut"]), data["msg"])] and batch["video"].shape[0] == 2
    skipping = VideoDataset(recs, num_segments=4, train=False, on_warning="skip")
    item = skipping[1]
    assert isinstance(item, SkippedVideo) and data["msg"] in item.error
    assert item.error.startswith(f"{data['cut']}: ") and "data.on_warning=skip" in item.error
    assert collate([skipping[0], item])["skipped"] == [item]
    with pytest.raises(ValueError, match="on_warning"):
        VideoDataset(recs, num_segments=4, train=False, on_warning="ignore")


def test_predict_json_lists_warnings(data, tmp_path, capsys):
    import tanet
    from tanet.models.checkpoint import save_model

    m = tanet.create_model("tanet_tiny", num_classes=3, num_segments=4, class_names=CLASSES)
    m.card.input_size, m.card.short_side = (3, 32, 32), 32
    ckpt = save_model(tmp_path / "tiny.safetensors", m)
    for path, expected in ((data["cut"], [data["msg"]]), (data["good"], [])):
        assert main(["predict", str(path), "--checkpoint", str(ckpt), "--json"]) == 0
        line = json.loads(capsys.readouterr().out)
        assert line["warnings"] == expected and len(line["top"]) == 3
    assert main(["predict", str(data["cut"]), "--checkpoint", str(ckpt)]) == 0
    assert f"[warning: {data['msg']}]" in capsys.readouterr().out


def _cfg(data, out, *extra):
    root = data["root"]
    return apply_overrides(Config(), overrides(root, out, f"data.train={root / 'train.txt'}",
                                               f"data.val={root / 'val_cut.txt'}",
                                               "train.epochs=1", *extra)).validate("test")


def test_training_lists_warned_videos_and_test_counts_them(data, tmp_path):
    out = tmp_path / "keep"
    train(_cfg(data, out), quiet=True)
    cut, msg = data["cut"], data["msg"]
    assert (out / "warnings.txt").read_text() == f"epoch 1\t{cut}\t{msg}\n"
    assert not (out / "skipped.txt").exists()
    rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert rec["warned"] == 1 and rec["val_num_warnings"] == 1
    run_test(out / "last.safetensors", out=tmp_path / "t", quiet=True)
    res = json.loads((tmp_path / "t" / "results.json").read_text())
    assert res["num_warnings"] == 1 and res["num_videos"] == 4
    assert (tmp_path / "t" / "warnings.txt").read_text() == f"{cut}\t{msg}\n"

    out = tmp_path / "skip"
    train(_cfg(data, out, "data.on_warning=skip"), quiet=True)
    assert (out / "skipped.txt").read_text() == f"epoch 1\t{cut}\n"
    assert not (out / "warnings.txt").exists()
    rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert rec["skipped"] == 1 and "warned" not in rec and rec["val_num_skipped"] == 1
