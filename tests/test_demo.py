"""Demo helpers (the --quick demo end to end runs from an installed wheel: test_packaging.py)."""
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


def test_quick_demo_says_its_precision_and_keeps_fp32_beside_bf16(tmp_path, monkeypatch, capsys):
    """Where ``amp: auto`` means bf16 (flags mocked), the demo trains in bf16, says so, and its
    table has the fp32 runs' top-1 and train time beside the default's."""
    from tanet import precision
    from tanet.apps.demo import run_demo

    monkeypatch.setattr(precision, "cpu_flags", lambda cpuinfo="": frozenset({"avx512_bf16"}))
    report = run_demo(tmp_path / "demo", quick=True, quiet=True).read_text()
    assert "Trained and tested in precision bf16 (train.amp auto: this CPU has avx512_bf16" \
        in report and "beside them" in report
    header = next(ln for ln in report.splitlines() if ln.startswith("| model |"))
    assert header.endswith("| train time | top-1 fp32 | train time fp32 |")
    rows = [ln for ln in report.splitlines() if ln.startswith(("| tanet_tiny", "| tsn_tiny"))]
    assert len(rows) == 2 and all(ln.count("|") == header.count("|") for ln in rows)
    for model in ("tanet", "tsn"):
        metrics = (tmp_path / "demo" / model / "metrics.jsonl").read_text()
        assert '"precision": "bf16"' in metrics
        assert '"precision": "fp32"' in (tmp_path / "demo" / f"{model}_fp32" /
                                          "metrics.jsonl").read_text()
