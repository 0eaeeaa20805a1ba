"""Action segments: the rule of tanet.apps.segments on hand-made windows (cells, joins,
background, flickers, gaps, scores), its invariants on random windows, and the files it writes
for a real video through `tanet predict --window --segments --vtt/--srt`, parsed back by a
subtitle parser (webvtt-py)."""
import csv
import html
import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tanet.apps.segments import (Segment, SegmentRule, merge_windows, segments_csv, segments_srt,
                                 segments_vtt, window_cells, write_segments)

NAMES = ["run", "jump", "swim"]


def _windows(labels, scores=None, window=2.0, stride=1.0):
    """Windows of ``window`` s every ``stride`` s whose top-1 is ``labels[i]`` (an index, or
    None: a flat distribution) with probability ``scores[i]`` (default 0.8)."""
    w = len(labels)
    starts = np.arange(w) * stride
    probs = np.full((w, len(NAMES)), 0.0)
    for i, lab in enumerate(labels):
        if lab is None:
            probs[i] = 1 / len(NAMES)
            continue
        p = 0.8 if scores is None else scores[i]
        probs[i] = (1 - p) / (len(NAMES) - 1)
        probs[i, lab] = p
    return starts, starts + window, probs


def _plain(segs):
    return [(s.start, s.end, s.label) for s in segs]


def test_cells_split_overlaps_at_the_midpoint_of_window_centres():
    starts, ends, _ = _windows([0] * 4)  # [0,2] [1,3] [2,4] [3,5]
    assert window_cells(starts, ends).tolist() == [0.0, 1.5, 2.5, 3.5, 5.0]
    # a tail window (the last `length` frames) closer to its neighbour than the stride
    assert window_cells([0, 1, 2, 2.6], [2, 3, 4, 4.6]).tolist() == [0, 1.5, 2.5, 3.3, 4.6]
    with pytest.raises(ValueError, match="time order"):
        window_cells([2, 0], [4, 2])


def test_same_labels_join_and_the_boundary_is_between_their_windows():
    starts, ends, probs = _windows([0, 0, 0, 1, 1, 1], scores=[.9, .8, .7, .6, .6, .9])
    segs = merge_windows(starts, ends, probs, NAMES)
    assert _plain(segs) == [(0.0, 3.5, "run"), (3.5, 7.0, "jump")]
    assert segs[0].score == pytest.approx(0.8) and segs[1].score == pytest.approx(0.7)
    assert segs[0].to_json() == {"start": 0.0, "end": 3.5, "label": "run", "score": 0.8}


def test_a_one_window_flicker_is_absorbed_two_windows_are_not():
    starts, ends, probs = _windows([0, 0, 1, 0, 0])
    segs = merge_windows(starts, ends, probs, NAMES)
    assert _plain(segs) == [(0.0, 6.0, "run")]  # the flicker's 1 s cell is under one window
    # its score: run's probability over all five windows, the flicker's 0.1 included
    assert segs[0].score == pytest.approx((4 * 0.8 + 0.1) / 5)
    starts, ends, probs = _windows([0, 0, 1, 1, 0, 0])  # 2 s of jump: not shorter than 2 s
    assert [s.label for s in merge_windows(starts, ends, probs, NAMES)] == ["run", "jump", "run"]
    rule = SegmentRule(min_duration=2.5)  # unless the rule says so
    assert _plain(merge_windows(starts, ends, probs, NAMES, rule)) == [(0.0, 7.0, "run")]
    starts, ends, probs = _windows([0, 0, 1, 2, 2])  # between two different labels: kept
    assert [s.label for s in merge_windows(starts, ends, probs, NAMES)] == ["run", "jump", "swim"]
    rule = SegmentRule(min_duration=0)  # 0: nothing is absorbed
    starts, ends, probs = _windows([0, 1, 0])
    assert len(merge_windows(starts, ends, probs, NAMES, rule)) == 3


