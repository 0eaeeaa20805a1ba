"""The transfer set-up on the synthetic benchmark shared by tests/test_transfer_synthetic.py and
benchmarks/transfer.py: pre-train on the 6 classes of ``A``, then train on the 2 of ``B``."""
from __future__ import annotations

from pathlib import Path

A = ["move_right", "move_left", "grow", "shrink", "appear", "disappear"]
B = ["move_down", "move_up"]


def class_subset(data: Path, tag: str, keep: list[str]) -> None:
    """``<tag>_train.txt``, ``<tag>_val.txt`` and ``<tag>_classes.txt``: the videos of ``keep``,
    relabelled 0..len(keep)-1."""
    names = (data / "classes.txt").read_text().split()
    for split in ("train", "val"):
        rows = [ln.rsplit(None, 1) for ln in (data / f"{split}.txt").read_text().splitlines()]
        out = [f"{p} {keep.index(names[int(c)])}" for p, c in rows if names[int(c)] in keep]
        (data / f"{tag}_{split}.txt").write_text("\n".join(out) + "\n")
    (data / f"{tag}_classes.txt").write_text("\n".join(keep) + "\n")


def overrides(data: Path, tag: str, out: Path, *extra: str) -> list[str]:
    """``--set`` pairs: the ``synthetic_tanet_tiny`` recipe on subset ``tag`` at 32 px, T=4."""
    return [f"data.root={data}", f"data.train={data}/{tag}_train.txt",
            f"data.val={data}/{tag}_val.txt", f"data.labels={data}/{tag}_classes.txt",
            "model.num_segments=4", "model.input_size=32", "data.short_side=36",
            "data.scales=[1.0]", "train.lr=0.003", "train.eval_every=1", "train.workers=0",
            "test.workers=0", f"output={out}", *extra]
