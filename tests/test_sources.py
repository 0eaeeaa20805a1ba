"""The one video-source resolver (``tanet.data.sources``): the path rule, folders, lists of every
kind, standard input, the existence check; and the same sources fed to every command (train and
test datasets, predict, extract, export --int8's calibration reader, check) name the same files."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tanet.data.annotations import AnnotationError
from tanet.data.sources import (EXISTENCE_SAMPLE, find_videos, is_url, resolve_path,
                                resolve_videos)


def _touch(*paths: Path) -> None:
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


# ------------------------------------------------------------------------------ the rule
def test_the_path_rule():
    assert resolve_path("a/b.mp4", "/data") == "/data/a/b.mp4"
    assert resolve_path("/abs/b.mp4", "/data") == "/abs/b.mp4"
    for url in ("s3://bucket/a.mp4", "gs://b/c/d.webm", "https://host/v.mp4?x=1",
                "rtsp://cam/1", "file:///x.mp4"):
        assert is_url(url) and resolve_path(url, "/data") == url
    assert not is_url("C:/videos/a.mp4") and not is_url("clips/a.mp4")
    assert resolve_path("a.mp4", None) == "a.mp4"


def test_relative_paths_start_from_the_root_else_the_lists_folder_never_elsewhere(
        tmp_path, monkeypatch):
    lists = tmp_path / "lists"
    _touch(lists / "clips" / "a.mp4", tmp_path / "videos" / "clips" / "a.mp4",
           tmp_path / "clips" / "b.mp4")
    (lists / "l.txt").write_text("clips/a.mp4 0\nclips/b.mp4 1\n")
    monkeypatch.chdir(tmp_path)  # clips/b.mp4 exists here: it must not be picked up
    src = resolve_videos("lists/l.txt")
    assert src.format == "videos" and src.base == "lists"
    assert src.paths == ["lists/clips/a.mp4", "lists/clips/b.mp4"]
    assert [v.listed for v in src.videos] == ["clips/a.mp4", "clips/b.mp4"]
    assert src.labels == [0, 1] and src.class_names == ["0", "1"]
    assert [v.line for v in src.videos] == [1, 2]
    src = resolve_videos("lists/l.txt", root="videos")
    assert src.paths == ["videos/clips/a.mp4", "videos/clips/b.mp4"]


def test_urls_in_a_list_pass_through_and_are_not_checked(tmp_path):
    (tmp_path / "l.txt").write_text("s3://bucket/x.mp4 0\nhttps://h/y.mp4 1\n")
    src = resolve_videos(tmp_path / "l.txt", root="/somewhere")
    assert src.paths == ["s3://bucket/x.mp4", "https://h/y.mp4"]
    single = resolve_videos("https://h/clip.mp4")
    assert single.kind == "video" and single.paths == ["https://h/clip.mp4"]
    # a list at a URL is read through tanet.remote (s3://: tests/test_shards.py, a real store);
    # its relative paths start from the URL's folder, unless a root is given
    _touch(tmp_path / "clips" / "a.mp4")
    (tmp_path / "at_url.txt").write_text("clips/a.mp4 0\ns3://bucket/x.mp4 1\n")
    src = resolve_videos(f"file://{tmp_path}/at_url.txt")
    assert src.kind == "list" and src.name == f"file://{tmp_path}/at_url.txt"
    assert src.paths == [f"file://{tmp_path}/clips/a.mp4", "s3://bucket/x.mp4"]
    assert resolve_videos(f"file://{tmp_path}/at_url.txt", root="s3://b/k").paths[0] == \
        "s3://b/k/clips/a.mp4"


def test_a_list_whose_first_videos_are_all_missing_is_refused_with_the_fix(tmp_path):
    (tmp_path / "lists").mkdir()
    lst = tmp_path / "lists" / "train.txt"
    lst.write_text("# header\n\nclips/a.mp4 0\nclips/b.mp4 1\n")
    with pytest.raises(FileNotFoundError) as e:
        resolve_videos(lst)
    msg = str(e.value)
    assert f"{lst}:3: 'clips/a.mp4' -> {tmp_path / 'lists' / 'clips' / 'a.mp4'}" in msg
    assert "nor do the next 1 listed" in msg and "the list's folder" in msg
    assert "data.root" in msg and "--root" in msg
    with pytest.raises(FileNotFoundError, match=r"start from the root \(/nowhere\)"):
        resolve_videos(lst, root="/nowhere")
    # one missing video among present ones is the decoder's business (a per-video error)
    _touch(tmp_path / "lists" / "clips" / "b.mp4")
    assert len(resolve_videos(lst)) == 2
    # the sample is the first EXISTENCE_SAMPLE videos: beyond them nothing is looked at
    many = tmp_path / "many.txt"
    _touch(tmp_path / "late.mp4")
    many.write_text("".join(f"gone{i}.mp4\n" for i in range(EXISTENCE_SAMPLE)) + "late.mp4\n")
    with pytest.raises(FileNotFoundError, match=f"nor do the next {EXISTENCE_SAMPLE - 1}"):
        resolve_videos(many)


def test_stdin_lists_start_from_the_working_directory(tmp_path, monkeypatch):
    _touch(tmp_path / "v" / "a.mp4", tmp_path / "v" / "b.mp4")
    (tmp_path / "classes.txt").write_text("x\ny\n")
    monkeypatch.chdir(tmp_path)
    src = resolve_videos("-", stdin=io.StringIO("v/a.mp4 1\n# c\nv/b.mp4 0\n"))
    assert src.kind == "stdin" and src.name == "-" and src.format == "videos"
    assert src.paths == ["v/a.mp4", "v/b.mp4"] and src.labels == [1, 0]
    assert src.class_names == ["x", "y"]  # classes.txt beside "the list": the working directory
    assert src.text == "v/a.mp4 1\n# c\nv/b.mp4 0\n"
    src = resolve_videos("-", root=tmp_path / "v", stdin=io.StringIO("a.mp4\nb.mp4\n"))
    assert src.format == "paths" and src.labels is None
    assert src.paths == [str(tmp_path / "v" / "a.mp4"), str(tmp_path / "v" / "b.mp4")]
    with pytest.raises(FileNotFoundError, match=r"<stdin>:1: 'a.mp4' .*working directory"):
        resolve_videos("-", stdin=io.StringIO("a.mp4\n"))
    with pytest.raises(AnnotationError, match="hmdb51 source is a folder"):
        resolve_videos("-", stdin=io.StringIO("v/a.mp4 1\n"), format="hmdb51")
    with pytest.raises(AnnotationError, match="<stdin>:2: label must be an integer"):
        resolve_videos("-", stdin=io.StringIO("v/a 5 1\nv/b 3 x\n"), format="frames")


def test_folders_class_trees_flat_folders_and_frame_folder_trees(tmp_path):
    tree = tmp_path / "tree"
    _touch(tree / "b" / "2.mp4", tree / "a" / "1.avi", tree / "a" / ".hidden.mp4")
    (tree / "c").mkdir()  # an empty class keeps its place
    src = resolve_videos(tree)
    assert src.format == "tree" and src.class_names == ["a", "b", "c"]
    assert src.paths == [str(tree / "a" / "1.avi"), str(tree / "b" / "2.mp4")]
    assert src.labels == [0, 1]
    assert resolve_videos(tree, labels=["b", "a", "c"]).labels == [1, 0]
    assert resolve_videos(tree, root="/elsewhere").paths == src.paths  # root: lists only
    flat = tmp_path / "flat"  # videos of its own: every video under it, no labels
    _touch(flat / "top.mp4", flat / "x" / "1.mp4", flat / "x" / "deep" / "2.mkv")
    src = resolve_videos(flat)
    assert src.format == "folder" and src.labels is None and src.class_names is None
    assert src.paths == [str(p) for p in find_videos(flat)] and len(src) == 3
    deep = tmp_path / "deep"  # a video below a class folder: not a class tree
    _touch(deep / "a" / "1.mp4", deep / "b" / "sub" / "2.mp4")
    assert resolve_videos(deep).format == "folder"
    assert resolve_videos(deep, format="tree").format == "tree"  # forced
    frames = tmp_path / "frames"  # class/video folder/images
    _touch(frames / "a" / "v1" / "img_00001.jpg", frames / "b" / "v2" / "img_00001.jpg")
    src = resolve_videos(frames)
    assert src.format == "tree"
    assert src.paths == [str(frames / "a" / "v1"), str(frames / "b" / "v2")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no video files found"):
        resolve_videos(tmp_path / "empty")


def test_files_videos_and_lists_by_name_or_content(tmp_path):
    _touch(tmp_path / "a.mp4")
    assert resolve_videos(tmp_path / "a.mp4").format == "video"
    (tmp_path / "clip.gif").write_bytes(b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00")
    assert resolve_videos(tmp_path / "clip.gif").kind == "video"  # not text: a video
    (tmp_path / "val_list").write_text("a.mp4\n")  # no suffix, text: a list
    src = resolve_videos(tmp_path / "val_list")
    assert src.kind == "list" and src.format == "paths" and src.paths == [str(tmp_path / "a.mp4")]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(AnnotationError, match="empty"):
        resolve_videos(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="working directory"):
        resolve_videos(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="unknown source format"):
        resolve_videos(tmp_path / "val_list", format="csv")


def test_split_folders_subsets_and_the_file_named_in_errors(tmp_path):
    splits, videos = tmp_path / "ucfTrainTestlist", tmp_path / "UCF-101"
    splits.mkdir()
    (splits / "classInd.txt").write_text("1 Archery\n2 YoYo\n")
    (splits / "trainlist01.txt").write_text("YoYo/v_YoYo_g08_c01.avi 2\n")
    (splits / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\n")
    with pytest.raises(FileNotFoundError, match=r"trainlist01.txt:1: .*the split folder"):
        resolve_videos(splits)
    _touch(videos / "YoYo" / "v_YoYo_g08_c01.avi", videos / "Archery" / "v_Archery_g01_c01.avi")
    src = resolve_videos(splits, root=videos, subset="all")
    assert src.format == "ucf101" and src.kind == "folder" and src.labels == [1, 0]
    assert src.paths == [str(videos / "YoYo" / "v_YoYo_g08_c01.avi"),
                         str(videos / "Archery" / "v_Archery_g01_c01.avi")]
    assert resolve_videos(splits, root=videos, subset="test").labels == [0]
    hmdb = tmp_path / "hmdb"
    hmdb.mkdir()
    (hmdb / "YoYo_test_split1.txt").write_text("v_YoYo_g08_c01.avi 1\n")
    (hmdb / "Archery_test_split1.txt").write_text("v_Archery_g01_c01.avi 2\n")
    src = resolve_videos(hmdb / "YoYo_test_split1.txt", root=videos, subset="all")
    assert src.format == "hmdb51" and src.labels == [1, 0]  # classes sorted: Archery, YoYo


def test_find_videos_walks_folders_but_not_hidden_files(tmp_path):
    """Camcorder and phone containers are walked into; macOS's "._x.mp4" resource forks, hidden
    folders, stills and other files are not."""
    from tanet.data.sources import find_videos

    names = ["a/clip.MP4", "a/._clip.MP4", "b/c/cam.MTS", "b/movie.m2ts", "b/old.divx",
             ".cache/x.mp4", "notes.txt", "still.gif", "z.ogv"]
    for n in names:
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in find_videos(tmp_path)]
    assert found == ["a/clip.MP4", "b/c/cam.MTS", "b/movie.m2ts", "b/old.divx", "z.ogv"]
    assert find_videos(tmp_path / "a") == [tmp_path / "a" / "clip.MP4"]


def test_training_sources_errors_say_what_to_set(tmp_path, monkeypatch):
    from tanet.config import Config, apply_overrides
    from tanet.engine.build import read_split

    def cfg(*sets):
        return apply_overrides(Config(), ["model.name=tanet_tiny", *sets]).validate("test")

    _touch(tmp_path / "f" / "top.mp4", tmp_path / "f" / "a" / "x.mp4",
           tmp_path / "data" / "clips" / "a.mp4")
    with pytest.raises(ValueError, match="without labels .*not a class-per-folder tree; "
                                         "data.format=tree"):
        read_split(cfg(f"data.train={tmp_path / 'f'}"), "train")
    split = read_split(cfg(f"data.train={tmp_path / 'f'}", "data.format=tree"), "train")
    assert [v.path for v in split.records] == [str(tmp_path / "f" / "a" / "x.mp4")]
    (tmp_path / "data" / "train.txt").write_text("clips/a.mp4 0\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="not to the list itself: set "
                                                "data.train=data/train.txt"):
        read_split(cfg("data.root=data", "data.train=train.txt"), "train")
    split = read_split(cfg("data.root=data", "data.train=data/train.txt"), "train")
    assert split.records[0].path == "data/clips/a.mp4" and split.source == "data/train.txt"
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="one process only"):
        read_split(cfg("data.train=-"), "train")


# ------------------------------------------------------------------------------ every command
NAMES = ["left", "right"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Real videos in class folders, a checkpoint, and four ways to name the same videos."""
    from tanet.data.encode import write_video
    from tanet.testing.tiny import tiny_checkpoint

    d = tmp_path_factory.mktemp("sources")
    rng = np.random.default_rng(0)
    rel = ["left/a.mp4", "left/b.avi", "right/c.mp4"]
    for i, r in enumerate(rel):
        write_video(d / "videos" / r, rng.integers(0, 255, (8 + 2 * i, 32, 40, 3), np.uint8),
                    codec="mpeg4" if r.endswith(".avi") else "libx264")
    ckpt, _ = tiny_checkpoint(d / "tiny.safetensors", NAMES, fc_std=0.05)
    (d / "lists").mkdir()
    (d / "lists" / "rel.txt").write_text("".join(f"../videos/{r} {int(r.startswith('right'))}\n"
                                                 for r in rel))
    (d / "lists" / "rooted.txt").write_text("# relative to --root\n" + "".join(
        f"{r} {int(r.startswith('right'))}\n" for r in rel))
    stdin = "".join(f"videos/{r} {int(r.startswith('right'))}\n" for r in rel)
    files = [str((d / "videos" / r).resolve()) for r in rel]
    return {"dir": d, "ckpt": ckpt, "stdin": stdin, "files": files}


