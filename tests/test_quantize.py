"""int8 ONNX export: calibration on real videos, real ONNX Runtime sessions, what stays float,
the fp32/int8 report, and the int8 file run by `tanet predict --onnx`."""
import json
from collections import Counter

import numpy as np
import pytest
import torch
from _engine_data import CLASSES, make_videos

import tanet
from tanet.models.checkpoint import save_model

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tanet_tiny checkpoint with non-trivial BN statistics, its fp32 ONNX, and videos."""
    from tanet.apps.export import export_onnx

    d = tmp_path_factory.mktemp("int8")
    torch.manual_seed(0)
    m = tanet.create_model("tanet_tiny", num_classes=3, num_segments=4, class_names=CLASSES)
    m.card.input_size, m.card.short_side = (3, 32, 32), 36
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
        m.fc.weight.normal_(0, 0.3)
    m.eval()
    return {"dir": d, "ckpt": save_model(d / "m.safetensors", m), "model": m,
            "fp32": export_onnx(m, d / "fp32.onnx")["path"],
            "data": make_videos(d / "videos", per_class=4, val_per_class=2)}


def _reads_dequantised(proto, op_type: str) -> bool:
    """Whether some ``op_type`` node reads a DequantizeLinear output (it runs in int8 QDQ)."""
    producer = {o: n.op_type for n in proto.graph.node for o in n.output}
    return any(producer.get(i) == "DequantizeLinear" for n in proto.graph.node
               if n.op_type == op_type for i in n.input)


def test_tam_nodes_split_kernel_and_aggregation(setup):
    from tanet.apps.quantize import tam_nodes

    proto = onnx.load(str(setup["fp32"]))
    kernel, aggregation = tam_nodes(proto)
    ops = {n.name: n.op_type for n in proto.graph.node}
    k, a = Counter(ops[n] for n in kernel), Counter(ops[n] for n in aggregation)
    # 4 TAMs (one per stage of tanet_tiny), K = 3 taps: 3 products, 2 sums each
    assert k["Softmax"] == 4 and k["Sigmoid"] == 4 and k["Gemm"] >= 16
    assert a["Mul"] == 12 and a["Add"] == 8 and not {"Softmax", "Sigmoid", "Gemm"} & set(a)
    assert not kernel & aggregation
    assert all(ops[n] != "Conv" for n in kernel | aggregation)


def test_export_int8_cli_then_predict(setup, capsys):
    from tanet.cli import main

    out, data = setup["dir"] / "m.int8.onnx", setup["data"]
    assert main(["export", str(out), "--checkpoint", str(setup["ckpt"]), "--int8", "--quiet",
                 "--calibrate", str(data / "train"), "--validate", str(data / "val.txt")]) == 0
    text = capsys.readouterr().out
    assert "calibrated on 12 videos" in text and "validation, 6 videos" in text
    assert "top-1 agreement with fp32" in text and "top-1 fp32" in text

    proto = onnx.load(str(out))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["tanet.int8"])["keep_float"] == "tam-kernel" and "tanet.card" in meta
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["Conv"] > 0
    int8_weights = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= ops["Conv"]  # every convolution has int8 weights
    # TAM's kernel stayed float: its softmax and sigmoid read float tensors, not dequantised ones
    assert not _reads_dequantised(proto, "Softmax") and not _reads_dequantised(proto, "Sigmoid")

    assert main(["predict", str(data / "val" / "left_0.mp4"), "--onnx", str(out), "--json",
                 "--topk", "2"]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(rec["top"]) == 2 and rec["top"][0]["label"] in CLASSES


@pytest.mark.parametrize("keep", ["tam", "none"])
def test_int8_close_to_fp32(setup, keep):
    """Every int8 variant tracks fp32 on real clips; quantising TAM (keep_float='none') puts
    Q/DQ pairs around its softmax."""
    from tanet.apps.predict import Predictor
    from tanet.apps.quantize import calibration_videos, compare, quantize_onnx

    data = setup["data"]
    videos, labels = calibration_videos(data / "train", class_names=CLASSES)
    assert len(videos) == 12 and labels == [0] * 4 + [1] * 4 + [2] * 4
    pred = Predictor(setup["fp32"])
    clips = [pred.load_views(v)[1].numpy() for v in videos]
    out = quantize_onnx(setup["fp32"], setup["dir"] / f"{keep}.onnx", iter(clips), keep_float=keep)
    low = Predictor(out)
    for c in clips[:4]:
        a, b = pred.backend(torch.from_numpy(c)), low.backend(torch.from_numpy(c))  # (1, K)
        assert np.abs(a - b).max() <= 0.1 * np.abs(a).max() + 1e-3
    r = compare(setup["fp32"], out, videos, labels)
    assert r["videos"] == 12 and r["agreement"] >= 0.75 and 0 <= r["max_abs_dprob"] < 0.5
    assert _reads_dequantised(onnx.load(str(out)), "Softmax") == (keep == "none")


def test_int8_needs_calibration(setup, capsys):
    from tanet.cli import main

    assert main(["export", str(setup["dir"] / "x.onnx"), "--checkpoint", str(setup["ckpt"]),
                 "--int8"]) == 1
    assert "needs --calibrate" in capsys.readouterr().err


def test_calibration_videos_follow_the_one_path_rule_and_spread_over_the_list(tmp_path):
    """The calibration reader is the one resolver (relative to the list's folder, else --root;
    URLs untouched), cut to ``limit`` videos spread evenly so that every class is seen."""
    from tanet.apps.quantize import calibration_videos

    (tmp_path / "lists").mkdir()
    for i in range(9):
        (tmp_path / "lists" / f"{i}.mp4").write_bytes(b"")
    lst = tmp_path / "lists" / "cal.txt"
    lst.write_text("".join(f"{i}.mp4 {i // 3}\n" for i in range(9)) + "https://h/x.mp4 2\n")
    paths, labels = calibration_videos(lst, class_names=CLASSES)
    assert paths[:2] == [str(tmp_path / "lists" / "0.mp4"), str(tmp_path / "lists" / "1.mp4")]
    assert paths[-1] == "https://h/x.mp4" and labels == [0] * 3 + [1] * 3 + [2] * 4
    paths, labels = calibration_videos(lst, class_names=CLASSES, limit=4)
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["0.mp4", "3.mp4", "6.mp4", "x.mp4"]
    assert labels == [0, 1, 2, 2]
    with pytest.raises(FileNotFoundError, match=r"cal.txt:1: '0.mp4' -> /nowhere/0.mp4"):
        calibration_videos(lst, root="/nowhere")
