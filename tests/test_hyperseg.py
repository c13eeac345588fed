"""HyperSeg-style baseline: shapes, truly patch-wise decoder weights, gradients, parameters, errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from monai_hyperconv.networks import create_network, list_networks, receptive_field
from monai_hyperconv.networks.hyperseg import HyperSegNet, patch_coordinates, patchwise_conv


@pytest.fixture(scope="module", autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _small(**kw):
    args = dict(spatial_dims=2, in_channels=1, out_channels=2, channels=4, num_pools=2, patch_grid=2)
    args.update(kw)
    return HyperSegNet(**args)


def test_registered_and_output_shape():
    assert "hyperseg" in list_networks()
    torch.manual_seed(0)
    net = create_network("hyperseg", spatial_dims=2, in_channels=3, out_channels=2, channels=4, num_pools=2)
    y = net(torch.rand(2, 3, 32, 48))
    assert y.shape == (2, 2, 32, 48)
    assert torch.isfinite(y).all()
    assert receptive_field(net) == math.inf  # "All pixels", as the papers' Table 1


def test_3d_output_shape():
    torch.manual_seed(0)
    net = HyperSegNet(spatial_dims=3, in_channels=1, out_channels=3, channels=4, num_pools=1, patch_grid=(2, 2, 1))
    assert net(torch.rand(1, 1, 8, 8, 4)).shape == (1, 3, 8, 8, 4)


def test_parameter_count_reported_and_close_to_paper():
    net = HyperSegNet(spatial_dims=2, in_channels=1, out_channels=1)
    n = sum(p.numel() for p in net.parameters())
    n_hyper = sum(p.numel() for p in net.hypernet.parameters())
    print(f"HyperSegNet default parameters: {n} (hypernetwork {n_hyper})")
    # the papers' HyperSeg row: 1.2M parameters
    assert abs(n / 1.2e6 - 1) < 0.05
    # the weight heads hold (embed_dim + 1) parameters per generated decoder weight
    heads = sum(p.numel() for p in net.hypernet.heads.parameters())
    gen = sum(math.prod(s) + s[0] for s in net.layer_shapes)
    assert heads == (net.hypernet.embed_dim + 1) * gen


def test_patchwise_conv_equals_conv_with_one_kernel():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 12)
    w, b = torch.randn(5, 3, 3, 3), torch.randn(5)
    out = patchwise_conv(x, w.expand(2, 6, 5, 3, 3, 3), b.expand(2, 6, 5), (2, 3))
    torch.testing.assert_close(out, F.conv2d(x, w, b, padding=1), atol=1e-5, rtol=1e-5)


def test_patchwise_conv_uses_each_patch_kernel():
    """Output pixels of patch p come from kernel p only (halo read from the neighbours, no seams)."""
    torch.manual_seed(0)
    x = torch.randn(1, 2, 8, 8)
    w = torch.randn(1, 4, 3, 2, 3, 3)
    out = patchwise_conv(x, w, None, (2, 2))
    for p, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        ref = F.conv2d(x, w[0, p], padding=1)[..., 4 * i:4 * i + 4, 4 * j:4 * j + 4]
        torch.testing.assert_close(out[..., 4 * i:4 * i + 4, 4 * j:4 * j + 4], ref, atol=1e-5, rtol=1e-5)


def test_decoder_weights_vary_per_patch():
    torch.manual_seed(0)
    net = _small().eval()
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        layers = net.decoder_weights(x)
    assert [lay["name"] for lay in layers] == ["level1", "level0", "head"]
    for lay in layers:
        w = lay["weight"]
        assert w.shape[:2] == (1, 4)  # 2x2 patches
        a, b = w[0, 0], w[0, 3]  # two different patches of the same image
        rel = float((a - b).norm() / a.norm())
        assert rel > 0.05, (lay["name"], rel)
    # the effective kernel really used: the network's first dynamic conv on patch 0 vs patch 3
    with torch.no_grad():
        feats = net.encode(x)
        h = F.interpolate(feats[-1], size=feats[1].shape[2:], mode="bilinear", align_corners=False)
        h = torch.cat([feats[1], h], 1)
        from monai_hyperconv.networks.hyperseg import _image_coordinates

        h = torch.cat([h, _image_coordinates(h)], 1)
        w, b = layers[0]["weight"], layers[0]["bias"]
        out = patchwise_conv(h, w, b, (2, 2))
        own = F.conv2d(h, w[0, 3], b[0, 3], padding=1)[..., 4:, 4:]
        other = F.conv2d(h, w[0, 0], b[0, 0], padding=1)[..., 4:, 4:]
        torch.testing.assert_close(out[..., 4:, 4:], own, atol=1e-5, rtol=1e-5)
        assert (out[..., 4:, 4:] - other).abs().max() > 1e-2


def test_decoder_weights_depend_on_the_image():
    torch.manual_seed(0)
    net = _small().eval()
    with torch.no_grad():
        w1 = net.decoder_weights(torch.rand(1, 1, 16, 16))[0]["weight"]
        w2 = net.decoder_weights(torch.rand(1, 1, 16, 16))[0]["weight"]
    assert (w1 - w2).abs().max() > 1e-4


def test_gradients_reach_the_hypernetwork_and_encoder():
    torch.manual_seed(0)
    net = _small()
    net(torch.rand(2, 1, 16, 16)).pow(2).mean().backward()
    for name, p in net.hypernet.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    first = next(net.encoder.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_encoder_conv_type_selectable():
    from monai_hyperconv.layers import HyperConv

    net = _small(conv=("hyper", {"n_l": 2}))
    assert any(isinstance(m, HyperConv) for m in net.encoder.modules())
    assert net(torch.rand(1, 1, 16, 16)).shape == (1, 2, 16, 16)


def test_bad_inputs():
    net = _small()
    with pytest.raises(ValueError, match=r"\(16, 20\)") as e:
        net(torch.rand(1, 1, 16, 20))  # 20 is not a multiple of 2**2 * 2 = 8
    assert "(8, 8)" in str(e.value)
    with pytest.raises(ValueError, match="input channels"):
        net(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="4-D input"):
        net(torch.rand(1, 16, 16))
    with pytest.raises(ValueError, match="spatial_dims"):
        HyperSegNet(spatial_dims=4, in_channels=1, out_channels=1)
    with pytest.raises(ValueError, match="decoder_channels"):
        _small(decoder_channels=(4,))
    with pytest.raises(ValueError, match="kernel_size"):
        _small(kernel_size=4)
    with pytest.raises(ValueError, match="divisible by the patch grid"):
        patchwise_conv(torch.rand(1, 1, 6, 6), torch.rand(1, 4, 1, 1, 3, 3), None, (4, 1))


def test_patch_coordinates():
    c = patch_coordinates((2, 4))
    assert c.shape == (8, 2)
    torch.testing.assert_close(c[0], torch.tensor([-0.5, -0.75]))
    torch.testing.assert_close(c[-1], torch.tensor([0.5, 0.75]))