CASES = {  # name: (source, root)
    "relative to the list": ("lists/rel.txt", None),
    "with a root": ("lists/rooted.txt", "videos"),
    "class-per-folder": ("videos", None),
    "standard input": ("-", None),
}


def _stdin(monkeypatch, dataset):
    monkeypatch.setattr("sys.stdin", io.StringIO(dataset["stdin"]))


def _train_and_test_files(src, root) -> tuple[list[str], list[str]]:
    from tanet.config import Config, apply_overrides
    from tanet.engine.build import read_split, test_dataset, train_dataset
    from tanet.models.factory import load_model

    sets = [f"data.train={src}", f"data.val={src}", "model.name=tanet_tiny",
            "model.num_segments=4"] + ([f"data.root={root}"] if root else [])
    cfg = apply_overrides(Config(), sets).validate("test")
    geom = load_model("tiny.safetensors").card.geometry
    train = train_dataset(cfg, read_split(cfg, "train"), geom)
    val = test_dataset(cfg, read_split(cfg, "val", class_names=NAMES), geom)
    assert train[0]["path"] == train.path_of(0)  # the dataset opens that file
    return ([train.path_of(i) for i in range(len(train))],
            [val.path_of(i) for i in range(len(val))])


def _run(argv, monkeypatch, dataset, src, capsys):
    from tanet.cli import main

    if src == "-":
        _stdin(monkeypatch, dataset)
    capsys.readouterr()
    rc = main(argv)
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out.out


