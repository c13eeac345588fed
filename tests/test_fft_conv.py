"""The FFT path of generated convolutions: equal to the direct path, chosen sensibly, and bakeable/exportable."""

import copy
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from torch import nn

from monai_hyperconv import bake
from monai_hyperconv.layers import AdaptiveConv, FFTConvNd, GeneratedConv, HyperConv, get_conv_type
from monai_hyperconv.layers.fft import direct_conv, fft_conv, fft_is_faster, next_fast_len


def _close(a, b, rel=1e-4):
    """Relative to the reference's scale (FFT rounding is spread evenly over all outputs)."""
    scale = b.abs().max().clamp_min(1e-12)
    assert (a - b).abs().max() <= rel * scale, float((a - b).abs().max() / scale)


class PlainGenerated(GeneratedConv):
    """A generated conv whose 'generator' is a stored tensor: allows even kernel sizes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, odd_kernel=False, **kwargs)
        self.w = nn.Parameter(torch.randn(self.weight_shape) / self.fan_in**0.5)

    def generate_weight(self):
        return self.w * 1.0


def _case(d, k, dil, groups, pad, mode):
    """Input, kernel and bias (float64) for one configuration."""
    n = (9, 8, 7)[:d]
    x = torch.randn(2, 4, *n, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4 // groups, *([k] * d), dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    return x, w, b


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("k", [3, 4])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_functional_fft_equals_direct(d, k, mode):
    torch.manual_seed(d * 10 + k)
    for dil, groups, pad in ((1, 1, "same"), (2, 2, "same"), (1, 2, 1), (2, 1, [2, 0, 1][:d]), (1, 1, "valid")):
        x, w, b = _case(d, k, dil, groups, pad, mode)
        ref = direct_conv(x, w, b, pad, dil, groups, mode)
        out = fft_conv(x, w, b, pad, dil, groups, mode)
        assert out.shape == ref.shape
        _close(out, ref, 1e-9)
        g = torch.randn_like(ref)
        gr = torch.autograd.grad(ref, (x, w, b), g)
        go = torch.autograd.grad(out, (x, w, b), g)
        for a, r in zip(go, gr):
            _close(a, r, 1e-9)


def test_functional_asymmetric_and_large_padding():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 10, 6, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 5, dtype=torch.float64)
    for pad in ([0, 4, 5, 1], [3, 3, 0, 0], [7, 2, 1, 6]):  # F.pad order, some beyond k - 1
        ref = F.conv2d(F.pad(x, pad), w)
        _close(fft_conv(x, w, None, pad), ref, 1e-9)
    # kernel wider than the input along one axis
    w2 = torch.randn(3, 2, 9, 9, dtype=torch.float64)
    _close(fft_conv(x, w2, None, "same"), F.conv2d(x, w2, padding="same"), 1e-9)


def test_next_fast_len():
    assert [next_fast_len(n) for n in (1, 11, 13, 97, 104, 128)] == [1, 12, 14, 98, 105, 128]


def _pair(layer_cls, *args, **kwargs):
    torch.manual_seed(0)
    direct = layer_cls(*args, fft=False, **kwargs)
    with torch.no_grad():
        for name, p in direct.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    fast = copy.deepcopy(direct)
    fast.fft = True
    return direct, fast


def _check_layers(direct, fast, x):
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    ref, out = direct(x1), fast(x2)
    assert fast.use_fft(x) and not direct.use_fft(x)
    _close(out, ref)
    g = torch.randn_like(ref)
    ref.backward(g)
    out.backward(g)
    _close(x2.grad, x1.grad)
    for (name, p1), (_, p2) in zip(direct.named_parameters(), fast.named_parameters()):
        if p1.grad is not None:
            _close(p2.grad, p1.grad)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_hyperconv_fft_equals_direct_values_and_generator_grads(d):
    n = (12, 9, 6)[d - 1]
    for kwargs in (dict(kernel_size=5, padding="same"), dict(kernel_size=3, padding=2, dilation=2, groups=2),
                   dict(kernel_size=5, padding="same", padding_mode="reflect", bias=False),
                   dict(kernel_size=3, padding=1, padding_mode="circular"),
                   dict(kernel_size=3, padding=(1,) * d, padding_mode="replicate")):
        direct, fast = _pair(HyperConv, d, 4, 6, **kwargs)
        _check_layers(direct, fast, torch.randn(2, 4, *(n,) * d))


def test_adaptive_and_even_kernel_fft_equals_direct():
    direct, fast = _pair(AdaptiveConv, 2, 2, 4, kernel_size=7, padding="same", padding_mode="reflect")
    _check_layers(direct, fast, torch.randn(1, 2, 10, 11))
    for d in (1, 2, 3):  # even kernels: 'same' puts the extra pixel on the right, as nn.ConvNd
        for kwargs in (dict(kernel_size=4, padding="same"), dict(kernel_size=(2, 4, 6)[:d], padding=1, dilation=2)):
            direct, fast = _pair(PlainGenerated, d, 2, 3, **kwargs)
            _check_layers(direct, fast, torch.randn(2, 2, *(12,) * d))


def test_auto_choice_and_fallbacks():
    x = torch.randn(1, 16, 64, 64)
    assert HyperConv(2, 16, 16, kernel_size=25, padding="same").fft is False  # default: the direct path
    assert not HyperConv(2, 16, 16, kernel_size=25, padding="same").use_fft(x)
    big = HyperConv(2, 16, 16, kernel_size=25, padding="same", fft="auto")
    assert big.fft == "auto" and big.use_fft(x)
    assert not HyperConv(2, 16, 16, kernel_size=3, padding=1).use_fft(x)  # tiny kernel: direct
    for kwargs in (dict(stride=2), dict(transposed=True)):
        layer = HyperConv(2, 16, 16, kernel_size=17, padding=8, fft=True, **kwargs)
        assert not layer.use_fft(x)  # FFT does not apply: direct path even with fft=True
        ref = copy.deepcopy(layer)
        ref.fft = False
        with torch.no_grad():
            assert torch.equal(layer(x[..., :20, :20]), ref(x[..., :20, :20]))
    assert not HyperConv(2, 16, 16, kernel_size=17, padding="same", fft=False).use_fft(x)
    # the cost model grows with the kernel: once FFT wins at some size it wins at every larger one
    wins = [fft_is_faster((1, 32, 96, 96), 32, (k, k), (1, 1), "same") for k in range(3, 31, 2)]
    assert wins == sorted(wins) and wins[-1] and not wins[0]
    with pytest.raises(ValueError, match="fft"):
        HyperConv(2, 1, 1, kernel_size=3, fft="yes")


def test_fft_option_through_factories():
    assert get_conv_type(("hyper", {"fft": False}), 2)(2, 2, kernel_size=3).fft is False
    assert Conv["HYPER", 3](2, 2, kernel_size=3, fft=True).fft is True
    assert get_conv_type("adaptive", 1)(2, 2, kernel_size=3).fft is False  # the default: direct
    assert get_conv_type(("adaptive", {"fft": "auto"}), 1)(2, 2, kernel_size=3).fft == "auto"


def test_inference_spectrum_cache_follows_parameters():
    direct, fast = _pair(HyperConv, 2, 3, 3, kernel_size=9, padding="same")
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        _close(fast(x), direct(x))
        assert fast._spec_cache is not None
        key = fast._spec_cache[0]
        _close(fast(x), direct(x))
        for layer in (direct, fast):
            layer.out_layer.weight.mul_(-2.0)  # in place: the caches must notice
        _close(fast(x), direct(x))
        assert fast._spec_cache[0] != key


def test_autocast_runs_fft_in_float32():
    direct, fast = _pair(HyperConv, 2, 2, 2, kernel_size=9, padding="same")
    x = torch.randn(1, 2, 16, 16)
    with torch.no_grad():
        ref = direct(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fast(x)
    assert out.dtype == torch.bfloat16
    _close(out.float(), ref, 2e-2)  # bf16 output rounding only


def _net():
    torch.manual_seed(0)
    return nn.Sequential(
        HyperConv(2, 2, 4, kernel_size=9, padding="same"),
        nn.ReLU(),
        HyperConv(2, 4, 4, kernel_size=3, padding=1),
        HyperConv(2, 4, 3, kernel_size=7, padding=3, padding_mode="reflect", groups=1, dilation=1),
        HyperConv(2, 3, 3, kernel_size=9, padding=4, stride=2),
    )


def test_bake_fft_options():
    net = _net().eval()
    x = torch.randn(1, 2, 12, 12)
    kinds = lambda m: [type(c).__name__ for c in m if not isinstance(c, nn.ReLU)]  # noqa: E731
    assert kinds(bake(net)) == ["Conv2d"] * 4  # default: today's behaviour
    assert kinds(bake(net, fft="auto")) == ["FFTConvNd", "Conv2d", "FFTConvNd", "Conv2d"]
    assert kinds(bake(net, fft=True)) == ["FFTConvNd", "FFTConvNd", "FFTConvNd", "Conv2d"]
    with torch.no_grad():
        ref = net(x)
        for fft in ("auto", True):
            baked = bake(net, fft=fft)
            assert baked[0].use_fft(x) or fft == "auto"
            _close(baked(x), ref)
    with pytest.raises(ValueError, match="fft"):
        bake(net, fft="always")


def test_baked_fft_module_exports_and_runs_without_package(tmp_path):
    net = _net().eval()
    baked = bake(net, fft=True).eval()
    x = torch.randn(1, 2, 12, 12)
    with torch.no_grad():
        ref = net(x)
    ep = torch.export.export(baked, (x,))
    path = tmp_path / "baked.pt2"
    torch.export.save(ep, str(path))
    torch.save({"x": x, "ref": ref}, tmp_path / "io.pt")
    code = textwrap.dedent(f"""
        import sys
        sys.modules["monai_hyperconv"] = None  # importing it now fails
        import torch
        io = torch.load({str(tmp_path / 'io.pt')!r})
        ep = torch.export.load({str(path)!r})
        out = ep.module()(io["x"])
        err = float((out - io["ref"]).abs().max() / io["ref"].abs().max())
        assert err < 1e-4, err
        print("ok", err)
    """)
    # generous timeout: a few seconds on an idle machine, minutes on a saturated one (importing torch)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0 and res.stdout.startswith("ok"), res.stderr[-2000:]


def test_fftconvnd_direct_path_and_validation():
    w = torch.randn(3, 2, 5, 5)
    m = FFTConvNd(w, torch.randn(3), padding=2, fft=False)
    x = torch.randn(1, 2, 8, 8)
    assert not m.use_fft(x)
    _close(m(x), F.conv2d(x, m.weight, m.bias, padding=2))
    m.fft = True
    _close(m(x), F.conv2d(x, m.weight, m.bias, padding=2))
    with pytest.raises(ValueError, match="padding_mode"):
        FFTConvNd(w, padding_mode="mirror")