def test_background_under_min_score_and_gaps():
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    scores = [.9, .9, .3, .9, .9, .9, .3, .9]  # one weak window in each run
    starts, ends, probs = _windows(labels, scores)
    rule = SegmentRule(min_score=0.5)
    segs = merge_windows(starts, ends, probs, NAMES, rule)
    assert _plain(segs) == [(0.0, 4.5, "run"), (4.5, 9.0, "jump")]  # both gaps bridged
    assert segs[0].score == pytest.approx((3 * 0.9 + 0.3) / 4)
    rule = SegmentRule(min_score=0.5, max_gap=0.5)  # gaps of 1 s stay gaps
    segs = merge_windows(starts, ends, probs, NAMES, rule)
    assert _plain(segs) == [(0.0, 2.5, "run"), (3.5, 4.5, "run"), (4.5, 6.5, "jump"),
                            (7.5, 9.0, "jump")]
    starts, ends, probs = _windows([0, 0, None, None, None, 0, 0])  # 3 s of nothing: a gap
    segs = merge_windows(starts, ends, probs, NAMES, SegmentRule(min_score=0.5))
    assert _plain(segs) == [(0.0, 2.5, "run"), (5.5, 8.0, "run")]
    starts, ends, probs = _windows([None] * 4)
    assert merge_windows(starts, ends, probs, NAMES, SegmentRule(min_score=0.5)) == []
    assert merge_windows([], [], np.zeros((0, 3)), NAMES) == []


def test_flickers_are_absorbed_left_to_right():
    starts, ends, probs = _windows([0, 1, 0, 1, 0])  # every other window: one run of `run`
    assert _plain(merge_windows(starts, ends, probs, NAMES)) == [(0.0, 6.0, "run")]
    starts, ends, probs = _windows([0, 1, 0, 1])  # the last jump has nothing on its right
    assert [s.label for s in merge_windows(starts, ends, probs, NAMES)] == ["run", "jump"]


def test_one_short_video_is_one_window_and_one_segment():
    segs = merge_windows([0.0], [1.2], np.array([[0.2, 0.5, 0.3]]), NAMES)
    assert segs == [Segment(0.0, 1.2, "jump", 0.5)]


def test_bad_rules_and_shapes_are_refused():
    with pytest.raises(ValueError, match="min_score"):
        SegmentRule(min_score=1.5)
    with pytest.raises(ValueError, match="max_gap"):
        SegmentRule(max_gap=-1)
    with pytest.raises(ValueError, match="do not match"):
        merge_windows([0, 1], [2, 3], np.zeros((2, 2)), NAMES)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(-1, 2), min_size=1, max_size=30), st.floats(0.5, 4.0),
       st.floats(0.25, 1.0), st.floats(0, 3))
def test_invariants_on_random_windows(labels, window, frac, min_duration):
    """Segments are ordered and disjoint, within the windows' span, labelled by classes some
    window has as top-1; adjacent segments that touch have different labels; without absorption
    (min_duration = max_gap = 0) the segments tile every non-background cell exactly."""
    stride = window * frac
    starts, ends, probs = _windows([None if x < 0 else x for x in labels], window=window,
                                   stride=stride)
    rule = SegmentRule(min_score=0.5, min_duration=min_duration, max_gap=min_duration)
    segs = merge_windows(starts, ends, probs, NAMES, rule)
    cells = window_cells(starts, ends)
    for a, b in zip(segs, segs[1:]):
        assert a.end <= b.start + 1e-9 and (a.end < b.start - 1e-9 or a.label != b.label)
    for s in segs:
        assert cells[0] - 1e-9 <= s.start < s.end <= cells[-1] + 1e-9
        assert NAMES.index(s.label) in labels and 0 < s.score <= 0.8 + 1e-9
    exact = merge_windows(starts, ends, probs, NAMES, SegmentRule(0.5, 0, 0))
    covered = sum(s.end - s.start for s in exact)
    labelled = sum(cells[i + 1] - cells[i] for i, x in enumerate(labels) if x >= 0)
    assert covered == pytest.approx(labelled)
    changes = sum(1 for i, x in enumerate(labels) if x >= 0 and (i == 0 or labels[i - 1] != x))
    assert len(exact) == changes


