"""Untrusted checkpoints: nothing in a weights file can run code."""
import pickle

import pytest
import torch

from tanet.models import create_model
from tanet.models.checkpoint import (CheckpointError, UnsafeCheckpointError, load_imagenet,
                                     load_state_file, save_model)
from tanet.models.factory import load_model


class _Evil:
    """Unpickling this calls os.system-like code: here, creating a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_torch_file(path, marker):
    # a real torch.save zip whose data.pkl would open (create) `marker` when unpickled
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Evil(str(marker))}, path)


def test_code_executing_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.pth"
    _evil_torch_file(evil, marker)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pth: refused to load"):
        load_state_file(evil)
    assert not marker.exists()
    # every entry point that takes a checkpoint goes through the same gate
    with pytest.raises(UnsafeCheckpointError):
        load_imagenet(create_model("tsn_tiny", num_classes=2), evil)
    with pytest.raises(CheckpointError):
        load_model(evil)
    assert not marker.exists()


def test_raw_legacy_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned2.txt"
    evil = tmp_path / "legacy.pkl"
    with open(evil, "wb") as f:
        pickle.dump(_Evil(str(marker)), f, protocol=2)
    with pytest.raises(CheckpointError):
        load_state_file(evil)
    assert not marker.exists()


@pytest.mark.parametrize("content,err", [
    (b"", "empty file"),
    (b"this is not a checkpoint", "not a readable"),
    (b"PK\x03\x04garbage", "not a readable"),
])
def test_garbage_files_give_clear_errors(tmp_path, content, err):
    p = tmp_path / "bad.pth"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"bad\.pth: .*{err}"):
        load_state_file(p)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_state_file(tmp_path / "nope.safetensors")


def test_truncated_safetensors_is_an_error_not_a_crash(tmp_path):
    m = create_model("tsn_tiny", num_classes=2)
    good = save_model(tmp_path / "m.safetensors", m)
    data = good.read_bytes()
    for cut in (8, 100, len(data) // 2, len(data) - 1):
        p = tmp_path / f"cut{cut}.safetensors"
        p.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=rf"cut{cut}\.safetensors"):
            load_model(p)


def test_plain_tensor_checkpoints_still_load(tmp_path):
    p = tmp_path / "ok.pth"
    torch.save({"state_dict": {"a": torch.ones(2)}, "epoch": 3, "best_prec1": 71.5}, p)
    obj = load_state_file(p)
    assert obj["epoch"] == 3 and torch.equal(obj["state_dict"]["a"], torch.ones(2))
