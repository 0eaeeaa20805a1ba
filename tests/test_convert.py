"""Import of published checkpoints: the authors' and mmaction2's layouts, built here as small
reference networks with their own module names, saved with torch.save, converted, compared."""
import json
import re
import subprocess

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import tanet
from tanet.models.checkpoint import CheckpointError, UnsafeCheckpointError, read_metadata
from tanet.models.convert import read_checkpoint
from tanet.models.factory import convert_checkpoint, load_model
from tanet.models.tam import TAM

T, SIZE = 4, 32
LAYERS, WIDTHS, STEM = (2, 1, 1, 1), (8, 16, 16, 32), 8


# --- the authors' architecture: torchvision ResNet, blocks wrapped as TemporalBottleneck(net, tam)
class TVBottleneck(nn.Module):
    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes * 4))


class TemporalBottleneck(nn.Module):  # ops/temporal_module.py
    def __init__(self, net, n_segment):
        super().__init__()
        self.net = net
        self.tam = TAM(net.conv1.out_channels, n_segment, formulation="reference")

    def forward(self, x):
        n = self.net
        out = self.tam(n.relu(n.bn1(n.conv1(x))))
        out = n.relu(n.bn2(n.conv2(out)))
        out = n.bn3(n.conv3(out))
        identity = n.downsample(x) if n.downsample is not None else x
        return n.relu(out + identity)


class AuthorsTSN(nn.Module):  # ops/models.py: TSN(base_model=resnet + TAM), new_fc, avg consensus
    def __init__(self, num_class):
        super().__init__()
        b = nn.Module()
        b.conv1 = nn.Conv2d(3, STEM, 7, 2, 3, bias=False)
        b.bn1 = nn.BatchNorm2d(STEM)
        inp = STEM
        for s, (n, w) in enumerate(zip(LAYERS, WIDTHS)):
            blocks = []
            for i in range(n):
                blocks.append(TemporalBottleneck(TVBottleneck(inp, w, 2 if (i == 0 and s) else 1), T))
                inp = w * 4
            setattr(b, f"layer{s + 1}", nn.Sequential(*blocks))
        b.fc = nn.Dropout(0.5)
        self.base_model = b
        self.new_fc = nn.Linear(inp, num_class)

    def forward(self, x):  # (N, T, 3, H, W)
        b = self.base_model
        y = F.max_pool2d(F.relu(b.bn1(b.conv1(x.flatten(0, 1)))), 3, 2, 1)
        for s in range(1, 5):
            y = getattr(b, f"layer{s}")(y)
        y = self.new_fc(y.mean((2, 3)))  # (N*T, K)
        return y.view(x.shape[0], T, -1).mean(1)


