"""Noise corruptions (Ma et al. (journal extension) §4.3, Fig 6; blog): statistics at a given level."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

import monai.transforms as mt
import monai_hyperconv.transforms as T
from monai_hyperconv.transforms import (
    GaussianNoise,
    GaussianNoised,
    RandSaltPepperNoise,
    RandSaltPepperNoised,
    RandSpeckleNoise,
    RandSpeckleNoised,
    SaltPepperNoise,
    SaltPepperNoised,
    SpeckleNoise,
    SpeckleNoised,
)

AFF = torch.diag(torch.tensor([0.7, 0.7, 5.0, 1.0], dtype=torch.float64))


def _img():
    g = torch.Generator().manual_seed(0)
    return MetaTensor(0.25 + 0.5 * torch.rand(1, 64, 64, generator=g), affine=AFF)


def test_no_monai_name_is_shadowed():
    assert [n for n in T.__all__ if hasattr(mt, n)] == []


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3])
def test_salt_pepper_fraction_exact(fraction):
    img = _img()
    out = SaltPepperNoise(fraction, seed=1)(img)
    changed = out != img
    assert abs(changed.float().mean().item() - fraction) < 1.0 / 4096 + 1e-9
    lo, hi = img.min().item(), img.max().item()
    vals = out[changed]
    assert ((vals == lo) | (vals == hi)).all()
    if fraction:
        assert abs((vals == hi).float().mean().item() - 0.5) < 0.01
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, AFF)
    assert torch.equal(out, SaltPepperNoise(fraction, seed=1)(img))  # fixed-level form is deterministic
    n = SaltPepperNoise(fraction, low=0, high=1, seed=1)(img.numpy())
    assert isinstance(n, np.ndarray) and set(np.unique(n[n != img.numpy()])) <= {0.0, 1.0}


def test_salt_pepper_shared_across_channels_and_bad_level():
    img = torch.rand(3, 16, 16)
    out = SaltPepperNoise(0.2, low=-1, high=2)(img)
    ch = out != img
    assert torch.equal(ch[0], ch[1]) and torch.equal(ch[1], ch[2])
    with pytest.raises(ValueError):
        SaltPepperNoise(1.5)(img)


def test_speckle_statistics():
    img = _img()
    out = SpeckleNoise(0.2, seed=0)(img)
    rel = (out - img) / img
    assert abs(rel.mean().item()) < 0.01 and abs(rel.std().item() - 0.2) < 0.01
    assert torch.equal(out.affine, AFF)
    assert torch.equal(out, SpeckleNoise(0.2, seed=0)(img))


def test_gaussian_fixed_level_wraps_monai():
    img = _img()
    out = GaussianNoise(0.1, seed=2)(img)
    assert abs((out - img).std().item() - 0.1) < 0.005
    assert torch.equal(out, GaussianNoise(0.1, seed=2)(img))
    ref = mt.RandGaussianNoise(prob=1.0, std=0.1, sample_std=False)
    ref.set_random_state(2)
    assert torch.allclose(out, ref(img))
    d = GaussianNoised(["image", "x"], 0.1, allow_missing_keys=True)({"image": img})
    assert torch.equal(d["image"], GaussianNoise(0.1, seed=0)(img)) and torch.equal(d["image"].affine, AFF)


def test_random_forms_prob_range_and_reproducibility():
    img = _img()
    t = RandSaltPepperNoise(prob=1.0, fraction_range=(0.05, 0.15))
    t.set_random_state(0)
    fr = [((t(img) != img).float().mean().item()) for _ in range(5)]
    assert all(0.05 - 1e-3 <= f <= 0.15 + 1e-3 for f in fr) and len(set(fr)) > 1
    t.set_random_state(0)
    assert (t(img) != img).float().mean().item() == fr[0]
    assert torch.equal(RandSaltPepperNoise(prob=0.0)(img), img)
    s = RandSpeckleNoise(prob=1.0, std_range=(0.3, 0.3))
    s.set_random_state(1)
    assert abs(((s(img) - img) / img).std().item() - 0.3) < 0.02
    # dictionary forms
    d = RandSaltPepperNoised(["image"], prob=1.0, fraction_range=(0.2, 0.2)).set_random_state(0)({"image": img})
    assert abs((d["image"] != img).float().mean().item() - 0.2) < 1e-3
    d = RandSpeckleNoised(["image"], prob=0.0)({"image": img})
    assert torch.equal(d["image"], img)
    d = SaltPepperNoised("image", 0.1)({"image": img})
    assert abs((d["image"] != img).float().mean().item() - 0.1) < 1e-3
    d = SpeckleNoised("image", 0.0)({"image": img})
    assert torch.allclose(d["image"], img)
