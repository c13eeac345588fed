"""Transforms that MONAI lacks for the hyper-convolution tasks (MONAI style: array and ``...d``
dictionary versions, ``Rand...`` randomizable forms, MetaTensor-preserving).

* k-space: 2-D variable-density Poisson-disk masks, retrospective under-sampling with
  zero-filled reconstruction, k-space Gaussian noise (Ma et al., journal extension, §4.4, Fig 8).
* noise: salt-and-pepper, speckle, fixed-level Gaussian (Ma et al., journal extension, §4.3, Fig 6; Karmann's blog).
* fusion: intersection / union / majority of raters' masks (MS lesions).
* slicing: 3-D volume <-> 2-D slices; per-slice transforms; slice-wise inference with MONAI's ``SliceInferer``.
* presets: the papers' pre-processing chains from MONAI's own transforms.
"""

from .io import AddSliceAxisd, DropSliceAxisd, SaveInInputGeometryd, SaveLikeInputd
from .registration import SplitRegistrationOutputd
from .fusion import FUSION_MODES, FuseLabels, FuseLabelsd, fuse_masks
from .kspace import (
    KspaceGaussianNoise,
    KspaceGaussianNoised,
    KspaceUndersample,
    KspaceUndersampled,
    RandKspaceGaussianNoise,
    RandKspaceGaussianNoised,
    RandKspaceUndersample,
    RandKspaceUndersampled,
    from_kspace,
    to_kspace,
)
from .masks import MASK_TYPES, cartesian_mask, make_kspace_mask, poisson_disc_mask
from .noise import (
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
    salt_pepper,
    speckle,
)
from .presets import (
    LIVER_HU_WINDOW,
    MS_CROP_SIZE,
    brain_recon_preprocessing,
    hu_window,
    liver_ct_preprocessing,
    ms_mri_preprocessing,
)
from .slicing import (
    SlicesToVolume,
    SliceWise,
    SliceWised,
    VolumeToSlices,
    VolumeToSlicesd,
    orthogonal_slice_inference,
    slice_inference,
)

__all__ = [
    "SaveLikeInputd", "SaveInInputGeometryd", "AddSliceAxisd", "DropSliceAxisd", "SplitRegistrationOutputd",
    # k-space
    "MASK_TYPES", "poisson_disc_mask", "cartesian_mask", "make_kspace_mask", "to_kspace", "from_kspace",
    "KspaceUndersample", "KspaceUndersampled", "RandKspaceUndersample", "RandKspaceUndersampled",
    "KspaceGaussianNoise", "KspaceGaussianNoised", "RandKspaceGaussianNoise", "RandKspaceGaussianNoised",
    # noise
    "salt_pepper", "speckle", "SaltPepperNoise", "SaltPepperNoised", "RandSaltPepperNoise", "RandSaltPepperNoised",
    "SpeckleNoise", "SpeckleNoised", "RandSpeckleNoise", "RandSpeckleNoised", "GaussianNoise", "GaussianNoised",
    # fusion
    "FUSION_MODES", "fuse_masks", "FuseLabels", "FuseLabelsd",
    # slicing
    "VolumeToSlices", "SlicesToVolume", "VolumeToSlicesd", "SliceWise", "SliceWised", "slice_inference", "orthogonal_slice_inference",
    # presets
    "LIVER_HU_WINDOW", "MS_CROP_SIZE", "hu_window", "liver_ct_preprocessing", "ms_mri_preprocessing",
    "brain_recon_preprocessing",
]
