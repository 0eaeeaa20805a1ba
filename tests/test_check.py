"""``tanet check``: a dataset with good, lying, truncated and broken videos (written here) is
scanned in worker processes; the CSV, the summary and the fixed list (same format) are right."""
from __future__ import annotations

import csv
import json
import os
import signal

import pytest
from test_data_decode import _content

from tanet.apps import check as C
from tanet.cli import main
from tanet.data import variants as V
from tanet.data.annotations import read_annotations
from tanet.data.encode import write_video


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    d = tmp_path_factory.mktemp("check")
    v = d / "videos"
    x = _content(40, 32, 48)
    good = write_video(v / "a" / "good.mp4", x, gop=10, bframes=2)
    b1 = write_video(d / "b1.avi", x, codec="mpeg4", bframes=1)
    V.pack_bframes(b1, v / "a" / "packed.avi")
    full = write_video(d / "full.avi", x, codec="mpeg4", gop=10)
    V.truncate(full, v / "b" / "cut.avi", 0.5)
    V.truncate(good, v / "b" / "cut.mp4", 0.5)  # no moov: an error
    (v / "b" / "notes.mp4").write_text("not a video\n")
    frames = v / "b" / "frames"
    frames.mkdir()
    from PIL import Image

    for i in range(5):
        Image.fromarray(x[i]).save(frames / f"img_{i + 1:05d}.jpg")
    (d / "list.txt").write_text("# train split\na/good.mp4 0\na/packed.avi 0\n\nb/cut.avi 1\n"
                                "b/cut.mp4 1\nb/notes.mp4 1\nb/gone.mp4 1\n")
    (d / "frames.txt").write_text(f"{frames} 5 0\n{frames} 7 0\n{v / 'b' / 'nothing'} 3 1\n")
    return d


def _rows(path):
    with open(path, newline="") as f:
        return {r["path"]: r for r in csv.DictReader(f)}


