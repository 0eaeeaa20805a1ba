"""Models: shapes for every registered model, torchvision names, TSM shift, determinism."""
import re

import pytest
import torch

import tanet
from tanet.models import create_model, list_models, model_defaults
from tanet.models.checkpoint import CheckpointError, save_model
from tanet.models.cost import model_cost
from tanet.models.factory import load_model
from tanet.models.resnet import DEPTHS, ResNet, temporal_shift
from tanet.models.tam import TAM


def _torchvision_resnet_keys(layers):
    """torchvision.models.resnet.ResNet's state_dict keys, spelled out independently."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["conv1.weight"] + [f"bn1.{s}" for s in bn]
    for stage, blocks in enumerate(layers, start=1):
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            for i in (1, 2, 3):
                keys += [f"{p}.conv{i}.weight"] + [f"{p}.bn{i}.{s}" for s in bn]
            if b == 0:
                keys += [f"{p}.downsample.0.weight"] + [f"{p}.downsample.1.{s}" for s in bn]
    return keys + ["fc.weight", "fc.bias"]


@pytest.mark.parametrize("name", [n for n in list_models() if "tiny" in n])
def test_tiny_shapes_and_features(name):
    m = create_model(name, num_classes=7).eval()
    x = torch.randn(2, 8, 3, 64, 64)
    with torch.no_grad():
        assert m(x).shape == (2, 7)
        assert m.forward_features(x).shape == (2, 8, 512)
        assert m.forward_frames(x).shape == (2, 8, 7)
        assert torch.allclose(m.forward_frames(x).mean(1), m(x), atol=1e-6)


@pytest.mark.parametrize("name", [n for n in list_models() if "tiny" not in n])
def test_full_models_shapes(name):
    """Every full-size model builds and runs a small clip (2 frames x 32 px keeps it fast)."""
    m = create_model(name, num_classes=5, num_segments=2).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 2, 3, 32, 32)).shape == (1, 5)
    d = model_defaults(name)
    assert d["input_size"] == (3, 224, 224) and d["num_segments"] == 8
    depth = int(re.search(r"r(\d+)", name).group(1))
    blocks = sum(DEPTHS[depth])
    n_tam = sum(isinstance(x, TAM) for x in m.modules())
    assert n_tam == (blocks if name.startswith("tanet") else 0)


def test_torchvision_state_dict_loads_strict():
    """A torchvision-format ResNet-50 state dict (built here, random) loads with strict=True."""
    tv_keys = _torchvision_resnet_keys(DEPTHS[50])
    plain = ResNet(DEPTHS[50])
    ours = set(plain.state_dict())
    assert ours == set(tv_keys) - {"fc.weight", "fc.bias"}
    model = create_model("tanet_r50", num_classes=10)
    backbone_keys = {k for k in model.backbone.state_dict() if ".temporal." not in k}
    assert backbone_keys == ours


def test_imagenet_init_from_file(tmp_path):
    src = ResNet((1, 1, 1, 1), widths=(8, 8, 16, 16), stem_width=8)
    sd = dict(src.state_dict())
    sd["fc.weight"], sd["fc.bias"] = torch.randn(1000, 64), torch.randn(1000)
    pth = tmp_path / "resnet.pth"
    torch.save(sd, pth)
    for kind in ("tanet_tiny", "tsm_tiny", "tsn_tiny"):
        m = create_model(kind, num_classes=3, widths=(8, 8, 16, 16), stem_width=8, pretrained=str(pth))
        assert torch.equal(m.backbone.layer2[0].conv2.weight, src.layer2[0].conv2.weight)
    bad = dict(sd)
    bad.pop("layer1.0.conv1.weight")
    bad["extra.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"bad\.pth.*missing: layer1\.0\.conv1\.weight.*unexpected: extra\.weight"):
        create_model("tanet_tiny", num_classes=3, widths=(8, 8, 16, 16), stem_width=8,
                     pretrained=str(tmp_path / "bad.pth"))


def _shift_reference(x, t):
    """TSM shift written loop by loop: channel c of frame i takes frame i+1 (c < C/8),
    frame i-1 (C/8 <= c < C/4), or itself."""
    nt, c, h, w = x.shape
    out = torch.zeros_like(x)
    fold = c // 8
    for n in range(nt // t):
        for i in range(t):
            for ch in range(c):
                src = i + 1 if ch < fold else (i - 1 if ch < 2 * fold else i)
                if 0 <= src < t:
                    out[n * t + i, ch] = x[n * t + src, ch]
    return out


def test_temporal_shift_matches_reference():
    x = torch.randn(2 * 4, 16, 3, 3)
    assert torch.equal(temporal_shift(x, 4), _shift_reference(x, 4))


def test_tsm_shift_is_on_the_residual_branch():
    m = create_model("tsm_tiny", num_classes=2).eval()
    block = m.backbone.layer1[0]
    seen = {}

    def grab(key):
        def hook(mod, inputs, output):
            seen[key] = inputs[0].clone()
        return hook

    block.conv1.register_forward_hook(grab("conv1_in"))
    block.downsample.register_forward_hook(grab("ds_in"))
    x = torch.randn(1, 8, 3, 64, 64)
    with torch.no_grad():
        m(x)
    assert torch.equal(seen["conv1_in"], temporal_shift(seen["ds_in"], 8))


def test_determinism_with_seed():
    def run():
        torch.manual_seed(123)
        m = create_model("tanet_tiny", num_classes=4)
        x = torch.randn(2, 8, 3, 32, 32)
        y = m(x)
        y.sum().backward()
        return y.detach(), m.backbone.layer1[0].temporal.G[0].weight.grad.clone()

    a, b = run(), run()
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_frame_count_and_shape_errors():
    m = create_model("tanet_tiny", num_classes=4)
    with pytest.raises(ValueError, match="built for T=8 frames, got T=4"):
        m(torch.randn(1, 4, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\(N, T, C, H, W\)"):
        m(torch.randn(8, 3, 32, 32))
    with pytest.raises(KeyError, match="did you mean"):
        create_model("tanet_r5", num_classes=4)
    with pytest.raises(ValueError, match="num_segments >= 2"):
        create_model("tanet_tiny", num_classes=4, num_segments=1)


def test_head_init_and_partial_bn():
    m = create_model("tanet_tiny", num_classes=400, partial_bn=True)
    assert m.fc.bias.abs().max() == 0 and m.fc.weight.std() < 0.002
    m.train()
    bns = [x for x in m.backbone.modules() if isinstance(x, torch.nn.BatchNorm2d)]
    assert bns[0].training and not any(b.training for b in bns[1:])
    assert not bns[1].weight.requires_grad and bns[0].weight.requires_grad


def test_cost_ratio_tiny():
    a = model_cost(create_model("tanet_tiny", num_classes=10), frames=8, size=64)
    b = model_cost(create_model("tsn_tiny", num_classes=10), frames=8, size=64)
    assert b.tam_macs == 0 and a.tam_macs > 0 and a.macs - b.macs == a.tam_macs
    assert a.params - b.params == a.tam_params


def test_checkpoint_roundtrip_with_card(tmp_path):
    m = create_model("tanet_tiny", num_classes=3, class_names=["a", "b", "c"],
                     tam_kwargs={"kernel_size": 5}).eval()
    path = save_model(tmp_path / "m.safetensors", m, config={"train": {"lr": 0.1}})
    m2 = load_model(path)
    assert m2.card.class_names == ["a", "b", "c"] and m2.backbone.layer1[0].temporal.kernel_size == 5
    x = torch.randn(1, 8, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))
    assert not list(tmp_path.glob(".*tmp"))  # no temp files left behind
    with pytest.raises(TypeError, match="the path comes first"):
        save_model(m, tmp_path / "swapped.safetensors")


def test_public_api():
    assert "tanet_r50" in tanet.list_models() and callable(tanet.create_model)
