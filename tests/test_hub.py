"""Published weights by name or URL, offline: a real HTTP server on 127.0.0.1 (started and
stopped here) serves tiny checkpoints generated here in mmaction2's and the authors' layouts,
registered as temporary entries; downloads land in a temporary torch.hub cache."""
import contextlib
import hashlib
import http.server
import io
import json
import re
import socket
import threading

import numpy as np
import pytest
import torch

import tanet
from tanet.cli import main
from tanet.data.encode import write_video
from tanet.models import hub
from tanet.models.checkpoint import read_metadata
from tanet.models.download import DownloadError, HashMismatchError, cache_dir
from tanet.models.registry import is_registered
from tanet.testing.published import to_mmaction2

T, K = 4, 5
NAMES = ["jumping jacks", "juggling balls", "playing cello", "surfing water", "yawning"]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        srv = self.server
        srv.requests.append(self.path)
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.path in srv.cut else body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving():
    """An HTTP server on 127.0.0.1 serving ``srv.files`` (path -> bytes); paths in ``srv.cut``
    announce their full length and send half before closing the connection."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.cut, srv.requests = {}, set(), []
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def published():
    """A trained-looking tiny TANet saved as mmaction2 publishes (meta with numpy scalars,
    file name ``..._<date>-<sha256[:8]>.pth``), and its class list."""
    torch.manual_seed(0)
    model = tanet.create_model("tanet_tiny", num_classes=K, num_segments=T).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    buf = io.BytesIO()
    torch.save({"meta": {"epoch": 50, "hook_msgs": {"best_score": np.float64(0.5)}},
                "state_dict": to_mmaction2(model.state_dict())}, buf)
    data = buf.getvalue()
    classes = ("\n".join(NAMES) + "\n").encode()
    return dict(model=model, data=data, file=f"tiny_tanet_20250101-{_sha(data)[:8]}.pth",
                classes=classes)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty torch.hub cache; no offline switch, no mirror, loopback not proxied."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("TANET_OFFLINE", "TANET_WEIGHTS_MIRROR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return cache_dir()


@contextlib.contextmanager
def registered(srv, published, *, base=None, data=None):
    """``tanet_tiny.test`` (mmaction2 layout) and its class list served by ``srv`` (or listed
    at ``base``), registered for the block."""
    base = base or srv.base
    cls_file = f"test-classes-{_sha(published['classes'])[:8]}.txt"
    srv.files[f"/lists/{cls_file}"] = published["classes"]
    srv.files[f"/w/{published['file']}"] = published["data"] if data is None else data
    hub.register_class_list(hub.ClassList(
        name="test5", url=f"{base}/lists/{cls_file}", sha256=_sha(published["classes"]),
        count=K, file=cls_file))
    entry = hub.Weights(
        name="tanet_tiny.test", url=f"{base}/w/{published['file']}",
        sha256=_sha(published["data"])[:8], layout="mmaction2", model="tanet_tiny",
        dataset="test5", num_classes=K, frames=T, top1=50.0, top5=90.0, views="1x1",
        protocol="centre crop", classes="test5", full_name="tiny_tanet_mm", release="test",
        card=dict(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), short_side=72,
                  input_size=(3, 64, 64), sampling="segment"))
    hub.register_weights(entry)
    try:
        yield entry
    finally:
        hub.unregister_weights(entry.name)
        hub.unregister_class_list("test5")


def _cache_files(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    for i in range(2):
        write_video(d / "videos" / f"v{i}.mp4", rng.integers(0, 255, (12, 48, 64, 3), np.uint8),
                    fps=10)
    (d / "val.txt").write_text("videos/v0.mp4 1\nvideos/v1.mp4 3\n")
    return d


def _predict_json(capsys, *argv):
    capsys.readouterr()
    assert main(["predict", *map(str, argv), "--json", "--quiet"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_published_entries_are_well_formed(capsys):
    entries = hub.list_weights()
    assert {"tanet_r50.k400", "tanet_r50.k400_0x", "tanet_r50.sthv1", "tanet_r50.sthv1_16f",
            "tanet_r50.sthv1_0x", "tanet_r50.sthv1_16f_0x", "tsm_r50.k400", "tsn_r50.k400",
            "resnet50.imagenet", "resnet101.imagenet", "resnet152.imagenet"} <= {
        w.name for w in entries}
    for w in entries:
        assert hub.validate_entry(w) == [], w.name
        assert w.url.startswith("https://") and len(w.sha256) in (8, 64)
        assert re.search(rf"-{w.sha256[:8]}\.pth$", w.url), w.name  # the publisher's hash suffix
        if not w.image_only:
            assert is_registered(w.model) and len(w.card["mean"]) == 3
            assert hub.get_class_list(w.classes).count == w.num_classes
        assert hub.get_weights(w.full_name) is w and hub.find_weights(w.url) is w
    lists = [hub.get_class_list(n) for n in ("kinetics400", "sthv1", "sthv2")]
    assert [c.count for c in lists] == [400, 174, 174]
    assert all(len(c.sha256) == 64 and c.url.startswith("https://") for c in lists)
    bad = hub.Weights(name="tanet_r50.x", url="https://h/x-0123abcd.pth", sha256="ffff0000",
                      layout="mmaction2", model="tanet_r50", dataset="k", num_classes=3,
                      frames=8, top1=1, top5=2, views="1x1", protocol="", classes="kinetics400")
    assert any("disagrees" in p for p in hub.validate_entry(bad))
    assert any("400 names for 3" in p for p in hub.validate_entry(bad))
    assert hub.pretrained_spec("tanet_r50", "imagenet") == ("imagenet", "resnet50.imagenet")
    assert hub.pretrained_spec("tsm_r50", "k400") == ("video", "tsm_r50.k400")
    assert hub.pretrained_spec("tanet_r50", "w.pth") == ("imagenet", "w.pth")
    with pytest.raises(KeyError, match="no registered ImageNet weights for 'tanet_tiny'"):
        hub.pretrained_spec("tanet_tiny", "imagenet")
    assert main(["models", "--pretrained"]) == 0
    table = capsys.readouterr().out
    assert re.search(r"tanet_r50\.k400 +tanet_r50 +8 +kinetics400 +76\.25 +92\.41 +10x3", table)


def test_a_misspelt_name_gets_close_names(clip, capsys):
    with pytest.raises(KeyError, match=r"unknown weights 'tanet_r50\.k40'; did you mean "
                                       r"tanet_r50\.k400, "):
        hub.get_weights("tanet_r50.k40")
    assert main(["predict", str(clip), "--checkpoint", "tanet_r50.k40", "--quiet"]) == 1
    assert ("tanet_r50.k40: no such file, and not a registered weights name; did you mean "
            "tanet_r50.k400, ") in capsys.readouterr().err


def test_download_convert_predict_then_cache_only(cache, published, clip, capsys):
    """By name through the CLI: download + verify + convert once (real names, the entry's
    mean/std); then with the server stopped the same commands run from the cache."""
    video = clip / "videos" / "v0.mp4"
    with serving() as srv, registered(srv, published) as entry:
        first = _predict_json(capsys, video, "--checkpoint", "tanet_tiny.test")
        assert sorted(srv.requests) == [f"/lists/{hub.get_class_list('test5').file}",
                                        f"/w/{published['file']}"]
        assert {t["label"] for t in first["top"]} <= set(NAMES) and len(first["top"]) == K
        converted = cache / published["file"].replace(".pth", ".safetensors")
        assert _cache_files(cache) == sorted([published["file"], converted.name,
                                              hub.get_class_list("test5").file])
        card = read_metadata(converted)["card"]
        assert card["class_names"] == NAMES and card["mean"] == [0.5, 0.5, 0.5]
        assert card["short_side"] == 72 and card["num_segments"] == T
        origin = json.loads(read_metadata(converted)["raw"]["tanet.converted_from"])
        assert origin["weights"] == "tanet_tiny.test" and origin["layout"] == "mmaction2"
        srv.shutdown()
        srv.server_close()
        # the server is gone: a second use reads the converted file only
        again = _predict_json(capsys, video, "--checkpoint", entry.full_name)
        assert again["top"] == first["top"]
        x = torch.randn(1, T, 3, 64, 64)
        with torch.no_grad():  # the converted weights are the published ones
            assert torch.allclose(tanet.models.load_model(entry.url)(x),
                                  published["model"](x), atol=1e-5)
        assert main(["test", "--checkpoint", "tanet_tiny.test", "--quiet", "--set",
                     f"data.root={clip}", f"data.val={clip / 'val.txt'}", "test.workers=0",
                     "--out", str(clip / "test_out")]) == 0
        res = json.loads((clip / "test_out" / "results.json").read_text())
        assert res["num_videos"] == 2 and res["num_skipped"] == 0


def test_wrong_bytes_for_a_name_leave_nothing(cache, published, clip, capsys):
    with serving() as srv, registered(srv, published, data=published["data"][:-1] + b"x"):
        with pytest.raises(HashMismatchError, match="does not match the expected .*nothing was kept"):
            hub.locate("tanet_tiny.test")
        assert _cache_files(cache) == []  # no weights, no temporary file
        assert main(["predict", str(clip / "videos" / "v0.mp4"), "--checkpoint",
                     "tanet_tiny.test", "--quiet"]) == 1
        assert "does not match the expected" in capsys.readouterr().err
        assert len(srv.requests) == 2 and _cache_files(cache) == []


def test_cut_connection_and_url_hashes(cache, published):
    """A body shorter than its Content-Length leaves no partial file, even for a URL that
    promises no hash; ``-<hex>.`` and ``#sha256=`` in plain URLs are checked."""
    data = published["data"]
    with serving() as srv:
        srv.files["/plain/tiny.pth"] = data
        srv.files["/named/tiny-deadbeef.pth"] = data
        srv.cut.add("/plain/tiny.pth")
        with pytest.raises(DownloadError, match=rf"stopped after {len(data) // 2} of {len(data)}"):
            tanet.create_model(checkpoint=f"{srv.base}/plain/tiny.pth")
        assert _cache_files(cache) == []
        with pytest.raises(HashMismatchError, match="expected deadbeef"):
            hub.locate(f"{srv.base}/named/tiny-deadbeef.pth")
        assert _cache_files(cache) == []
        srv.cut.clear()
        with pytest.raises(HashMismatchError):
            hub.locate(f"{srv.base}/plain/tiny.pth#sha256={'0' * 64}")
        model = tanet.create_model(checkpoint=f"{srv.base}/plain/tiny.pth#sha256={_sha(data)}")
        assert model.num_classes == K and model.card.class_names is None  # no entry: no names
    assert _cache_files(cache) == ["tiny.pth", "tiny.safetensors"]