def test_writers_csv_srt_vtt_json(tmp_path):
    webvtt = pytest.importorskip("webvtt")
    segs = [Segment(0.0, 1.5, "run", 0.8123), Segment(1.5, 3725.25, "a <b> & c --> d\nx", 0.5)]
    assert segments_srt(segs).splitlines()[:3] == ["1", "00:00:00,000 --> 00:00:01,500",
                                                   "run (0.81)"]
    text = segments_vtt(segs)
    assert text.startswith("WEBVTT\n\n") and "01:02:05.250" in text
    vtt = webvtt.from_buffer(io.StringIO(text))
    assert [(c.start, c.end, html.unescape(c.text)) for c in vtt] == [
        ("00:00:00.000", "00:00:01.500", "run (0.81)"),
        ("00:00:01.500", "01:02:05.250", "a <b> & c -> d x (0.50)")]  # entities decoded
    rows = list(csv.reader(segments_csv(segs).splitlines()))
    assert rows[0] == ["start_s", "end_s", "label", "score"] and rows[1] == [
        "0.000", "1.500", "run", "0.812300"]
    path = write_segments(segs, tmp_path / "s.json", about={"path": "v.mp4", "window": 2.0})
    doc = json.loads(path.read_text())
    assert doc["path"] == "v.mp4" and doc["segments"][0] == segs[0].to_json()
    srt = webvtt.from_srt(str(write_segments(segs, tmp_path / "s.srt")))
    assert srt[0].text == "run (0.81)"  # (SubRip has no escapes: <b> is markup there)
    assert srt[1].text.endswith("& c -> d x (0.50)") and srt[1].end == "01:02:05.250"
    with pytest.raises(ValueError, match="unknown segments format"):
        write_segments(segs, tmp_path / "s.txt")


def test_predict_window_segments_writes_subtitles_a_parser_reads(tmp_path, capsys):
    """`tanet predict long.mp4 --window 2 --segments --vtt out.vtt --srt`: the files equal the
    rule applied to Predictor.predict_windows, and webvtt-py reads the .vtt and .srt back."""
    webvtt = pytest.importorskip("webvtt")
    from tanet.apps.predict import Predictor
    from tanet.apps.segments import segments_of
    from tanet.cli import main
    from tanet.testing.media import write_parts_video
    from tanet.testing.tiny import tiny_checkpoint

    ckpt, _ = tiny_checkpoint(tmp_path / "tiny.safetensors", ["run", "jump", "swim", "climb"],
                              fc_std=2.0)
    video = write_parts_video(tmp_path / "long.mp4")
    out = tmp_path / "out"
    vtt = tmp_path / "out.vtt"
    assert main(["predict", str(video), "--checkpoint", str(ckpt), "--window", "2",
                 "--segments", "--vtt", str(vtt), "--srt", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    expected = segments_of(Predictor(ckpt).predict_windows(video, 2.0))
    assert len(expected) >= 2, expected  # the parts differ: more than one segment
    assert expected[0].start == 0 and expected[-1].end == 8.0
    cues = [(c.start_time.in_milliseconds(), c.end_time.in_milliseconds(), c.text)
            for c in webvtt.read(str(vtt))]
    assert cues == [(round(s.start * 1000), round(s.end * 1000), f"{s.label} ({s.score:.2f})")
                    for s in expected]
    srt = [(c.start_time.in_milliseconds(), c.end_time.in_milliseconds(), c.text)
           for c in webvtt.from_srt(str(out / "long.srt"))]
    assert srt == cues
    doc = json.loads((out / "long.segments.json").read_text())
    assert doc["segments"] == [s.to_json() for s in expected] and doc["stride"] == 1.0
    assert doc["rule"] == {"min_score": 0.0, "min_duration": 2.0, "max_gap": 2.0}
    rows = list(csv.DictReader((out / "long.segments.csv").open()))
    assert [r["label"] for r in rows] == [s.label for s in expected]
    assert f"{expected[0].start:.2f}-{expected[0].end:.2f} s: {expected[0].label}" in printed
    assert (out / "long.windows.csv").is_file() and (out / "long.timeline.png").is_file()
    assert main(["predict", str(video), "--checkpoint", str(ckpt), "--window", "2",
                 "--segments", "--json", "--min-score", "0.9", "--out", str(out)]) == 0
    line = json.loads(capsys.readouterr().out)
    rule = SegmentRule(min_score=0.9)
    assert line["segments"] == [s.to_json() for s in segments_of(
        Predictor(ckpt).predict_windows(video, 2.0), rule)]
    assert main(["predict", str(video), "--checkpoint", str(ckpt), "--vtt"]) == 1  # no window
    assert "--window" in capsys.readouterr().err
