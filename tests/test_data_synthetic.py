"""Synthetic benchmark: reversal pairs, determinism, idempotence, list files, CLI."""
from __future__ import annotations

import numpy as np
import pytest

from tanet.data import synthetic
from tanet.data.annotations import read_annotations
from tanet.data.decode import read_frames

KW = dict(classes=4, videos_per_class=3, val_per_class=1, frames=8, size=32, workers=1)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return out, synthetic.generate(out, seed=5, **KW)


def test_layout_and_lists(bench):
    out, s = bench
    assert not s["reused"] and s["train_videos"] == 12 and s["val_videos"] == 4
    recs, names = read_annotations(out / "train.txt")
    assert names == ["move_right", "move_left", "grow", "shrink"]
    assert len(recs) == 12 and {r.label for r in recs} == {0, 1, 2, 3}
    for r in recs:
        assert (out / r.path).is_file() and r.path.startswith("videos/")
        assert names[r.label] in r.path
    assert (out / "classes.txt").read_text().split() == names
    assert synthetic.reversal_pairs(names) == [(0, 1), (2, 3)]


def test_pairs_are_exact_reversals(bench):
    out, _ = bench
    for fwd, bwd in (("move_right", "move_left"), ("grow", "shrink")):
        for k in range(3):
            a = read_frames(out / f"videos/train_{fwd}_{k:04d}.mp4", range(8))
            b = read_frames(out / f"videos/train_{bwd}_{k:04d}.mp4", range(8))
            assert a.shape == (8, 32, 32, 3)
            np.testing.assert_array_equal(a, b[::-1])  # same frames, opposite order
            assert np.abs(a[0].astype(int) - a[-1]).mean() > 3  # and they do change


def test_deterministic_and_seed_dependent(bench, tmp_path):
    out, _ = bench
    again = synthetic.generate(tmp_path / "a", seed=5, **KW)
    synthetic.generate(tmp_path / "b", seed=6, **KW)
    p = "videos/train_grow_0001.mp4"
    ref = read_frames(out / p, range(8))
    np.testing.assert_array_equal(read_frames(tmp_path / "a" / p, range(8)), ref)
    assert not np.array_equal(read_frames(tmp_path / "b" / p, range(8)), ref)
    assert again["params"] == synthetic.generate(tmp_path / "a", seed=5, **KW)["params"]


def test_idempotent_and_regenerates_on_new_parameters(tmp_path):
    s1 = synthetic.generate(tmp_path, seed=1, **KW)
    mtime = (tmp_path / "videos/train_grow_0000.mp4").stat().st_mtime_ns
    s2 = synthetic.generate(tmp_path, seed=1, **KW)
    assert s2["reused"] and not s1["reused"]
    assert (tmp_path / "videos/train_grow_0000.mp4").stat().st_mtime_ns == mtime
    (tmp_path / "videos/train_grow_0000.mp4").unlink()  # incomplete: written again
    assert not synthetic.generate(tmp_path, seed=1, **KW)["reused"]
    s4 = synthetic.generate(tmp_path, seed=2, **{**KW, "classes": 2})
    assert not s4["reused"] and len(list((tmp_path / "videos").glob("*.mp4"))) == 2 * 3 + 2


@pytest.mark.parametrize("family", range(len(synthetic.FAMILIES)))
def test_every_family_renders_motion(family):
    seq = synthetic.render_sequence(family, np.random.default_rng(0), frames=12, size=48)
    assert seq.shape == (12, 48, 48, 3) and seq.dtype == np.uint8
    assert np.abs(seq[0].astype(int) - seq[-1]).mean() > 2


def test_bad_class_count():
    with pytest.raises(ValueError, match="even"):
        synthetic.class_names(3)


def test_cli_synth(tmp_path, capsys):
    from tanet.cli import main

    rc = main(["synth", str(tmp_path), "--classes", "2", "--videos-per-class", "2",
               "--val-per-class", "1", "--frames", "6", "--size", "32", "--workers", "1",
               "--quiet"])
    assert rc == 0
    assert "4 train + 2 val videos" in capsys.readouterr().out  # 2 classes x 2 = 4 train
    assert len((tmp_path / "train.txt").read_text().splitlines()) == 4
    assert main(["synth", str(tmp_path), "--classes", "2", "--videos-per-class", "2",
                 "--val-per-class", "1", "--frames", "6", "--size", "32", "--quiet"]) == 0
    assert "already complete" in capsys.readouterr().out
