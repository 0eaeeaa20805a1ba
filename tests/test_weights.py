"""ImageNet initialisation from a torchvision-format ResNet file built by the test."""
import pytest
import torch
from safetensors.torch import save_file

import tanet
from tanet.models.checkpoint import CheckpointError, load_imagenet
from tanet.models.resnet import DEPTHS, ResNet


@pytest.fixture(scope="module")
def imagenet_state():
    """A torchvision ResNet-50 state dict (random), with torchvision's own fc."""
    torch.manual_seed(0)
    state = ResNet(DEPTHS[50]).state_dict()  # torchvision names, nothing renamed
    state["fc.weight"] = torch.randn(1000, 2048)
    state["fc.bias"] = torch.randn(1000)
    return state


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
@pytest.mark.parametrize("name", ["tanet_r50", "tsm_r50", "tsn_r50"])
def test_imagenet_init_loads_every_backbone_tensor(tmp_path, imagenet_state, fmt, name):
    path = tmp_path / f"resnet50.{fmt}"
    if fmt == "pth":
        torch.save(imagenet_state, path)
    else:
        save_file({k: v.contiguous() for k, v in imagenet_state.items()}, str(path))
    model = tanet.create_model(name, num_classes=4, pretrained=str(path))
    own = model.backbone.state_dict()
    for k, v in imagenet_state.items():
        if not k.startswith("fc."):
            assert torch.equal(own[k], v), k
    assert model.fc.weight.shape == (4, 2048)  # the recognizer's own head, not ImageNet's


def test_missing_and_unexpected_keys_are_named(tmp_path, imagenet_state, capsys):
    model = tanet.create_model("tsn_r50", num_classes=4)
    state = dict(imagenet_state)
    del state["layer3.2.bn2.running_var"]
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as e:
        load_imagenet(model, path)
    msg = str(e.value)
    assert "broken.pth" in msg and "1 missing: layer3.2.bn2.running_var" in msg
    assert "1 unexpected: layer5.0.conv1.weight" in msg


def test_wrong_depth_is_a_shape_error(tmp_path):
    state = ResNet(DEPTHS[50], widths=(32, 64, 128, 256)).state_dict()
    path = tmp_path / "narrow.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match="narrow.safetensors: shapes do not match"):
        tanet.create_model("tanet_r50", num_classes=4, pretrained=str(path))


def test_checkpoint_and_pretrained_together_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        tanet.create_model("tanet_tiny", checkpoint="a.safetensors", pretrained="b.pth")
