"""``amp: auto``: the one rule (CPU flags read from cpuinfo files written here, mocked flags for
the commands), what train / test / predict / extract resolve it to, and where the choice is
printed and recorded (config.yaml, metrics.jsonl, the state file, results.json)."""
import json

import numpy as np
import pytest
import torch
from _engine_data import make_videos, overrides

from tanet import precision
from tanet.config import Config, apply_overrides, load_config
from tanet.engine import train
from tanet.engine import test as run_test
from tanet.models.checkpoint import load_state_file
from tanet.precision import AMPS, cpu_flags, resolve_amp

X86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512f {}\n\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd {}\nCPU implementer\t: 0x41\n"


@pytest.mark.parametrize("text,native", [
    (X86.format("avx512_vnni avx512_bf16"), True),  # Cooper Lake, Zen 4
    (X86.format("amx_bf16 amx_tile amx_int8"), True),  # Sapphire Rapids
    (X86.format("avx512_vnni"), False),  # Cascade Lake: AVX-512 without bf16
    (ARM.format("bf16 i8mm"), False),  # Arm: no rule (fp32)
])
def test_auto_follows_the_cpu_flags(tmp_path, text, native):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    flags = cpu_flags(str(path))
    p = resolve_amp("auto", "cpu", flags=flags)
    assert (p.amp, p.name) == (("bf16", "bf16") if native else ("off", "fp32"))
    assert p.setting == "auto" and p.dtype == (torch.bfloat16 if native else None)
    line = p.describe("train.amp")
    assert line.startswith(f"precision {p.name} (train.amp auto: this CPU has")
    assert ("train.amp off for fp32" in line) == native


def test_explicit_settings_keep_their_meaning():
    for setting in AMPS[1:]:  # off, bf16, fp16: as asked, whatever the hardware
        for flags in (frozenset(), frozenset({"avx512_bf16"})):
            assert resolve_amp(setting, "cpu", flags=flags).amp == setting
    assert resolve_amp(None).amp == "off"  # the old spelling of fp32
    with pytest.raises(ValueError, match="amp must be one of auto, off, bf16, fp16"):
        resolve_amp("bfloat16")
    assert cpu_flags(str("/nonexistent/cpuinfo")) == precision._torch_cpu_flags()
    with pytest.raises(Exception, match="train.amp must be one of auto, off, bf16, fp16"):
        load_config(None, ["train.amp=fp8"])
    assert Config().train.amp == "auto"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_videos(tmp_path_factory.mktemp("videos"))


def _mock_flags(monkeypatch, *flags):
    monkeypatch.setattr(precision, "cpu_flags", lambda cpuinfo="/proc/cpuinfo": frozenset(flags))


def _train(data, out, *extra):
    cfg = apply_overrides(Config(), overrides(data, out, "train.epochs=1", *extra))
    train(cfg.validate("test"))
    return load_state_file(out / "last.safetensors")


@pytest.mark.timeout(600)
def test_train_and_test_resolve_auto_and_record_it(data, tmp_path, monkeypatch, capsys):
    """With the bf16 flag mocked, ``train.amp: auto`` trains exactly as ``train.amp=bf16``
    (bit for bit) and says so in the log, config.yaml, metrics.jsonl, the state file and
    ``tanet test``'s results.json; without it, exactly as ``train.amp=off``."""
    _mock_flags(monkeypatch, "avx512_bf16", "avx512f")
    auto = _train(data, tmp_path / "auto")
    assert "precision bf16 (train.amp auto: this CPU has avx512_bf16; train.amp off for fp32)" \
        in capsys.readouterr().err
    bf16 = _train(data, tmp_path / "bf16", "train.amp=bf16")
    fp32 = _train(data, tmp_path / "fp32", "train.amp=off")
    assert all(torch.equal(auto[k], bf16[k]) for k in auto)
    assert not all(torch.equal(auto[k], fp32[k]) for k in auto)  # bf16 really ran
    # autocast: weights, BatchNorm statistics and the optimiser's state stay fp32
    assert {v.dtype for v in auto.values()} <= {torch.float32, torch.int64}
    momentum = torch.load(tmp_path / "auto" / "last.state.pt", weights_only=True)["optimizer"]
    assert {s["momentum_buffer"].dtype for s in momentum["state"].values()} == {torch.float32}
    out = tmp_path / "auto"
    assert "  amp: auto  # resolved: bf16 (this CPU has avx512_bf16)\n" in \
        (out / "config.yaml").read_text()
    assert load_config(out / "config.yaml").train.amp == "auto"  # the comment reads back as auto
    assert json.loads((out / "metrics.jsonl").read_text())["precision"] == "bf16"
    assert torch.load(out / "last.state.pt", weights_only=True)["precision"] == "bf16"
    res = run_test(out / "last.safetensors", out=tmp_path / "t", quiet=True)
    saved = json.loads((tmp_path / "t" / "results.json").read_text())
    assert (saved["amp"], saved["precision"]) == ("auto", "bf16") == (res["amp"],
                                                                        res["precision"])

    _mock_flags(monkeypatch, "avx2", "avx512f", "avx512_vnni")  # AVX-512 without bf16
    plain = _train(data, tmp_path / "plain")
    assert all(torch.equal(plain[k], fp32[k]) for k in plain)
    assert json.loads((tmp_path / "plain" / "metrics.jsonl").read_text())["precision"] == "fp32"
    assert "resolved: fp32 (this CPU has neither avx512_bf16 nor amx_bf16)" in \
        (tmp_path / "plain" / "config.yaml").read_text()
    res = run_test(tmp_path / "plain" / "last.safetensors", out=tmp_path / "t2", quiet=True)
    assert res["precision"] == "fp32"


