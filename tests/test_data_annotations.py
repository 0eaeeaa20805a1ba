"""Annotation formats: each reader, auto-detection, class names, and errors naming file:line."""
from __future__ import annotations

import json

import pytest

from tanet.data.annotations import (AnnotationError, Record, detect_format, read_annotations,
                                    read_class_names, write_class_names, write_video_list)


def test_frame_list(tmp_path):
    p = tmp_path / "train_frames.txt"
    p.write_text("clips/a 120 3\nclips/b c 45 0\n\n")
    recs, names = read_annotations(p)
    assert detect_format(p) == "frames"
    assert recs == [Record("clips/a", 3, 120), Record("clips/b c", 0, 45)]
    assert names == ["0", "1", "2", "3"]


def test_video_list_with_classes_beside(tmp_path):
    p = tmp_path / "train.txt"
    p.write_text("videos/x.mp4 1\nvideos/y z.mp4 0\n")
    write_class_names(tmp_path / "classes.txt", ["cat", "dog"])
    recs, names = read_annotations(p)
    assert detect_format(p) == "videos"
    assert recs == [Record("videos/x.mp4", 1), Record("videos/y z.mp4", 0)]
    assert names == ["cat", "dog"]


def test_video_list_roundtrip(tmp_path):
    recs = [Record("a.mp4", 0), Record("b.mp4", 2)]
    p = write_video_list(tmp_path / "l.txt", recs)
    assert read_annotations(p, labels=["x", "y", "z"]) == (recs, ["x", "y", "z"])


def test_kinetics_csv_flat_and_class_folders(tmp_path):
    p = tmp_path / "kinetics_val.csv"
    p.write_text("label,youtube_id,time_start,time_end,split\n"
                 "riding a bike,abc123,10,20,val\n"
                 "abseiling,--xyz_,0,10,val\n")
    recs, names = read_annotations(p)
    assert detect_format(p) == "kinetics"
    assert names == ["abseiling", "riding a bike"]  # sorted
    assert recs == [Record("abc123_000010_000020.mp4", 1), Record("--xyz__000000_000010.mp4", 0)]
    root = tmp_path / "videos"
    (root / "riding_a_bike").mkdir(parents=True)
    (root / "riding_a_bike" / "abc123_000010_000020.mp4").write_bytes(b"x")
    recs, _ = read_annotations(p, root=root)
    assert recs[0].path == "riding_a_bike/abc123_000010_000020.mp4"
    assert recs[1].path == "abseiling/--xyz__000000_000010.mp4"


def test_sthv2_json(tmp_path):
    (tmp_path / "something-something-v2-labels.json").write_text(json.dumps(
        {"Holding something next to something": "1", "Pushing something from left to right": "0"}))
    p = tmp_path / "something-something-v2-validation.json"
    p.write_text(json.dumps([
        {"id": "74225", "label": "holding a pen next to a cup",
         "template": "Holding [something] next to [something]", "placeholders": ["pen", "cup"]},
        {"id": "116154", "template": "Pushing [something] from left to right"}]))
    recs, names = read_annotations(p)
    assert names == ["Pushing something from left to right", "Holding something next to something"]
    assert recs == [Record("74225.webm", 1), Record("116154.webm", 0)]


def test_sthv2_test_split_without_template(tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps({"A": "0"}))
    p = tmp_path / "test.json"
    p.write_text(json.dumps([{"id": "1"}]))
    with pytest.raises(AnnotationError, match=r"test\.json: entry 0: needs 'id' and 'template'"):
        read_annotations(p)


def test_sthv1_csv(tmp_path):
    (tmp_path / "something-something-v1-labels.csv").write_text("Dropping something\nLifting up "
                                                               "something\n")
    p = tmp_path / "something-something-v1-train.csv"
    p.write_text("100218;Lifting up something\n24;Dropping something\n")
    recs, names = read_annotations(p)
    assert detect_format(p) == "sthv1"
    assert recs == [Record("100218", 1), Record("24", 0)]


def test_class_tree(tmp_path):
    for cls, files in {"b_walk": ["2.mp4", "1.avi", "notes.txt"], "a_run": ["x.webm"]}.items():
        (tmp_path / cls).mkdir()
        for f in files:
            (tmp_path / cls / f).write_bytes(b"")
    (tmp_path / "a_run" / "frames_dir").mkdir()  # a frame folder counts as a video
    recs, names = read_annotations(tmp_path)
    assert names == ["a_run", "b_walk"]
    assert [(r.path.split("/")[-2:], r.label) for r in recs] == [
        (["a_run", "frames_dir"], 0), (["a_run", "x.webm"], 0), (["b_walk", "1.avi"], 1),
        (["b_walk", "2.mp4"], 1)]


