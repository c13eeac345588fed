"""FLOPs counting: exact hand counts, monotone in phi, materialised = Fixed."""

import math

import pytest
import torch
from torch import nn

from monai_hyperconv.hypernets import ScaleSpaceHyperUNet, ScaleSpaceUNet, fixed_unet
from monai_hyperconv.metrics import count_flops


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(n)


def test_two_layer_hand_count():
    # conv 1->4 3x3 on 8x8: 2 * 64 px * 4 out * 9 taps; conv 4->2 1x1: 2 * 64 * 2 * 4 (biases/ReLU not counted)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    assert count_flops(net, (1, 1, 8, 8)) == 2 * 64 * 4 * 9 + 2 * 64 * 2 * 4 == 5632
    # a linear layer: 2 * batch * in * out, and a batch of 3 triples the conv count
    assert count_flops(nn.Linear(10, 5), (3, 10)) == 300
    assert count_flops(net, (3, 1, 8, 8)) == 3 * 5632


def _unet_hand_count(net: ScaleSpaceUNet, size, phi) -> int:
    """2 * c_in * c_out * k^d * voxels for every conv of the primary UNet."""
    sizes = net.feature_sizes(size, phi)
    f, k, d = net.channels, 3, net.spatial_dims
    total = 0
    for i, s in enumerate(sizes):  # encoder: two convs per stage
        cin = net.in_channels if i == 0 else f[i - 1]
        total += 2 * math.prod(s) * k**d * (cin * f[i] + f[i] * f[i])
    for i in range(len(sizes) - 1):  # decoder: concat(skip, up) -> f[i], then f[i] -> f[i]
        total += 2 * math.prod(sizes[i]) * k**d * ((f[i] + f[i + 1]) * f[i] + f[i] * f[i])
    return total + 2 * math.prod(sizes[0]) * f[0] * net.out_channels


@pytest.mark.parametrize("phi", [0.05, 0.33, 0.5, 1.0])
def test_unet_matches_hand_count(phi):
    net = ScaleSpaceUNet(2, 1, 3, channels=(4, 6, 8), num_pools=2)
    assert count_flops(net, (1, 1, 37, 30), phi=phi) == _unet_hand_count(net, (37, 30), phi)


def test_flops_decrease_monotonically_with_phi():
    net = fixed_unet(2, 1, 2, channels=4, num_pools=3)
    phis = [round(0.05 + 0.01 * i, 2) for i in range(96)]
    flops = [count_flops(net, (1, 1, 64, 64), phi=p) for p in phis]
    assert all(a <= b for a, b in zip(flops, flops[1:]))  # smaller phi never costs more
    assert flops[0] < flops[45] < flops[-1]  # and it really saves: 0.05 < 0.5 < 1.0
    v = fixed_unet(3, 1, 2, channels=2, num_pools=2)
    f3 = [count_flops(v, (1, 1, 16, 16, 16), phi=p) for p in (0.1, 0.3, 0.5)]
    assert f3[0] < f3[1] < f3[2]


def test_materialized_sshn_costs_exactly_the_fixed_unet():
    kw = dict(channels=4, num_pools=2)
    sshn = ScaleSpaceHyperUNet(2, 1, 2, **kw)
    fixed = fixed_unet(2, 1, 2, **kw)
    shape = (1, 1, 40, 40)
    for phi in (0.2, 0.5):
        primary = count_flops(fixed, shape, phi=phi)
        assert count_flops(sshn.materialize(phi), shape) == primary
        # the un-materialised SSHN also runs its hypernetwork MLP once: 2 * (2*10 + 10*100 + 100*P)
        hyper = 2 * (2 * 10 + 10 * 100 + 100 * sshn.num_primary_params)
        assert count_flops(sshn, shape, phi=phi) == primary + hyper


def test_count_flops_restores_mode_and_validates():
    net = fixed_unet(2, 1, 1, channels=2, num_pools=1).train()
    count_flops(net, (1, 1, 8, 8))
    assert net.training
    with pytest.raises(ValueError):
        count_flops(net, (1, 0, 8, 8))
    with pytest.raises(TypeError):
        count_flops(lambda x: x, (1, 1))
