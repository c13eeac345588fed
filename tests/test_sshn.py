"""Scale-space hypernetworks (Gonzalez Ortiz et al. 2023): resizing, the primary UNet, SSHN, materialising, baselines."""

import copy
import threading

import pytest
import torch
from torch import nn

from monai_hyperconv.hypernets import (
    FiLMScaleSpaceUNet, PredictedConv, ScaleSpaceHyperUNet, ScaleSpaceUNet, VariableResize, check_phi,
    fixed_unet, scaled_size, stochastic_unet,
)
from monai_hyperconv.networks import create_network, list_networks

SMALL = dict(channels=4, num_pools=2)


@pytest.fixture(autouse=True)
def _one_thread():
    # the build machine has 2 shared cores: one thread per test process is faster and steadier
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(n)


def _numel(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------------------------------- resize
@pytest.mark.parametrize(
    "size, phi, expected",
    [
        ((32,), 0.5, (16,)),          # even
        ((33,), 0.5, (17,)),          # odd: 16.5 rounds half-up (paper: nearest integer)
        ((7,), 0.5, (4,)),
        ((5,), 0.3, (2,)),            # 1.5 rounds half-up to 2
        ((10,), 0.44, (4,)),
        ((1,), 0.05, (1,)),           # small: never below 1
        ((10,), 0.01, (1,)),          # phi -> 0 extreme
        ((9, 33, 1), 1.0, (9, 33, 1)),  # phi = 1 extreme keeps the size
        ((33, 20, 3), 0.5, (17, 10, 2)),
    ],
)
def test_scaled_size(size, phi, expected):
    assert scaled_size(size, phi) == expected


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.0001, float("nan"), float("inf"), True, "0.5", torch.tensor([0.1, 0.2])])
def test_check_phi_rejects(bad):
    with pytest.raises(ValueError, match="phi"):
        check_phi(bad)


def test_check_phi_accepts():
    assert check_phi(1) == 1.0 and check_phi(torch.tensor(0.25)) == 0.25 and check_phi(1e-6) == 1e-6


def test_variable_resize_sizes_and_identity():
    r2, r3 = VariableResize(2), VariableResize(3)
    x = torch.randn(2, 3, 33, 20)
    assert r2(x, phi=0.5).shape == (2, 3, 17, 10)
    assert r2(x, phi=0.01).shape == (2, 3, 1, 1)
    assert torch.equal(r2(x, phi=1.0), x)  # phi = 1 is the identity
    up = r2(r2(x, phi=0.3), size=(33, 20))
    assert up.shape == x.shape  # back to the skip connection's exact (odd) size
    v = torch.randn(1, 2, 9, 8, 7)
    assert r3(v, phi=0.5).shape == (1, 2, 5, 4, 4)
    const = torch.full((1, 1, 5, 5, 5), 2.5)
    assert torch.allclose(r3(const, size=(11, 8, 13)), torch.full((1, 1, 11, 8, 13), 2.5))  # linear keeps constants
    with pytest.raises(ValueError):
        r2(x)  # neither phi nor size
    with pytest.raises(ValueError, match="phi"):
        r2(x, phi=1.5)


def test_unet_odd_and_tiny_inputs():
    net = ScaleSpaceUNet(2, 1, 3, channels=4, num_pools=4).eval()
    assert net.feature_sizes((33, 20), 0.5) == [(33, 20), (17, 10), (9, 5), (5, 3), (3, 2)]
    for shape in [(1, 1, 33, 20), (2, 1, 5, 3), (1, 1, 1, 1)]:
        for phi in (0.01, 0.37, 1.0):
            assert net(torch.randn(shape), phi).shape == (shape[0], 3, *shape[2:])


# ---------------------------------------------------------------------------------------- phi logic
def test_phi_missing_in_eval_and_invalid_phi():
    sshn = ScaleSpaceHyperUNet(2, 1, 2, **SMALL).eval()
    x = torch.randn(1, 1, 16, 16)
    with pytest.raises(ValueError, match="phi is required"):
        sshn(x)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        sshn(x, phi=0.0)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        sshn(x, phi=1.2)
    stoch = stochastic_unet(2, 1, 2, **SMALL).eval()
    with pytest.raises(ValueError, match="phi is required"):
        stoch(x)
    assert fixed_unet(2, 1, 2, **SMALL).eval()(x).shape == (1, 2, 16, 16)  # Fixed has a default phi
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        sshn.materialize(0)