def test_class_names_files(tmp_path):
    assert read_class_names(write_class_names(tmp_path / "c.txt", ["a b", "c"])) == ["a b", "c"]
    (tmp_path / "m.json").write_text(json.dumps({"x": "1", "y": "0"}))
    assert read_class_names(tmp_path / "m.json") == ["y", "x"]
    (tmp_path / "gap.json").write_text(json.dumps({"x": "2", "y": "0"}))
    with pytest.raises(AnnotationError, match="gap.json: class indices"):
        read_class_names(tmp_path / "gap.json")


@pytest.mark.parametrize("fmt,text,line,msg", [
    ("videos", "a.mp4 1\nb.mp4 x\n", 2, "label must be an integer"),
    ("videos", "a.mp4 1\nb.mp4 -3\n", 2, "label must be >= 0"),
    ("videos", "a.mp4 1\nlonely\n", 2, "expected 'path label'"),
    ("frames", "a 10 1\n\nb ten 1\n", 3, "num_frames must be an integer"),
    ("frames", "a 10 1\nb 1\n", 2, "expected 'folder num_frames label'"),
    ("sthv1", "1;A\n2\n", 2, "expected 'id;label'"),
    ("kinetics", "label,youtube_id,time_start,time_end,split\nA,x,0,10,train\nB,y,zero,10,t\n",
     3, "time_start/time_end must be numbers"),
    ("kinetics", "label,youtube_id,time_start,time_end,split\nA,x,0\n", 2, "expected 5 fields"),
])
def test_malformed_lines_name_file_and_line(tmp_path, fmt, text, line, msg):
    p = tmp_path / "ann.txt"
    p.write_text(text)
    with pytest.raises(AnnotationError, match=rf"ann\.txt:{line}: {msg}") as e:
        read_annotations(p, format=fmt)
    assert e.value.line == line


def test_label_out_of_range_and_undetectable(tmp_path):
    p = tmp_path / "l.txt"
    p.write_text("a.mp4 5\n")
    with pytest.raises(AnnotationError, match="label 5 out of range for 2 class names"):
        read_annotations(p, labels=["x", "y"])
    q = tmp_path / "q.txt"
    q.write_text("hello world\n")
    with pytest.raises(AnnotationError, match=r"q\.txt:1: cannot tell the annotation format"):
        read_annotations(q)
    with pytest.raises(AnnotationError, match="not found"):
        read_annotations(tmp_path / "missing.txt")


def test_path_label_lists_lines_and_text_not_on_disk(tmp_path):
    """``read_path_label_list`` (mmaction2's ``path label``; the old ``read_video_list`` name
    was also the name of three unrelated "which videos" readers) records each entry's line; a
    list that is not a file (standard input) is read from ``text`` with its folder's files."""
    from tanet.data.annotations import read_path_label_list, sniff_format

    p = tmp_path / "l.txt"
    p.write_text("# videos\n\na.mp4 1\nb c.mp4 0\n")
    recs, names = read_path_label_list(p)
    assert recs == [Record("a.mp4", 1), Record("b c.mp4", 0)] and [r.line for r in recs] == [3, 4]
    assert names == ["0", "1"]
    write_class_names(tmp_path / "classes.txt", ["x", "y"])
    stdin = tmp_path / "<stdin>"  # never created: the text is given
    recs, names = read_annotations(stdin, text="b.mp4 1\n")
    assert recs == [Record("b.mp4", 1)] and names == ["x", "y"]  # classes.txt beside it
    kinetics = "label,youtube_id,time_start,time_end,split\nrun,abc,1,3,val\n"
    assert read_annotations(stdin, text=kinetics)[0] == [Record("abc_000001_000003.mp4", 0)]
    assert sniff_format(stdin, text="clips/a.mp4\n") is None  # a plain list of paths
    assert sniff_format(stdin, text="12;Pushing\n") == "sthv1"
    with pytest.raises(AnnotationError, match=r"<stdin>:2: expected 'path label'"):
        read_annotations(stdin, text="a.mp4 1\nb.mp4\n")
    with pytest.raises(AnnotationError, match="hmdb51 source is a folder"):
        read_annotations(stdin, text="a.avi 1\n", format="hmdb51")