@pytest.mark.parametrize("case", list(CASES))
def test_every_command_reads_the_same_files(case, dataset, tmp_path, monkeypatch, capsys):
    """train, test, predict, extract, export --int8 (its calibration reader) and check all name
    the same files for each way of giving the videos (the old readers disagreed: train took
    relative paths from the working directory, predict had no --root, check guessed)."""
    from tanet.apps.extract import load_features
    from tanet.apps.quantize import calibration_videos

    d, files = dataset["dir"], dataset["files"]
    src, root = CASES[case]
    monkeypatch.chdir(d)
    opt = ["--root", root] if root else []
    real = lambda paths: [os.path.realpath(p) for p in paths]  # noqa: E731

    if src == "-":
        _stdin(monkeypatch, dataset)
    train, val = _train_and_test_files(src, root)
    assert real(train) == real(val) == files

    out = _run(["predict", src, "--checkpoint", str(dataset["ckpt"]), "--json", "--quiet", *opt],
               monkeypatch, dataset, src, capsys)
    predicted = [json.loads(line)["path"] for line in out.splitlines()]
    assert predicted == train  # the same strings, not only the same files

    npz = tmp_path / "f.npz"
    _run(["extract", src, "--checkpoint", str(dataset["ckpt"]), "--out", str(npz), "--quiet",
          *opt], monkeypatch, dataset, src, capsys)
    z = load_features(npz)
    assert z["meta"]["list_sha256"] == hashlib.sha256("\n".join(train).encode()).hexdigest()
    assert z["ok"].all() and z["labels"].tolist() == [0, 0, 1]
    assert z["class_names"].tolist() == (NAMES if case == "class-per-folder" else ["0", "1"])

    if src == "-":
        _stdin(monkeypatch, dataset)
    cal, labels = calibration_videos(src, root=root, class_names=NAMES)
    assert cal == train and labels == [0, 0, 1]

    table = tmp_path / "check.csv"
    _run(["check", src, "--out", str(table), "--workers", "1", "--quiet", *opt],
         monkeypatch, dataset, src, capsys)
    rows = list(csv.DictReader(table.open()))
    assert [r["path"] for r in rows] == train and {r["status"] for r in rows} == {"ok"}


