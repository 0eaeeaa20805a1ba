"""Two processes (torchrun, gloo, CPU) match one process with the same global batch.

Honest comparison: SyncBatchNorm has no CPU kernel, and per-process BatchNorm statistics over
half a batch differ from the single process's, so both runs use ``train.freeze_bn=true`` (BN
normalises with running statistics; everything else, including BN's affine parameters,
trains) and dropout 0. Then the only difference is the float summation order of the gradient
all-reduce, and the weights agree to ~1e-6 after several SGD steps. A run with a different
seed is checked to be far away, so the tolerance is meaningful.
"""
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from _engine_data import make_videos, overrides

from tanet.config import Config, apply_overrides, config_to_dict
from tanet.engine import train
from tanet.models.checkpoint import load_state_file
from tanet.testing.torchrun import torchrun

TORCHRUN = Path(sys.executable).with_name("torchrun")


def _assert_same_weights(single: Path, ddp: Path) -> dict:
    """The 2-process run's last weights are the 1-process run's, up to the all-reduce's sums;
    returns the 1-process run's."""
    a = load_state_file(single / "last.safetensors")
    b = load_state_file(ddp / "last.safetensors")
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert diff < 1e-5, f"2-process weights differ from 1-process by {diff}"
    return a


def _cfg(data, out, *extra):
    return apply_overrides(Config(), overrides(
        data, out, "train.epochs=2", "train.max_steps_per_epoch=2", "train.freeze_bn=true",
        "model.dropout=0.0", "data.flip=true", *extra)).validate("test")


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed beside python")
def test_two_process_gloo_matches_single_process(tmp_path):
    data = make_videos(tmp_path / "videos", per_class=4, val_per_class=2)  # 12 train, 6 val
    single = tmp_path / "single"
    train(_cfg(data, single, "train.batch_size=4"), quiet=True)

    ddp = tmp_path / "ddp"
    cfg = _cfg(data, ddp, "train.batch_size=2")
    cfg_file = tmp_path / "ddp.yaml"
    cfg_file.write_text(yaml.safe_dump(config_to_dict(cfg)))
    torchrun(2, "-m", "tanet", "train", "--config", str(cfg_file), "--quiet")
    a = _assert_same_weights(single, ddp)

    # evaluation sharded over 2 ranks counts each of the 6 videos once, with equal results
    ra = [json.loads(x) for x in (single / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (ddp / "metrics.jsonl").read_text().splitlines()]
    assert rb[-1]["val_num_videos"] == 6 and ra[-1]["val_num_videos"] == 6
    assert rb[-1]["val_top1"] == ra[-1]["val_top1"]
    assert rb[-1]["step"] == ra[-1]["step"] == 4
    assert not list(ddp.glob("*.tmp")) and (ddp / "best.safetensors").is_file()

    # the tolerance is meaningful: a different seed (different init and data) is far away
    other = tmp_path / "other"
    train(_cfg(data, other, "train.batch_size=4", "train.seed=5"), quiet=True)
    c = load_state_file(other / "last.safetensors")
    far = max((a[k].float() - c[k].float()).abs().max().item() for k in a)
    assert far > 1e-2
    shutil.rmtree(tmp_path / "videos")


SHARES = """
import json, sys
import torch.distributed as dist
from tanet.engine.distributed import init_distributed, all_gather, finish_distributed
from tanet.engine.samplers import ClassSampler, clip_weights
info = init_distributed("cpu")
labels = [0] * 9 + [1] * 3 + [2]
s = ClassSampler(clip_weights(labels, "balanced"), world_size=info.world_size, rank=info.rank,
                 seed=4)
mine = {}
for epoch in range(3):
    s.set_epoch(epoch)
    mine[epoch] = [i for _, i in s]
shares = all_gather(info, mine)
if info.main:
    json.dump(shares, open(sys.argv[1], "w"))
finish_distributed()
"""


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed beside python")
def test_balanced_sampler_ranks_take_shares_of_one_global_draw(tmp_path):
    """Real torchrun (3 processes, gloo): each rank's clips are its share (positions r, r + W,
    ...) of the one-process draw of the epoch; then a 2-process balanced-sampler run with a
    weighted loss on a lopsided list matches one process with the same global batch."""
    from tanet.engine.samplers import ClassSampler, clip_weights

    script = tmp_path / "shares.py"
    script.write_text(SHARES)
    torchrun(3, str(script), str(tmp_path / "shares.json"))
    shares = json.loads((tmp_path / "shares.json").read_text())
    one = ClassSampler(clip_weights([0] * 9 + [1] * 3 + [2], "balanced"), seed=4)
    for epoch in range(3):
        one.set_epoch(epoch)
        full = [i for _, i in one]  # 13 clips; 3 ranks take 5 each: 2 wrap around
        ranks = [s[str(epoch)] for s in shares]
        assert [len(r) for r in ranks] == [5, 5, 5]
        merged = [x for step in zip(*ranks) for x in step]
        assert merged == (full * 2)[:15]

    data = make_videos(tmp_path / "videos", per_class=4, val_per_class=1)
    lst = tmp_path / "lopsided.txt"
    lst.write_text("".join(f"train/{n}/{i}.mp4 {c}\n" for c, (n, k) in
                           enumerate((("left", 4), ("right", 3), ("still", 1))) for i in range(k)))
    extra = (f"data.train={lst}", "data.sampler=balanced", "train.loss=weighted_ce")
    single = tmp_path / "single"
    train(_cfg(data, single, "train.batch_size=4", *extra), quiet=True)
    ddp = tmp_path / "ddp"
    cfg_file = tmp_path / "ddp.yaml"
    cfg_file.write_text(yaml.safe_dump(config_to_dict(_cfg(data, ddp, "train.batch_size=2",
                                                           *extra))))
    torchrun(2, "-m", "tanet", "train", "--config", str(cfg_file), "--quiet")
    _assert_same_weights(single, ddp)
    shutil.rmtree(tmp_path / "videos")
