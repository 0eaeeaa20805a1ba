"""torch.compile: TAM's custom op keeps the graph whole; compiled training (train.compile=true)
and compiled inference (Predictor(compile=True)) give eager's numbers.

Inductor compiles are slow on a CPU (tens of seconds), so this module compiles tanet_tiny with
Inductor twice (one training run, one predictor) and checks the rest with the ``aot_eager``
backend, which runs the very graphs Inductor would get (Dynamo capture + AOTAutograd, TAM's
backward formula traced) without generating C++.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _engine_data import make_videos, overrides

import tanet
from tanet.config import Config, apply_overrides
from tanet.engine import train
from tanet.models.factory import load_model
from tanet.models.tam import TAM


def test_custom_op_registration():
    """Schema, fake (meta) implementation and registered autograd, checked by torch.library."""
    x = torch.randn(2, 4, 8, 6, requires_grad=True)  # (N, T, C, HW)
    w = torch.rand(2, 4, 8, 3, requires_grad=True)  # (N, T, C, K)
    res = torch.library.opcheck(torch.ops.tanet.banded_temporal_conv.default, (x, w),
                                test_utils=("test_schema", "test_autograd_registration",
                                            "test_faketensor"))
    assert set(res.values()) == {"SUCCESS"}


def _grads(fn, model, x, y):
    model.zero_grad(set_to_none=True)
    logits = fn(x)  # (N, K)
    F.cross_entropy(logits, y).backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_model_compiles_whole_and_matches_eager():
    """fullgraph=True raises on any graph break; forward and every gradient equal eager, and
    the TAM gradients equal the authors' reference formulation's."""
    torch.manual_seed(0)
    model = tanet.create_model("tanet_tiny", num_classes=5, num_segments=4, dropout=0.0).train()
    x, y = torch.randn(3, 4, 3, 32, 32), torch.tensor([0, 3, 4])  # (N, T, C, H, W)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    out_c, g_c = _grads(compiled, model, x, y)
    out_e, g_e = _grads(model, model, x, y)
    assert (out_c - out_e).abs().max() <= 1e-6
    for name in g_e:
        assert (g_c[name] - g_e[name]).abs().max() <= 1e-6 * max(1.0, g_e[name].abs().max()), name
    for m in model.modules():  # same weights, authors' grouped-conv formulation
        if isinstance(m, TAM):
            m.formulation = "reference"
    _, g_r = _grads(model, model, x, y)
    for name in g_r:
        assert (g_c[name] - g_r[name]).abs().max() <= 1e-5 * max(1.0, g_r[name].abs().max()), name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same two-step training run eager and compiled (Inductor), in fp32 (``amp: auto``
    would pick bf16 on a bf16 CPU, where compiled and eager round differently)."""
    from torch._dynamo.utils import counters

    data = make_videos(tmp_path_factory.mktemp("videos"), per_class=2, val_per_class=1)
    out = {}
    for mode in ("eager", "compiled"):
        run = tmp_path_factory.mktemp(mode)
        cfg = apply_overrides(Config(), overrides(data, run, "train.epochs=1",
                                                  "train.batch_size=3", "train.clip_grad=null",
                                                  "train.amp=off",
                                                  f"train.compile={mode == 'compiled'}"))
        counters.clear()
        train(cfg.validate("test"), quiet=True)
        out[mode] = {"dir": run, "breaks": dict(counters["graph_break"]),
                     "graphs": counters["stats"]["unique_graphs"]}
    out["data"] = data
    return out


def test_compiled_training_equals_eager(runs):
    assert runs["compiled"]["graphs"] >= 1 and runs["compiled"]["breaks"] == {}
    a = load_model(runs["eager"]["dir"] / "last.safetensors").state_dict()
    b = load_model(runs["compiled"]["dir"] / "last.safetensors").state_dict()
    for name in a:
        if a[name].is_floating_point():
            assert (a[name] - b[name]).abs().max() <= 1e-5, name


def test_compiled_and_bf16_predictor(runs):
    from tanet.apps.predict import Predictor

    ckpt = runs["eager"]["dir"] / "last.safetensors"
    video = runs["data"] / "val.txt"
    video = runs["data"] / video.read_text().split()[0]
    ref = Predictor(ckpt, amp="off").predict(video).probs
    got = Predictor(ckpt, compile=True, amp="off").predict(video).probs
    assert np.abs(got - ref).max() <= 1e-5
    bf16 = Predictor(ckpt, amp="bf16").predict(video).probs
    assert bf16.argmax() == ref.argmax() and np.abs(bf16 - ref).max() <= 2e-2