def test_training_prior_draws_in_range():
    net = stochastic_unet(2, 1, 2, **SMALL).train()
    draws = [net.resolve_phi() for _ in range(300)]
    assert all(0.0 < d <= 0.5 for d in draws)
    assert max(draws) - min(draws) > 0.4  # spread over the prior, not a constant
    with pytest.raises(ValueError):
        ScaleSpaceHyperUNet(2, 1, 2, phi_prior=(0.6, 0.2), **SMALL)


# ---------------------------------------------------------------------------------------- SSHN
@pytest.mark.parametrize("dims, kw", [(2, SMALL), (3, dict(channels=(3, 5), num_pools=1, convs_per_stage=3))])
def test_hypernetwork_covers_every_primary_parameter_once(dims, kw):
    sshn = ScaleSpaceHyperUNet(dims, 2, 3, **kw)
    plain = ScaleSpaceUNet(dims, 2, 3, conv="conv", **kw)
    assert _numel(sshn.primary) == 0  # the primary stores nothing: all predicted
    assert sshn.num_primary_params == sshn.hyper.out.out_features == _numel(plain)
    # make theta = 0, 1, ..., P-1 and check every value lands in exactly one primary parameter
    p = sshn.num_primary_params
    with torch.no_grad():
        sshn.hyper.out.weight.zero_()
        sshn.hyper.out.bias.copy_(torch.arange(p, dtype=torch.float32))
    m = sshn.materialize(0.5)
    values = torch.cat([q.detach().flatten() for q in m.parameters()])
    assert torch.equal(values.sort().values, torch.arange(p, dtype=torch.float32))
    shapes = [tuple(q.shape) for q in m.parameters()]
    assert shapes == [tuple(q.shape) for q in plain.parameters()]


@pytest.mark.parametrize("dims, shape", [(2, (2, 1, 33, 20)), (3, (1, 1, 12, 11, 9))])
def test_materialize_equals_forward(dims, shape):
    sshn = ScaleSpaceHyperUNet(dims, 1, 3, channels=6, num_pools=3).eval()
    x = torch.randn(shape)
    for phi in (0.03, 0.27, 0.5, 1.0):
        with torch.no_grad():
            y = sshn(x, phi)
            m = sshn.materialize(phi)
            assert not any(isinstance(mod, PredictedConv) for mod in m.modules())
            assert all(not list(mod.parameters(recurse=False)) or isinstance(mod, nn.Conv2d if dims == 2 else nn.Conv3d)
                       for mod in m.modules())
            assert (m(x) - y).abs().max().item() < 1e-5
    # the hypernetwork really conditions the weights on phi
    w1 = next(sshn.materialize(0.1).parameters())
    w2 = next(sshn.materialize(0.4).parameters())
    assert not torch.allclose(w1, w2)


def test_materialized_is_exportable():
    sshn = ScaleSpaceHyperUNet(2, 1, 2, **SMALL).eval()
    m = sshn.materialize(0.3)
    x = torch.randn(1, 1, 24, 20)
    ep = torch.export.export(m, (x,))
    with torch.no_grad():
        assert (ep.module()(x) - sshn(x, 0.3)).abs().max().item() < 1e-5


def test_theta_is_computed_once_per_forward_and_trains():
    sshn = ScaleSpaceHyperUNet(2, 1, 2, **SMALL).train()
    calls = []
    sshn.hyper.register_forward_hook(lambda *a: calls.append(1))
    y = sshn(torch.randn(2, 1, 16, 16))
    assert len(calls) == 1
    assert y.shape == (2, 2, 16, 16)
    y.square().mean().backward()
    g = sshn.hyper.out.weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    assert sshn.hyper.body[0].weight.grad.abs().sum() > 0  # gradients reach the MLP's first layer


def test_initial_primary_is_well_scaled():
    # theta = W h + theta_0 with theta_0 a Kaiming UNet: activations neither explode nor vanish
    sshn = ScaleSpaceHyperUNet(2, 1, 1, channels=16, num_pools=4).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        for phi in (0.1, 0.5):
            s = sshn(x, phi).std().item()
            assert 0.05 < s < 20


