"""Visualisation: TAM capture values and the PNGs written."""
import numpy as np
import pytest
import torch

import tanet
from tanet.apps.visualize import capture_tam, plot_frame_evidence, plot_frames, plot_tam_kernels


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return tanet.create_model("tanet_tiny", num_classes=5, num_segments=4)


def test_capture_tam_matches_branches(model):
    clip = torch.randn(4, 3, 32, 32)
    caps = capture_tam(model, clip)
    assert [c.stage for c in caps] == ["layer1", "layer2", "layer3", "layer4"]
    assert model.training  # mode restored
    widths = (16, 32, 64, 128)
    for cap, w in zip(caps, widths):
        assert cap.v.shape == (w, 4) and cap.theta.shape == (w, 3)
        assert np.allclose(cap.theta.sum(1), 1, atol=1e-5)
        assert ((cap.v > 0) & (cap.v < 1)).all()
    # the first TAM sees conv1-bn1-relu of the stem output: recompute it by hand
    model.eval()
    with torch.no_grad():
        bb = model.backbone
        x = bb.maxpool(bb.relu(bb.bn1(bb.conv1(clip))))
        blk = bb.layer1[0]
        v, theta = blk.temporal.branches(blk.relu(blk.bn1(blk.conv1(x))))
    model.train()
    assert np.allclose(caps[0].v, v[0].numpy(), atol=1e-6)
    assert np.allclose(caps[0].theta, theta[0].numpy(), atol=1e-6)


def test_plots_write_pngs(model, tmp_path):
    clip = torch.randn(4, 3, 32, 32)
    outs = [plot_tam_kernels(model, clip, tmp_path / "k.png", title="t"),
            plot_frame_evidence(model, clip, tmp_path / "e.png", class_names=list("abcde")),
            plot_frames(np.zeros((4, 32, 32, 3), np.uint8), tmp_path / "sub" / "f.png",
                        times=[0, 1, 2, 3])]
    for p in outs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 2000


def test_no_tam_is_an_error(tmp_path):
    m = tanet.create_model("tsn_tiny", num_classes=3, num_segments=4)
    with pytest.raises(ValueError, match="no TAM"):
        plot_tam_kernels(m, torch.randn(4, 3, 32, 32), tmp_path / "k.png")
