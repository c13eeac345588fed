"""The papers' pre-processing chains, built only from MONAI's own transforms.

* Liver lesions (Ma et al., journal extension, §4.2.1): CT intensities truncated to [-100, 250] HU and mapped to
  [0, 1] -> ``ScaleIntensityRanged(a_min=-100, a_max=250, b_min=0, b_max=1, clip=True)``;
  slices resized to 256x256.
* MS lesions (Ma et al. 2022 §4 / journal extension §4.2.2): centre crop 144x176x144 and z-scoring ->
  ``CenterSpatialCropd`` + ``NormalizeIntensityd(nonzero=True, channel_wise=True)``.
* Brain reconstruction (Ma et al., journal extension, §4.4): intensities in [0, 1] on a 256x256 grid, 8-fold
  Poisson-disk under-sampling (:class:`~monai_hyperconv.transforms.KspaceUndersampled`).

Each function returns a ``monai.transforms.Compose``; bundle configs can call them with
``"$monai_hyperconv.transforms.liver_ct_preprocessing()"``.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import (
    CenterSpatialCropd,
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    NormalizeIntensityd,
    Resized,
    ScaleIntensityd,
    ScaleIntensityRanged,
)

from .fusion import FuseLabelsd
from .kspace import KspaceUndersampled

__all__ = [
    "LIVER_HU_WINDOW",
    "MS_CROP_SIZE",
    "hu_window",
    "liver_ct_preprocessing",
    "ms_mri_preprocessing",
    "brain_recon_preprocessing",
]

LIVER_HU_WINDOW = (-100.0, 250.0)
MS_CROP_SIZE = (144, 176, 144)


def hu_window(keys: str | Sequence[str] = "image", a_min: float = LIVER_HU_WINDOW[0], a_max: float = LIVER_HU_WINDOW[1]) -> ScaleIntensityRanged:
    """CT windowing [a_min, a_max] HU -> [0, 1], clipped (Ma et al., journal extension, §4.2.1).

    Returns:
        MONAI ``ScaleIntensityRanged``.
    """
    return ScaleIntensityRanged(keys=keys, a_min=a_min, a_max=a_max, b_min=0.0, b_max=1.0, clip=True)


def liver_ct_preprocessing(
    image_key: str = "image", label_key: str | None = "label", load: bool = True, slice_size: Sequence[int] | None = None
) -> Compose:
    """Liver-lesion CT chain: load, channel first, HU window [-100, 250] -> [0, 1].

    Args:
        image_key: CT key.
        label_key: label key (0 background, 1 liver, 2 lesion) or None.
        load: start with ``LoadImaged`` + ``EnsureChannelFirstd`` (False if already loaded).
        slice_size: in-plane size to resize to (paper: (256, 256)); None keeps the grid. The
            through-plane size is kept; labels use nearest-neighbour.

    Returns:
        ``Compose`` of MONAI transforms.
    """
    keys = [image_key] + ([label_key] if label_key else [])
    ts: list = []
    if load:
        ts += [LoadImaged(keys=keys), EnsureChannelFirstd(keys=keys)]
    ts.append(hu_window(image_key))
    if slice_size is not None:
        size = (int(slice_size[0]), int(slice_size[1]), -1)
        ts.append(Resized(keys=keys, spatial_size=size, mode=["area"] + ["nearest"] * (len(keys) - 1)))
    ts.append(EnsureTyped(keys=keys))
    return Compose(ts)


def ms_mri_preprocessing(
    image_key: str = "image",
    label_key: str | None = "label",
    load: bool = True,
    roi_size: Sequence[int] = MS_CROP_SIZE,
    fuse: str | None = "intersection",
) -> Compose:
    """MS-lesion MRI chain: load 4 contrasts as channels, fuse raters, crop, z-score.

    Args:
        image_key: key holding the list of contrast files (FLAIR, T1, T2, PD) -> 4 channels.
        label_key: key holding the rater files -> one channel per rater; fused in place.
        load: start with ``LoadImaged`` + ``EnsureChannelFirstd``.
        roi_size: centre crop (paper: 144x176x144 of the 182x256x182 ISBI volumes).
        fuse: rater fusion mode ("intersection" as the paper, "union", "majority") or None.

    Returns:
        ``Compose`` of MONAI transforms (+ :class:`FuseLabelsd`).
    """
    keys = [image_key] + ([label_key] if label_key else [])
    ts: list = []
    if load:
        ts += [LoadImaged(keys=keys), EnsureChannelFirstd(keys=keys)]
    if label_key and fuse:
        ts.append(FuseLabelsd(keys=label_key, mode=fuse))
    ts += [
        CenterSpatialCropd(keys=keys, roi_size=tuple(int(s) for s in roi_size)),
        NormalizeIntensityd(keys=image_key, nonzero=True, channel_wise=True),
        EnsureTyped(keys=keys),
    ]
    return Compose(ts)


def brain_recon_preprocessing(
    image_key: str = "image",
    target_key: str = "label",
    load: bool = True,
    size: Sequence[int] | None = (256, 256),
    acceleration: float = 8.0,
    mask_type: str = "poisson",
    seed: int = 0,
) -> Compose:
    """Brain-MRI reconstruction chain: load, [0, 1] scaling, 256x256, fixed under-sampling.

    After it, ``d[image_key]`` is the zero-filled input, ``d[target_key]`` the fully sampled
    image, ``d["image_kspace"]`` / ``d["image_mask"]`` the k-space and mask.

    Args:
        image_key: image key.
        target_key: where the fully sampled target goes.
        load: start with ``LoadImaged`` + ``EnsureChannelFirstd``.
        size: in-plane size (paper: 256x256); None keeps it.
        acceleration: under-sampling factor (paper: 8).
        mask_type: "poisson", "random" or "equispaced".
        seed: mask seed.

    Returns:
        ``Compose``.
    """
    ts: list = []
    if load:
        ts += [LoadImaged(keys=image_key), EnsureChannelFirstd(keys=image_key)]
    ts.append(ScaleIntensityd(keys=image_key, minv=0.0, maxv=1.0))
    if size is not None:
        ts.append(Resized(keys=image_key, spatial_size=tuple(int(s) for s in size), mode="area"))
    ts += [
        EnsureTyped(keys=image_key),
        KspaceUndersampled(keys=image_key, target_key=target_key, acceleration=acceleration, mask_type=mask_type, seed=seed),
    ]
    return Compose(ts)
