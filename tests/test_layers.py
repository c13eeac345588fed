"""Generated-kernel convolutions: shapes, parameter counts, initialisation, sigma bounds, caching, learning."""


import pytest
import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, ResidualUnit
from monai.networks.layers.factories import Conv
from torch import nn

import monai_hyperconv  # noqa: F401  (registers the factory names)
from monai_hyperconv.layers import (
    AdaptiveConv,
    AdaptiveConv2d,
    GeneratedConv,
    HyperConv,
    HyperConv1d,
    HyperConv2d,
    HyperConv3d,
    get_conv_type,
    hyperconv_num_params,
)

CLASSES = [HyperConv, AdaptiveConv]


def _plain(d, *args, **kwargs):
    return {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[d](*args, **kwargs)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=3, stride=1, padding=1),
        dict(kernel_size=5, stride=2, padding=0),
        dict(kernel_size=3, stride=1, padding=2, dilation=2),
        dict(kernel_size=3, stride=1, padding="same", groups=2),
        dict(kernel_size=3, stride=1, padding="same", dilation=3),
        dict(kernel_size=5, stride=2, padding=1, bias=False),
    ],
)
def test_matches_functional_conv_with_generated_weight(cls, d, kw):
    """Shape equals nn.ConvNd's, and the output is exactly F.convNd with the generated kernel."""
    torch.manual_seed(0)
    size = (11, 9, 7)[:d]
    x = torch.randn(2, 4, *size)
    layer = cls(d, 4, 6, **kw)
    ref_conv = _plain(d, 4, 6, **kw)
    with torch.no_grad():
        ref_conv.weight.copy_(layer.weight)
        if layer.bias is not None:
            layer.bias.normal_()
            ref_conv.bias.copy_(layer.bias)
    y = layer(x)
    assert y.shape == ref_conv(x).shape
    torch.testing.assert_close(y, ref_conv(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", CLASSES)
def test_non_square_kernel_and_padding_modes(cls):
    x = torch.randn(1, 2, 10, 12)
    for mode in ("reflect", "replicate", "circular"):
        layer = cls(2, 2, 3, kernel_size=(3, 5), padding=(1, 2), padding_mode=mode)
        ref = nn.Conv2d(2, 3, (3, 5), padding=(1, 2), padding_mode=mode)
        with torch.no_grad():
            ref.weight.copy_(layer.weight)
            ref.bias.copy_(layer.bias)
        torch.testing.assert_close(layer(x), ref(x))


@pytest.mark.parametrize("cls", CLASSES)
def test_transposed_matches_conv_transpose(cls):
    x = torch.randn(2, 4, 6, 5)
    layer = cls(2, 4, 6, kernel_size=3, stride=2, padding=1, output_padding=1, groups=2, transposed=True)
    ref = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
    assert tuple(ref.weight.shape) == layer.weight_shape
    with torch.no_grad():
        ref.weight.copy_(layer.weight)
        ref.bias.copy_(layer.bias)
    torch.testing.assert_close(layer(x), ref(x))


@pytest.mark.parametrize("n_l", [1, 2, 4, 8])
@pytest.mark.parametrize("groups", [1, 2])
def test_hyperconv_parameter_count_is_eq3_and_kernel_size_independent(n_l, groups):
    c_in, c_out = 8, 6
    counts = set()
    for k in (3, 5, 7, 9):
        layer = HyperConv(2, c_in, c_out, kernel_size=k, n_l=n_l, groups=groups)
        n = sum(p.numel() for p in layer.parameters())
        # Eq. 3 written out: widths 2 -> 16 -> 16 -> N_L, then (N_L + 1) * c_in/groups * c_out, + c_out bias
        eq3 = (n_l + 1) * (c_in // groups) * c_out + (2 + 1) * 16 + (16 + 1) * 16 + (16 + 1) * n_l
        assert n == eq3 + c_out
        assert n == hyperconv_num_params(c_in, c_out, n_l=n_l, groups=groups)
        counts.add(n)
    assert len(counts) == 1
    # the reference notes' figure for N_L = 4: 388 + 5 c_in c_out
    assert hyperconv_num_params(32, 32, n_l=4, bias=False) == 388 + 5 * 32 * 32


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("k", [3, 5, 7, 9])
def test_hyperconv_initial_variance_matches_kaiming(d, k):
    torch.manual_seed(d * 10 + k)
    layer = HyperConv(d, 16, 16, kernel_size=k)
    target = 2.0 / (16 * k**d)  # He/Kaiming-normal conv of the same fan-in
    ratio = layer.weight.detach().var().item() / target
    assert 0.8 <= ratio <= 1.2, ratio


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("k", [3, 5, 7, 9])
def test_adaptive_initial_variance_near_kaiming(d, k):
    torch.manual_seed(d * 10 + k)
    layer = AdaptiveConv(d, 16, 16, kernel_size=k)
    # He-uniform weights times an RMS-1 envelope: the same second moment as the weights
    target = 2.0 / (16 * k**d)
    ratio = layer.weight.detach().pow(2).mean().item() / target
    assert 0.8 <= ratio <= 1.2, ratio


def test_hyperconv_layout_is_official_hwio():
    """Output column j of the hyper-network is (i * c_out + o), as view(k,k,c_in,c_out).permute(3,2,0,1)."""
    layer = HyperConv(2, 3, 5, kernel_size=3)
    flat = layer.kernel_columns()  # (9, 15)
    expected = flat.view(3, 3, 3, 5).permute(3, 2, 0, 1)
    torch.testing.assert_close(layer.weight, expected)


def test_hyperconv_coordinates_are_centred_integer_offsets_in_a_buffer():
    layer = HyperConv(2, 1, 1, kernel_size=(3, 5))
    assert "coords" in dict(layer.named_buffers())
    assert "coords" not in layer.state_dict()  # a constant: recomputed, never stored
    assert layer.coords.shape == (15, 2)
    assert set(layer.coords[:, 0].tolist()) == {-1.0, 0.0, 1.0}
    assert set(layer.coords[:, 1].tolist()) == {-2.0, -1.0, 0.0, 1.0, 2.0}
    assert torch.equal(layer.coords[7], torch.zeros(2))  # centre tap at the origin


@pytest.mark.parametrize("cls", CLASSES)
def test_gradients_reach_every_parameter(cls):
    layer = cls(2, 3, 4, kernel_size=5, padding=2)
    layer(torch.randn(2, 3, 8, 8)).pow(2).mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_adaptive_envelope_normalised_rms_one_and_sigma_init():
    layer = AdaptiveConv(2, 3, 8, kernel_size=7)
    torch.testing.assert_close(layer.sigma.detach(), torch.linspace(0.1, 0.5, 8))
    u = layer.envelope()
    assert u.shape == (8, 7, 7)
    torch.testing.assert_close(u.pow(2).mean(dim=(1, 2)), torch.ones(8))
    # centre is the maximum of every envelope, and the envelope is radially decreasing
    assert torch.all(u[:, 3, 3] >= u.flatten(1).max(dim=1).values - 1e-6)
    # Eq. 21 check against the definition: exp(-|g-mu|^2/(2 s^2 + 1e-8)), normalised to RMS 1
    g = torch.arange(7.0) / 6
    gx, gy = torch.meshgrid(g, g, indexing="ij")
    s = layer.sigma.detach().clamp(1 / 7, 7)[5]
    raw = torch.exp(-((gx - 0.5) ** 2 + (gy - 0.5) ** 2) / (2 * s**2 + 1e-8))
    torch.testing.assert_close(u[5], raw / raw.pow(2).mean().sqrt())


def test_adaptive_sigma_stays_in_bounds_without_callback():
    torch.manual_seed(0)
    layer = AdaptiveConv(2, 2, 4, kernel_size=5, padding=2)
    lo, hi = 1 / 5, 5.0
    opt = torch.optim.Adam(layer.parameters(), lr=1.0)  # a huge step size for sigma in [0.2, 5]
    x = torch.randn(2, 2, 8, 8)
    seen = set()
    for step in range(60):
        # a bounded task loss plus a term that pushes sigma hard up (first third), then hard down
        loss = F.mse_loss(layer(x), x[:, :1].expand(-1, 4, -1, -1)) + layer.sigma.sum() * (-50 if step < 20 else 50)
        opt.zero_grad()
        loss.backward()
        opt.step()
        s = layer.sigma.detach()
        assert torch.all(s >= lo - 1e-6) and torch.all(s <= hi + 1e-6), s
        seen.update(round(v, 5) for v in s.tolist())
    assert torch.isfinite(layer.weight).all()
    # both bounds were actually reached, so the projection (not luck) kept sigma inside
    assert round(hi, 5) in seen and round(lo, 5) in seen


def test_adaptive_sigma_bound_also_holds_with_adam_and_in_forward():
    layer = AdaptiveConv(2, 1, 2, kernel_size=3)
    with torch.no_grad():
        layer.sigma.fill_(100.0)  # set out of range by hand: forward still uses the clamped value
    u = layer.envelope()
    ref = AdaptiveConv(2, 1, 2, kernel_size=3)
    with torch.no_grad():
        ref.sigma.fill_(3.0)
    torch.testing.assert_close(u, ref.envelope())
    opt = torch.optim.Adam(layer.parameters(), lr=1.0)
    layer(torch.randn(1, 1, 5, 5)).sum().backward()
    opt.step()
    assert layer.sigma.detach().max() <= 3.0 + 1e-6


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("name,cls", [("HYPER", HyperConv), ("ADAPTIVE", AdaptiveConv)])
def test_registered_in_monai_conv_factory(d, name, cls):
    ctor = Conv[name, d]
    assert issubclass(ctor, cls) and issubclass(ctor, GeneratedConv)
    assert Conv[name.lower(), d] is ctor
    # exactly the call monai.networks.blocks.Convolution makes
    layer = ctor(3, 5, kernel_size=3, stride=1, padding=1, dilation=1, groups=1, bias=True)
    assert layer(torch.randn(1, 3, *(6,) * d)).shape == (1, 5, *(6,) * d)
    # and the positional call ResidualUnit makes for its residual path
    res = ctor(3, 5, 3, 2, 1, bias=True)
    assert res(torch.randn(1, 3, *(6,) * d)).shape == (1, 5, *(3,) * d)


def test_dim_variants_are_the_registered_classes():
    assert Conv["HYPER", 1] is HyperConv1d and Conv["HYPER", 2] is HyperConv2d and Conv["HYPER", 3] is HyperConv3d
    assert Conv["ADAPTIVE", 2] is AdaptiveConv2d


def test_monai_blocks_run_with_generated_convs_after_convert():
    from monai_hyperconv import convert

    block = nn.Sequential(Convolution(2, 3, 8, kernel_size=5), ResidualUnit(2, 8, 8, kernel_size=3, subunits=2))
    x = torch.randn(2, 3, 16, 16)
    y0 = block(x)
    convert(block, conv="hyper")
    kinds = [type(m).__name__ for m in block.modules() if isinstance(m, GeneratedConv)]
    assert kinds.count("HyperConv2d") == 3  # Convolution's conv + two subunit convs (residual is 1x1 identity)
    assert block(x).shape == y0.shape


def test_get_conv_type_resolves_specs():
    assert get_conv_type("conv", 2) is nn.Conv2d
    assert get_conv_type("HYPER", 3) is HyperConv3d
    ctor = get_conv_type(("hyper", {"n_l": 8}), 2)
    layer = ctor(2, 3, kernel_size=5)
    assert isinstance(layer, HyperConv2d) and layer.n_l == 8
    layer = get_conv_type(("adaptive", {"sigma_init": (0.2, 0.3)}), 1)(2, 4, kernel_size=3)
    torch.testing.assert_close(layer.sigma.detach(), torch.linspace(0.2, 0.3, 4))
    with pytest.raises(ValueError, match="Unknown conv type 'bogus'"):
        get_conv_type("bogus", 2)
    with pytest.raises(ValueError, match="spatial_dims"):
        get_conv_type("hyper", 4)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(spatial_dims=4, in_channels=1, out_channels=1), "spatial_dims must be 1, 2 or 3"),
        (dict(spatial_dims=2, in_channels=1, out_channels=1, kernel_size=4), "kernel_size must be odd"),
        (dict(spatial_dims=2, in_channels=1, out_channels=1, kernel_size=(3, 2)), "kernel_size must be odd"),
        (dict(spatial_dims=2, in_channels=1, out_channels=1, n_l=0), "n_l"),
        (dict(spatial_dims=2, in_channels=3, out_channels=4, groups=2), "divisible by groups"),
        (dict(spatial_dims=2, in_channels=0, out_channels=4), "in_channels must be a positive int"),
        (dict(spatial_dims=2, in_channels=1, out_channels=1, padding="full"), "padding must be"),
        (dict(spatial_dims=2, in_channels=1, out_channels=1, stride=2, padding="same"), "padding='same'"),
        (dict(spatial_dims=2, in_channels=1, out_channels=1, kernel_size=(3, 3, 3)), "kernel_size must be an int"),
    ],
)
def test_hyperconv_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HyperConv(**kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(sigma_init=(0.5, 0.1)), "inverted"),
        (dict(sigma_init=(0.0, 0.1)), "positive"),
        (dict(sigma_init=0.3), "pair"),
        (dict(kernel_size=2), "kernel_size must be odd"),
    ],
)
def test_adaptive_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdaptiveConv(2, 1, 2, **kwargs)


