"""TAM's switches (branches, kernel, stages, every, position) and the TEA baseline: every variant
builds, trains a step, round-trips through a checkpoint; the defaults are the authors' TAM."""
import pytest
import torch
import torch.nn.functional as F
from test_tam import (
    _authors_tam_forward,  # the authors' forward, written out independently
)

import tanet
from tanet.config import load_config
from tanet.engine import build_model
from tanet.models.baselines import MotionExcitation
from tanet.models.checkpoint import save_model
from tanet.models.convert import read_checkpoint
from tanet.models.factory import load_model
from tanet.models.tam import TAM

NAMES = ["a", "b", "c"]
# (model, builder kwargs): every switch on its own, plus the non-adaptive temporal conv
VARIANTS = [
    ("tanet_tiny", {"tam_kwargs": {"branches": "local"}}),
    ("tanet_tiny", {"tam_kwargs": {"branches": "global"}}),
    ("tanet_tiny", {"tam_kwargs": {"kernel": "fixed"}}),
    ("tanet_tiny", {"tam_kwargs": {"branches": "global", "kernel": "fixed", "kernel_size": 5}}),
    ("tanet_tiny", {"tam_kwargs": {"stages": [3, 4]}}),
    ("tanet_tiny", {"tam_kwargs": {"every": 2}, "layers": [3, 2, 1, 1]}),
    ("tanet_tiny", {"tam_kwargs": {"position": "before_conv1"}}),
    ("tanet_tiny", {"tam_kwargs": {"position": "after_conv2", "stages": [2, 3]}}),
    ("tea_tiny", {}),
]


def _clip(seed=0, n=2):
    torch.manual_seed(seed)
    return torch.randn(n, 8, 3, 32, 32)


