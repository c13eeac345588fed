"""VoxelMorph-style registration: warping, Dice after nearest warping, folding, training, errors."""

import pytest
import torch
from monai.networks.blocks import Warp
from monai.networks.nets import VoxelMorph

from monai_hyperconv.losses import RegistrationLoss
from monai_hyperconv.metrics import folding_fraction, jacobian_determinant, registration_dice, warp_labels
from monai_hyperconv.networks import create_network
from monai_hyperconv.hypernets.registration import RegistrationNet


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(n)


def _blob(cy, cx, r=7.0, n=32):
    yy, xx = torch.meshgrid(torch.arange(float(n)), torch.arange(float(n)), indexing="ij")
    return torch.sigmoid((r - ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()) * 1.5)[None, None]


@pytest.mark.parametrize("shape", [(2, 1, 9, 7), (1, 2, 6, 5, 4)])
def test_zero_flow_warp_is_identity(shape):
    img = torch.rand(shape)
    ddf = torch.zeros(shape[0], len(shape) - 2, *shape[2:])
    assert torch.allclose(Warp()(img, ddf), img, atol=1e-6)
    labels = torch.randint(0, 4, (shape[0], 1, *shape[2:]))
    assert torch.equal(warp_labels(labels, ddf), labels)
    net = RegistrationNet(len(shape) - 2, shape[1], channels=2, num_pools=1)
    with torch.no_grad():
        net.backbone.out_conv.weight.zero_()  # flow exactly 0
        moved, ddf = net(img, img)
    assert torch.allclose(moved, img, atol=1e-6) and ddf.abs().max() == 0


def test_registration_dice_with_known_shift():
    moving = torch.zeros(1, 1, 16, 16)
    moving[0, 0, 4:8, 4:8] = 1
    moving[0, 0, 10:14, 2:6] = 2
    fixed = torch.roll(moving, shifts=(0, 3), dims=(2, 3))  # content moved 3 voxels along x
    zero = torch.zeros(1, 2, 16, 16)
    d0 = registration_dice(moving, fixed, zero)
    assert d0[1] == pytest.approx(2 * 4 / 32) and d0[2] == pytest.approx(2 * 4 / 32)  # 1 of 4 columns overlap
    shift = zero.clone()
    shift[:, 1] = -3.0  # moved(x) = moving(x + u): sample 3 voxels to the left
    d = registration_dice(moving, fixed, shift)
    assert d == {1: 1.0, 2: 1.0, "mean": 1.0}
    assert set(registration_dice(moving, fixed, shift, labels=[2])) == {2, "mean"}


def test_jacobian_and_folding():
    zero = torch.zeros(2, 2, 8, 8)
    assert torch.allclose(jacobian_determinant(zero), torch.ones(2, 8, 8, dtype=torch.float64))
    assert torch.equal(folding_fraction(zero), torch.zeros(2, dtype=torch.float64))
    i = torch.arange(8.0).view(1, 8, 1).expand(1, 8, 8)
    stretch = torch.stack([0.5 * i, torch.zeros_like(i)], 1)  # u_0 = 0.5 x_0 -> det = 1.5
    assert torch.allclose(jacobian_determinant(stretch), torch.full((1, 8, 8), 1.5, dtype=torch.float64))
    fold = torch.stack([-2.0 * i, torch.zeros_like(i)], 1)  # det = 1 - 2 = -1 everywhere
    assert folding_fraction(fold).item() == 1.0
    k = torch.arange(6.0).view(1, 1, 1, 6).expand(1, 6, 6, 6)
    u3 = torch.stack([torch.zeros_like(k), torch.zeros_like(k), -1.0 * k], 1)  # det = 0: folding (non-positive)
    assert folding_fraction(u3).item() == 1.0
    with pytest.raises(ValueError):
        jacobian_determinant(torch.zeros(1, 3, 8, 8))


@pytest.mark.parametrize("backbone, steps", [("unet", 200), ("sshn", 200)])
def test_registration_of_translated_image_reduces_mse(backbone, steps):
    fixed, moving = _blob(16, 16), _blob(18, 14)  # 2-voxel translation in both axes
    net = RegistrationNet(2, 1, backbone=backbone, channels=8, num_pools=2)
    loss_fn = RegistrationLoss(2, "mse", lambda_reg=0.01)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.eval()
    with torch.no_grad():
        before = ((net(moving, fixed, phi=0.5)[0] - fixed) ** 2).mean().item()
    net.train()
    for _ in range(steps):
        opt.zero_grad()
        moved, ddf = net(moving, fixed)
        loss_fn(moved, fixed, ddf).backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        moved, ddf = net(moving, fixed, phi=0.5)
    after = ((moved - fixed) ** 2).mean().item()
    assert after < 0.1 * before
    assert folding_fraction(ddf).item() < 0.01
    assert registration_dice((moving > 0.5).float(), (fixed > 0.5).float(), ddf)["mean"] > 0.9


