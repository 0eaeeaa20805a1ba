"""`tanet serve` on the Open Inference Protocol (KServe v2) with a real client: tritonclient.http
against a real server subprocess on 127.0.0.1 serving two models (health, metadata, config;
BYTES videos and FP32 clips, binary and JSON; requested outputs; top-1 equal to `tanet predict`;
bad requests -> protocol errors while it keeps serving), action segments in v1 and v2 answers
(and as a .vtt a subtitle parser reads), `?model=` and the metrics by model, the request body's
streaming parser on every chunking, and the page picking one of the two models in headless
Chromium."""
import asyncio
import base64
import io
import json
import socket
import struct
import time

import numpy as np
import pytest

from tanet.apps.predict import Predictor
from tanet.data.encode import write_video

pytest.importorskip("fastapi")
th = pytest.importorskip("tritonclient.http", reason="tritonclient[http] not installed "
                         "(pip install -e '.[dev]')")
from tritonclient.utils import InferenceServerException  # noqa: E402

from tanet.apps.segments import SegmentRule, segments_of  # noqa: E402
from tanet.testing.serve import Server  # noqa: E402
from tanet.testing.tiny import tiny_checkpoint  # noqa: E402

NAMES = ["run", "jump", "swim", "climb", "throw"]
OTHER = ["walk", "sit", "wave", "clap", "nod", "kick"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from tanet.testing.media import write_parts_video

    d = tmp_path_factory.mktemp("v2")
    ckpt, _ = tiny_checkpoint(d / "tiny.safetensors", NAMES, fc_std=0.3)
    other, _ = tiny_checkpoint(d / "other.safetensors", OTHER, fc_std=2.0, sampling="dense",
                               dense_stride=2)
    rng = np.random.default_rng(5)
    mp4 = write_video(d / "a.mp4", rng.integers(0, 255, (30, 48, 64, 3), np.uint8), fps=10)
    avi = write_video(d / "b.avi", rng.integers(0, 255, (25, 40, 56, 3), np.uint8), fps=12,
                      codec="mpeg4")
    return {"dir": d, "ckpt": ckpt, "other": other, "mp4": mp4, "avi": avi,
            "long": write_parts_video(d / "long.mp4")}


@pytest.fixture(scope="module")
def server(files):
    s = Server(files["ckpt"], files["dir"] / "uploads", files["dir"] / "server.log",
               "--model", f"other={files['other']}", "--max-batch", "8", "--no-calibrate",
               "--quiet", env=ONE_THREAD)
    yield s
    assert s.stop() in (0, -15), s.log()
    assert list(s.tmp_dir.iterdir()) == []


@pytest.fixture
def client(server):
    c = th.InferenceServerClient(f"127.0.0.1:{server.port}", network_timeout=120)
    yield c
    c.close()


def _videos(files, *names, binary=True):
    data = [files[n].read_bytes() for n in names]
    x = th.InferInput("video", [len(data)], "BYTES")
    if binary:
        x.set_data_from_numpy(np.array(data, dtype=object))
    else:  # JSON: BYTES elements are base64 text
        x.set_data_from_numpy(np.array([base64.b64encode(b) for b in data], dtype=object),
                              binary_data=False)
    return x


def test_health_metadata_and_config(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("other", "1")
    assert not client.is_model_ready("nope") and not client.is_model_ready("tiny", "2")
    meta = client.get_server_metadata()
    assert meta["name"] == "tanet" and "binary_tensor_data" in meta["extensions"]
    assert client.get_model_metadata("tiny") == client.get_model_metadata("tiny", "1") == {
        "name": "tiny", "versions": ["1"], "platform": "tanet_pytorch",
        "inputs": [{"name": "video", "datatype": "BYTES", "shape": [-1]},
                   {"name": "clips", "datatype": "FP32", "shape": [-1, 4, 3, 32, 32]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 5]},
                    {"name": "labels", "datatype": "BYTES", "shape": [-1, -1]},
                    {"name": "segments", "datatype": "BYTES", "shape": [-1]}]}
    config = client.get_model_config("other")
    assert json.loads(config["parameters"]["class_names"]["string_value"]) == OTHER
    assert [t["name"] for t in config["input"]] == ["video", "clips"]
    with pytest.raises(InferenceServerException, match="unknown model 'nope'") as e:
        client.get_model_metadata("nope")
    assert e.value.status() == "404"
    with pytest.raises(InferenceServerException, match="unknown version '7'"):
        client.get_model_metadata("tiny", "7")


def test_videos_binary_and_json_equal_tanet_predict(files, client, capsys):
    """BYTES videos (an MP4 and an MPEG-4 AVI in one request): probabilities equal Predictor's,
    labels its top-k, top-1 equal to `tanet predict --json`'s; JSON (base64) the same."""
    from tanet.cli import main

    for name in ("mp4", "avi"):
        assert main(["predict", str(files[name]), "--checkpoint", str(files["ckpt"]),
                     "--json"]) == 0
    cli = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    p = Predictor(files["ckpt"])
    ref = [p.predict(files[n]) for n in ("mp4", "avi")]
    for binary in (True, False):
        r = client.infer("tiny", [_videos(files, "mp4", "avi", binary=binary)])
        probs, labels = r.as_numpy("probabilities"), r.as_numpy("labels")
        assert probs.dtype == np.float32 and probs.shape == (2, 5) and labels.shape == (2, 5)
        assert np.allclose(probs, [x.probs for x in ref], atol=1e-5)
        assert [[b.decode() for b in row] for row in labels] == [[lab for lab, _ in x.top]
                                                                 for x in ref]
        assert [row[0].decode() for row in labels] == [c["top"][0]["label"] for c in cli]
        assert [o["name"] for o in r.get_response()["outputs"]] == ["probabilities", "labels"]
    # requested outputs honoured: labels only (JSON), top-2; classification on probabilities
    r = client.infer("tiny", [_videos(files, "avi")], parameters={"topk": 2, "views": "2x1"},
                     outputs=[th.InferRequestedOutput("labels", binary_data=False)])
    assert [o["name"] for o in r.get_response()["outputs"]] == ["labels"]
    ref2 = Predictor(files["ckpt"], views="2x1", topk=2).predict(files["avi"])
    assert r.get_response()["outputs"][0]["data"] == [lab for lab, _ in ref2.top]
    r = client.infer("tiny", [_videos(files, "mp4")],
                     outputs=[th.InferRequestedOutput("probabilities", class_count=3)])
    top = [s.decode().split(":") for s in r.as_numpy("probabilities")[0]]
    assert [(int(i), lab) for _, i, lab in top] == [(NAMES.index(lab), lab)
                                                    for lab, _ in ref[0].top[:3]]
    assert abs(float(top[0][0]) - ref[0].top[0][1]) < 1e-5


def test_clips_fp32_binary_and_json(files, server, client):
    """Preprocessed clips (N, T, 3, H, W): one view each, their probabilities equal Predictor's
    on the same views; JSON data (nested lists) the same."""
    p = Predictor(files["ckpt"])
    views = np.concatenate([p.load_views(files[n])[1].numpy() for n in ("mp4", "avi")])
    assert views.shape == (2, 4, 3, 32, 32)
    ref = np.stack([p.predict(files[n]).probs for n in ("mp4", "avi")])  # 1x1: the same view
    for binary in (True, False):
        x = th.InferInput("clips", list(views.shape), "FP32")
        x.set_data_from_numpy(views, binary_data=binary)
        r = client.infer("tiny", [x], outputs=[th.InferRequestedOutput("probabilities",
                                                                        binary_data=binary)])
        assert np.allclose(r.as_numpy("probabilities"), ref, atol=1e-5)
    doc = {"inputs": [{"name": "clips", "datatype": "FP32", "shape": list(views.shape),
                       "data": views.tolist()}]}  # nested lists, as the protocol allows
    status, _, body = server.request("POST", "/v2/models/tiny/infer", json.dumps(doc).encode(),
                                     {"Content-Type": "application/json"})
    assert status == 200 and body["outputs"][1]["data"][::5] == [
        NAMES[i] for i in ref.argmax(1)]


def test_segments_in_v2_and_v1_answers_and_as_subtitles(files, server, client):
    webvtt = pytest.importorskip("webvtt")
    video = files["long"]
    expected = segments_of(Predictor(files["ckpt"]).predict_windows(video, 2.0))
    r = client.infer("tiny", [_videos(files, "long", "mp4")], parameters={"window": 2.0},
                     outputs=[th.InferRequestedOutput("segments")])
    segs = [json.loads(s) for s in r.as_numpy("segments")]
    assert segs[0] == [s.to_json() for s in expected] and len(expected) >= 2
    assert segs[1] == [s.to_json() for s in segments_of(
        Predictor(files["ckpt"]).predict_windows(files["mp4"], 2.0))]
    rule = SegmentRule(min_score=0.6, max_gap=0.5)
    status, _, body = server.upload("/v1/predict?window=2&min_score=0.6&max_gap=0.5",
                                    video.read_bytes(), "long.mp4")
    assert status == 200 and body["rule"] == {"min_score": 0.6, "min_duration": 2.0,
                                              "max_gap": 0.5}
    assert body["segments"] == [s.to_json() for s in segments_of(
        Predictor(files["ckpt"]).predict_windows(video, 2.0), rule)]
    status, hdrs, text = server.upload("/v1/predict?window=2&format=vtt", video.read_bytes(),
                                       "long.mp4")
    assert status == 200 and hdrs["content-type"].startswith("text/vtt")
    assert 'filename="long.vtt"' in hdrs["content-disposition"]
    cues = webvtt.from_buffer(io.StringIO(text))
    assert [(c.start_time.in_milliseconds(), c.end_time.in_milliseconds(), c.text)
            for c in cues] == [(round(1000 * s.start), round(1000 * s.end),
                                f"{s.label} ({s.score:.2f})") for s in expected]
    status, _, err = server.upload("/v1/predict?format=srt", video.read_bytes(), "long.mp4")
    assert status == 400 and "needs window" in err["error"]


def test_bad_requests_are_protocol_errors_and_the_server_keeps_serving(files, server, client):
    video = files["mp4"].read_bytes()
    x = th.InferInput("video", [1], "FP32")
    x.set_data_from_numpy(np.zeros(1, np.float32))
    cases = [("tiny", [x], {}, "400", "datatype FP32, expected BYTES")]
    x = th.InferInput("clips", [1, 4, 3, 16, 16], "FP32")
    x.set_data_from_numpy(np.zeros((1, 4, 3, 16, 16), np.float32))
    cases.append(("tiny", [x], {}, "400", "expected [N, 4, 3, 32, 32]"))
    cases.append(("nope", [x], {}, "404", "unknown model 'nope'"))
    garbage = th.InferInput("video", [2], "BYTES")
    garbage.set_data_from_numpy(np.array([video, np.random.default_rng(0).bytes(3000)],
                                         dtype=object))
    cases.append(("tiny", [garbage], {}, "400", "input 'video' element 1 (of 2): cannot"))
    empty = th.InferInput("video", [1], "BYTES")
    empty.set_data_from_numpy(np.array([b""], dtype=object))
    cases.append(("tiny", [empty], {}, "400", "element 0 is empty"))
    good = _videos(files, "mp4")
    cases.append(("tiny", [good], {"topk": "three"}, "400", "'topk' must be an integer"))
    cases.append(("tiny", [good], {"colour": 1}, "400", "unknown parameter 'colour'"))
    cases.append(("tiny", [good], {"views": "3x4"}, "400", "crops in 1, 3, 10"))
    cases.append(("tiny", [good, _videos(files, "avi")], {}, "400", "given twice"))
    for model, inputs, params, status, words in cases:
        with pytest.raises(InferenceServerException) as e:
            client.infer(model, inputs, parameters=params)
        assert e.value.status() == status and words in e.value.message(), (words, e.value)
    with pytest.raises(InferenceServerException, match="'segments' needs the parameter 'window'"):
        client.infer("tiny", [good], outputs=[th.InferRequestedOutput("segments")])
    with pytest.raises(InferenceServerException, match="unknown output 'logits'"):
        client.infer("tiny", [good], outputs=[th.InferRequestedOutput("logits")])
    header = json.dumps({"inputs": [{"name": "video", "datatype": "BYTES", "shape": [1],
                                     "parameters": {"binary_data_size": len(video) + 4}}]}).encode()
    element = struct.pack("<I", len(video)) + video
    raw = {  # what clients other than tritonclient can get wrong
        "not json": (b"{inputs", {}, "cannot be parsed"),
        "header longer than body": (header, {"Inference-Header-Content-Length": "9999"},
                                    "shorter than its Inference-Header-Content-Length"),
        "data cut short": (header + element[:-10], {"Inference-Header-Content-Length":
                                                    str(len(header))}, "body ended before"),
        "data too long": (header + element + b"xx", {"Inference-Header-Content-Length":
                                                     str(len(header))}, "longer than"),
        "element over its size": (header + struct.pack("<I", 10**6) + video, {
            "Inference-Header-Content-Length": str(len(header))}, "more than the"),
        "base64 expected": (json.dumps({"inputs": [{"name": "video", "datatype": "BYTES",
                                                    "shape": [1], "data": ["%%%"]}]}).encode(),
                            {}, "not base64"),
        "shared memory": (json.dumps({"inputs": [{"name": "video", "datatype": "BYTES",
                                                  "shape": [1], "parameters": {
                                                      "shared_memory_region": "r"}}]}).encode(),
                          {}, "shared memory is not supported"),
    }
    for case, (body, headers, words) in raw.items():
        status, _, err = server.request("POST", "/v2/models/tiny/infer", body, {
            "Content-Type": "application/octet-stream", **headers})
        assert status == 400 and words in err["error"], (case, status, err)
    status, _, err = server.request("POST", "/v2/models/tiny/infer", b"x",
                                    {"Content-Encoding": "gzip"})
    assert status == 415 and "uncompressed" in err["error"]
    body = header + element  # a client that goes away in the middle of a video's bytes
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    sock.sendall(f"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: "
                 f"{len(body)}\r\nInference-Header-Content-Length: {len(header)}\r\n\r\n"
                 .encode() + body[:len(body) // 2])
    deadline = time.monotonic() + 10  # wait until the server holds a part of the video on disk
    while not list(server.tmp_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(server.tmp_dir.iterdir())
    sock.close()
    r = client.infer("tiny", [good])  # still serving, nothing left behind
    assert r.as_numpy("labels")[0][0].decode() == Predictor(files["ckpt"]).predict(
        files["mp4"]).top[0][0]
    from test_serve import _empty_soon

    assert _empty_soon(server.tmp_dir) == [] and server.proc.poll() is None


def test_two_models_v1_model_query_and_metrics_by_model(files, server, client):
    from prometheus_client.parser import text_string_to_metric_families

    status, _, listed = server.request("GET", "/v1/models")
    assert status == 200 and listed["default"] == "tiny"
    assert [(m["model"], m["classes"]) for m in listed["models"]] == [("tiny", NAMES),
                                                                      ("other", OTHER)]
    ref = Predictor(files["other"], topk=3).predict(files["mp4"])
    status, _, body = server.upload("/v1/predict?model=other&topk=3", files["mp4"].read_bytes(),
                                    "a.mp4")
    assert status == 200 and [t["label"] for t in body["top"]] == [lab for lab, _ in ref.top]
    status, _, err = server.upload("/v1/predict?model=nope", files["mp4"].read_bytes(), "a.mp4")
    assert status == 404 and "unknown model 'nope'" in err["error"]
    assert server.request("GET", "/v1/model?model=other")[2]["sampling"] == "dense"
    r = client.infer("other", [_videos(files, "mp4")])
    assert np.allclose(r.as_numpy("probabilities")[0], ref.probs, atol=1e-5)
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.infer("nope", [_videos(files, "mp4")])  # counted without a model label
    client.infer("tiny", [_videos(files, "mp4")])
    text = server.request("GET", "/metrics")[2]
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    infer = ("endpoint", "/v2/models/{name}/infer")
    assert samples[("tanet_requests_total", (infer, ("model", "other"), ("status", "200")))] >= 1
    assert samples[("tanet_requests_total", (infer, ("model", ""), ("status", "404")))] >= 1
    assert samples[("tanet_requests_total", (("endpoint", "/v1/predict"), ("model", "other"),
                                             ("status", "200")))] >= 1
    for name in ("tiny", "other"):
        assert samples[("tanet_batch_views_count", (("model", name),))] >= 1


def test_model_names_and_options(capsys):
    from tanet.apps.serve.settings import ServeSettings, default_model_name, parse_model_option
    from tanet.cli import main

    assert main(["serve"]) == 1 and "needs a model" in capsys.readouterr().err

    assert default_model_name("runs/x/best.safetensors") == "best"
    assert default_model_name("exports/model.int8.onnx") == "model.int8"
    assert default_model_name("TSM_kinetics_RGB_resnet50.pth.tar") == "TSM_kinetics_RGB_resnet50"
    assert default_model_name("tanet_r50.k400") == "tanet_r50.k400"  # a weights name as it is
    assert default_model_name("https://example.org/w/tam-1a2b.pth?dl=1") == "tam-1a2b"
    assert parse_model_option("k400=tanet_r50.k400") == ("k400", "tanet_r50.k400")
    assert parse_model_option("https://h/x.pth?a=b") == ("x", "https://h/x.pth?a=b")
    specs = ServeSettings(checkpoint="a/best.onnx", models=("b=c.safetensors", "d.onnx"))
    assert specs.model_specs() == [("best", "a/best.onnx"), ("b", "c.safetensors"),
                                   ("d", "d.onnx")]
    for bad, words in ((ServeSettings(checkpoint="a.onnx", models=("a=b.onnx",)), "two models"),
                       (ServeSettings(checkpoint="a.onnx", name="a b"), "cannot be used in"),
                       (ServeSettings(), "no model to serve")):
        with pytest.raises(ValueError, match=words):
            bad.model_specs()


def _starlette_request(body_chunks, headers):
    from starlette.requests import Request

    chunks = list(body_chunks)

    async def receive():
        if chunks:
            return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    return Request(scope, receive)


def test_binary_body_parser_on_every_chunking(tmp_path):
    """The streaming parser gives the same tensors whatever the chunk boundaries (inside a
    length prefix, an element, between inputs): BYTES elements into files, FP32 into arrays."""
    from tanet.apps.serve.protocol import receive_infer
    from tanet.apps.serve.service import Spool

    rng = np.random.default_rng(0)
    elements = [rng.bytes(n) for n in (5, 0, 13)]
    floats = rng.standard_normal((2, 3)).astype("<f4")
    blob_b = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    header = json.dumps({"id": "r1", "inputs": [
        {"name": "v", "datatype": "BYTES", "shape": [3], "parameters": {
            "binary_data_size": len(blob_b)}},
        {"name": "x", "datatype": "FP32", "shape": [2, 3], "parameters": {
            "binary_data_size": 24}}]}).encode()
    body = header + blob_b + floats.tobytes()
    for size in (1, 2, 3, 4, 5, 7, 11, len(body)):
        spool = Spool(tmp_path)
        chunks = [body[i:i + size] for i in range(0, len(body), size)]
        req = asyncio.run(receive_infer(
            _starlette_request(chunks, {"Inference-Header-Content-Length": str(len(header))}),
            spool.new, max_bytes=10**6, check=lambda r: None))
        assert req.id == "r1" and [p.read_bytes() for p in req.inputs["v"].files] == elements
        assert np.array_equal(req.inputs["x"].array, floats), size
        spool.clear()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(Exception, match="request too large"):
        asyncio.run(receive_infer(_starlette_request([body], {}), Spool(tmp_path).new,
                                  max_bytes=100, check=lambda r: None))


def test_browser_page_picks_a_model_and_draws_segments(files, server, capsys):
    """Headless Chromium: the page lists both models, picking `other` shows its card and its
    top-1 for the upload, and the timeline draws the segments of the answer as labelled bands."""
    from pathlib import Path

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from test_serve import _chrome

    from tanet.testing.browser import console_errors

    browser = _chrome()
    video = files["long"]
    top1 = Predictor(files["other"]).predict(video).top[0][0]
    expected = segments_of(Predictor(files["other"]).predict_windows(video, 1.0))  # 8 s: 1 s
    assert len(expected) >= 3 and top1 != Predictor(files["ckpt"]).predict(video).top[0][0]
    out = Path(__file__).resolve().parents[1] / "build" / "test-artifacts"
    out.mkdir(parents=True, exist_ok=True)
    with browser as driver:
        wait = WebDriverWait(driver, 60)
        driver.get(f"http://127.0.0.1:{server.port}/")
        wait.until(lambda d: "tanet_tiny" in d.find_element(By.ID, "model-info").text)
        pick = Select(driver.find_element(By.ID, "model"))
        assert [o.get_attribute("value") for o in pick.options] == ["tiny", "other"]
        pick.select_by_value("other")
        wait.until(lambda d: "6 classes" in d.find_element(By.ID, "model-info").text)
        driver.find_element(By.ID, "file").send_keys(str(video))
        first = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#topk-list li .label"))[0]
        assert first.text == top1
        bands = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chart .segment"))
        assert [b.get_attribute("data-label") for b in bands] == [s.label for s in expected]
        assert [float(b.get_attribute("data-start")) for b in bands] == [
            round(s.start, 3) for s in expected]
        assert "segments" in driver.find_element(By.ID, "timeline-note").text
        driver.save_screenshot(str(out / "serve_page_models.png"))
        errors = console_errors(driver)
        assert not errors, errors
    with capsys.disabled():
        print(f"\nbrowser screenshot: {out}/serve_page_models.png")