@pytest.mark.parametrize("name,kw", VARIANTS, ids=lambda v: str(v))
def test_variant_trains_and_round_trips(tmp_path, name, kw):
    torch.manual_seed(0)
    model = tanet.create_model(name, num_classes=3, class_names=NAMES, **kw)
    temporal = {n: p.detach().clone() for n, p in model.named_parameters() if ".temporal." in n}
    assert temporal, "the variant has no temporal parameters to train"
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = F.cross_entropy(model.train()(_clip()), torch.tensor([0, 2]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for n, p in model.named_parameters() if ".temporal." in n)
    opt.step()
    moved = [n for n, p in model.named_parameters()
             if n in temporal and not torch.equal(p, temporal[n])]
    assert moved, "one SGD step left every temporal parameter unchanged"
    path = save_model(tmp_path / "m.safetensors", model.eval())
    again = load_model(path)
    assert again.card.kwargs == model.card.kwargs and again.card.name == name
    assert again.card.kwargs.get("tam_kwargs", {}) == kw.get("tam_kwargs", {})
    with torch.no_grad():
        assert torch.equal(model(_clip(1)), again(_clip(1)))
    # a bare state dict (no card): the architecture is read off the tensors
    raw = tmp_path / "m.pth"
    torch.save({k: v for k, v in model.state_dict().items()}, raw)
    ck = read_checkpoint(raw)
    loaded = tanet.create_model(checkpoint=raw).eval()
    assert sorted(loaded.state_dict()) == sorted(model.state_dict())
    if kw.get("tam_kwargs", {}).get("position") != "after_conv2":  # same shapes as after_conv1
        with torch.no_grad():
            assert torch.equal(model(_clip(1)), loaded(_clip(1))), ck.card.kwargs


def _temporal_keys(model, where):
    keys = [k for k in model.state_dict() if where in k and ".temporal." in k]
    return {k.split(".temporal.")[1] for k in keys}


def test_absent_branches_have_no_parameters():
    local = tanet.create_model("tanet_tiny", num_classes=3, tam_kwargs={"branches": "local"})
    glob = tanet.create_model("tanet_tiny", num_classes=3, tam_kwargs={"branches": "global"})
    fixed = tanet.create_model("tanet_tiny", num_classes=3,
                               tam_kwargs={"branches": "global", "kernel": "fixed"})
    assert not any(k.startswith("G.") for k in _temporal_keys(local, "layer1.0"))
    assert not any(k.startswith("L.") for k in _temporal_keys(glob, "layer1.0"))
    assert _temporal_keys(fixed, "layer1.0") == {"kernel_logits"}
    assert fixed.backbone.layer1[0].temporal.kernel_logits.shape == (16, 3)  # (C, K)
    late = tanet.create_model("tanet_tiny", num_classes=3, tam_kwargs={"stages": [3, 4]})
    assert not _temporal_keys(late, "layer1") and not _temporal_keys(late, "layer2")
    assert _temporal_keys(late, "layer3") and _temporal_keys(late, "layer4")
    every = tanet.create_model("tanet_tiny", num_classes=3, layers=[3, 2, 1, 1],
                               tam_kwargs={"every": 2})
    assert [b.temporal is not None for b in every.backbone.layer1] == [True, False, True]
    before = tanet.create_model("tanet_tiny", num_classes=3,
                                tam_kwargs={"position": "before_conv1"})
    blk = before.backbone.layer2[0]
    assert blk.temporal.in_channels == blk.conv1.in_channels == 64


def test_defaults_are_the_papers_tanet():
    torch.manual_seed(0)
    default = tanet.create_model("tanet_tiny", num_classes=3).eval()
    torch.manual_seed(0)
    explicit = tanet.create_model("tanet_tiny", num_classes=3, tam_kwargs=dict(
        branches="both", kernel="adaptive", stages=[1, 2, 3, 4], every=1,
        position="after_conv1")).eval()
    a, b = default.state_dict(), explicit.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        assert torch.equal(default(_clip()), explicit(_clip()))
    tam = explicit.backbone.layer2[0].temporal  # the module itself equals the authors' code
    x = torch.randn(16, tam.in_channels, 5, 5)
    with torch.no_grad():
        assert torch.allclose(tam(x), _authors_tam_forward(tam, x), atol=1e-6)


@pytest.mark.parametrize("branches,kernel", [("local", "adaptive"), ("global", "adaptive"),
                                             ("both", "fixed"), ("global", "fixed")])
def test_variant_fast_equals_reference(branches, kernel):
    torch.manual_seed(0)
    fast = TAM(24, 8, branches=branches, kernel=kernel)
    if fast.kernel_logits is not None:
        fast.kernel_logits.data.normal_()
    ref = TAM(24, 8, branches=branches, kernel=kernel, formulation="reference")
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(16, 24, 5, 6)
    g = torch.randn(16, 24, 5, 6)
    outs = []
    for m in (fast, ref):
        xi = x.clone().requires_grad_()
        y = m(xi)
        (y * g).mean().backward()
        outs.append((y.detach(), xi.grad, {n: p.grad for n, p in m.named_parameters()}))
    assert (outs[0][0] - outs[1][0]).abs().max() <= 1e-5
    assert (outs[0][1] - outs[1][1]).abs().max() <= 1e-5
    for n in outs[1][2]:
        assert (outs[0][2][n] - outs[1][2][n]).abs().max() <= 1e-5, n


def test_branch_semantics():
    torch.manual_seed(0)
    x = torch.randn(16, 8, 4, 4)
    local = TAM(8, 8, branches="local").eval()
    with torch.no_grad():
        v, theta = local.branches(x)  # theta: the identity (centre) tap
        assert torch.equal(theta, F.one_hot(torch.ones(2, 8, dtype=torch.long), 3).float())
        want = x.view(2, 8, 8, 4, 4) * v.transpose(1, 2).unsqueeze(-1).unsqueeze(-1)
        assert torch.allclose(local(x), want.view(16, 8, 4, 4), atol=1e-6)
    fixed = TAM(8, 8, kernel="fixed").eval()
    fixed.kernel_logits.data.normal_()
    with torch.no_grad():
        _, t1 = fixed.branches(x)
        _, t2 = fixed.branches(torch.randn(16, 8, 4, 4))
    assert torch.equal(t1, t2) and torch.allclose(t1.sum(-1), torch.ones(2, 8))
    assert torch.equal(TAM(8, 8, kernel="fixed").kernel_logits, torch.zeros(8, 3))  # uniform
    rand = TAM(8, 8, kernel="fixed", kernel_init="random").kernel_logits
    assert 0.1 < rand.std() < 0.7  # G's spread at initialisation, not time-symmetric
    glob = TAM(8, 8, branches="global").eval()
    with torch.no_grad():
        v, _ = glob.branches(x)
    assert torch.equal(v, torch.ones_like(v))


def test_config_keys_reach_the_model_and_card():
    cfg = load_config("synthetic_tanet_tiny", ["model.tam.branches=global", "model.tam.stages=[4]",
                                               "model.tam.kernel=fixed"])
    model = build_model(cfg, NAMES)
    tams = [m for m in model.modules() if isinstance(m, TAM)]
    assert len(tams) == 1 and tams[0].G is None and tams[0].L is None
    assert model.card.kwargs["tam_kwargs"] == {"branches": "global", "kernel": "fixed",
                                               "stages": [4]}
    assert build_model(load_config("synthetic_tanet_tiny"), NAMES).card.kwargs == {"dropout": 0.0}
    with pytest.raises(ValueError, match="without TAM"):
        build_model(load_config("synthetic_tsn_tiny", ["model.tam.branches=local"]), NAMES)


@pytest.mark.parametrize("kw,match", [
    ({"branches": "lokal"}, "branches"), ({"kernel": "static"}, "kernel"),
    ({"branches": "local", "kernel": "fixed"}, "no aggregation kernel"),
    ({"kernel_init": "random"}, "only with kernel='fixed'"), ({"stages": [0, 5]}, "stages"), ({"stages": []}, "stages"), ({"every": 0}, "every"),
    ({"position": "after_conv3"}, "position")])
def test_bad_switches_are_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        tanet.create_model("tanet_tiny", num_classes=3, tam_kwargs=kw)


def _tea_me_forward(m: MotionExcitation, x: torch.Tensor) -> torch.Tensor:
    """TEA's MEModule.forward (Phoenix1327/tea-action-recognition, ops/tea50_8f.py), written out
    independently: split, difference, pad, pool, expand, sigmoid - 0.5, residual excitation."""
    t = m.num_segments
    bottleneck = m.bn1(m.conv1(x))
    reshape = bottleneck.view((-1, t) + bottleneck.size()[1:])
    t_fea, _ = reshape.split([t - 1, 1], dim=1)
    conv = m.conv2(bottleneck)
    _, t_plus_one = conv.view((-1, t) + conv.size()[1:]).split([1, t - 1], dim=1)
    diff = F.pad(t_plus_one - t_fea, (0, 0, 0, 0, 0, 0, 0, 1))
    y = F.adaptive_avg_pool2d(diff.view((-1,) + diff.size()[2:]), 1)
    y = torch.sigmoid(m.bn3(m.conv3(y))) - 0.5
    return x + x * y.expand_as(x)


def test_motion_excitation_matches_tea():
    torch.manual_seed(0)
    me = MotionExcitation(64, 8).eval()
    for bn in (me.bn1, me.bn3):
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(16, 64, 6, 6)
    with torch.no_grad():
        assert torch.allclose(me(x), _tea_me_forward(me, x), atol=1e-6)
    tea = tanet.create_model("tea_tiny", num_classes=3)
    assert sum(isinstance(m, MotionExcitation) for m in tea.modules()) == 4
    assert tea.backbone.layer1[0].position == "after_conv1"


def test_info_compares_tea_with_tsn(capsys):
    from tanet.cli import main

    assert main(["info", "tea_tiny", "--frames", "8", "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert "tea_tiny" in out and "ratio tea_tiny / tsn_tiny" in out
