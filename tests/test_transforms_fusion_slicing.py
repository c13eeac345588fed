"""Label fusion truth tables, slice/stitch round trips, presets."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import CenterSpatialCropd, NormalizeIntensityd, ScaleIntensityRanged

from monai_hyperconv.transforms import (
    FuseLabels,
    FuseLabelsd,
    SlicesToVolume,
    VolumeToSlices,
    VolumeToSlicesd,
    brain_recon_preprocessing,
    fuse_masks,
    liver_ct_preprocessing,
    ms_mri_preprocessing,
    orthogonal_slice_inference,
    slice_inference,
)

AFF = torch.tensor([[2.0, 0, 0, 10], [0, 3.0, 0, 20], [0, 0, 4.0, 30], [0, 0, 0, 1]], dtype=torch.float64)

# every combination of three raters' votes at one pixel each
A = np.array([[0, 0, 0, 0, 1, 1, 1, 1]])
B = np.array([[0, 0, 1, 1, 0, 0, 1, 1]])
C = np.array([[0, 1, 0, 1, 0, 1, 0, 1]])


@pytest.mark.parametrize(
    "mode,expected",
    [
        ("intersection", [0, 0, 0, 0, 0, 0, 0, 1]),
        ("union", [0, 1, 1, 1, 1, 1, 1, 1]),
        ("majority", [0, 0, 0, 1, 0, 1, 1, 1]),
    ],
)
def test_fusion_truth_table_three_raters(mode, expected):
    out = fuse_masks([A[None], B[None], C[None]], mode)
    assert out.shape == (1, 1, 8) and out.ravel().tolist() == expected
    # channel-stacked input gives the same
    assert FuseLabels(mode)(np.concatenate([A, B, C])[:, None]).ravel().tolist() == expected


def test_fusion_two_raters_and_dict():
    r1 = MetaTensor(torch.tensor([[[0, 1, 1, 0]]], dtype=torch.uint8), affine=AFF)
    r2 = MetaTensor(torch.tensor([[[0, 1, 0, 2]]], dtype=torch.uint8), affine=AFF)
    d = FuseLabelsd(["r1", "r2"], name="label")({"r1": r1, "r2": r2})
    assert d["label"].ravel().tolist() == [0, 1, 0, 0] and torch.equal(d["label"].affine, AFF)
    assert d["label"].dtype == torch.uint8
    # majority of two = intersection; union
    assert fuse_masks([r1, r2], "majority").ravel().tolist() == [0, 1, 0, 0]
    assert fuse_masks([r1, r2], "union").ravel().tolist() == [0, 1, 1, 1]
    both = MetaTensor(torch.cat([r1, r2]), affine=AFF)
    assert FuseLabelsd("label")({"label": both})["label"].ravel().tolist() == [0, 1, 0, 0]
    assert FuseLabelsd(["a", "b"], allow_missing_keys=True)({"x": 1}) == {"x": 1}
    with pytest.raises(ValueError):
        FuseLabels("vote")
    with pytest.raises(ValueError, match="shape"):
        fuse_masks([np.zeros((1, 3)), np.zeros((1, 4))])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_stitch_round_trip_identity(axis):
    vol = MetaTensor(torch.rand(2, 5, 6, 7), affine=AFF)
    slices = VolumeToSlices(axis)(vol)
    assert len(slices) == vol.shape[1 + axis]
    assert all(s.ndim == 3 for s in slices)
    # 2-D affine: in-plane spacing kept, origin at the slice
    keep = [i for i in range(3) if i != axis]
    assert torch.allclose(slices[3].affine[:2, :2], AFF[keep][:, keep])
    assert torch.allclose(slices[3].affine[:2, 2], (AFF[:3, 3] + 3 * AFF[:3, axis])[keep])
    back = SlicesToVolume(axis)(slices)
    assert torch.equal(back.as_tensor(), vol.as_tensor()) and torch.equal(back.affine, AFF)
    arr = vol.numpy()
    assert np.array_equal(SlicesToVolume(axis)(VolumeToSlices(axis)(arr)), arr)


def test_slices_dict_selects_foreground():
    img = MetaTensor(torch.rand(1, 4, 4, 6), affine=AFF)
    lab = torch.zeros(1, 4, 4, 6)
    lab[0, 1, 1, [1, 4]] = 1
    items = VolumeToSlicesd(["image", "label"], axis=2, select_key="label")({"image": img, "label": lab, "id": 7})
    assert [it["slice_index"] for it in items] == [1, 4]
    assert items[1]["image"].shape == (1, 4, 4) and items[1]["id"] == 7
    assert torch.equal(items[1]["image"].as_tensor(), img.as_tensor()[..., 4])


def test_slice_inference_stitches_with_slice_inferer():
    x = torch.rand(1, 1, 6, 7, 5)
    seen = []

    def net(t):
        seen.append(tuple(t.shape[2:]))
        return torch.cat([t, 2 * t], 1)

    for axis in range(3):
        seen.clear()
        out = slice_inference(x, net, axis=axis)
        assert out.shape == (1, 2, 6, 7, 5) and torch.allclose(out[:, 1], 2 * x[:, 0])
        assert len(seen[0]) == 2  # the network only ever sees 2-D slices
    out = orthogonal_slice_inference(x, [lambda t: t, lambda t: 2 * t, lambda t: 3 * t])
    assert torch.allclose(out, 2 * x, atol=1e-6)


def test_presets_are_monai_chains_with_paper_values():
    liver = liver_ct_preprocessing(load=False)
    win = [t for t in liver.transforms if isinstance(t, ScaleIntensityRanged)][0]
    ct = MetaTensor(torch.tensor([[[[-1000.0, -100.0, 75.0, 250.0, 3000.0]]]]), affine=AFF)
    out = liver({"image": ct, "label": torch.zeros_like(ct)})["image"]
    assert np.allclose(out.ravel().tolist(), [0, 0, 0.5, 1, 1]) and win.scaler.clip
    ms = ms_mri_preprocessing(load=False)
    assert any(isinstance(t, CenterSpatialCropd) for t in ms.transforms)
    assert any(isinstance(t, NormalizeIntensityd) for t in ms.transforms)
    img = MetaTensor(torch.rand(4, 150, 180, 150) + 1, affine=AFF)
    lab = torch.zeros(2, 150, 180, 150)
    lab[0, 70:80, 80:90, 70:80] = 1
    lab[1, 75:85, 80:90, 70:80] = 1
    d = ms({"image": img, "label": lab})
    assert d["image"].shape == (4, 144, 176, 144) and d["label"].shape == (1, 144, 176, 144)
    assert abs(d["image"][0].mean().item()) < 1e-3 and abs(d["image"][0].std().item() - 1) < 1e-2
    assert d["label"].sum().item() == 5 * 10 * 10  # intersection of the raters
    rec = brain_recon_preprocessing(load=False, size=(32, 32), acceleration=4)
    d = rec({"image": MetaTensor(torch.rand(1, 40, 40) * 7, affine=AFF)})
    assert d["label"].shape == (1, 32, 32) and d["label"].max() <= 1 and "image_mask" in d