def test_offline_and_unreachable_errors_name_url_and_cache_path(cache, published, monkeypatch):
    with serving() as srv, registered(srv, published) as entry:
        monkeypatch.setenv("TANET_OFFLINE", "1")
        with pytest.raises(DownloadError) as e:
            hub.locate("tanet_tiny.test")
        msg = str(e.value)
        assert "TANET_OFFLINE=1" in msg and entry.url in msg
        assert str(cache / published["file"]) in msg
        assert srv.requests == []
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.delenv("TANET_OFFLINE")
    with pytest.raises(DownloadError, match=rf"could not download {dead}/w/.*put it at "
                                            rf"{re.escape(str(cache / published['file']))}"):
        tanet.create_model(checkpoint=f"{dead}/w/{published['file']}")
    assert _cache_files(cache) == []


def test_mirror_serves_unreachable_urls_and_hash_still_holds(cache, published, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with serving() as srv, registered(srv, published, base=dead):
        for path in list(srv.files):  # the mirror holds every file under its cache name
            srv.files["/mirror/" + path.rsplit("/", 1)[1]] = srv.files[path]
        monkeypatch.setenv("TANET_WEIGHTS_MIRROR", f"{srv.base}/mirror/")
        model = tanet.create_model("tanet_tiny", pretrained="test", num_classes=3)
        assert model.fc.out_features == 3  # video weights by tag, fine-tuned to 3 classes
        assert sorted(srv.requests) == sorted(f"/mirror/{f}" for f in
                                              (published["file"],
                                               hub.get_class_list("test5").file))
        trained = published["model"].backbone.conv1.weight
        assert torch.equal(model.backbone.conv1.weight, trained)


def test_pretrained_imagenet_by_name(cache, published):
    """``pretrained=<image entry>`` downloads a torchvision-layout backbone into the model."""
    backbone = {k.removeprefix("backbone."): v for k, v in published["model"].state_dict().items()
                if k.startswith("backbone.") and ".temporal." not in k}
    backbone["fc.weight"] = torch.zeros(10, 512)  # an ImageNet head, dropped on load
    buf = io.BytesIO()
    torch.save(backbone, buf)
    data = buf.getvalue()
    with serving() as srv:
        srv.files[f"/tv/tiny-{_sha(data)[:8]}.pth"] = data
        hub.register_weights(hub.Weights(
            name="tinynet.imagenet", url=f"{srv.base}/tv/tiny-{_sha(data)[:8]}.pth",
            sha256=_sha(data)[:8], layout="torchvision", model="tinynet", dataset="imagenet1k",
            num_classes=10, frames=None, top1=None, top5=None, views="1x1", protocol="",
            classes=None))
        try:
            model = tanet.create_model("tsn_tiny", num_classes=3, num_segments=T,
                                       pretrained="tinynet.imagenet")
        finally:
            hub.unregister_weights("tinynet.imagenet")
    assert torch.equal(model.backbone.layer4[0].conv2.weight,
                       published["model"].backbone.layer4[0].conv2.weight)
    assert _cache_files(cache) == [f"tiny-{_sha(data)[:8]}.pth"]  # image weights: no conversion


def test_tanet_test_takes_a_published_pth_with_labels_from_set(tmp_path, published, clip, capsys):
    """`tanet test` reads the mmaction2 .pth through read_checkpoint (no conversion step); a
    file without class names takes them from data.labels, else says how to give them."""
    pth = tmp_path / "mm.pth"
    pth.write_bytes(published["data"])
    labels = tmp_path / "classes.txt"
    labels.write_bytes(published["classes"])
    argv = ["test", "--checkpoint", str(pth), "--quiet", "--set", f"data.root={clip}",
            f"data.val={clip / 'val.txt'}", "test.workers=0"]
    assert main(argv) == 1
    assert "--set data.labels=FILE" in capsys.readouterr().err
    assert main(argv + [f"data.labels={labels}"]) == 0
    rows = (tmp_path / "test" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[1].split(",")[3] == NAMES[1]  # label names from the file