def test_bad_inputs_give_clear_errors():
    net = RegistrationNet(2, 1, channels=2, num_pools=1)
    a = torch.rand(1, 1, 16, 16)
    with pytest.raises(ValueError, match="spatial shape"):
        net(a, torch.rand(1, 1, 16, 12))
    with pytest.raises(ValueError, match="channel"):
        net(a, torch.rand(1, 2, 16, 16))
    with pytest.raises(ValueError, match="batch"):
        net(a, torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match="spatial dims"):
        net(a[0], a[0])
    with pytest.raises(ValueError, match="phi"):
        net(a, a, phi=1.5)
    sshn = RegistrationNet(2, 1, backbone="sshn", channels=2, num_pools=1).eval()
    with pytest.raises(ValueError, match="phi is required"):
        sshn(a, a)
    plain = RegistrationNet(2, 1, backbone=torch.nn.Conv2d(2, 2, 3, padding=1))
    with pytest.raises(ValueError, match="takes no phi"):
        plain(a, a, phi=0.5)
    with pytest.raises(ValueError, match="backbone"):
        RegistrationNet(2, 1, backbone="resnet")


def test_builds_on_monai_voxelmorph_2d_3d_and_variants():
    net = RegistrationNet(3, 1, channels=2, num_pools=1, integration_steps=3)
    assert isinstance(net, VoxelMorph) and net.diffeomorphic
    moved, ddf = net(torch.rand(1, 1, 12, 10, 8), torch.rand(1, 1, 12, 10, 8))
    assert moved.shape == (1, 1, 12, 10, 8) and ddf.shape == (1, 3, 12, 10, 8)
    half = RegistrationNet(2, 2, channels=2, num_pools=1, integration_steps=2, half_res=True)  # MONAI's fails in 2-D
    moved, ddf = half(torch.rand(1, 2, 16, 14), torch.rand(1, 2, 16, 14))
    assert moved.shape == (1, 2, 16, 14) and ddf.shape == (1, 2, 16, 14)
    hyper = create_network("registration_unet", spatial_dims=2, in_channels=1, conv="hyper", channels=2, num_pools=1)
    ddf = hyper(torch.rand(1, 1, 12, 12), torch.rand(1, 1, 12, 12))[1]
    assert ddf.shape == (1, 2, 12, 12) and ddf.abs().max() < 1e-2  # hyper flow head also starts near identity


def test_sshn_registration_materialize_equals_forward():
    net = create_network("sshn_registration", spatial_dims=2, in_channels=1, channels=4, num_pools=2).eval()
    with torch.no_grad():  # give the flow head something non-trivial to reproduce
        net.backbone.hyper.out.bias.add_(0.01 * torch.randn_like(net.backbone.hyper.out.bias))
    m, f = torch.rand(2, 1, 20, 20), torch.rand(2, 1, 20, 20)
    with torch.no_grad():
        moved, ddf = net(m, f, phi=0.35)
        moved2, ddf2 = net.materialize(0.35)(m, f)
    assert (ddf2 - ddf).abs().max() < 1e-5 and (moved2 - moved).abs().max() < 1e-5
    assert ddf.abs().max() > 1e-3


def test_comparison_with_voxelmorph_on_same_pairs():
    pytest.importorskip("voxelmorph")
    from monai_hyperconv.bundle.testing import load_script

    mod = load_script("scripts/compare_voxelmorph.py")
    res = mod.compare(steps=80, size=32, n_train=8, n_test=8, features=8, lr=3e-3, lambda_reg=0.02, batch=4)
    ident = res["identity"]
    for name in ("ours (RegistrationNet)", "voxelmorph VxmPairwise"):
        r = res[name]
        assert r["mse"] < 0.9 * ident["mse"], (name, r, ident)  # both learn to register the same pairs
        assert 0.0 <= r["dice"] <= 1.0 and 0.0 <= r["folding"] <= 1.0