def test_tanet_test_and_a_fixed_list_from_stdin(dataset, tmp_path, monkeypatch, capsys):
    """`tanet test` on a list from standard input; `tanet check -` writes the fixed list in
    the input's format (comments kept)."""
    from tanet.cli import main

    d = dataset["dir"]
    monkeypatch.chdir(d)
    _run(["test", "--checkpoint", str(dataset["ckpt"]), "--out", str(tmp_path / "t"), "--quiet",
          "--set", "data.val=-", "test.workers=0"], monkeypatch, dataset, "-", capsys)
    rows = list(csv.DictReader((tmp_path / "t" / "predictions.csv").open()))
    assert [os.path.realpath(r["path"]) for r in rows] == dataset["files"]
    text = "# mine\nvideos/left/a.mp4 0\nvideos/left/gone.mp4 0\nvideos/right/c.mp4 1\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    fixed = tmp_path / "fixed.txt"
    assert main(["check", "-", "--out", str(tmp_path / "c.csv"), "--fix-list", str(fixed),
                 "--workers", "1", "--quiet"]) == 0
    assert fixed.read_text() == "# mine\nvideos/left/a.mp4 0\nvideos/right/c.mp4 1\n"


def test_wrong_root_is_one_clear_error_in_every_command(dataset, monkeypatch, capsys):
    from tanet.cli import main

    monkeypatch.chdir(dataset["dir"])
    ck = ["--checkpoint", str(dataset["ckpt"])]
    for argv in (["predict", "lists/rooted.txt", *ck], ["extract", "lists/rooted.txt", *ck,
                                                        "--out", "x.npz"],
                 ["check", "lists/rooted.txt"],
                 ["export", "x.onnx", *ck, "--int8", "--calibrate", "lists/rooted.txt"],
                 ["test", *ck, "--set", "data.val=lists/rooted.txt"]):
        assert main(argv + ["--quiet"]) == 1, argv
        err = capsys.readouterr().err
        assert "lists/rooted.txt:2: 'left/a.mp4' -> lists/left/a.mp4" in err, (argv, err)
        assert "data.root" in err and "--root" in err
