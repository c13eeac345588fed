"""Receptive fields: the papers' tables (68 / 128 / 188 / 89 px), exactness against gradients, edge cases."""

import math

import pytest
import torch
from torch import nn

from monai_hyperconv.networks import (
    FlatResidualCNN, PaperUNet, chain_receptive_field, create_network, receptive_field,
)

LEAKY = ("leakyrelu", {"negative_slope": 0.1})  # no dead units: every path in the RF carries gradient


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name,kwargs,expected", [
    ("unet", {}, 68),
    ("unet5", {}, 128),
    ("dilated_unet", {}, 128),
    ("hyper_unet", {}, 128),
    ("hyper_unet", {"kernel_size": 3}, 68),
    ("hyper_unet", {"kernel_size": 7}, 188),
    ("flat_dilated_cnn", {}, 89),
    ("flat_hyper_cnn", {}, 89),
    ("mb_unet", {}, 68),
    ("mb_unet5", {}, 128),
    ("dilated_mb_unet", {}, 128),
    ("hyper_mb_unet", {}, 128),
    ("nonlocal_unet", {}, math.inf),
    ("nonlocal_hyper_unet", {}, math.inf),
    ("nonlocal_hyper_mb_unet", {}, math.inf),
])
def test_paper_table_receptive_fields(name, kwargs, expected):
    small = {"channels": (2,) * 7} if name.startswith("flat") else {"channels": 4}
    assert receptive_field(name, **small, **kwargs) == expected  # by registered name
    assert receptive_field(create_network(name, **small, **kwargs)) == expected  # from a built model


def test_paths():
    hyper = create_network("hyper_unet", channels=2)
    assert receptive_field(hyper, path="paper") == 128
    assert receptive_field(hyper, path="bottleneck") == 132  # the 5x5 stem the tables do not count
    unet = create_network("unet", channels=2)
    assert receptive_field(unet, path="bottleneck") == 68
    assert receptive_field(unet, path="output") == 116
    with pytest.raises(ValueError, match="path must be"):
        receptive_field(unet, path="decoder")


def _extent(grad):
    nz = grad.abs().sum(dim=(0, 1)) > 0
    return tuple(int(idx.max() - idx.min() + 1) for idx in
                 (nz.any(1).nonzero(), nz.any(0).nonzero()))


def _avg_pools(net):
    # max-pooling passes gradient to one element only; average pooling has the same geometry and a dense gradient
    for m in list(net.modules()):
        for cname, child in list(m.named_children()):
            if isinstance(child, nn.MaxPool2d):
                setattr(m, cname, nn.AvgPool2d(2, 2))
    return net


@pytest.mark.parametrize("kernel_size,dilation", [(3, 1), (5, 1), (3, 2)])
def test_bottleneck_rf_equals_gradient_support(kernel_size, dilation):
    net = _avg_pools(PaperUNet(spatial_dims=2, in_channels=1, out_channels=1, channels=2, kernel_size=kernel_size,
                               dilation=dilation, act=LEAKY, norm=None, dropout=None)).eval()
    feats = {}
    net.decoder.bottleneck.register_forward_hook(lambda m, i, o: feats.__setitem__("b", o))
    x = torch.randn(1, 1, 160, 160, requires_grad=True)
    net(x)
    b = feats["b"]
    b[0, :, b.shape[2] // 2, b.shape[3] // 2].sum().backward()
    rf = receptive_field(net, path="bottleneck")
    assert _extent(x.grad) == (rf, rf)


def test_output_rf_equals_max_gradient_support_over_positions():
    """Nearest up-sampling is not shift-equivariant: the extent depends on the phase; we report its maximum."""
    net = _avg_pools(PaperUNet(spatial_dims=2, in_channels=1, out_channels=1, channels=2, act=LEAKY, norm=None,
                               dropout=None)).eval()
    x = torch.randn(1, 1, 192, 192, requires_grad=True)
    y = net(x)
    extents = set()
    for p in range(92, 100):  # one period of the net's total stride 8
        x.grad = None
        y[0, 0, p, p].backward(retain_graph=True)
        extents.add(_extent(x.grad)[0])
    assert max(extents) == receptive_field(net, path="output") == 116
    assert extents == {108, 116}


@pytest.mark.parametrize("conv,kernel_size,dilation", [
    ("conv", 3, (1, 2, 4, 8, 4, 2, 1)),
    ("hyper", (3, 5, 9, 17, 9, 5, 3), 1),
])
def test_flat_rf_equals_gradient_support(conv, kernel_size, dilation):
    net = FlatResidualCNN(spatial_dims=2, in_channels=1, out_channels=1, channels=(2,) * 7, kernel_size=kernel_size,
                          dilation=dilation, conv=conv, act=LEAKY, norm=None).eval()
    x = torch.randn(1, 1, 100, 100, requires_grad=True)
    net(x)[0, 0, 50, 50].backward()
    assert _extent(x.grad) == (89, 89) and receptive_field(net) == 89


def test_anisotropic_3d_and_plain_chains():
    net = PaperUNet(spatial_dims=3, in_channels=1, out_channels=1, channels=2, kernel_size=(3, 3, 1))
    assert receptive_field(net) == (68, 68, 8)  # a 1-wide kernel grows only through the poolings: 1+1+2+4
    chain = nn.Sequential(nn.Conv2d(1, 1, 3), nn.MaxPool2d(2), nn.Conv2d(1, 1, 3, dilation=2), nn.ReLU())
    assert receptive_field(chain) == 3 + 1 + 2 * 2 * 2
    assert chain_receptive_field([nn.Conv1d(1, 1, 5, stride=2), nn.Conv1d(1, 1, 3)]) == 5 + 2 * 2
    assert chain_receptive_field([nn.Conv2d(1, 1, 3), nn.Flatten(), nn.Linear(4, 2)]) == math.inf
    with pytest.raises(TypeError, match="unexpected keyword arguments"):
        receptive_field(chain, kernel_size=3)
