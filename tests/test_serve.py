"""`tanet serve` through its real parts: a server subprocess on 127.0.0.1, real mp4 and AVI
uploads, a load test whose every answer must equal `tanet predict --json`'s, bad and oversize
uploads, a full queue, the API key, temporary files, the frames the model sampled as pictures, an
ONNX export behind the same seams, and the page in headless Chromium (an MP4 it plays, an AVI it
cannot)."""
import base64
import io
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from tanet.apps.predict import Predictor
from tanet.data.encode import write_video

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from tanet.testing.browser import console_errors, headless_chrome
from tanet.testing.browser import missing as browser_missing
from tanet.testing.serve import Server, multipart
from tanet.testing.tiny import tiny_checkpoint

NAMES = ["run", "jump", "swim", "climb", "throw"]
KEY = "s3cret-key"
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the server beside the test process on 2 cores


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the server has the other core


def _moving_square(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """(n, h, w, 3) uint8: a smooth gradient with a bright square crossing it, every frame
    different (pictures of it can be compared after JPEG)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 200 // w, y * 200 // h, np.full_like(x, 60)], -1)  # (h, w, 3)
    out = np.repeat(base[None], n, 0).astype(np.uint8)  # (n, h, w, 3)
    colour = rng.integers(120, 255, 3)
    for i in range(n):
        top, left = (i * (h - 12)) // max(1, n - 1), (i * (w - 12)) // max(1, n - 1)
        out[i, top:top + 12, left:left + 12] = colour
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    ckpt, _ = tiny_checkpoint(d / "tiny.safetensors", NAMES, fc_std=0.3)
    rng = np.random.default_rng(0)
    videos = {}
    for name, (n, h, w) in {"a.mp4": (30, 48, 64), "b.mp4": (12, 40, 40),
                            "c.mp4": (50, 64, 48), "d.mp4": (20, 36, 52)}.items():
        videos[name] = write_video(d / name, rng.integers(0, 255, (n, h, w, 3), np.uint8), fps=10)
    # UCF101's format (MPEG-4 Part 2 in AVI), which browsers cannot play, and an H.264 MP4
    avi = write_video(d / "square.avi", _moving_square(50, 48, 64, 1), fps=10, codec="mpeg4")
    mp4 = write_video(d / "square.mp4", _moving_square(45, 64, 80, 2), fps=15)
    return {"dir": d, "ckpt": ckpt, "videos": videos, "avi": avi, "mp4": mp4}


@pytest.fixture(scope="module")
def server(files):
    s = Server(files["ckpt"], files["dir"] / "uploads", files["dir"] / "server.log",
               "--max-batch", "8", "--no-calibrate", "--decode-workers", "2", "--quiet",
               env=ONE_THREAD)
    yield s
    assert s.stop() in (0, -15), s.log()  # uvicorn re-raises SIGTERM after a clean shutdown
    assert list(s.tmp_dir.iterdir()) == []


SERVER_ONLY = {"video", "sampled"}  # what the server adds to `tanet predict --json`'s object


def _same(answer: dict, expected: dict) -> bool:
    """Same top-k labels, scores within 1e-5, same other keys (path compared by file name)."""
    a_top, e_top = answer["top"], expected["top"]
    return ([t["label"] for t in a_top] == [t["label"] for t in e_top]
            and all(abs(x["score"] - y["score"]) <= 1e-5 for x, y in zip(a_top, e_top))
            and set(answer) == set(expected) | SERVER_ONLY)


def _empty_soon(folder, seconds=10.0) -> list:
    deadline = time.monotonic() + seconds
    while (left := list(folder.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_answer_equals_tanet_predict_json(files, server, capsys):
    from tanet.cli import main

    video = files["videos"]["a.mp4"]
    assert main(["predict", str(video), "--checkpoint", str(files["ckpt"]), "--json",
                 "--topk", "3", "--views", "2x3"]) == 0
    cli = json.loads(capsys.readouterr().out)
    status, _, body = server.upload("/v1/predict?topk=3&views=2x3", video.read_bytes(), "a.mp4")
    assert status == 200 and body["path"] == "a.mp4"
    assert _same(body, {**cli, "path": "a.mp4"}), (body, cli)
    assert body["video"] == {"duration": 3.0, "fps": 10.0, "frames": 30, "width": 64,
                             "height": 48, "codec": "h264",
                             "container": "mov,mp4,m4a,3gp,3g2,mj2"}  # FFmpeg's demuxer
    times = Predictor(files["ckpt"], views="2x3").load_views(video)[2]  # (2, 4) seconds
    assert [(f["clip"], f["index"], f["time"]) for f in body["sampled"]] == [
        (c, round(t * 10), round(t, 4)) for c in range(2) for t in times[c]]
    assert all("image" not in f for f in body["sampled"])  # pictures only when asked for
    status, _, card = server.request("GET", "/v1/model")
    assert status == 200 and card["classes"] == NAMES and card["frames"] == 4
    assert card["size"] == [32, 32] and card["backend"] == "pytorch" and card["kind"] == "torch"
    assert card["name"] == "tanet_tiny" and card["visualize"] is True
    assert card["model"] == "tiny" and card["platform"] == "tanet_pytorch"  # the file's stem
    assert card["precision"] == Predictor(files["ckpt"]).precision.name  # --amp auto, resolved
    _, hdrs, _ = server.request("GET", "/v1/model", headers={"Origin": "http://elsewhere.test"})
    assert "access-control-allow-origin" not in hdrs  # CORS is off unless asked for


def test_load_64_requests_8_at_a_time(files, server):
    combos = [(name, views, k) for name in files["videos"] for views, k in (("1x1", 5), ("2x1", 2))]
    expected = {}
    for views in ("1x1", "2x1"):
        p = Predictor(files["ckpt"], views=views, topk=5)
        for name, path in files["videos"].items():
            for k in (5, 2):
                expected[name, views, k] = {**p.with_options(topk=k).predict(path).to_json(),
                                            "path": name}
    data = {name: path.read_bytes() for name, path in files["videos"].items()}
    jobs = [combos[i % len(combos)] for i in range(64)]

    def call(job):
        name, views, k = job
        return server.upload(f"/v1/predict?views={views}&topk={k}", data[name], name)

    with ThreadPoolExecutor(8) as ex:
        answers = list(ex.map(call, jobs))
    assert [a[0] for a in answers] == [200] * 64, [a for a in answers if a[0] != 200][:2]
    bad = [(job, a[2]) for job, a in zip(jobs, answers) if not _same(a[2], expected[job])]
    assert not bad, bad[:2]
    from prometheus_client.parser import text_string_to_metric_families

    status, hdrs, text = server.request("GET", "/metrics")
    assert status == 200 and hdrs["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    ok = samples[("tanet_requests_total", (("endpoint", "/v1/predict"), ("model", "tiny"),
                                           ("status", "200")))]
    assert ok >= 64 and samples[("tanet_queue_depth", ())] == 0
    assert samples[("tanet_batch_views_count", (("model", "tiny"),))] >= 1
    assert samples[("tanet_request_seconds_count", (("endpoint", "/v1/predict"),
                                                    ("model", "tiny")))] >= 64
    assert list(server.tmp_dir.iterdir()) == []


def test_window_timeline(files, server):
    video = files["videos"]["c.mp4"]
    status, _, body = server.upload("/v1/predict?window=2&topk=2", video.read_bytes(), "c.mp4")
    assert status == 200, body
    ref = Predictor(files["ckpt"], topk=2).predict_windows(video, 2.0)
    assert [w["start"] for w in body["windows"]] == [0.0, 1.0, 2.0, 3.0] == list(ref.starts)
    assert body["windows"][-1]["end"] == 5.0 and body["stride"] == 1.0
    for w, p in zip(body["windows"], ref.probs):
        assert w["top"][0]["label"] == NAMES[int(p.argmax())]
        assert abs(w["top"][0]["score"] - p.max()) <= 1e-5
    assert len(body["series"]) == 2 and len(body["series"][0]["scores"]) == 4
    assert [w["frames"] for w in body["windows"]] == ref.indices.tolist()
    assert body["video"]["frames"] == 50 and "thumbnails" not in body


def _picture(url: str) -> np.ndarray:
    """A JPEG data URL's pixels (h, w, 3) uint8."""
    from PIL import Image

    assert url.startswith("data:image/jpeg;base64,"), url[:40]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def test_avi_answer_carries_facts_and_the_sampled_frames(files, server):
    """An AVI with MPEG-4 Part 2 (what UCF101 and HMDB51 ship): the answer has the video's facts
    and, with ``thumbnails``, pictures of exactly the frames the model sampled, for the answer and
    for every window (compared with a plain sequential decode)."""
    from tanet.apps.serve.frames import video_facts, window_thumbnails
    from tanet.testing.media import sequential_frames

    avi = files["avi"]
    truth = sequential_frames(avi)  # (50, 48, 64, 3)
    status, _, body = server.upload("/v1/predict?views=2x1&thumbnails=1", avi.read_bytes(),
                                    "square.avi")
    assert status == 200, body
    assert body["video"] == {"duration": 5.0, "fps": 10.0, "frames": 50, "width": 64,
                             "height": 48, "codec": "mpeg4", "container": "avi"}
    ref = Predictor(files["ckpt"], views="2x1").predict(avi, keep_frames=True)
    assert _same(body, {**ref.to_json(), "path": "square.avi"})
    assert [f["index"] for f in body["sampled"]] == [round(t * 10) for t in ref.times.ravel()]
    for f, seen in zip(body["sampled"], ref.frames.reshape(-1, *ref.frames.shape[2:])):
        pic = _picture(f["image"])  # the frame as the model saw it (the card's resize: 36 px)
        assert pic.shape == seen.shape == (36, 48, 3)
        assert np.abs(pic.astype(int) - seen).mean() < 6, f["index"]
    status, _, tl = server.upload("/v1/predict?window=1&thumbnails=1", avi.read_bytes(),
                                  "square.avi")
    assert status == 200, tl
    res = Predictor(files["ckpt"]).predict_windows(avi, 1.0)
    assert [w["frames"] for w in tl["windows"]] == res.indices.tolist()
    assert set(tl["thumbnails"]) == {str(i) for i in np.unique(res.indices)}
    for i, url in tl["thumbnails"].items():  # decoded small: 48 px is this video's size
        assert np.abs(_picture(url).astype(int) - truth[int(i)]).mean() < 6, i
    spread = window_thumbnails(avi, res.indices, video_facts(avi), limit=5)
    assert len(spread) == 5 and min(map(int, spread)) == res.indices.min()
    assert max(map(int, spread)) == res.indices.max()


def test_onnx_server_uses_the_same_seams(files, tmp_path):
    """An ONNX export behind the server: the card says kind ``onnx``, the answer equals an ONNX
    Predictor's, and visualize is refused because there is no model to draw (409)."""
    pytest.importorskip("onnxruntime")
    from tanet.cli import main

    onnx = tmp_path / "tiny.onnx"
    assert main(["export", "--checkpoint", str(files["ckpt"]), str(onnx)]) == 0
    s = Server(onnx, tmp_path / "uploads", tmp_path / "server.log", "--no-calibrate", "--quiet",
               env=ONE_THREAD)
    try:
        status, _, card = s.request("GET", "/v1/model")
        assert status == 200 and card["kind"] == "onnx" and card["backend"] == "onnxruntime"
        assert card["visualize"] is False and card["precision"] is None  # the file decides
        video = files["videos"]["a.mp4"]
        status, _, body = s.upload("/v1/predict?topk=3", video.read_bytes(), "a.mp4")
        ref = Predictor(onnx, topk=3).predict(video).to_json()
        assert status == 200 and _same(body, {**ref, "path": "a.mp4"}), (body, ref)
        status, _, err = s.upload("/v1/visualize", video.read_bytes(), "a.mp4")
        assert status == 409 and "PyTorch checkpoint" in err["error"]
    finally:
        assert s.stop() in (0, -15), s.log()


def _raw_post(port: int, body: bytes, ctype: str, send: int, length: int | None = None,
              key: str | None = None) -> socket.socket:
    """A POST /v1/predict whose first ``send`` bytes of ``body`` go out; the socket stays open."""
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {length if length is not None else len(body)}\r\n"
            + (f"X-API-Key: {key}\r\n" if key else "") + "\r\n")
    s.sendall(head.encode() + body[:send])
    return s


