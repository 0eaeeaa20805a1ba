"""TAM: the fast formulation equals the authors' reference (outputs and every gradient)."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from tanet.models.tam import TAM


def _authors_tam_forward(m: TAM, x: torch.Tensor) -> torch.Tensor:
    """The authors' ops/temporal_module.py forward, written out independently of tanet's code."""
    nt, c, h, w = x.size()
    t = m.num_segments
    n = nt // t
    new_x = x.view(n, t, c, h, w).permute(0, 2, 1, 3, 4).contiguous()
    out = F.adaptive_avg_pool2d(new_x.view(n * c, t, h, w), (1, 1)).view(-1, t)
    conv_kernel = m.G(out.view(-1, t)).view(n * c, 1, -1, 1)
    local_activation = m.L(out.view(n, c, t)).view(n, c, t, 1, 1)
    new_x = new_x * local_activation
    out = F.conv2d(new_x.view(1, n * c, t, h * w), conv_kernel, bias=None, stride=(1, 1),
                   padding=(m.kernel_size // 2, 0), groups=n * c)
    return out.view(n, c, t, h, w).permute(0, 2, 1, 3, 4).contiguous().view(nt, c, h, w)


def _pair(t, k, seed=0, channels=32):
    torch.manual_seed(seed)
    fast = TAM(channels, t, kernel_size=k)
    ref = TAM(channels, t, kernel_size=k, formulation="reference")
    # random BN affine/statistics so eval mode is not the identity
    for bn in (fast.G[1], fast.L[1]):
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    ref.load_state_dict(fast.state_dict())
    return fast, ref


def _run(m, x, g, reduce):
    x = x.detach().clone().requires_grad_()
    y = m(x)
    loss = (y * g).mean() if reduce == "mean" else (y * g).sum()
    loss.backward()
    grads = {"input": x.grad}
    grads.update({n: p.grad for n, p in m.named_parameters()})
    return y.detach(), grads


CASES = list(itertools.product([4, 8, 16], [3, 5], [True, False]))


@pytest.mark.parametrize("t,k,train", CASES)
def test_fast_matches_reference(t, k, train):
    fast, ref = _pair(t, k)
    fast.train(train)
    ref.train(train)
    torch.manual_seed(1)
    x = torch.randn(3 * t, 32, 7, 9)
    g = torch.randn(3 * t, 32, 7, 9)
    # (a) a mean-reduced loss (gradients at training scale): max abs diff <= 1e-5 everywhere
    y_f, g_f = _run(fast, x, g, "mean")
    y_r, g_r = _run(ref, x, g, "mean")
    assert (y_f - y_r).abs().max() <= 1e-5
    for name in g_r:
        assert (g_f[name] - g_r[name]).abs().max() <= 1e-5, name
    # (b) a sum loss (gradients up to ~1e2): float32 rounding only, relative to the magnitude
    _, g_f = _run(fast, x, g, "sum")
    _, g_r = _run(ref, x, g, "sum")
    for name in g_r:
        scale = g_r[name].abs().max().clamp_min(1.0)
        assert (g_f[name] - g_r[name]).abs().max() <= 1e-5 * scale * 10, name
    # train-mode BN running statistics are updated identically
    for (n, b1), b2 in zip(fast.named_buffers(), ref.buffers()):
        assert torch.allclose(b1.float(), b2.float(), atol=1e-6), n


@pytest.mark.parametrize("formulation", ["fast", "reference"])
def test_matches_authors_code(formulation):
    fast, _ = _pair(8, 3)
    fast.formulation = formulation
    fast.eval()
    x = torch.randn(16, 32, 5, 5)
    with torch.no_grad():
        assert torch.allclose(fast(x), _authors_tam_forward(fast, x), atol=1e-6)


def test_float64_ground_truth_and_no_grad_path():
    """The fast path (with and without autograd) agrees with a float64 evaluation."""
    fast, ref = _pair(8, 3)
    fast.eval()
    ref64 = TAM(32, 8, formulation="reference").double().eval()
    ref64.load_state_dict(fast.state_dict())
    x = torch.randn(16, 32, 6, 6)
    with torch.no_grad():
        y_nograd = fast(x)
    y_grad = fast(x.clone().requires_grad_())
    y64 = ref64(x.double())
    assert (y_nograd.double() - y64).abs().max() < 1e-6
    assert (y_grad.detach().double() - y64).abs().max() < 1e-6


def test_by_hand_single_channel():
    """Y[t] = sum_k Theta[k] * V[t+k-1] * X[t+k-1] with zero padding, checked element by element."""
    torch.manual_seed(0)
    m = TAM(4, 4).eval()
    x = torch.randn(4, 4, 2, 2)
    with torch.no_grad():
        v, theta = m.branches(x)  # (1, 4, 4), (1, 4, 3)
        y = m(x)
    xs = x.view(1, 4, 4, 2, 2)
    for c in range(4):
        for t in range(4):
            want = torch.zeros(2, 2)
            for k in range(3):
                s = t + k - 1
                if 0 <= s < 4:
                    want += theta[0, c, k] * v[0, c, s] * xs[0, s, c]
            assert torch.allclose(y.view(1, 4, 4, 2, 2)[0, t, c], want, atol=1e-6)


def test_kernel_is_softmax_and_map_in_unit_interval():
    m = TAM(16, 8).eval()
    with torch.no_grad():
        v, theta = m.branches(torch.randn(16, 16, 4, 4))
    assert theta.shape == (2, 16, 3) and v.shape == (2, 16, 8)
    assert torch.allclose(theta.sum(-1), torch.ones(2, 16))
    assert (v > 0).all() and (v < 1).all()


def test_state_dict_keys_are_the_authors():
    keys = set(TAM(64, 8).state_dict())
    assert {k for k in keys if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))} == {
        "G.0.weight", "G.1.weight", "G.1.bias", "G.3.weight",
        "L.0.weight", "L.1.weight", "L.1.bias", "L.3.weight"}
    sd = TAM(64, 8).state_dict()
    assert sd["G.0.weight"].shape == (16, 8) and sd["G.3.weight"].shape == (3, 16)
    assert sd["L.0.weight"].shape == (16, 64, 3) and sd["L.3.weight"].shape == (64, 16, 1)


def test_errors():
    with pytest.raises(ValueError, match="num_segments >= 2"):
        TAM(16, 1)
    m = TAM(16, 8)
    with pytest.raises(ValueError, match="not a multiple of num_segments=8"):
        m(torch.randn(12, 16, 4, 4))
    with pytest.raises(ValueError, match="built for 16 channels"):
        m(torch.randn(8, 32, 4, 4))
    with pytest.raises(ValueError, match="odd"):
        TAM(16, 8, kernel_size=4)
    with pytest.raises(ValueError, match="formulation"):
        TAM(16, 8, formulation="magic")


def test_bf16_autocast_and_channels_last():
    m = TAM(16, 8)
    x = torch.randn(16, 16, 5, 5).to(memory_format=torch.channels_last).requires_grad_()
    y = m(x)
    y.sum().backward()
    ref = TAM(16, 8, formulation="reference")
    ref.load_state_dict(m.state_dict())
    assert torch.allclose(y, ref(x.detach().contiguous()), atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        yb = m(x.bfloat16())
        yb.float().sum().backward()
    assert yb.dtype == torch.bfloat16
    assert (yb.float() - y).abs().max() < 0.1