def test_resume_in_another_precision_is_reported(data, tmp_path, monkeypatch, capsys):
    """A run started in bf16 and resumed where auto means fp32 continues, with a warning."""
    _mock_flags(monkeypatch, "avx512_bf16")
    out = tmp_path / "run"
    _train(data, out)
    _mock_flags(monkeypatch)
    capsys.readouterr()
    cfg = apply_overrides(Config(), overrides(data, out, "train.epochs=2"))
    train(cfg.validate("test"), resume=True, quiet=True)
    err = capsys.readouterr().err
    assert "trained in bf16 so far, continuing in fp32" in err and "set train.amp" in err


def test_predict_and_extract_resolve_auto(data, tmp_path, monkeypatch, capsys):
    """Predictor's default is auto: a bf16 copy of the model where the flags say so (the same
    probabilities as amp="bf16"), fp32 elsewhere; the CLI prints the choice once, on stderr."""
    from tanet.apps.accel import Prepared
    from tanet.apps.extract import load_features
    from tanet.apps.predict import Predictor
    from tanet.cli import main
    from tanet.testing.tiny import tiny_checkpoint

    ckpt, _ = tiny_checkpoint(tmp_path / "tiny.safetensors", ["a", "b", "c"], fc_std=0.05)
    video = next((data / "train" / "left").glob("*.mp4"))
    _mock_flags(monkeypatch, "amx_bf16")
    auto = Predictor(ckpt)
    assert auto.precision.amp == "bf16" and isinstance(auto.backend.forward, Prepared)
    assert auto.backend.forward.dtype == torch.bfloat16
    same = Predictor(ckpt, amp="bf16").predict(video).probs
    assert np.array_equal(auto.predict(video).probs, same)
    fp32 = Predictor(ckpt, amp="off")
    assert fp32.precision.name == "fp32" and fp32.backend.forward is fp32.backend.model
    assert not np.array_equal(fp32.predict(video).probs, same)
    capsys.readouterr()
    assert main(["predict", str(data / "train"), "--checkpoint", str(ckpt), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and len(out.splitlines()) == 12  # --quiet: the results only
    assert main(["predict", str(video), "--checkpoint", str(ckpt)]) == 0
    err = capsys.readouterr().err
    assert err.count("precision bf16 (--amp auto: this CPU has amx_bf16; --amp off for fp32)") \
        == 1
    assert main(["extract", str(data / "train"), "--checkpoint", str(ckpt), "--out",
                 str(tmp_path / "f.npz")]) == 0
    assert "tanet extract: precision bf16" in capsys.readouterr().err
    assert load_features(tmp_path / "f.npz")["meta"]["precision"] == "bf16"
    _mock_flags(monkeypatch)
    assert Predictor(ckpt).precision.name == "fp32"


@pytest.mark.timeout(600)
def test_bf16_predict_agrees_with_fp32_on_a_trained_model(tmp_path):
    """bf16 prediction (the bf16 model copy ``amp: auto`` runs on a bf16 CPU) gives fp32's top-1
    on >= 99 % of 60 validation videos of a model trained here (12 epochs, top-1 well above
    chance), and probabilities within a few hundredths."""
    from tanet.apps.predict import Predictor
    from tanet.apps.quantize import calibration_videos, compare

    data = make_videos(tmp_path / "videos", per_class=10, val_per_class=20, seed=4)
    cfg = apply_overrides(Config(), overrides(
        data, tmp_path / "run", "train.epochs=12", "train.amp=off", "train.lr=0.003",
        "train.optimizer=adamw", "train.batch_size=6", "train.eval_every=12"))
    train(cfg.validate("test"), quiet=True)
    ckpt = tmp_path / "run" / "last.safetensors"
    fp32 = Predictor(ckpt, amp="off")
    videos, labels = calibration_videos(data / "val.txt", class_names=fp32.class_names)
    r = compare(fp32, Predictor(ckpt, amp="bf16"), videos, labels)
    assert r["videos"] == 60 and r["top1_fp32"] >= 0.6  # trained: chance is 1/3
    assert r["agreement"] >= 0.99 and r["max_abs_dprob"] < 0.05, r
