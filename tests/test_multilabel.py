"""A multi-label model end to end on real files: `tanet synth --multilabel` clips (two motions at
once), `tanet train` (sigmoid head from the data, BCE, balanced sampler) -> `tanet test` (mAP,
per-class table, PR plot) -> `tanet predict` (every class over the card's threshold) -> ONNX
export -> `tanet serve` (/v1 and the page)."""
import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tanet.apps.predict import Predictor
from tanet.config import Config, apply_overrides
from tanet.engine import test as run_test
from tanet.engine import train
from tanet.metrics import average_precision, mean_average_precision
from tanet.models.checkpoint import read_metadata
from tanet.models.recognizer import ModelCard


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("ml") / "data"
    p = subprocess.run([sys.executable, "-m", "tanet", "synth", str(out), "--classes", "6",
                        "--videos-per-class", "12", "--longtail", "0.5", "--multilabel",
                        "--val-per-class", "4", "--frames", "8", "--size", "32", "--workers",
                        "1", "--quiet"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return out


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """A 2-epoch tanet_tiny run on the multi-label lists (format and head from the data)."""
    out = tmp_path_factory.mktemp("run") / "run"
    cfg = apply_overrides(Config(), [
        f"data.root={data}", f"data.train={data / 'train.csv'}", f"data.val={data / 'val.csv'}",
        f"data.labels={data / 'classes.txt'}", "model.name=tanet_tiny", "model.num_segments=4",
        "model.input_size=32", "data.short_side=36", "data.scales=[1.0]", "data.flip=false",
        "model.dropout=0.0", "data.sampler=balanced", "train.epochs=2", "train.batch_size=4",
        "train.optimizer=adamw", "train.lr=0.003", "train.fc_lr_mult=1", "train.workers=0",
        "train.threads=1", "test.batch_size=4", "test.workers=0", f"output={out}"]).validate("t")
    summary = train(cfg, quiet=True)
    return out, summary


def test_train_picks_the_sigmoid_head_and_stores_the_threshold(run, data):
    out, summary = run
    card = read_metadata(out / "last.safetensors")["card"]
    assert card["multilabel"] is True
    recs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"val_mAP", "val_f1", "val_threshold", "best_mAP"} <= set(recs[-1])
    assert "val_top5" not in recs[-1]
    # the card holds the F1-optimal threshold of the last validation
    assert card["threshold"] == pytest.approx(recs[-1]["val_threshold"])
    assert summary["best_mAP"] == max(r["val_mAP"] for r in recs)
    best = read_metadata(out / "best.safetensors")
    counts = json.loads(best["raw"]["tanet.train_counts"])
    clips = len((data / "train.csv").read_text().splitlines()) - 1  # two classes a clip
    assert len(counts) == 6 and sum(counts) == 2 * clips
    # an older card (no multilabel / threshold keys) still loads, as single-label
    old = {k: v for k, v in card.items() if k not in ("multilabel", "threshold")}
    assert ModelCard.from_dict(old).multilabel is False


@pytest.fixture(scope="module")
def tested(run, tmp_path_factory):
    """`tanet test` of the run's last checkpoint: (results, output folder)."""
    out, _ = run
    folder = tmp_path_factory.mktemp("test")
    return run_test(out / "last.safetensors", out=folder, quiet=True), folder


def test_test_reports_map_per_class_and_pr_curves(run, tested, data):
    out, _ = run
    res, folder = tested
    r = json.loads((folder / "results.json").read_text())
    ev = res["eval"]
    assert ev.multilabel and ev.labels.shape == (12, 6)  # 4 per class x 6 / 2 per clip
    assert r["mAP"] == pytest.approx(mean_average_precision(ev.scores, ev.labels))
    card = read_metadata(out / "last.safetensors")["card"]
    assert r["threshold"] == pytest.approx(card["threshold"])  # the card's, from validation
    pred = ev.scores >= r["threshold"]
    pos = ev.labels.bool()
    assert r["f1"] == pytest.approx(2 * (pred & pos).sum().item()
                                    / (pred.sum().item() + pos.sum().item()))
    assert "top5" not in r and "mean_class_acc" not in r
    rows = list(csv.DictReader(open(folder / "per_class.csv")))
    assert [k for k in rows[0]] == ["class", "support", "train", "precision", "recall", "f1",
                                    "ap"]
    support = [int(x["support"]) for x in rows]
    assert support == sorted(support, reverse=True) and sum(support) == 24
    ap = average_precision(ev.scores, ev.labels)
    names = (data / "classes.txt").read_text().split()
    for row in rows:
        assert float(row["ap"]) == pytest.approx(ap[names.index(row["class"])].item(), abs=1e-4)
    assert all(row["train"] for row in rows)  # training counts recorded by tanet train
    md = (folder / "report.md").read_text()
    assert "mAP" in md and "| class | support | train |" in md and "pr.png" in md
    assert (folder / "pr.png").read_bytes()[:4] == b"\x89PNG"
    assert not (folder / "confusion.png").exists()
    preds = list(csv.DictReader(open(folder / "predictions.csv")))
    assert len(preds) == 12 and all(len(p["labels"].split(";")) == 2 for p in preds)


def _val_videos(data):
    rows = list(csv.DictReader(open(data / "val.csv")))
    return [data / r["path"] for r in rows]


def test_predict_onnx_and_serve_give_the_classes_over_the_threshold(run, tested, data, tmp_path):
    pytest.importorskip("onnxruntime")
    from tanet.cli import main
    from tanet.testing.serve import Server

    out, _ = run
    ckpt = out / "last.safetensors"
    videos = _val_videos(data)
    p = Predictor(ckpt, topk=6)
    assert p.card.multilabel
    ev = tested[0]["eval"]
    answers = [p.predict(v) for v in videos]
    for row, a in enumerate(answers):
        # sigmoid scores, the same as `tanet test`'s (1 view); labels: every class >= threshold
        assert np.allclose(a.probs, ev.scores[row].numpy(), atol=1e-5)
        expect = [p.class_names[i] for i in np.argsort(-a.probs) if a.probs[i] >= p.card.threshold]
        assert [lab for lab, _ in a.labels] == expect
    assert any(a.labels for a in answers) and not np.allclose(answers[0].probs.sum(), 1.0)
    # the CLI: --json has `labels` beside `top`; text lists the classes over the threshold
    cli = subprocess.run([sys.executable, "-m", "tanet", "predict", str(data / "val.csv"),
                          "--checkpoint", str(ckpt), "--json", "--quiet", "--topk", "6"],
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    lines = [json.loads(x) for x in cli.stdout.splitlines()]
    for x, a in zip(lines, answers):  # another process: scores equal to float rounding
        assert [y["label"] for y in x["labels"]] == [lab for lab, _ in a.labels]
        assert np.allclose([y["score"] for y in x["labels"]], [s for _, s in a.labels],
                           atol=1e-5)
    assert all(len(x["top"]) == 6 for x in lines)
    with_labels = next(i for i, a in enumerate(answers) if a.labels)
    text = subprocess.run([sys.executable, "-m", "tanet", "predict", str(videos[with_labels]),
                           "--checkpoint", str(ckpt), "--quiet"], capture_output=True,
                          text=True, timeout=300)
    assert text.returncode == 0, text.stderr
    shown = text.stdout.strip().split(": ", 1)[1].split(", ")  # "path: a (0.912), b (0.803)"
    assert [x.rsplit(" (", 1)[0] for x in shown] == [lab for lab, _ in answers[with_labels].labels]
    # ONNX: the card (multilabel, threshold) travels in the file; same labels
    onnx = tmp_path / "ml.onnx"
    assert main(["export", "--checkpoint", str(ckpt), str(onnx)]) == 0
    po = Predictor(onnx, topk=6)
    assert po.card.multilabel and po.card.threshold == p.card.threshold
    for v, a in zip(videos, answers):
        assert [lab for lab, _ in po.predict(v).labels] == [lab for lab, _ in a.labels]
    # serve: /v1/model says multi-label; /v1/predict answers with the labels
    s = Server(ckpt, tmp_path / "uploads", tmp_path / "server.log", "--no-calibrate", "--quiet",
               "--topk", "6", env={"OMP_NUM_THREADS": "1"})
    try:
        status, _, card = s.request("GET", "/v1/model")
        assert status == 200 and card["card"]["multilabel"] is True
        for v, a in zip(videos[:4], answers):
            status, _, body = s.upload("/v1/predict", v.read_bytes(), v.name)
            assert status == 200, body
            assert [x["label"] for x in body["labels"]] == [lab for lab, _ in a.labels]
        _page_shows_labels(s.port, videos[0], answers[0])
    finally:
        assert s.stop() in (0, -15), s.log()


def _page_shows_labels(port, video, answer):
    """The page (headless Chromium, when installed) lists the classes over the threshold."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return
    webdriver = pytest.importorskip("selenium.webdriver")
    import tempfile

    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    profile = tempfile.mkdtemp(prefix="tanet-chromium-")
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", "--window-size=1100,1300"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(f"http://127.0.0.1:{port}/")
        wait.until(lambda d: "multi-label" in d.find_element(By.ID, "model-info").text)
        driver.find_element(By.ID, "file").send_keys(str(video))
        box = wait.until(lambda d: d.find_element(By.ID, "labels") if
                         d.find_element(By.ID, "labels").is_displayed() else None)
        text = box.text
        if answer.labels:
            assert text.startswith("Over the threshold:")
            assert all(lab in text for lab, _ in answer.labels), text
        else:
            assert text == "No class over the threshold."
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_single_label_checkpoint_refuses_a_multilabel_list(data, tmp_path):
    from tanet.testing.tiny import tiny_checkpoint

    names = (data / "classes.txt").read_text().split()
    ckpt, _ = tiny_checkpoint(tmp_path / "single.safetensors", names, fc_std=0.1)
    with pytest.raises(ValueError, match="multi-label list.*single-label"):
        run_test(ckpt, overrides=[f"data.val={data / 'val.csv'}", f"data.root={data}"],
                 out=tmp_path / "t", quiet=True)
    cfg = apply_overrides(Config(), [
        f"data.root={data}", f"data.train={data / 'train.csv'}", "model.name=tanet_tiny",
        "model.multilabel=false", f"output={tmp_path / 'r'}"]).validate("t")
    with pytest.raises(ValueError, match="set model.multilabel=true"):
        train(cfg, quiet=True)
