"""A real transfer test on the synthetic temporal benchmark, through ``tanet train``.

tanet_tiny is pre-trained on 6 classes (move right/left, grow/shrink, appear/disappear), then
trained on 2 other classes (move down/up: the same clip played forwards or backwards, so only
the order of the frames tells them apart). Started from the pre-trained checkpoint
(``model.init_from``, classifier re-initialised for 2 classes) it separates them after one
epoch; from scratch it is still at chance after three. ``benchmarks/transfer.py`` measures the
same over seeds, with a linear probe.
"""
import json

from tanet.cli import main
from tanet.data.synthetic import generate
from tanet.testing.transfer import A, B, class_subset, overrides


def _train(data, tag, out, *extra, quiet=True):
    sets = overrides(data, tag, out, *extra)
    quiet = ["--quiet"] if quiet else []
    assert main(["train", "--config", "synthetic_tanet_tiny", *quiet, "--set", *sets]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["val_top1"] for r in rows if "val_top1" in r]


def test_fine_tuning_beats_training_from_scratch(tmp_path, capsys):
    data = tmp_path / "data"
    generate(data, classes=10, videos_per_class=60, val_per_class=20, frames=8, size=32, seed=0,
             workers=1)
    class_subset(data, "A", A)
    class_subset(data, "B", B)
    pre = _train(data, "A", tmp_path / "pre", "train.epochs=10", "train.eval_every=10")
    init = f"model.init_from={tmp_path / 'pre' / 'last.safetensors'}"
    capsys.readouterr()
    tuned = _train(data, "B", tmp_path / "tuned", "train.epochs=1", init, quiet=False)
    log = capsys.readouterr().err
    assert "re-initialised fc.weight, fc.bias (6 -> 2 classes)" in log
    scratch = _train(data, "B", tmp_path / "scratch", "train.epochs=3")
    print(f"pre-trained on A: {pre}; B after 1 epoch fine-tuned {tuned}, from scratch {scratch}")
    assert tuned[0] >= 0.65 and max(scratch) <= tuned[0] - 0.15
