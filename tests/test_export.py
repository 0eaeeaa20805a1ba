"""Export: ONNX run by a real ONNX Runtime session, torch.export programs; cards travel along."""
import numpy as np
import pytest
import torch

import tanet
from tanet.models.checkpoint import save_model

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = tanet.create_model("tanet_tiny", num_classes=6, num_segments=4,
                           class_names=[f"c{i}" for i in range(6)])
    m.card.input_size = (3, 32, 32)
    with torch.no_grad():  # non-trivial BN statistics and head, so parity means something
        for mod in m.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
        m.fc.weight.normal_(0, 0.1)
    return m.eval()


@pytest.fixture(scope="module")
def onnx_file(model, tmp_path_factory):
    """Exported once through the CLI (which verifies parity on ONNX Runtime itself)."""
    from tanet.cli import main

    d = tmp_path_factory.mktemp("onnx")
    ckpt = save_model(d / "m.safetensors", model)
    out = d / "tiny.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", str(out)]) == 0
    return out


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_runtime_parity_dynamic_batch(model, onnx_file, batch):
    from tanet.apps.export import OnnxRecognizer

    sess = OnnxRecognizer(onnx_file)
    x = torch.randn(batch, 4, 3, 32, 32)
    with torch.no_grad():
        ref = model(x).numpy()
    out = sess(x.numpy())
    diff = np.abs(out - ref).max()
    print(f"ONNX Runtime vs eager, batch {batch}: max |diff| = {diff:.2e}")
    assert out.shape == (batch, 6) and diff <= 1e-4
    assert sess.card.class_names == [f"c{i}" for i in range(6)] and sess.card.num_segments == 4


def test_onnx_fixed_time_axis(onnx_file):
    from tanet.apps.export import OnnxRecognizer

    with pytest.raises(Exception):
        OnnxRecognizer(onnx_file)(np.zeros((1, 5, 3, 32, 32), np.float32))


def test_torch_export_program_via_cli(model, tmp_path):
    from tanet.apps.export import load_program
    from tanet.cli import main

    ckpt = save_model(tmp_path / "m.safetensors", model)
    out = tmp_path / "m.pt2"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "torch-export", str(out)]) == 0
    program, card = load_program(out)
    assert card.num_classes == 6 and card.input_size == (3, 32, 32)
    x = torch.randn(3, 4, 3, 32, 32)
    with torch.no_grad():
        diff = (program.module()(x) - model(x)).abs().max().item()
    assert diff <= 1e-5


def test_export_needs_a_card(tmp_path):
    from tanet.apps.export import export_onnx

    m = tanet.create_model("tanet_tiny", num_classes=2, num_segments=4)
    m.card = None
    with pytest.raises(ValueError, match="no card"):
        export_onnx(m, tmp_path / "x.onnx")