def test_concurrent_forwards_with_different_phi():
    """Each thread gets its own phi's output while another thread runs a different phi.

    Worker threads may compute with a different intra-op thread count than the main thread
    (torch's thread settings are per thread), so outputs are compared to float tolerance, not
    bitwise; the two phis' outputs differ by far more than that tolerance, so a cross-thread
    mix-up of theta (one thread reading the other's weights) still fails.
    """
    sshn = ScaleSpaceHyperUNet(2, 1, 2, **SMALL).eval()
    x = torch.randn(1, 1, 20, 20)
    with torch.no_grad():
        ref = {phi: sshn(x, phi) for phi in (0.2, 0.6)}
    tol = dict(rtol=1e-4, atol=1e-5)
    gap = (ref[0.2] - ref[0.6]).abs().max().item()
    assert gap > 100 * (tol["atol"] + tol["rtol"] * ref[0.2].abs().max().item()), gap
    out, barrier = {}, threading.Barrier(2)

    def run(phi):
        barrier.wait()
        with torch.no_grad():
            out[phi] = [sshn(x, phi) for _ in range(10)]

    threads = [threading.Thread(target=run, args=(p,)) for p in ref]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(out) == sorted(ref)
    for phi, ys in out.items():
        for y in ys:
            torch.testing.assert_close(y, ref[phi], **tol)


def test_copy_and_state_dict_roundtrip():
    a = ScaleSpaceHyperUNet(2, 1, 2, **SMALL).eval()
    b = copy.deepcopy(a)
    c = ScaleSpaceHyperUNet(2, 1, 2, **SMALL).eval()
    c.load_state_dict(a.state_dict())
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(a(x, 0.3), b(x, 0.3)) and torch.equal(a(x, 0.3), c(x, 0.3))
        assert b._slot is not a._slot and b.primary.out_conv.slot is b._slot


def test_sshn_norm_must_be_parameter_free():
    with pytest.raises(ValueError, match="parameter-free"):
        ScaleSpaceHyperUNet(2, 1, 2, norm="batch", **SMALL)
    net = ScaleSpaceHyperUNet(2, 1, 2, norm=("instance", {"affine": False}), **SMALL).eval()
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert (net.materialize(0.4)(x) - net(x, 0.4)).abs().max() < 1e-5


def test_autocast_bf16_is_finite():
    sshn = ScaleSpaceHyperUNet(2, 1, 2, **SMALL).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = sshn(torch.randn(1, 1, 16, 16), phi=0.3)
    assert torch.isfinite(y.float()).all()
    y.float().mean().backward()
    assert torch.isfinite(sshn.hyper.out.weight.grad).all()


# ---------------------------------------------------------------------------------------- baselines
def test_film_runs_trains_and_folds_into_plain_convs():
    net = FiLMScaleSpaceUNet(2, 1, 3, **SMALL).train()
    y = net(torch.randn(2, 1, 18, 18))
    assert y.shape == (2, 3, 18, 18)
    y.square().mean().backward()
    conv_w = net.primary.encoder[0].layers[0].conv.weight
    assert conv_w.grad is not None and conv_w.grad.abs().sum() > 0  # own conv weights train
    assert net.hyper.out.weight.grad.abs().sum() > 0  # gamma/beta MLP trains
    # 2 * channels of every conv predicted (FiLM after every conv)
    n_convs = sum(isinstance(m, nn.Conv2d) for m in net.primary.modules())
    assert len(net.films) == n_convs
    net.eval()
    x = torch.randn(1, 1, 18, 18)
    with torch.no_grad():
        assert (net.materialize(0.2)(x) - net(x, 0.2)).abs().max() < 1e-5


def test_stochastic_runs_with_random_phi_and_gradients():
    net = stochastic_unet(2, 1, 2, **SMALL).train()
    x = torch.randn(2, 1, 24, 24)
    y = net(x)
    assert y.shape == (2, 2, 24, 24)
    y.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    net.eval()
    with torch.no_grad():
        assert not torch.allclose(net(x, 0.1), net(x, 0.5))  # the resize factor changes the function


def test_registered_networks():
    names = set(list_networks())
    assert {"sshn_unet", "fixed_unet", "scale_space_unet", "stochastic_unet", "film_unet",
            "registration_unet", "sshn_registration"} <= names
    net = create_network("sshn_unet", spatial_dims=2, in_channels=1, out_channels=2, channels=4, num_pools=1)
    assert isinstance(net, ScaleSpaceHyperUNet)
    assert create_network("fixed_unet", spatial_dims=2, in_channels=1, out_channels=2).phi == 0.5
    hyper = create_network("scale_space_unet", spatial_dims=2, in_channels=1, out_channels=1, conv="hyper",
                           channels=4, num_pools=1)
    assert hyper(torch.randn(1, 1, 12, 12), 0.5).shape == (1, 1, 12, 12)
