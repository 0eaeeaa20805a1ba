"""Transfer learning: TAM's frame adaptation rule, model.init_from (tanet and authors' layouts),
freeze_backbone / backbone_lr_mult, the UCF101 and HMDB51 split formats, the recipes."""
import pytest
import torch
import torch.nn as nn

import tanet
from tanet.config import Config, ConfigError, apply_overrides, load_config
from tanet.data.annotations import AnnotationError, detect_format, read_annotations
from tanet.engine.build import build_model, build_optimizer, read_split
from tanet.models.checkpoint import CheckpointError, save_model
from tanet.models.tam import TAM
from tanet.models.transfer import (adapt_global_branch, init_from_checkpoint, resample_matrix,
                                   tam_frames)


def _random_tam(c, t, seed=0):
    torch.manual_seed(seed)
    tam = TAM(c, t)
    with torch.no_grad():
        for p in tam.parameters():
            p.normal_()
        tam.G[1].running_mean.normal_()
        tam.G[1].running_var.uniform_(0.5, 2.0)
    return tam


def _adapted(tam, t_to):
    g = {k.removeprefix("G."): v for k, v in tam.state_dict().items() if k.startswith("G.")}
    new = TAM(tam.in_channels, t_to)
    state = {**{k: v for k, v in tam.state_dict().items() if k.startswith("L.")},
             **{f"G.{k}": v for k, v in adapt_global_branch(g, t_to).items()}}
    new.load_state_dict(state)
    return new


@pytest.mark.parametrize("t,t_to,mode", [(8, 16, "eval"), (8, 12, "train"), (4, 8, "eval")])
def test_more_frames_keeps_the_kernel_of_the_resampled_clip(t, t_to, mode):
    """G'(x') == G(R x') for any clip x' of T' frames; constant clips keep their kernel."""
    tam = _random_tam(16, t)
    new = _adapted(tam, t_to)
    assert new.G[0].weight.shape == (2 * t_to, t_to) and new.G[3].weight.shape == (3, 2 * t_to)
    assert new.G[1].running_mean.shape == (2 * t_to,)
    getattr(tam, mode)(), getattr(new, mode)()
    n, c = 3, 16
    x_new = torch.randn(n, t_to, c, 5, 5)  # (N, T', C, H, W)
    r = resample_matrix(t, t_to).float()  # (T, T')
    assert torch.allclose(r.sum(1), torch.ones(t))
    x_old = torch.einsum("ij,njchw->nichw", r, x_new)  # (N, T, C, H, W)
    theta_new = new.branches(x_new.reshape(-1, c, 5, 5))[1]  # (N, C, K)
    theta_old = tam.branches(x_old.reshape(-1, c, 5, 5))[1]
    assert torch.allclose(theta_new, theta_old, atol=1e-5)
    still = torch.randn(n, 1, c, 5, 5)  # every frame equal
    a = new.branches(still.expand(n, t_to, c, 5, 5).reshape(-1, c, 5, 5))[1]
    b = tam.branches(still.expand(n, t, c, 5, 5).reshape(-1, c, 5, 5))[1]
    assert torch.allclose(a, b, atol=1e-5)
    other = _random_tam(16, t, seed=1)  # the check can fail: another TAM's kernels differ
    assert not torch.allclose(other.branches(x_old.reshape(-1, c, 5, 5))[1], theta_old, atol=1e-2)