# --- mmaction2's architecture: ConvModule(conv, bn), TABlock(block, tam), TAM without L's BN
class ConvModule(nn.Module):
    def __init__(self, cin, cout, k, s=1, p=0, act=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, p, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = act

    def forward(self, x):
        y = self.bn(self.conv(x))
        return F.relu(y) if self.act else y


class MMTAM(nn.Module):  # mmaction/models/common/tam.py: L = Conv1d, ReLU, Conv1d, Sigmoid
    def __init__(self, c, t):
        super().__init__()
        self.t = t
        self.G = nn.Sequential(nn.Linear(t, 2 * t, bias=False), nn.BatchNorm1d(2 * t), nn.ReLU(),
                               nn.Linear(2 * t, 3, bias=False), nn.Softmax(-1))
        self.L = nn.Sequential(nn.Conv1d(c, c // 4, 3, padding=1, bias=False), nn.ReLU(),
                               nn.Conv1d(c // 4, c, 1, bias=False), nn.Sigmoid())

    def forward(self, x):
        nt, c, h, w = x.shape
        n = nt // self.t
        x = x.view(n, self.t, c, h, w).permute(0, 2, 1, 3, 4).contiguous()
        pooled = F.adaptive_avg_pool2d(x.view(-1, self.t, h, w), (1, 1))
        kernel = self.G(pooled.view(-1, self.t)).view(n * c, 1, -1, 1)
        act = self.L(pooled.view(-1, c, self.t)).view(n, c, self.t, 1, 1)
        y = F.conv2d((x * act).view(1, n * c, self.t, h * w), kernel, padding=(1, 0), groups=n * c)
        return y.view(n, c, self.t, h, w).permute(0, 2, 1, 3, 4).contiguous().view(nt, c, h, w)


class MMBottleneck(nn.Module):
    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = ConvModule(inplanes, planes, 1)
        self.conv2 = ConvModule(planes, planes, 3, stride, 1)
        self.conv3 = ConvModule(planes, planes * 4, 1, act=False)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = ConvModule(inplanes, planes * 4, 1, stride, act=False)


class TABlock(nn.Module):  # mmaction/models/backbones/tanet.py
    def __init__(self, block):
        super().__init__()
        self.block = block
        self.tam = MMTAM(block.conv1.conv.out_channels, T)

    def forward(self, x):
        b = self.block
        out = b.conv3(b.conv2(self.tam(b.conv1(x))))
        return F.relu(out + (b.downsample(x) if b.downsample is not None else x))


class MMRecognizer(nn.Module):
    def __init__(self, num_class):
        super().__init__()
        bb = nn.Module()
        bb.conv1 = ConvModule(3, STEM, 7, 2, 3)
        inp = STEM
        for s, (n, w) in enumerate(zip(LAYERS, WIDTHS)):
            blocks = []
            for i in range(n):
                blocks.append(TABlock(MMBottleneck(inp, w, 2 if (i == 0 and s) else 1)))
                inp = w * 4
            setattr(bb, f"layer{s + 1}", nn.Sequential(*blocks))
        self.backbone = bb
        self.cls_head = nn.Module()
        self.cls_head.fc_cls = nn.Linear(inp, num_class)

    def forward(self, x):  # (N, T, 3, H, W) normalised
        bb = self.backbone
        y = F.max_pool2d(bb.conv1(x.flatten(0, 1)), 3, 2, 1)
        for s in range(1, 5):
            y = getattr(bb, f"layer{s}")(y)
        y = self.cls_head.fc_cls(y.mean((2, 3)))  # (N*T, K)
        return y.view(x.shape[0], T, -1).mean(1)


def _randomise(model):
    torch.manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear)):
                m.weight.normal_(0, (2 / m.weight[0].numel()) ** 0.5)
                if getattr(m, "bias", None) is not None:
                    m.bias.normal_(0, 0.1)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


class DataParallelLike(nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return torch.randn(2, T, 3, SIZE, SIZE)


def test_official_parity_and_inference(tmp_path, clip):
    ref = _randomise(AuthorsTSN(7))
    src = tmp_path / "tam_ckpt.pth.tar"
    torch.save({"epoch": 42, "arch": "resnet50", "best_prec1": 71.5,
                "state_dict": DataParallelLike(ref).state_dict()}, src)
    ck = read_checkpoint(src)
    assert ck.source == "official" and ck.card.name == "tanet_resnet"
    assert (ck.card.num_classes, ck.card.num_segments) == (7, T)
    assert ck.card.kwargs["layers"] == list(LAYERS) and ck.card.kwargs["widths"] == list(WIDTHS)
    assert ck.card.kwargs["tam_kwargs"] == dict(alpha=2, beta=4, kernel_size=3, local_kernel_size=3)
    assert ck.info["epoch"] == 42 and ck.info["best_prec1"] == 71.5

    model = tanet.create_model(checkpoint=src).eval()
    with torch.no_grad():
        diff = (model(clip) - ref(clip)).abs().max().item()
    print(f"official parity: max |diff| = {diff:.2e}")
    assert diff <= 1e-4

    dst = tmp_path / "tam.safetensors"
    convert_checkpoint(src, dst, class_names=[f"c{i}" for i in range(7)])
    meta = read_metadata(dst)
    assert meta["card"]["class_names"][3] == "c3" and meta["card"]["num_segments"] == T
    assert json.loads(meta["raw"]["tanet.converted_from"])["layout"] == "official"
    with torch.no_grad():
        assert (load_model(dst)(clip) - ref(clip)).abs().max().item() <= 1e-4


def test_mmaction2_parity_and_normalisation(tmp_path, clip):
    ref = _randomise(MMRecognizer(5))
    src = tmp_path / "tanet_mm.pth"
    torch.save({"meta": {"epoch": 100}, "state_dict": ref.state_dict()}, src)
    ck = read_checkpoint(src, source="mmaction2")
    assert ck.source == "mmaction2" and (ck.card.num_classes, ck.card.num_segments) == (5, T)
    # mmaction2 normalises 0-255 pixels: (x*255 - 123.675)/58.395 == (x - 0.485)/0.229
    assert ck.card.mean == pytest.approx((0.485, 0.456, 0.406), abs=1e-6)
    assert ck.card.std == pytest.approx((0.229, 0.224, 0.225), abs=1e-6)
    model = tanet.create_model(checkpoint=src).eval()
    with torch.no_grad():
        diff = (model(clip) - ref(clip)).abs().max().item()
    print(f"mmaction2 parity: max |diff| = {diff:.2e}")
    assert diff <= 1e-4
    with pytest.raises(CheckpointError, match="--from mmaction2"):
        read_checkpoint(src, source="official")


def test_standard_depth_r50_structure(tmp_path):
    """A real-depth ResNet-50 in the authors' names maps to tanet_r50 with T and K inferred."""
    model = tanet.create_model("tanet_r50", num_classes=11, num_segments=16)
    state = {}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):  # old (pre-0.4.1) checkpoints have none
            continue
        if k.startswith("fc."):
            state["module.new_fc." + k[3:]] = v
            continue
        k = re.sub(r"(layer\d+\.\d+)\.temporal\.", r"\1.tam.", k)
        k = re.sub(r"(layer\d+\.\d+)\.(?!tam\.)", r"\1.net.", k)
        state[k.replace("backbone.", "module.base_model.")] = v
    src = tmp_path / "r50.pth"
    torch.save({"state_dict": state}, src)
    ck = read_checkpoint(src)
    assert (ck.card.name, ck.card.num_classes, ck.card.num_segments, ck.card.kwargs) == (
        "tanet_r50", 11, 16, {"tam_kwargs": dict(alpha=2, beta=4, kernel_size=3, local_kernel_size=3)})
    loaded = tanet.create_model(checkpoint=src)
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    # fine-tuning: a different number of classes keeps a fresh head, loads the rest
    ft = tanet.create_model(checkpoint=src, num_classes=3)
    assert ft.fc.weight.shape == (3, 2048)
    assert torch.equal(ft.backbone.conv1.weight, model.backbone.conv1.weight)


def test_cli_convert_with_labels(tmp_path, clip):
    ref = _randomise(MMRecognizer(3))
    src = tmp_path / "mm.pth"
    torch.save({"state_dict": ref.state_dict()}, src)
    labels = tmp_path / "labels.txt"
    labels.write_text("0 jump\n1 run fast\n2 swim\n")
    dst = tmp_path / "out.safetensors"
    from tanet.cli import main
    assert main(["convert", str(src), str(dst), "--labels", str(labels)]) == 0
    card = read_metadata(dst)["card"]
    assert card["class_names"] == ["jump", "run fast", "swim"]
    assert card["kwargs"]["layers"] == list(LAYERS)
    bad = tmp_path / "two.txt"
    bad.write_text("a\nb\n")
    assert main(["convert", str(src), str(tmp_path / "x.safetensors"), "--labels", str(bad)]) == 1


def test_refuses_unsafe_and_unknown(tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "obj": subprocess.Popen}, evil)
    with pytest.raises(UnsafeCheckpointError, match="evil.pth"):
        read_checkpoint(evil)
    odd = tmp_path / "odd.pth"
    torch.save({"state_dict": {"encoder.w": torch.zeros(1)}}, odd)
    with pytest.raises(ValueError, match="unrecognised checkpoint layout"):
        read_checkpoint(odd)


@pytest.mark.parametrize("layout", ["official", "mmaction2"])
def test_tsm_checkpoints_are_recognised(tmp_path, layout):
    """TSM wraps conv1 as ``conv1.net``: both layouts import as a TSM model (no TAM tensors)."""
    model = tanet.create_model("tsm_tiny", num_classes=3, num_segments=4)
    state = {}
    for k, v in model.state_dict().items():
        if layout == "official":
            k = "module." + k.replace("backbone.", "base_model.").replace("fc.", "new_fc.", 1) \
                if k.startswith("fc.") else "module." + k.replace("backbone.", "base_model.")
            k = k.replace(".conv1.weight", ".conv1.net.weight") if "layer" in k else k
        else:
            k = "cls_head.fc_cls." + k[3:] if k.startswith("fc.") else k
            k = re.sub(r"\.(conv\d)\.weight$", r".\1.conv.weight", k)
            k = re.sub(r"\.bn(\d)\.", r".conv\1.bn.", k)
            k = k.replace("backbone.bn1.", "backbone.conv1.bn.").replace(".downsample.0.", ".downsample.conv.")
            k = k.replace(".downsample.1.", ".downsample.bn.")
            k = re.sub(r"(layer\d\.\d)\.conv1\.conv\.", r"\1.conv1.net.conv.", k)
        state[k] = v
    src = tmp_path / "tsm.pth"
    torch.save({"state_dict": state}, src)
    ck = read_checkpoint(src, source=layout)
    assert ck.card.name == "tsm_resnet" and ck.card.num_classes == 3 and ck.card.kwargs["layers"] == [1, 1, 1, 1]
    loaded = tanet.create_model(checkpoint=src, num_segments=4).eval()
    x = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model.eval()(x), atol=1e-5)


def test_authors_whole_tanet_r50_is_tanet_r50(tmp_path):
    """The authors' whole TANet-R50 re-typed from their code (tanet.testing.authors_tanet: the
    reference benchmarks/train_throughput.py times) saves as their .pth layout, which tanet
    converts to tanet_r50 with the same logits: the two models are the same function."""
    from tanet.testing.authors_tanet import authors_tanet_r50

    torch.manual_seed(0)
    theirs = authors_tanet_r50(num_class=5, num_segments=8).eval()
    with torch.no_grad():  # trained-looking statistics and a head with spread
        for m in theirs.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        theirs.new_fc.weight.normal_(0, 0.05)
    src = tmp_path / "authors_r50.pth.tar"
    torch.save({"state_dict": {"module." + k: v for k, v in theirs.state_dict().items()}}, src)
    ours = tanet.create_model(checkpoint=src).eval()
    assert ours.card.name == "tanet_r50" and ours.card.num_segments == 8
    x = torch.randn(2, 8, 3, 64, 64)  # (N, T, C, H, W)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-5)