def _status_of(sock: socket.socket) -> tuple[int, bytes]:
    """(status, whole response) read from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    sock.close()
    return int(data.split(b" ", 2)[1]), data


def _length(data: bytes) -> int:
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    return int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0]) if (
        b"content-length:" in head) else 0


def test_bad_uploads_are_4xx_and_server_keeps_serving(files, server):
    video = files["videos"]["a.mp4"].read_bytes()
    cases = {
        "garbage.mp4": (np.random.default_rng(1).bytes(4000), 422, "garbage.mp4: "),
        "empty.mp4": (b"", 400, "empty upload"),
        "half.mp4": (video[:len(video) // 2], 422, "half.mp4: "),
    }
    for name, (data, want, words) in cases.items():
        status, _, body = server.upload("/v1/predict", data, name)
        assert status == want and words in body["error"], (name, status, body)
        assert str(server.tmp_dir) not in json.dumps(body)  # no server path leaks out
    assert server.request("POST", "/v1/predict", b"x" * 10,
                          {"Content-Type": "application/octet-stream"})[0] == 415
    body, ctype = multipart("a.mp4", video, field="video")
    status, _, err = server.request("POST", "/v1/predict", body, {"Content-Type": ctype})
    assert status == 400 and "no 'file' field" in err["error"]
    body, ctype = multipart("a.mp4", video)
    cut = body[:len(body) - 40]  # the closing boundary is missing
    status, _, err = server.request("POST", "/v1/predict", cut, {"Content-Type": ctype})
    assert status == 400 and "truncated upload" in err["error"]
    for query, words in (("views=3x4", "crops in 1, 3, 10"), ("topk=0", "topk"),
                         ("window=-1", "window"), ("stride=1", "stride needs window")):
        status, _, err = server.upload(f"/v1/predict?{query}", video, "a.mp4")
        assert status == 400 and words in err["error"], (query, err)
    status, _, ok = server.upload("/v1/predict", video, "../../etc/x/evil.mp4")
    assert status == 200 and ok["path"] == "evil.mp4"  # a client's name is never a path here
    _raw_post(server.port, body, ctype, send=2000).close()  # the client goes away mid-upload
    status, _, ok = server.upload("/v1/predict", video, "a.mp4")
    assert status == 200 and ok["top"]
    assert _empty_soon(server.tmp_dir) == []
    assert server.proc.poll() is None


def test_visualize_returns_tanet_visualize_pictures(files, server):
    status, _, body = server.upload("/v1/visualize?topk=3", files["videos"]["b.mp4"].read_bytes(),
                                    "b.mp4")
    assert status == 200 and body["path"] == "b.mp4"
    assert set(body["images"]) == {"frames", "tam_kernels", "evidence"}
    for url in body["images"].values():
        png = base64.b64decode(url.split(",", 1)[1])
        assert url.startswith("data:image/png;base64,") and png[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(png) > 2000


def test_limits_full_queue_deadline_size_and_api_key(files, tmp_path):
    s = Server(files["ckpt"], tmp_path / "uploads", tmp_path / "server.log", "--max-batch", "4",
               "--max-queue", "2", "--timeout", "4", "--max-upload-mb", "0.1", "--api-key", KEY,
               "--cors-origin", "http://app.test", "--quiet", env=ONE_THREAD)
    try:
        key = {"X-API-Key": KEY}
        assert s.request("GET", "/healthz")[0] == 200  # open: load balancers probe it
        for path in ("/v1/model", "/metrics"):
            status, hdrs, err = s.request("GET", path)
            assert status == 401 and "API key" in err["error"] and hdrs["www-authenticate"]
        assert s.request("GET", "/v1/model", headers={"X-API-Key": "wrong"})[0] == 401
        status, hdrs, card = s.request("GET", "/v1/model", headers={
            "Authorization": f"Bearer {KEY}", "Origin": "http://app.test"})
        assert status == 200 and hdrs["access-control-allow-origin"] == "http://app.test"
        timed = card["batching"]["ms_per_view_by_batch"]  # calibrated at start-up
        assert card["batching"]["max_batch"] in (1, 2, 4) and "1" in timed
        video = files["videos"]["d.mp4"].read_bytes()
        assert len(video) < 0.1 * 2**20 < 300_000
        v2_body = json.dumps({"inputs": [{"name": "video", "datatype": "BYTES", "shape": [1],
                                          "data": [base64.b64encode(video).decode()]}]}).encode()
        assert s.request("GET", "/v2/health/live")[0] == 200  # probes are open
        assert s.request("GET", "/v2/health/ready")[0] == 200
        assert s.request("GET", "/v2/models/tiny")[0] == 401
        assert s.request("POST", "/v2/models/tiny/infer", v2_body)[0] == 401
        status, _, out = s.request("POST", "/v2/models/tiny/infer", v2_body, key)
        assert status == 200 and out["outputs"][1]["name"] == "labels"
        status, _, err = s.request("POST", "/v2/models/tiny/infer", b"{" * 200_000, key)
        assert status == 413 and "too large" in err["error"]  # --max-upload-mb: the whole body
        assert s.upload("/v1/predict", video, "d.mp4")[0] == 401
        status, _, body = s.upload("/v1/predict", video, "d.mp4", headers=key)
        assert status == 200 and body["top"]
        status, _, err = s.upload("/v1/predict", bytes(300_000), "big.mp4", headers=key)
        assert status == 413 and "too large" in err["error"]
        big, ctype = multipart("big.mp4", bytes(300_000))  # no Content-Length: counted as it comes
        status, _, err = s.request("POST", "/v1/predict", iter([big[i:i + 65536] for i in
                                   range(0, len(big), 65536)]),
                                   {"Content-Type": ctype, **key})
        assert status == 413 and "too large" in err["error"]

        body, ctype = multipart("slow.mp4", video)
        held = [_raw_post(s.port, body, ctype, send=500, key=KEY) for _ in range(2)]
        deadline = time.monotonic() + 10
        while s.request("GET", "/healthz")[2]["queue_depth"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        t0 = time.monotonic()
        status, hdrs, err = s.upload("/v1/predict", video, "d.mp4", headers=key, timeout=10)
        assert status == 503 and int(hdrs["retry-after"]) >= 1 and "busy" in err["error"]
        assert time.monotonic() - t0 < 3  # refused at once, not queued
        status, hdrs, err = s.request("POST", "/v2/models/tiny/infer", v2_body, {
            "Content-Type": "application/json", **key})  # the protocol's requests queue alike
        assert status == 503 and int(hdrs["retry-after"]) >= 1 and "busy" in err["error"]
        codes = [_status_of(sock) for sock in held]  # the stalled uploads hit the deadline
        assert [c for c, _ in codes] == [408, 408] and b"deadline" in codes[0][1]
        status, _, body = s.upload("/v1/predict", video, "d.mp4", headers=key)
        assert status == 200 and body["top"]
        assert s.request("GET", "/healthz")[2]["queue_depth"] == 0
        assert _empty_soon(s.tmp_dir) == []
    finally:
        assert s.stop() in (0, -15), s.log()


def test_serve_cli_errors_before_listening(tmp_path):
    from tanet.cli import main

    assert main(["serve", "--checkpoint", str(tmp_path / "missing.safetensors")]) == 1
    assert main(["serve", "--checkpoint", "x", "--max-batch", "0"]) == 1


def test_batcher_runs_concurrent_views_as_one_batch():
    """While the model runs one call, 7 more callers arrive: they run as batches of at most
    ``max_batch`` views, in arrival order, and each gets exactly its own rows."""
    from tanet.apps.serve.batching import Batcher

    weight = torch.randn(4 * 3 * 8 * 8, 5)
    gate, sizes = threading.Event(), []

    def backend(views):  # (N, T, C, H, W) -> (N, K): a linear classifier, row by row
        sizes.append(len(views))
        gate.wait(10)
        return (views.flatten(1) @ weight).numpy()

    clips = [torch.randn(v, 4, 3, 8, 8) for v in (1, 1, 2, 1, 1, 1, 1, 2)]
    batcher = Batcher(backend, max_batch=4, max_wait_ms=1).start()
    out = [None] * len(clips)

    def call(i):
        out[i] = batcher.infer(clips[i])

    threads = [threading.Thread(target=call, args=(0,))]
    threads[0].start()
    while not sizes:
        time.sleep(0.01)
    for i in range(1, len(clips)):  # queued in order while the first call runs
        threads.append(threading.Thread(target=call, args=(i,)))
        threads[-1].start()
        while batcher.queued < i:
            time.sleep(0.005)
    gate.set()
    for t in threads:
        t.join(10)
    batcher.close()
    assert sizes == [1, 4, 3, 2], sizes  # 1 | 1+2+1 | 1+1+1 (the next has 2) | 2
    for views, logits in zip(clips, out):
        assert np.allclose(logits, (views.flatten(1) @ weight).numpy(), atol=1e-4)


def test_calibration_keeps_the_batch_size_that_pays():
    """A backend whose call costs the same for any batch is calibrated to the limit; one whose
    batches cost 1.5x per view more than single views, to 1."""
    from tanet.apps.serve.batching import calibrate_batch

    def flat(views):
        time.sleep(0.02)
        return np.zeros((len(views), 3))

    def worse(views):
        time.sleep(0.02 * len(views) * (1.5 if len(views) > 1 else 1))
        return np.zeros((len(views), 3))

    example = lambda n: torch.zeros(n, 4, 3, 8, 8)  # noqa: E731
    size, per_view = calibrate_batch(flat, example, 4)
    assert size == 4 and set(per_view) == {1, 2, 4} and per_view[4] < per_view[1] / 2
    size, per_view = calibrate_batch(worse, example, 16)
    assert size == 1 and set(per_view) == {1, 2}  # stops at the first size that does not pay


def _serve_busy(tuner, per_view, calls, load=lambda i: 1.0, waiting=10**6):
    """Feed ``tuner`` the calls of a server with ``waiting`` views in its queue at each call
    (default: always more than the cap): a call takes as many as allowed, at ``per_view(views)``
    seconds a view times the machine's ``load``."""
    for i in range(calls):
        views = min(tuner.next_limit(), waiting)
        tuner.observe(views, views * per_view(views) * load(i))


