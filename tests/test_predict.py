"""Prediction on real mp4 files written by the tests: top-k, views, JSON lines, bad files,
directory walk, sliding windows, ONNX Runtime backend, the backend seams (an injected backend,
``kind``, the model handle)."""
import json

import numpy as np
import pytest
import torch

from tanet.apps.predict import Predictor, parse_views
from tanet.data.decode import open_video
from tanet.data.encode import write_video
from tanet.data.sampling import clip_indices
from tanet.testing.tiny import tiny_checkpoint

NAMES = ["red", "green", "blue", "grey"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict")
    ckpt, m = tiny_checkpoint(d / "tiny.safetensors", NAMES, fc_std=0.05)
    dense, _ = tiny_checkpoint(d / "dense.safetensors", NAMES, fc_std=0.3, sampling="dense",
                               dense_stride=3)  # T=4 frames 3 apart: clips span 12 frames
    vids = d / "videos"
    rng = np.random.default_rng(0)
    for i, (n, h, w) in enumerate([(30, 48, 64), (12, 40, 40), (50, 64, 48)]):
        frames = rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8)
        write_video(vids / ("sub" if i == 2 else "") / f"v{i}.mp4", frames, fps=10)
    (vids / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    (vids / "notes.txt").write_text("not a video, ignored by the walk")
    short = write_video(d / "short.mp4", rng.integers(0, 255, (3, 40, 48, 3), np.uint8), fps=10)
    return {"ckpt": ckpt, "dense": dense, "model": m.eval(), "dir": vids, "tmp": d,
            "short": short}


def _reference_probs(model, views):
    with torch.no_grad():
        return model(views).mean(0).softmax(-1).numpy()


def test_parse_views():
    assert parse_views("10x3") == (10, 3) and parse_views("1X1") == (1, 1)
    with pytest.raises(ValueError, match="CLIPSxCROPS"):
        parse_views("ten")
    with pytest.raises(ValueError, match="crops in 1, 3, 10"):
        parse_views("2x4")


@pytest.mark.parametrize("views,n_views", [("1x1", 1), ("2x3", 6)])
def test_predict_topk_matches_model(files, views, n_views):
    p = Predictor(files["ckpt"], views=views, topk=3, amp="off")  # the fp32 reference below
    frames, v, times = p.load_views(files["dir"] / "v0.mp4")
    clips = int(views[0])
    assert frames.shape[:2] == (clips, 4) and v.shape == (n_views, 4, 3, 32, 32)
    assert times.shape == (clips, 4) and np.all(np.diff(times, axis=1) > 0)
    pred = p.predict(files["dir"] / "v0.mp4")
    ref = _reference_probs(files["model"], v)
    assert np.allclose(pred.probs, ref, atol=1e-6) and abs(pred.probs.sum() - 1) < 1e-5
    assert [lab for lab, _ in pred.top] == [NAMES[i] for i in np.argsort(-ref)[:3]]
    assert pred.top[0][1] >= pred.top[1][1] >= pred.top[2][1]


def test_segment_centres_are_sampled(files):
    """One clip of T=4 from 30 frames: segment centres 3, 11, 18, 26 (at 10 fps)."""
    _, _, times = Predictor(files["ckpt"]).load_views(files["dir"] / "v0.mp4")
    assert np.allclose(times[0], np.array([3, 11, 18, 26]) / 10)


def test_cli_directory_json_with_error(files, capsys):
    from tanet.cli import main

    rc = main(["predict", str(files["dir"]), "--checkpoint", str(files["ckpt"]), "--json",
               "--topk", "2", "--quiet"])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rc == 1  # one video failed
    rel = [x["path"][len(str(files["dir"])) + 1:] for x in lines]
    assert rel == ["broken.mp4", "sub/v2.mp4", "v0.mp4", "v1.mp4"]  # sorted, recursive, no .txt
    bad = lines[0]
    assert bad["top"] == [] and bad["error"].startswith(str(files["dir"] / "broken.mp4"))
    for x in lines[1:]:
        assert "error" not in x and len(x["top"]) == 2 and x["top"][0]["label"] in NAMES


def test_cli_labels_override_and_text_output(files, capsys):
    from tanet.cli import main

    labels = files["tmp"] / "labels.txt"
    labels.write_text("a\nb\nc\nd\n")
    assert main(["predict", str(files["dir"] / "v1.mp4"), "--checkpoint", str(files["ckpt"]),
                 "--labels", str(labels), "--topk", "4"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(str(files["dir"] / "v1.mp4") + ": ") and sorted(
        part.split(" ")[0] for part in out.split(": ", 1)[1].split(", ")) == ["a", "b", "c", "d"]


def test_window_mode_writes_csv_and_png(files):
    from tanet.cli import main

    out = files["tmp"] / "win"
    assert main(["predict", str(files["dir"] / "sub" / "v2.mp4"), "--checkpoint",
                 str(files["ckpt"]), "--window", "2", "--out", str(out), "--quiet"]) == 0
    rows = (out / "v2.windows.csv").read_text().splitlines()
    assert rows[0].split(",")[:5] == ["start_s", "end_s", "top1", "top1_score", "frames"]
    starts = [float(r.split(",")[0]) for r in rows[1:]]
    ends = [float(r.split(",")[1]) for r in rows[1:]]
    assert starts == [0.0, 1.0, 2.0, 3.0] and ends[-1] == 5.0  # 50 frames at 10 fps, 2 s windows
    frames = [[int(i) for i in r.split(",")[4].split()] for r in rows[1:]]
    assert frames == [[s + i for i in (2, 7, 12, 17)] for s in (0, 10, 20, 30)]  # centres
    probs = np.array([[float(v) for v in r.split(",")[5:]] for r in rows[1:]])
    assert probs.shape == (4, 4) and np.allclose(probs.sum(1), 1, atol=1e-4)
    assert (out / "v2.timeline.png").read_bytes()[:4] == b"\x89PNG"


def _window_lines(capsys, video, ckpt, out, *extra) -> list[dict]:
    from tanet.cli import main

    assert main(["predict", str(video), "--checkpoint", str(ckpt), "--window", "2", "--json",
                 "--topk", "4", "--out", str(out), "--quiet", *extra]) == 0
    captured = capsys.readouterr()
    assert "windows ->" in captured.err  # the summary line leaves stdout to the JSON lines
    return [json.loads(x) for x in captured.out.splitlines()]


def _scores_of(predictor, video, frames) -> np.ndarray:
    """The class probabilities of these frames of ``video``, decoded as the predictor does."""
    with open_video(video, short_side=predictor.short_side) as reader:
        return predictor.predict_frames(reader.get_frames(frames)[None]).probs  # (K,)


def test_window_json_on_a_dense_card_prints_the_clip_frames(files, capsys):
    """A dense card: every window (the tail and a video shorter than T included) is fed the
    frames clip_indices gives a clip of its span, and those are the frames printed and scored."""
    video = files["dir"] / "sub" / "v2.mp4"
    lines = _window_lines(capsys, video, files["dense"], files["tmp"] / "dense")
    p = Predictor(files["dense"], topk=4)
    assert p.sampling == "dense" and [x["window"] for x in lines] == [0, 1, 2, 3]
    for x in lines:
        start, length = round(x["start"] * 10), round((x["end"] - x["start"]) * 10)
        assert length == 20 and x["path"] == str(video)
        expected = start + clip_indices(length, 4, sampling="dense", dense_stride=3)[0]
        assert x["frames"] == expected.tolist() == [start + i for i in (4, 7, 10, 13)]
        probs = _scores_of(p, video, x["frames"])
        assert all(abs(t["score"] - probs[NAMES.index(t["label"])]) <= 2e-6 for t in x["top"])
    short = _window_lines(capsys, files["short"], files["dense"], files["tmp"] / "dense")
    assert [x["frames"] for x in short] == [[0, 0, 0, 0]]  # 3 frames: 0, 3, 6, 9 modulo 3
    seg = _window_lines(capsys, files["short"], files["ckpt"], files["tmp"] / "seg")
    assert [x["frames"] for x in seg] == [[0, 0, 0, 0]]  # segment_indices(3, 4), not 0, 1, 1, 2
    over = _window_lines(capsys, video, files["ckpt"], files["tmp"] / "seg", "--sampling",
                         "dense")  # the option overrides the card for windows too
    assert over[0]["frames"] == [0, 16, 12, 8]  # default stride 64 // 4: 0, 16, 32, 48 mod 20


def test_old_checkpoint_card_keys_still_load(files):
    """A checkpoint whose card was written with the earlier names (``resize`` for the short
    side) loads with its values; one from before ``sampling`` was on the card takes the short
    side and sampling from its stored config, as before."""
    from tanet.models.checkpoint import save_state

    model = files["model"]
    old = {"name": "tanet_tiny", "num_classes": 4, "num_segments": 4, "input_size": [3, 32, 32],
           "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "resize": 40,
           "sampling": "dense", "dense_stride": 3, "class_names": NAMES,
           "kwargs": dict(model.card.kwargs)}
    path = save_state(files["tmp"] / "old.safetensors", model.state_dict(), old)
    p = Predictor(path, topk=4)
    assert (p.card.short_side, p.short_side, p.sampling, p.geometry.dense_stride) == (40, 40,
                                                                                       "dense", 3)
    new = model.card.copy(short_side=40, sampling="dense", dense_stride=3)
    new_path = save_state(files["tmp"] / "new.safetensors", model.state_dict(), new.to_dict())
    video = files["dir"] / "v0.mp4"
    assert np.array_equal(p.predict(video).probs, Predictor(new_path, topk=4).predict(video).probs)
    older = {k: v for k, v in old.items() if k not in ("sampling", "dense_stride")}
    path = save_state(files["tmp"] / "older.safetensors", model.state_dict(), older,
                      config={"data": {"short_side": 44, "sampling": "dense"}})
    assert (Predictor(path).short_side, Predictor(path).sampling) == (44, "dense")


def test_server_timeline_samples_windows_by_the_card(files):
    """`tanet serve`'s timeline on a dense card: each window's scores are those of the frames
    clip_indices gives its span (segment centres would score otherwise)."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from tanet.testing.serve import Server

    video = files["dir"] / "sub" / "v2.mp4"
    server = Server(files["dense"], files["tmp"] / "uploads", files["tmp"] / "server.log",
                    "--no-calibrate", "--decode-workers", "1", "--quiet",
                    env={"OMP_NUM_THREADS": "1"})
    try:
        status, _, body = server.upload("/v1/predict?window=2&topk=4", video.read_bytes(),
                                        "v2.mp4")
    finally:
        server.stop()
    assert status == 200, body
    p = Predictor(files["dense"], topk=4)
    segment = Predictor(files["dense"], topk=4, sampling="segment")
    assert [w["start"] for w in body["windows"]] == [0.0, 1.0, 2.0, 3.0]
    for w in body["windows"]:
        start = round(w["start"] * 10)
        frames = start + clip_indices(20, 4, sampling="dense", dense_stride=3)[0]
        probs = _scores_of(p, video, frames)
        assert all(abs(t["score"] - probs[NAMES.index(t["label"])]) <= 1e-5 for t in w["top"])
        centres = start + clip_indices(20, 4, sampling="segment")[0]
        assert np.abs(_scores_of(segment, video, centres) - probs).max() > 1e-3


def test_onnx_backend_same_predictions(files, capsys):
    pytest.importorskip("onnxruntime")
    from tanet.cli import main

    onnx_path = files["tmp"] / "tiny.onnx"
    assert main(["export", "--checkpoint", str(files["ckpt"]), str(onnx_path)]) == 0
    video = files["dir"] / "v0.mp4"
    eager = Predictor(files["ckpt"], views="2x1", amp="off").predict(video)  # ONNX is fp32
    onnx = Predictor(onnx_path, views="2x1")
    assert onnx.kind == "onnx" and onnx.model is None  # no torch model behind an ONNX file
    with pytest.raises(ValueError, match="features need a PyTorch checkpoint.*runs onnx"):
        onnx.features(video)
    ort = onnx.predict(video)
    assert np.abs(eager.probs - ort.probs).max() < 1e-5
    assert [lab for lab, _ in ort.top] == [lab for lab, _ in eager.top]
    capsys.readouterr()
    assert main(["predict", str(video), "--onnx", str(onnx_path), "--json"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert [t["label"] for t in line["top"]] == [lab for lab, _ in eager.top][:5]


class _Counting:
    """A backend that is none of tanet's: a real model behind a call counter."""

    kind = "counting"

    def __init__(self, model):
        self.model, self.card, self.calls = model, model.card, 0

    def __call__(self, views):  # (V, T, C, H, W) -> (V, K)
        self.calls += 1
        with torch.no_grad():
            return self.model(views).numpy()


def test_injected_backend_kind_and_model_handle(files):
    """Predictor(backend=...) runs the given backend with the card's pipeline; ``kind`` and
    ``model`` say what runs; with_backend shares the pipeline; a backend without a card, or
    neither checkpoint nor backend, is refused with the reason."""
    from tanet.apps.predict import OnnxBackend, TorchBackend
    from tanet.models.factory import create_model

    video = files["dir"] / "v0.mp4"
    loaded = Predictor(files["ckpt"], views="2x1", topk=3, amp="off")  # as _Counting runs
    assert loaded.kind == "torch" and isinstance(loaded.backend, TorchBackend)
    assert loaded.model is loaded.backend.model and isinstance(loaded.model, torch.nn.Module)
    ref = loaded.predict(video)
    counting = _Counting(create_model(checkpoint=str(files["ckpt"])).eval())
    injected = Predictor(backend=counting, views="2x1", topk=3)
    got = injected.predict(video)
    assert injected.kind == "counting" and injected.model is counting.model and counting.calls == 1
    assert injected.checkpoint == "tanet_tiny" and injected.class_names == NAMES
    assert np.allclose(got.probs, ref.probs, atol=1e-6) and got.top == ref.top
    with pytest.raises(ValueError, match="features need a PyTorch checkpoint.*runs counting"):
        injected.features(video)
    in_memory = Predictor(backend=TorchBackend(files["model"], amp="off"), views="2x1")  # no file
    assert np.allclose(in_memory.predict(video).probs, ref.probs, atol=1e-6)
    assert in_memory.features(video).shape == loaded.features(video).shape
    wrapped = loaded.with_backend(counting)  # same views, top-k, names; the new backend runs
    assert wrapped.predict(video).top == ref.top and counting.calls == 2
    assert loaded.backend is not counting and wrapped.geometry is loaded.geometry
    with pytest.raises(ValueError, match="needs a checkpoint or a backend"):
        Predictor()
    with pytest.raises(ValueError, match="has no model card"):
        Predictor(backend=lambda views: views.numpy())
    with pytest.raises(ValueError, match="a given backend has its own"):
        Predictor(backend=counting, amp="bf16")  # not silently ignored
    other = create_model("tanet_tiny", num_classes=7)
    with pytest.raises(ValueError, match="7 classes, this predictor's model 4"):
        loaded.with_backend(TorchBackend(other))
    assert OnnxBackend.kind == "onnx"


def test_keep_frames_are_the_frames_the_model_sampled(files):
    p = Predictor(files["ckpt"], views="2x1")
    frames, _, times = p.load_views(files["dir"] / "v0.mp4")
    pred = p.predict(files["dir"] / "v0.mp4", keep_frames=True)
    assert pred.frames is not None and np.array_equal(pred.frames, frames)
    assert np.array_equal(pred.times, times) and pred.times.shape == (2, 4)
    assert p.predict(files["dir"] / "v0.mp4").frames is None  # not kept unless asked for
    res = p.predict_windows(files["dir"] / "sub" / "v2.mp4", 2.0)
    assert res.indices.shape == (4, 4) and res.indices.dtype.kind == "i"
    for s, e, idx in zip(res.starts, res.ends, res.indices):  # each window's frames in its span
        assert np.all((idx >= round(s * 10)) & (idx < round(e * 10)))


def test_missing_input_and_label_mismatch(files):
    from tanet.cli import main

    assert main(["predict", str(files["tmp"] / "nope.mp4"), "--checkpoint", str(files["ckpt"])]) == 1
    with pytest.raises(ValueError, match="3 class names for a model with 4"):
        Predictor(files["ckpt"], labels=["a", "b", "c"])


def test_visualize_cli_writes_pngs(files):
    from tanet.cli import main

    out = files["tmp"] / "vis"
    assert main(["visualize", str(files["dir"] / "v0.mp4"), "--checkpoint", str(files["ckpt"]),
                 "--out", str(out)]) == 0
    for name in ("frames.png", "tam_kernels.png", "evidence.png"):
        assert (out / name).stat().st_size > 2000


# ------------------------------------------------------------------ the folder pipeline
@pytest.fixture(scope="module")
def folder(files):
    """Varied files for the pipeline: videos of different sizes and lengths (an mp4 with
    B-frames, an MPEG-4 AVI, a truncated AVI that decodes with a warning), a broken file and a
    missing one, a 3-frame video, and a video listed twice; a T=8 tiny checkpoint too."""
    import tanet
    from tanet.data import variants as V
    from tanet.models.checkpoint import save_model

    d, rng = files["tmp"] / "folder", np.random.default_rng(3)
    avi = write_video(d / "long.avi", rng.integers(0, 255, (40, 36, 44, 3), np.uint8),
                      codec="mpeg4")
    cut = V.truncate(avi, d / "cut.avi", 0.55)
    bframes = write_video(d / "bframes.mp4", rng.integers(0, 255, (25, 48, 40, 3), np.uint8),
                          bframes=2)
    paths = [files["dir"] / "v0.mp4", files["dir"] / "broken.mp4", avi, cut,
             d / "missing.mp4", files["dir"] / "sub" / "v2.mp4", bframes, files["short"],
             files["dir"] / "v1.mp4", files["dir"] / "v0.mp4"]
    torch.manual_seed(1)
    m8 = tanet.create_model("tanet_tiny", num_classes=len(NAMES), num_segments=8,
                            class_names=NAMES)
    m8.card = m8.card.copy(input_size=(3, 32, 32), short_side=36)
    with torch.no_grad():
        m8.fc.weight.normal_(0, 0.05)
    return {"paths": [str(p) for p in paths], "t8": save_model(d / "t8.safetensors", m8)}


def _same(a, b):
    assert [p.path for p in a] == [p.path for p in b]  # input order
    for x, y in zip(a, b):
        assert str(x) == str(y) and x.error == y.error and x.warnings == y.warnings, x.path
        assert (x.probs is None) == (y.probs is None)
        if x.probs is not None:
            assert np.array_equal(x.probs, y.probs), x.path  # bit for bit
            assert np.array_equal(x.times, y.times)


def _close(a, b):
    """The same answers up to float rounding: order, errors, warnings, top-1, probabilities."""
    assert [p.path for p in a] == [p.path for p in b]
    for x, y in zip(a, b):
        assert x.error == y.error and x.warnings == y.warnings, x.path
        if x.probs is not None:
            assert x.top[0][0] == y.top[0][0] and np.allclose(x.probs, y.probs, atol=1e-6)


@pytest.mark.parametrize("views", ["1x1", "2x3"])
def test_pipeline_equals_the_loop(files, folder, views):
    """The pipeline (decode workers ahead of the model) gives the loop's predictions, errors and
    warnings, in input order, bit for bit in fp32 by default (one video per model call on a
    CPU), on a T=8 and a T=4 model. Batched across videos (--max-batch), the same answers up to
    float rounding (CPU kernels may sum a clip differently with the batch size), and the same
    numbers on every run (groups do not depend on timing)."""
    from tanet.apps.pipeline import default_max_batch, predict_pipelined

    assert default_max_batch("cpu") == 1 and default_max_batch("cuda") > 1
    paths = folder["paths"]
    t8 = Predictor(folder["t8"], views=views, amp="off")
    loop = list(t8.predict_many(paths))
    assert [p.error is not None for p in loop] == [False, True, False, False, True] + [False] * 5
    assert any(w.startswith("truncated") for w in loop[3].warnings)
    _same(loop, list(predict_pipelined(t8, paths)))  # the defaults of this machine
    _same(loop, list(predict_pipelined(t8, paths, workers=1)))
    _same(loop, list(predict_pipelined(t8, paths, workers=0)))
    batched = list(predict_pipelined(t8, paths, workers=2, max_batch=64))
    _close(loop, batched)
    _same(batched, list(predict_pipelined(t8, paths, workers=1, max_batch=64)))
    t4 = Predictor(files["ckpt"], views=views, amp="off")
    _same(list(t4.predict_many(paths)), list(predict_pipelined(t4, paths, workers=2)))


def test_default_decode_workers_follow_the_device_and_the_cores(monkeypatch):
    """No decoder beside a CPU model on a small machine (its threads use every core), one per 8
    cores on a large one, a quarter of the cores (1-4) beside a CUDA model."""
    from tanet.apps import pipeline

    for cores, cpu, cuda in ((1, 0, 1), (2, 0, 1), (4, 0, 1), (8, 1, 2), (16, 2, 4), (64, 4, 4)):
        monkeypatch.setattr(pipeline.os, "sched_getaffinity", lambda _, n=cores: set(range(n)))
        assert (pipeline.default_workers("cpu"), pipeline.default_workers("cuda")) == (cpu, cuda)
        assert pipeline.default_workers(None) == cpu  # ONNX Runtime runs on the CPU


def test_pipeline_hands_out_a_bounded_window(files, folder, monkeypatch):
    """Back-pressure: while the consumer holds the first result, no more than workers x
    prefetch + one batch of videos are handed to the decoders; the rest follow as results are
    taken, in order."""
    import time
    from concurrent.futures import ProcessPoolExecutor

    from tanet.apps import pipeline

    handed = []

    class Counting(ProcessPoolExecutor):
        def submit(self, fn, *args, **kwargs):
            handed.append(args[0])
            return super().submit(fn, *args, **kwargs)

    monkeypatch.setattr(pipeline, "ProcessPoolExecutor", Counting)
    paths = folder["paths"] * 3  # 30 videos
    p = Predictor(files["ckpt"], amp="off")
    results = pipeline.predict_pipelined(p, paths, workers=1, prefetch=2, max_batch=2)
    first = next(results)
    time.sleep(1.0)  # the worker finishes what it was given, and is given nothing more
    assert first.path == paths[0] and len(handed) <= 1 * 2 + 2
    rest = list(results)
    assert [r.path for r in [first, *rest]] == paths and handed == list(range(len(paths)))


def test_pipeline_options_checked(files, capsys):
    from tanet.apps.pipeline import predict_pipelined
    from tanet.cli import main

    p = Predictor(files["ckpt"], amp="off")
    with pytest.raises(ValueError, match=r"\(workers\) must be >= 0"):
        list(predict_pipelined(p, [files["short"]] * 2, workers=-1))
    for option, value in (("--max-batch", "0"), ("--decode-workers", "-1")):
        assert main(["predict", str(files["dir"]), "--checkpoint", str(files["ckpt"]), option,
                     value, "--quiet"]) != 0
        assert f"{option} ({option[2:].replace('-', '_').replace('decode_', '')}) must be >= " \
            f"{int(value) + 1}" in capsys.readouterr().err
