"""k-space masks and retrospective under-sampling (Ma et al. (journal extension) §4.4)."""


import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_hyperconv.transforms import (
    KspaceGaussianNoise,
    KspaceUndersample,
    KspaceUndersampled,
    RandKspaceGaussianNoised,
    RandKspaceUndersampled,
    cartesian_mask,
    from_kspace,
    poisson_disc_mask,
    to_kspace,
)

AFF = torch.tensor([[0.9, 0, 0, -10.0], [0, 1.1, 0, 5.0], [0, 0, 3.0, 2.0], [0, 0, 0, 1]], dtype=torch.float64)


def _radial_density(mask, edges):
    h, w = mask.shape
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot((yy - h // 2) / (h / 2), (xx - w // 2) / (w / 2))
    return [mask[(r >= a) & (r < b)].mean() for a, b in zip(edges[:-1], edges[1:])]


@pytest.mark.parametrize("accel", [4, 8])
def test_poisson_acceleration_and_density(accel):
    # (speed is measured by scripts/bench_kspace_mask.py, not asserted here: timed tests flake)
    m = poisson_disc_mask((256, 256), acceleration=accel, seed=3)
    assert m.dtype == bool and m.shape == (256, 256)
    achieved = m.size / m.sum()
    assert abs(achieved - accel) / accel < 0.05
    # fully sampled calibration centre (default 8% of each side)
    c = int(round(0.08 * 256))
    assert m[128 - c // 2 : 128 - c // 2 + c, 128 - c // 2 : 128 - c // 2 + c].all()
    # density falls with radius, outside the calibration box
    dens = _radial_density(m, [0.2, 0.4, 0.6, 0.8, 1.0])
    assert all(a > b for a, b in zip(dens[:-1], dens[1:])), dens
    assert dens[0] > 2 * dens[-1]


def test_poisson_deterministic_per_seed_and_rectangular():
    a = poisson_disc_mask((64, 48), 6, seed=1)
    assert np.array_equal(a, poisson_disc_mask((64, 48), 6, seed=1))
    assert not np.array_equal(a, poisson_disc_mask((64, 48), 6, seed=2))
    assert abs(a.size / a.sum() - 6) / 6 < 0.05
    with pytest.raises(ValueError, match="calibration"):
        poisson_disc_mask((32, 32), 8, calib_size=16)


def test_poisson_minimum_distance():
    # uniform Poisson disk (alpha=0): no two sampled points outside the centre closer than 1 pixel diagonal
    m = poisson_disc_mask((64, 64), 6, alpha=0.0, calib_size=4, seed=0)
    pts = np.argwhere(m)
    pts = pts[(np.abs(pts - 32) > 3).any(1)]
    d = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)) + np.eye(len(pts)) * 99
    assert d.min() >= 1.0
    # 4-connected neighbours are (almost) never both sampled: minimum distance > 1 at this rate
    assert np.mean(d.min(1) <= 1.0) < 0.05


@pytest.mark.parametrize("kind", ["random", "equispaced"])
def test_cartesian_masks_from_monai(kind):
    m = cartesian_mask((64, 80), acceleration=4, center_fraction=0.1, kind=kind, seed=0)
    assert m.shape == (64, 80)
    assert (m == m[:1]).all()  # whole lines
    assert m[:, 36:44].all()  # centre lines kept
    assert 2.5 < m.size / m.sum() < 6


def test_fft_round_trip():
    x = torch.rand(2, 16, 12)
    k = to_kspace(x)
    assert k.shape == (2, 16, 12, 2)
    # orthonormal: energy is preserved; centre is DC
    assert torch.allclose((k**2).sum(), (x**2).sum(), rtol=1e-4)
    assert torch.allclose(k[:, 8, 6, 0], x.sum((1, 2)) / np.sqrt(16 * 12), rtol=1e-4)
    assert torch.allclose(from_kspace(k).real, x, atol=1e-5)


def test_undersample_2d_metatensor_and_numpy():
    img = MetaTensor(torch.rand(1, 32, 32), affine=AFF)
    t = KspaceUndersample(acceleration=4, seed=0)
    recon, ksp, mask = t.undersample(img)
    assert isinstance(recon, MetaTensor) and torch.equal(recon.affine, AFF)
    assert recon.shape == img.shape and ksp.shape == (1, 32, 32, 2) and mask.shape == (1, 32, 32)
    assert abs(mask.numel() / mask.sum().item() - 4) < 0.2
    # the under-sampled k-space is the full one on the mask and zero off it
    full = to_kspace(img.as_tensor())
    assert torch.allclose(ksp, full * mask[..., None], atol=1e-6)
    assert torch.allclose(recon.as_tensor(), from_kspace(ksp).abs(), atol=1e-6)
    # zero-filling loses information; full sampling is identity
    assert (recon - img).abs().mean() > 1e-3
    assert torch.allclose(KspaceUndersample(acceleration=1)(img).as_tensor(), img.as_tensor(), atol=1e-5)
    # numpy in -> numpy out, same values; deterministic
    rn = t(img.numpy())
    assert isinstance(rn, np.ndarray) and np.allclose(rn, recon.numpy(), atol=1e-6)


def test_undersample_complex_and_3d():
    c = torch.randn(1, 16, 16, dtype=torch.complex64)
    out = KspaceUndersample(acceleration=1)(c)
    assert out.dtype == torch.complex64 and torch.allclose(out, c, atol=1e-5)
    vol = MetaTensor(torch.rand(1, 16, 20, 5), affine=AFF)
    recon, ksp, mask = KspaceUndersample(acceleration=4, slice_axis=2).undersample(vol)
    assert recon.shape == vol.shape and ksp.shape == (1, 16, 20, 5, 2) and mask.shape == (1, 16, 20, 1)
    assert torch.equal(recon.affine, AFF)
    # each slice is under-sampled in-plane exactly like the 2-D transform does
    r2 = KspaceUndersample(acceleration=4)(vol.as_tensor()[..., 3])
    assert torch.allclose(recon.as_tensor()[..., 3], r2, atol=1e-5)
    _, _, m0 = KspaceUndersample(acceleration=4, slice_axis=0).undersample(vol)
    assert m0.shape == (1, 1, 20, 5)


def test_dict_keeps_target_kspace_mask():
    img = MetaTensor(torch.rand(1, 32, 32), affine=AFF)
    d = KspaceUndersampled(keys="image", target_key="label", acceleration=4)({"image": img})
    assert set(d) == {"image", "label", "image_kspace", "image_mask"}
    assert torch.equal(d["label"].as_tensor(), img.as_tensor()) and torch.equal(d["label"].affine, AFF)
    assert not torch.equal(d["image"].as_tensor(), img.as_tensor())
    d2 = KspaceUndersampled(keys=["image", "missing"], allow_missing_keys=True, acceleration=4)({"image": img})
    assert "image_target" in d2
    rt = RandKspaceUndersampled(keys="image", acceleration=4, n_masks=4)
    rt.set_random_state(0)
    masks = [rt({"image": img})["image_mask"] for _ in range(6)]
    rt.set_random_state(0)
    assert torch.equal(rt({"image": img})["image_mask"], masks[0])  # reproducible
    assert any(not torch.equal(masks[0], m) for m in masks[1:])  # a new mask per call


def test_kspace_noise_level():
    z = torch.zeros(1, 64, 64)
    n = KspaceGaussianNoise(0.05, magnitude=False)(z)
    assert abs(n.std().item() - 0.05) < 0.005  # orthonormal FFT: same std in image domain
    assert torch.equal(n, KspaceGaussianNoise(0.05, magnitude=False)(z))
    # noise in the under-sampling transform (Fig 8) only where sampled
    _, ksp, mask = KspaceUndersample(acceleration=4, noise_std=0.1).undersample(z)
    assert (ksp[..., 0][mask.expand_as(ksp[..., 0]) == 0] == 0).all()
    assert abs(ksp[..., 0][mask.expand_as(ksp[..., 0]) > 0].std().item() - 0.1) < 0.02
    t = RandKspaceGaussianNoised(keys="image", prob=1.0, std_range=(0.1, 0.1))
    t.set_random_state(0)
    out = t({"image": MetaTensor(z + 1, affine=AFF)})["image"]
    assert torch.equal(out.affine, AFF) and abs((out - 1).std().item() - 0.1) < 0.02