def test_bad_input_shape_is_named():
    layer = HyperConv(2, 3, 4)
    with pytest.raises(ValueError, match="expects 3 input channels, got 2"):
        layer(torch.randn(1, 2, 8, 8))
    with pytest.raises(ValueError, match="4-D input"):
        layer(torch.randn(3, 8, 8))


class _Counting(HyperConv):
    calls = 0

    def generate_weight(self):
        type(self).calls += 1
        return super().generate_weight()


def test_kernel_generated_once_per_forward_and_cached_in_no_grad():
    layer = _Counting(2, 2, 3, kernel_size=3, padding=1)
    x = torch.randn(1, 2, 8, 8)
    _Counting.calls = 0
    layer(x).sum().backward()
    assert _Counting.calls == 1  # training forward: exactly once
    layer.eval()
    with torch.no_grad():
        y1 = layer(x)
        y2 = layer(x)
    assert _Counting.calls == 2  # cached across no-grad forwards
    torch.testing.assert_close(y1, y2)
    with torch.no_grad():
        layer.out_layer.bias.add_(1.0)  # an in-place update invalidates the cache
        y3 = layer(x)
    assert _Counting.calls == 3
    assert not torch.allclose(y1, y3)
    layer.load_state_dict(layer.state_dict())
    with torch.no_grad():
        layer(x)
    assert _Counting.calls == 4  # load_state_dict copies in place: regenerated