def test_fewer_frames_shapes_and_round_trip():
    tam = _random_tam(16, 8)
    down = _adapted(tam, 4)
    assert down.G[0].weight.shape == (8, 4) and down.G[3].weight.shape == (3, 8)
    assert torch.isfinite(down.G[0].weight).all()
    back = _adapted(_adapted(tam, 16), 8)  # T -> 2T -> T: the hidden units come back exactly
    for k, v in tam.state_dict().items():
        if k.startswith("G.1.") or k.startswith("G.3."):
            assert torch.allclose(back.state_dict()[k].float(), v.float(), atol=1e-6), k
    tam.eval(), back.eval()
    still = torch.randn(2, 1, 16, 5, 5)  # and a still clip its kernel (rows of R sum to 1)
    a = back.branches(still.expand(2, 8, 16, 5, 5).reshape(-1, 16, 5, 5))[1]
    b = tam.branches(still.expand(2, 8, 16, 5, 5).reshape(-1, 16, 5, 5))[1]
    assert torch.allclose(a, b, atol=1e-5)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tanet_tiny T=4 checkpoint with 6 classes and random (non-default) weights."""
    d = tmp_path_factory.mktemp("transfer")
    torch.manual_seed(3)
    m = tanet.create_model("tanet_tiny", num_classes=6, num_segments=4,
                           class_names=[f"a{i}" for i in range(6)])
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return {"path": save_model(d / "src.safetensors", m), "model": m, "dir": d}


def test_init_from_new_classes_and_report(source):
    model = tanet.create_model("tanet_tiny", num_classes=4, num_segments=4)
    before = model.fc.weight.clone()
    report = init_from_checkpoint(model, source["path"])
    src = source["model"].state_dict()
    for k, v in model.state_dict().items():
        if k.startswith("fc."):
            assert v.shape[0] == 4
        else:
            assert torch.equal(v, src[k]), k
    assert torch.equal(model.fc.weight, before)  # kept the fresh classifier
    assert report.reinitialised == ["fc.weight", "fc.bias"] and report.classes == (6, 4)
    assert len(report.loaded) == len(src) - 2 and not report.adapted
    text = str(report)
    assert "re-initialised fc.weight, fc.bias (6 -> 4 classes)" in text
    assert "backbone.layer1:" in text and "tanet layout" in text

    same = tanet.create_model("tanet_tiny", num_classes=6, num_segments=4,
                              class_names=[f"a{i}" for i in range(6)])
    assert not init_from_checkpoint(same, source["path"]).reinitialised
    assert torch.equal(same.fc.weight, source["model"].fc.weight)


def test_init_from_other_frames_refused_then_adapted(source):
    model = tanet.create_model("tanet_tiny", num_classes=4, num_segments=8)
    with pytest.raises(ValueError, match=r"T=4 frames.*model.adapt_frames=true"):
        init_from_checkpoint(model, source["path"])
    report = init_from_checkpoint(model, source["path"], adapt=True)
    assert report.frames == (4, 8) and tam_frames(model.state_dict()) == 8
    assert len(report.adapted) == 4 * 6  # 4 blocks x (G.0, G.1 weight/bias/mean/var, G.3)
    assert "from T=4 to T=8" in str(report)
    with torch.no_grad():
        assert model(torch.randn(1, 8, 3, 32, 32)).shape == (1, 4)


def test_init_from_authors_layout_and_wrong_architecture(source):
    """The authors' .pth names (module.base_model.*, *.tam.*, new_fc) load too; a TSN
    checkpoint into TANet names the fix."""
    src = source["model"].state_dict()
    authors = {("module.new_fc." + k[3:]) if k.startswith("fc.") else
               "module.base_model." + k.removeprefix("backbone.").replace(".temporal.", ".tam."): v
               for k, v in src.items()}
    pth = source["dir"] / "authors.pth.tar"
    torch.save({"epoch": 3, "state_dict": authors}, pth)
    model = tanet.create_model("tanet_tiny", num_classes=2, num_segments=4)
    report = init_from_checkpoint(model, pth)
    assert report.layout == "official" and report.reinitialised == ["fc.weight", "fc.bias"]
    assert torch.equal(model.backbone.layer2[0].temporal.G[0].weight,
                       src["backbone.layer2.0.temporal.G.0.weight"])
    tsn = save_model(source["dir"] / "tsn.safetensors",
                     tanet.create_model("tsn_tiny", num_classes=3, num_segments=4))
    with pytest.raises(CheckpointError, match="set model.name=tsn_tiny"):
        init_from_checkpoint(tanet.create_model("tanet_tiny", num_classes=2, num_segments=4), tsn)


def _cfg(*sets):
    return apply_overrides(Config(), ["model.name=tanet_tiny", "model.num_segments=4",
                                      *sets]).validate("test")


def test_freeze_backbone_and_backbone_lr_mult(source):
    names = ["x", "y"]
    cfg = _cfg(f"model.init_from={source['path']}", "train.backbone_lr_mult=0.1",
               "train.fc_lr_mult=5")
    logs = []
    model = build_model(cfg, names, log=logs.append)
    assert "re-initialised fc.weight, fc.bias (6 -> 2 classes)" in logs[0]
    groups = {g["name"]: g["lr"] for g in build_optimizer(model, cfg, 0.01).param_groups}
    assert groups == pytest.approx({"decay": 0.001, "no_decay": 0.001, "fc_w": 0.05, "fc_b": 0.05})

    probe = _cfg(f"model.init_from={source['path']}", "train.freeze_backbone=true")
    model = build_model(probe, names, log=logs.append)
    assert "only fc.weight and fc.bias train" in logs[-1]
    opt = build_optimizer(model, probe, 0.01)
    assert [g["name"] for g in opt.param_groups] == ["fc_w", "fc_b"]
    from tanet.engine.build import set_bn_mode

    model.train()
    set_bn_mode(model, probe)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(m.training for m in bns)
    stats = model.backbone.layer1[0].bn1.running_mean.clone()
    loss = model(torch.randn(2, 4, 3, 32, 32)).sum()
    loss.backward()
    opt.step()
    assert torch.equal(model.backbone.layer1[0].bn1.running_mean, stats)
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("fc."))

    with pytest.raises(ConfigError, match="not both"):
        _cfg("model.init_from=x.safetensors", "model.pretrained=r50.pth")
    with pytest.raises(ConfigError, match="backbone_lr_mult"):
        _cfg("train.backbone_lr_mult=-1")


CLASSES = ["ApplyEyeMakeup", "Archery", "YoYo"]


def test_ucf101_split_files(tmp_path):
    d = tmp_path / "ucfTrainTestlist"
    d.mkdir()
    (d / "classInd.txt").write_bytes(b"1 ApplyEyeMakeup\r\n2 Archery\r\n3 YoYo\r\n")
    (d / "trainlist01.txt").write_bytes(b"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n"
                                        b"YoYo/v_YoYo_g08_c02.avi 3\r\n")
    (d / "testlist01.txt").write_bytes(b"Archery/v_Archery_g01_c01.avi\r\n"
                                       b"YoYo/v_YoYo_g01_c01.avi\r\n")
    (d / "trainlist02.txt").write_text("Archery/v_Archery_g09_c01.avi 2\n")
    (d / "testlist02.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi\n")
    assert detect_format(d / "trainlist01.txt") == detect_format(d) == "ucf101"
    recs, names = read_annotations(d / "trainlist01.txt")
    assert names == CLASSES
    assert [(r.path, r.label) for r in recs] == [
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0), ("YoYo/v_YoYo_g08_c02.avi", 2)]
    recs, _ = read_annotations(d / "testlist01.txt")  # no labels: the class folder says
    assert [r.label for r in recs] == [1, 2]
    recs, _ = read_annotations(d, split=2, subset="test")
    assert [(r.path, r.label) for r in recs] == [("ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi", 0)]
    cfg = _cfg(f"data.train={d}", f"data.val={d}", "data.split=2")
    with pytest.raises(FileNotFoundError, match=r"trainlist02.txt:1: .*data.root"):
        read_split(cfg, "train")  # the videos are not in the split folder: data.root says where
    videos = tmp_path / "UCF-101"
    for rel in ("Archery/v_Archery_g09_c01.avi", "ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi"):
        (videos / rel).parent.mkdir(parents=True, exist_ok=True)
        (videos / rel).write_bytes(b"")
    cfg = _cfg(f"data.train={d}", f"data.val={d}", "data.split=2", f"data.root={videos}")
    assert read_split(cfg, "train").records[0].path == str(videos / "Archery/v_Archery_g09_c01.avi")
    assert [r.label for r in read_split(cfg, "train").records] == [1]
    assert [r.label for r in read_split(cfg, "val", class_names=CLASSES).records] == [0]
    (d / "trainlist03.txt").write_text("Archery/v_Archery_g09_c01.avi 3\n")
    with pytest.raises(AnnotationError, match=r"trainlist03.txt:1: label 3 disagrees"):
        read_annotations(d / "trainlist03.txt")
    alone = tmp_path / "trainlist01.txt"  # 1-based labels are never read as 0-based ones
    alone.write_text("Archery/v_Archery_g09_c01.avi 2\n")
    with pytest.raises(AnnotationError, match="needs classInd.txt beside it"):
        read_annotations(alone)
    assert read_annotations(alone, labels=d / "classInd.txt")[0][0].label == 1


def test_hmdb51_split_files(tmp_path):
    d = tmp_path / "testTrainMulti_7030_splits"
    d.mkdir()
    for cls, marks in (("brush_hair", "1201"), ("wave", "2110")):
        for split in (1, 2):
            lines = [f"{cls}_video_{i}.avi {m if split == 1 else '1'} \n"
                     for i, m in enumerate(marks)]
            (d / f"{cls}_test_split{split}.txt").write_text("".join(lines))
    assert detect_format(d) == "hmdb51" and detect_format(d / "wave_test_split2.txt") == "hmdb51"
    recs, names = read_annotations(d, subset="train")
    assert names == ["brush_hair", "wave"]
    assert [(r.path, r.label) for r in recs] == [
        ("brush_hair/brush_hair_video_0.avi", 0), ("brush_hair/brush_hair_video_3.avi", 0),
        ("wave/wave_video_1.avi", 1), ("wave/wave_video_2.avi", 1)]
    recs, _ = read_annotations(d, subset="test")
    assert [r.path for r in recs] == ["brush_hair/brush_hair_video_1.avi", "wave/wave_video_0.avi"]
    recs, _ = read_annotations(d / "wave_test_split2.txt", subset="train")  # split from the name
    assert len(recs) == 8
    (d / "wave_test_split1.txt").write_text("wave_video_0.avi 7\n")
    with pytest.raises(AnnotationError, match=r"wave_test_split1.txt:1: expected"):
        read_annotations(d)


def test_fine_tune_recipes_load():
    for name, split in (("ucf101_tanet_r50_8f_from_k400", 1), ("hmdb51_tanet_r50_8f_from_k400", 1)):
        cfg = load_config(name)
        assert cfg.model.init_from == "tanet_r50.k400" and cfg.model.partial_bn
        assert cfg.data.split == split and cfg.train.fc_lr_mult == 5
