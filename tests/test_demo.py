"""The demo pipeline end to end in its --quick form (tiny data, 2 epochs): every artifact."""
import subprocess
import sys

import torch

from tanet.apps.demo import pair_accuracy, reversal_pairs


def test_pair_accuracy_hand_case():
    names = ["move_right", "move_left", "grow", "shrink", "other"]
    pairs = reversal_pairs(names)
    assert pairs == [(0, 1), (2, 3)]
    scores = torch.tensor([[0.6, 0.4, 0, 0, 0],     # right: beats left  -> win
                           [0.6, 0.3, 0, 0, 0.1],   # left: loses to right -> loss
                           [0, 0, 0.2, 0.1, 0.7],   # grow beats shrink (top-1 wrong) -> win
                           [0, 0, 0, 0, 1.0]])      # "other" is in no pair: not counted
    labels = torch.tensor([0, 1, 2, 4])
    assert abs(pair_accuracy(scores, labels, pairs) - 2 / 3) < 1e-6


def test_demo_quick_writes_report(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "tanet", "demo", "--quick", "--quiet",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert "| tanet_tiny |" in report and "| tsn_tiny |" in report
    assert "within reversal pairs" in report and "Total wall time" in report
    for png in ("curves.png", "tam_kernels.png", "tanet/test/confusion.png",
                "tsn/test/confusion.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG", png
        assert f"({png})" in report
    for model in ("tanet", "tsn"):
        assert (out / model / "test" / "results.json").is_file()