@pytest.mark.parametrize("cls", CLASSES)
def test_autocast_forward_is_finite(cls):
    layer = cls(2, 3, 4, kernel_size=5, padding=2)
    x = torch.randn(2, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert torch.isfinite(y).all()
    y.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


def _filters():
    g = torch.arange(9.0) - 4
    gx, gy = torch.meshgrid(g, g, indexing="ij")
    blur = torch.exp(-(gx**2 + gy**2) / (2 * 1.5**2))
    sobel = torch.zeros(9, 9)
    sobel[3:6, 3:6] = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 4
    return {"blur": (blur / blur.sum()).view(1, 1, 9, 9), "sobel": sobel.view(1, 1, 9, 9)}


@pytest.fixture
def one_thread():
    # tiny ops gain nothing from threads, and under a loaded machine OpenMP barriers make them crawl
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("filt", ["blur", "sobel"])
@pytest.mark.parametrize("cls,kw,tol", [(AdaptiveConv, {}, {"blur": 0.01, "sobel": 0.01}),
                                        (HyperConv, {"n_l": 8}, {"blur": 0.1, "sobel": 0.03})])
def test_single_9x9_layer_learns_image_filter(filt, cls, kw, tol, one_thread):
    """Tek et al. 2020, Fig 4: one 9x9 generated conv learns a Gaussian blur / Sobel filter from image pairs.

    Relative MSE (MSE / Var(target)); predicting zero scores 1.0. The hyper-conv's smooth,
    low-capacity kernel space fits the blur less tightly from random init (~0.08). With equalised
    updates a 1 -> 1 hyper-conv's kernel moves per Adam step as a plain conv's does, and reshaping
    its hyper-network's basis into a Sobel filter needs a larger step (lr 0.1) than the envelope.
    """
    torch.manual_seed(0)
    target = _filters()[filt]
    layer = cls(2, 1, 1, kernel_size=9, padding=4, **kw)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-1 if cls is HyperConv else 1e-2)
    for _ in range(400):
        x = torch.randn(4, 1, 24, 24)
        loss = F.mse_loss(layer(x), F.conv2d(x, target, padding=4))
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.randn(8, 1, 32, 32)
    y = F.conv2d(x, target, padding=4)
    with torch.no_grad():
        rel = (F.mse_loss(layer(x), y) / y.var()).item()
    assert rel < tol[filt], rel