def test_check_list_in_processes_csv_summary_and_fixed_list(ds, tmp_path, capsys):
    out, fixed = tmp_path / "check.csv", tmp_path / "fixed.txt"
    rc = main(["check", str(ds / "list.txt"), "--root", str(ds / "videos"), "--out", str(out),
               "--fix-list", str(fixed), "--workers", "2", "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "checked 6 videos" in text and "2 ok, 1 warning, 3 error" in text
    rows = _rows(out)
    v = ds / "videos"
    assert list(rows) == [str(v / p) for p in ("a/good.mp4", "a/packed.avi", "b/cut.avi",
                                               "b/cut.mp4", "b/notes.mp4", "b/gone.mp4")]
    good, packed, cut = rows[str(v / "a/good.mp4")], rows[str(v / "a/packed.avi")], \
        rows[str(v / "b/cut.avi")]
    assert (good["status"], good["frames"], good["codec"], good["index"]) == \
        ("ok", "40", "h264", "packets")
    assert float(good["fps"]) == 25.0 and float(good["duration"]) == pytest.approx(1.6)
    assert int(good["size"]) == (v / "a/good.mp4").stat().st_size and "mp4" in good["container"]
    assert (packed["status"], packed["frames"], packed["index"]) == ("ok", "40", "decoded")
    assert cut["status"] == "warning" and cut["cause"] == f"truncated: {cut['frames']} of 40 " \
                                                          f"frames"
    assert "moov box) is missing" in rows[str(v / "b/cut.mp4")]["cause"]
    assert rows[str(v / "b/gone.mp4")]["cause"] == "file not found"
    # same format, comments and blank lines kept, the three unreadable videos gone
    assert fixed.read_text() == "# train split\na/good.mp4 0\na/packed.avi 0\n\nb/cut.avi 1\n"
    recs, _ = read_annotations(fixed)
    assert [r.path for r in recs] == ["a/good.mp4", "a/packed.avi", "b/cut.avi"]
    rc = main(["check", str(ds / "list.txt"), "--root", str(ds / "videos"), "--out",
               str(out), "--fix-list", str(fixed), "--drop-warnings", "--strict", "--quiet",
               "--workers", "1"])
    assert rc == 1 and fixed.read_text() == "# train split\na/good.mp4 0\na/packed.avi 0\n\n"


def test_check_folder_deep_and_frame_list(ds, tmp_path):
    results, text = C.run_check(ds / "videos", out=tmp_path / "c.csv", deep=True, workers=1,
                                quiet=True, fix_list=tmp_path / "fixed.txt")
    by_name = {os.path.basename(r.path): r for r in results}
    assert all(r.index in ("decoded", "folder") for r in results if r.status != "error")
    assert by_name["good.mp4"].status == "ok" and by_name["good.mp4"].frames == 40
    lines = (tmp_path / "fixed.txt").read_text().splitlines()  # the tree as a video list
    assert f"{ds / 'videos' / 'a' / 'good.mp4'} 0" in lines and len(lines) == 4
    results, _ = C.run_check(ds / "frames.txt", out=tmp_path / "f.csv", workers=1, quiet=True,
                             fix_list=tmp_path / "frames_fixed.txt")
    assert [r.status for r in results] == ["ok", "warning", "error"]
    assert results[1].cause == "the list says 7 frames, the folder has 5"
    assert results[0].index == "folder" and results[0].size == 5
    assert (tmp_path / "frames_fixed.txt").read_text().splitlines() == \
        (ds / "frames.txt").read_text().splitlines()[:2]


def test_fixed_sthv2_and_kinetics_lists_keep_their_format(ds, tmp_path):
    items = [{"id": "1", "template": "Pushing [something]"},
             {"id": "2", "template": "Pulling [something]"},
             {"id": "3", "template": "Pushing [something]"}]
    (tmp_path / "labels.json").write_text(json.dumps({"Pushing something": "0",
                                                      "Pulling something": "1"}))
    (tmp_path / "train.json").write_text(json.dumps(items))
    (tmp_path / "1.webm").write_bytes(b"")  # listed videos exist (contents do not matter here)
    (tmp_path / "abc_000000_000010.mp4").write_bytes(b"")
    ds2 = C.read_dataset(tmp_path / "train.json")
    assert C.write_fixed_list(ds2, [True, False, True], tmp_path / "fixed.json") == 2
    assert json.loads((tmp_path / "fixed.json").read_text()) == [items[0], items[2]]
    (tmp_path / "k.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                    "dance,abc,0,10,train\n\nrun,xyz,5,15,train\n")
    ds3 = C.read_dataset(tmp_path / "k.csv")
    assert ds3.format == "kinetics" and len(ds3.videos) == 2
    C.write_fixed_list(ds3, [False, True], tmp_path / "k_fixed.csv")
    assert (tmp_path / "k_fixed.csv").read_text() == \
        "label,youtube_id,time_start,time_end,split\nrun,xyz,5,15,train\n"


def test_a_worker_crash_costs_only_its_video(ds, monkeypatch):
    """A decoder crash (here: the worker process is killed on one file) is isolated: the scan
    goes on in fresh processes and only that file is marked."""
    real = C.check_video

    def crashing(path, **kw):
        if path.endswith("packed.avi"):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, **kw)

    monkeypatch.setattr(C, "check_video", crashing)  # inherited by the forked workers
    v = ds / "videos"
    jobs = [(str(v / p), False, "img_{:05d}.jpg", None) for p in
            ("a/good.mp4", "a/packed.avi", "b/cut.avi", "a/good.mp4", "b/notes.mp4")]
    results = C.check_all(jobs, workers=2)
    assert [r.status for r in results] == ["ok", "error", "warning", "ok", "error"]
    assert "crashed" in results[1].cause


def test_ucf101_and_hmdb51_split_folders(ds, tmp_path):
    import shutil

    videos = tmp_path / "UCF-101"
    for rel in ("Archery/v_Archery_g01_c01.mp4", "YoYo/v_YoYo_g01_c01.mp4",
                "YoYo/v_YoYo_g08_c01.mp4"):
        (videos / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ds / "videos" / "a" / "good.mp4", videos / rel)
    splits = tmp_path / "ucfTrainTestlist"
    splits.mkdir()
    (splits / "classInd.txt").write_text("1 Archery\n2 YoYo\n")
    (splits / "trainlist02.txt").write_text("YoYo/v_YoYo_g08_c01.mp4 2\nYoYo/v_YoYo_g09_c01.mp4 2\n")
    (splits / "testlist02.txt").write_text("Archery/v_Archery_g01_c01.mp4\n")
    out, fixed = tmp_path / "c.csv", tmp_path / "fixed.txt"
    rc = main(["check", str(splits), "--root", str(videos), "--split", "2", "--out", str(out),
               "--fix-list", str(fixed), "--quiet", "--workers", "1"])
    rows = list(csv.DictReader(out.open()))
    assert rc == 0 and [r["status"] for r in rows] == ["ok", "error", "ok"]  # train, then test
    assert fixed.read_text() == "YoYo/v_YoYo_g08_c01.mp4 1\nArchery/v_Archery_g01_c01.mp4 0\n"
    results, _ = C.run_check(splits / "trainlist02.txt", out=out, root=videos, workers=1,
                             quiet=True, fix_list=fixed)  # a split file keeps its own lines
    assert len(results) == 2 and fixed.read_text() == "YoYo/v_YoYo_g08_c01.mp4 2\n"
    named = C.read_dataset(splits / "trainlist02.txt", root=videos, format="ucf101")
    assert [v.listed for v in named.videos] == ["YoYo/v_YoYo_g08_c01.mp4",
                                                "YoYo/v_YoYo_g09_c01.mp4"]
    assert named.paths == [str(videos / v.listed) for v in named.videos]
    hmdb = tmp_path / "hmdb_splits"
    hmdb.mkdir()
    (hmdb / "Archery_test_split1.txt").write_text("v_Archery_g01_c01.mp4 2\nmissing.avi 0\n")
    (hmdb / "YoYo_test_split1.txt").write_text("v_YoYo_g01_c01.mp4 1\n")
    ds_h = C.read_dataset(hmdb, root=videos, subset="test")
    assert ds_h.format == "hmdb51" and [v.listed for v in ds_h.videos] == [
        "Archery/v_Archery_g01_c01.mp4"]
    assert len(C.read_dataset(hmdb, root=videos).videos) == 2  # all: train and test


def test_check_takes_the_one_path_rule_and_every_video_of_a_folder(ds, tmp_path, monkeypatch):
    """Relative paths start from --root, else the list's folder: never from the working
    directory, even when more of them exist there (the old reader counted files in both places
    and took the fuller one). A folder with videos of its own and class folders is checked
    whole (the old reader took the class folders and dropped the loose videos)."""
    import shutil

    good = ds / "videos" / "a" / "good.mp4"
    (tmp_path / "lists").mkdir()
    shutil.copy(good, tmp_path / "lists" / "x.mp4")
    shutil.copy(good, tmp_path / "x.mp4")
    shutil.copy(good, tmp_path / "y.mp4")
    (tmp_path / "lists" / "l.txt").write_text("x.mp4 0\ny.mp4 0\n")
    monkeypatch.chdir(tmp_path)
    results, _ = C.run_check("lists/l.txt", out=tmp_path / "c.csv", workers=1, quiet=True)
    assert [(r.path, r.status) for r in results] == [("lists/x.mp4", "ok"),
                                                     ("lists/y.mp4", "error")]
    results, _ = C.run_check("lists/l.txt", out=tmp_path / "c.csv", root=".", workers=1,
                             quiet=True)
    assert [(r.path, r.status) for r in results] == [("x.mp4", "ok"), ("y.mp4", "ok")]
    mixed = tmp_path / "mixed"
    shutil.copytree(ds / "videos" / "a", mixed / "a")
    shutil.copy(good, mixed / "loose.mp4")
    src = C.read_dataset(mixed)
    assert src.format == "folder" and src.paths == [str(mixed / "a" / "good.mp4"),
                                                    str(mixed / "a" / "packed.avi"),
                                                    str(mixed / "loose.mp4")]
    fixed = tmp_path / "fixed.txt"
    C.run_check(good, out=tmp_path / "c.csv", workers=1, quiet=True, fix_list=fixed)
    assert fixed.read_text() == f"{good}\n"  # one video: checked and listed


def test_check_compares_what_training_reads_with_a_sequential_decode(tmp_path, monkeypatch):
    """By default the frames training reads (segment centres, the last frame) are read by seek
    on a fresh reader and compared with a sequential decode (its record in an exact index):
    the DivX 5 shape of issue 19 is read right (ok); damage that no such read passes leaves
    the packets index one frame off (an error naming the cause, and --deep, which indexes by
    a full decode, repairs it); a reader that returned a wrong frame or a stand-in would be an
    error too."""
    import shutil

    from tanet.data.decode import VideoReader
    from tanet.testing.media import real_world_shapes

    x = _content(120, 32, 48)
    v = tmp_path / "v"
    src = write_video(v / "long.mp4", x, gop=10, bframes=0)
    V.break_packet(src, v / "hidden.mp4", 44)  # in a GOP that no training read decodes
    shapes = real_world_shapes(tmp_path / "shapes", x[:60])
    shutil.copy(shapes["divx_b2_two_keys"], v / "divx5.avi")
    rows = {os.path.basename(r.path): r for r in
            C.run_check(v, out=tmp_path / "c.csv", workers=1, quiet=True)[0]}
    assert (rows["divx5.avi"].status, rows["divx5.avi"].frames, rows["divx5.avi"].index) == \
        ("ok", 60, "decoded")
    assert (rows["long.mp4"].status, rows["long.mp4"].index) == ("ok", "packets")
    hidden = rows["hidden.mp4"]
    assert hidden.status == "error" and hidden.index == "packets"
    assert hidden.cause.startswith("the index disagrees with a sequential decode: it counts "
                                   "120 frames, the decode emits 119")
    deep = C.check_video(str(v / "hidden.mp4"), deep=True)
    assert (deep.status, deep.frames, deep.cause) == ("warning", 119, "corrupt data at frame 44")

    real = VideoReader.get_frames
    monkeypatch.setattr(VideoReader, "get_frames",  # one frame late, as a lost B-frame reads
                        lambda self, idx: real(self, [min(i + 1, 119) for i in idx]))
    wrong = C.check_video(str(v / "long.mp4"))
    assert wrong.status == "error" and wrong.cause.startswith(
        "training reads a wrong frame: frame 7 read by seek differs from the sequential "
        "decode's")

    def with_stand_in(self, idx):
        self.warnings.append("frame 3 did not decode when read; frame 1 stands in")
        return real(self, idx)

    monkeypatch.setattr(VideoReader, "get_frames", with_stand_in)
    stand_in = C.check_video(str(v / "divx5.avi"))
    assert stand_in.status == "error" and stand_in.cause.startswith(
        "training reads a stand-in: frame 3 did not decode when read; frame 1 stands in")