def test_batch_tuner_follows_what_pays_per_view():
    """Online: from a cap of 8 the tuner walks down to the size that is cheapest per view and
    stays there; from 1 it grows to the limit when calls cost the same for any batch; a slowly
    changing machine load does not fool it (probes are paired with the next call); batches
    that never reach the cap are probed too."""
    from tanet.apps.serve.batching import BatchTuner

    cost = {1: 0.012, 2: 0.010}  # s per view: 2 is best, bigger batches 1.5x worse
    per_view = lambda n: cost.get(n, 0.015)  # noqa: E731
    moves = []
    tuner = BatchTuner(8, 16, on_change=lambda a, b, r: moves.append((a, b)))
    _serve_busy(tuner, per_view, 400, load=lambda i: 1 + 2 * ((i // 37) % 2))
    assert tuner.cap == 2 and moves == [(8, 4), (4, 2)] and tuner.changes[0][:2] == (8, 4)
    tuner = BatchTuner(1, 16)
    _serve_busy(tuner, lambda n: 0.02 / n, 400)
    assert tuner.cap == 16 and [c[1] for c in tuner.changes] == [2, 4, 8, 16]
    tuner = BatchTuner(16, 16)  # 6 views wait at a time: below the cap, yet 6 costs more
    _serve_busy(tuner, lambda n: 0.012 if n == 1 else 0.010 if n <= 3 else 0.015, 200, waiting=6)
    assert tuner.cap == 3 and tuner.changes == [(16, 3, 0.667)]
    tuner = BatchTuner(16, 16)  # the same queue on a backend where batches pay: nothing moves
    _serve_busy(tuner, lambda n: 0.02 / n, 200, waiting=6)
    assert tuner.cap == 16 and not tuner.changes
    with pytest.raises(ValueError, match="within 1..4"):
        BatchTuner(8, 4)


def test_batcher_with_tuner_drops_a_cap_that_costs_more():
    """Real threads: a backend whose batches cost 1.5x per view more than single views, served
    under a full queue with a tuner starting at 4, ends at 1 with every answer right."""
    from tanet.apps.serve.batching import Batcher, BatchTuner

    weight = torch.randn(4 * 3 * 8 * 8, 3)

    def worse(views):
        time.sleep(0.01 * len(views) * (1.5 if len(views) > 1 else 1))
        return (views.flatten(1) @ weight).numpy()

    batcher = Batcher(worse, max_batch=4, max_wait_ms=2)
    batcher.tuner = BatchTuner(4, 4, every=2, votes=1)
    batcher.start()
    bad = []

    def client(k):
        for _ in range(25):
            x = torch.randn(1, 4, 3, 8, 8)
            if not np.allclose(batcher.infer(x), (x.flatten(1) @ weight).numpy(), atol=1e-4):
                bad.append(k)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    batcher.close()
    assert not bad and batcher.tuner.cap == 1 == batcher.max_batch, batcher.tuner.changes


def _chrome(width: int = 1100, height: int = 1300):
    """Headless Chromium (``tanet.testing.browser``) as a context manager, or a skip saying
    what is missing."""
    why = browser_missing()
    if why:
        pytest.skip(f"browser test skipped: {why}")
    return headless_chrome(width, height)


def test_browser_page_upload_shows_top1_timeline_and_tam(files, server, capsys):
    """Headless Chromium: open the page, upload a real video, wait for the top-1 label, move the
    timeline with the keyboard, open the TAM tab with the keyboard, check phone width; the
    screenshots are saved under build/test-artifacts/."""
    from pathlib import Path

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _chrome()
    video = files["videos"]["c.mp4"]  # 5 s: long enough for a timeline
    top1 = Predictor(files["ckpt"]).predict(video).top[0][0]
    out = Path(__file__).resolve().parents[1] / "build" / "test-artifacts"
    out.mkdir(parents=True, exist_ok=True)
    with browser as driver:
        wait = WebDriverWait(driver, 60)
        driver.get(f"http://127.0.0.1:{server.port}/")
        wait.until(lambda d: "tanet_tiny" in d.find_element(By.ID, "model-info").text)
        driver.find_element(By.ID, "file").send_keys(str(video))
        first = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#topk-list li .label"))[0]
        assert first.text == top1
        chart = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chart svg"))[0]
        # an H.264 MP4 plays in the page: the player, not the frame view; the strip is drawn
        assert driver.execute_script("const v = document.getElementById('video');"
                                     "return !v.error && v.readyState >= 1 && v.videoWidth") == 48
        assert not driver.find_element(By.ID, "frame-view").is_displayed()
        wait.until(lambda d: _loaded_strip(d) == 4)  # 1 clip of T=4 frames
        chart.send_keys(Keys.END)  # keyboard seek: the playhead and the readout follow
        wait.until(lambda d: d.find_element(By.ID, "now").text.startswith("5.0 s: "))
        wait.until(lambda d: d.execute_script("return document.getElementById('video').currentTime")
                   > 4.5)  # the player itself moved
        driver.save_screenshot(str(out / "serve_page.png"))
        tab = driver.find_element(By.ID, "tab-timeline")
        tab.send_keys(Keys.ARROW_RIGHT)  # tabs are keyboard operable
        assert driver.switch_to.active_element.get_attribute("id") == "tab-tam"
        img = wait.until(lambda d: d.find_elements(By.ID, "tam-tam_kernels"))[0]
        wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", img) > 200)
        driver.save_screenshot(str(out / "serve_page_tam.png"))
        driver.set_window_size(390, 844)  # phone width: nothing wider than the screen
        assert driver.execute_script("return document.documentElement.scrollWidth") <= 390
        driver.save_screenshot(str(out / "serve_page_phone.png"))
        errors = console_errors(driver)
        assert not errors, errors
    with capsys.disabled():
        print(f"\nbrowser screenshots: {out}/serve_page*.png")


def _loaded_strip(driver) -> int:
    """How many pictures the strip of sampled frames shows, all loaded (0 while one is not)."""
    return driver.execute_script(
        "const imgs = [...document.querySelectorAll('#strip img')];"
        "return imgs.every((i) => i.complete && i.naturalWidth > 0) ? imgs.length : 0;")


def test_browser_page_avi_it_cannot_play_shows_the_sampled_frames(files, server, capsys):
    """Headless Chromium cannot play an AVI with MPEG-4 Part 2 (UCF101's format): the page says
    so, shows the frames the model sampled instead of the black player, draws the timeline, and
    moving the timeline's cursor shows the frames of the window under it (the picture equal to
    the sequential decode's frame)."""
    from pathlib import Path

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from tanet.testing.media import sequential_frames

    browser = _chrome()
    avi = files["avi"]  # 5 s: a timeline of 1 s windows
    top1 = Predictor(files["ckpt"]).predict(avi).top[0][0]
    last = Predictor(files["ckpt"]).predict_windows(avi, 1.0).indices[-1]  # (T,)
    truth = sequential_frames(avi)
    out = Path(__file__).resolve().parents[1] / "build" / "test-artifacts"
    out.mkdir(parents=True, exist_ok=True)
    frame = "document.getElementById('frame-img')"
    with browser as driver:
        wait = WebDriverWait(driver, 60)
        driver.get(f"http://127.0.0.1:{server.port}/")
        wait.until(lambda d: "tanet_tiny" in d.find_element(By.ID, "model-info").text)
        driver.find_element(By.ID, "file").send_keys(str(avi))
        first = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#topk-list li .label"))[0]
        assert first.text == top1
        wait.until(lambda d: d.find_element(By.ID, "frame-view").is_displayed())
        assert not driver.find_element(By.ID, "video").is_displayed()
        assert driver.execute_script("return document.getElementById('video').error.code") == 4
        note = driver.find_element(By.ID, "play-note").text
        assert "cannot play" in note
        assert "(mpeg4 video in a .avi file, 50 frames at 10 fps, 5.0 s)" in note
        chart = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chart svg"))[0]
        assert len(chart.find_elements(By.TAG_NAME, "polyline")) >= 1
        assert len(chart.find_elements(By.TAG_NAME, "circle")) >= 5  # 5 windows or more
        chart.send_keys(Keys.HOME)
        wait.until(lambda d: "for the window 0.0–1.0 s" in d.find_element(By.ID,
                                                                          "strip-note").text)
        wait.until(lambda d: _loaded_strip(d) == 4)
        wait.until(lambda d: d.execute_script(f"return {frame}.complete && {frame}.naturalWidth")
                   == 64)  # the window's pictures: decoded at the video's own size
        start = driver.find_element(By.ID, "frame-img").get_attribute("src")
        chart.send_keys(Keys.END)  # the cursor to 5 s: the last window's last frame is shown
        wait.until(lambda d: d.find_element(By.ID, "frame-caption").text
                   .startswith(f"frame {max(last)} at "))
        shown = driver.find_element(By.ID, "frame-img").get_attribute("src")
        assert shown != start and np.abs(_picture(shown).astype(int) - truth[max(last)]).mean() < 6
        wait.until(lambda d: _loaded_strip(d) == 4)
        assert driver.find_element(By.CSS_SELECTOR, "#strip [aria-current='true']").text \
            == f"{max(last) / 10:.2f} s"
        driver.find_elements(By.CSS_SELECTOR, "#strip button")[0].click()  # the strip seeks too
        wait.until(lambda d: d.find_element(By.ID, "now").text
                   .startswith(f"{min(last) / 10:.1f} s"))
        driver.save_screenshot(str(out / "serve_page_avi.png"))
        driver.set_window_size(390, 844)
        assert driver.execute_script("return document.documentElement.scrollWidth") <= 390
        driver.save_screenshot(str(out / "serve_page_avi_phone.png"))
        errors = console_errors(driver)
        assert not errors, errors
    with capsys.disabled():
        print(f"\nbrowser screenshots: {out}/serve_page_avi*.png")