def test_sigma_projection_reaches_deep_copies_and_skips_foreign_optimisers():
    import copy

    from monai_hyperconv.layers import adaptive as adaptive_mod

    layer = AdaptiveConv(2, 1, 2, kernel_size=3)
    clone = copy.deepcopy(layer)
    opt = torch.optim.SGD(clone.parameters(), lr=1.0)
    clone(torch.randn(1, 1, 5, 5)).sum().backward()
    with torch.no_grad():
        clone.sigma.grad.fill_(-100.0)  # one step pushes sigma to ~100, far above the bound 3
    opt.step()
    assert clone.sigma.detach().max().item() == pytest.approx(3.0)
    # an optimiser that does not own a layer's sigma leaves it alone
    with torch.no_grad():
        layer.sigma.fill_(50.0)
    other = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    other.step()
    assert layer.sigma.detach().max().item() == 50.0
    assert adaptive_mod._SIGMA_OWNERS[id(layer.sigma)] is layer


@pytest.mark.parametrize("k", [3, 5, 7, 9])
@pytest.mark.parametrize("n_l", [2, 4, 8])
def test_hyperconv_update_size_comparable_to_plain_conv(k, n_l, one_thread):
    """With equalised updates an Adam step moves a generated kernel within 1/2..2x of a plain conv's.

    The papers' parametrisation (equalize_updates=False) moves it 2-12x further at 8 channels,
    more with larger kernels and N_L (docs/training.md); that case is checked to exceed the bound.
    """
    from monai_hyperconv.layers.diagnostics import kernel_step_per_lr

    seed = k * 10 + n_l
    plain = kernel_step_per_lr(lambda: nn.Conv2d(8, 8, k, padding=k // 2), 8, seed=seed)
    assert abs(plain - 1.0) < 0.05  # Adam: every entry moves by ~lr per step
    eq = kernel_step_per_lr(lambda: HyperConv(2, 8, 8, kernel_size=k, padding=k // 2, n_l=n_l), 8, seed=seed)
    assert 0.5 <= eq / plain <= 2.0, eq / plain
    official = kernel_step_per_lr(lambda: HyperConv(2, 8, 8, kernel_size=k, padding=k // 2, n_l=n_l,
                                                    equalize_updates=False), 8, seed=seed)
    assert official / plain > 2.0, official / plain


@pytest.mark.parametrize("d,k,n_l", [(1, 7, 2), (2, 5, 4), (3, 3, 8)])
def test_hyperconv_equalised_gains_split_sensitivity_and_keep_initial_kernel(d, k, n_l):
    torch.manual_seed(3)
    eq = HyperConv(d, 6, 4, kernel_size=k, n_l=n_l)
    torch.manual_seed(3)
    official = HyperConv(d, 6, 4, kernel_size=k, n_l=n_l, equalize_updates=False)
    # the reparametrisation changes the optimiser's geometry, not the function at init
    torch.testing.assert_close(eq.weight, official.weight, rtol=1e-5, atol=1e-7)
    assert torch.equal(official.param_gains, torch.ones(3))
    s = eq.update_sensitivity()
    torch.testing.assert_close(torch.tensor(s), torch.full((3,), 3 ** -0.5), rtol=1e-4, atol=0)
    assert "equalize_updates=False" in repr(official) and "equalize_updates" not in repr(eq)


def test_hyperconv_param_gains_travel_with_the_state_dict():
    torch.manual_seed(0)
    a = HyperConv(2, 4, 4, kernel_size=5)
    torch.manual_seed(1)
    b = HyperConv(2, 4, 4, kernel_size=5)
    assert not torch.equal(a.param_gains, b.param_gains)  # gains depend on the random init
    assert "param_gains" in a.state_dict()
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.weight, b.weight)


def test_grad_norms_by_group_sums_each_group():
    from monai_hyperconv.layers.diagnostics import grad_norms_by_group

    layer = HyperConv(2, 3, 4, kernel_size=3, padding=1)
    layer(torch.randn(2, 3, 8, 8)).pow(2).mean().backward()
    g = grad_norms_by_group(layer)
    assert set(g) == {"hidden", "out_weight", "out_bias", "bias"}
    hidden = torch.cat([p.grad.flatten() for p in layer.hidden_net.parameters()]).norm().item()
    assert g["hidden"] == pytest.approx(hidden, rel=1e-5)
    assert g["out_weight"] == pytest.approx(layer.out_layer.weight.grad.norm().item(), rel=1e-5)
    assert g["bias"] == pytest.approx(layer.bias.grad.norm().item(), rel=1e-5)
