"""Two processes (torchrun, gloo, CPU) match one process with the same global batch.

Honest comparison: SyncBatchNorm has no CPU kernel, and per-process BatchNorm statistics over
half a batch differ from the single process's, so both runs use ``train.freeze_bn=true`` (BN
normalises with running statistics; everything else, including BN's affine parameters,
trains) and dropout 0. Then the only difference is the float summation order of the gradient
all-reduce, and the weights agree to ~1e-6 after several SGD steps. A run with a different
seed is checked to be far away, so the tolerance is meaningful.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _engine_data import make_videos, overrides

from tanet.config import Config, apply_overrides, config_to_dict
from tanet.engine import train
from tanet.models.checkpoint import load_state_file

TORCHRUN = Path(sys.executable).with_name("torchrun")


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
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "tanet",
                           "train", "--config", str(cfg_file), "--quiet"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    a = load_state_file(single / "last.safetensors")
    b = load_state_file(ddp / "last.safetensors")
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert diff < 1e-5, f"2-process weights differ from 1-process by {diff}"

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
