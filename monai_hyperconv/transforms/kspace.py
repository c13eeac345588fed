"""Retrospective k-space under-sampling (Ma et al., journal extension, §4.4) and k-space Gaussian noise (Fig 8).

image -> centred orthonormal FFT over the two in-plane axes (``monai.data.fft_utils``) ->
mask (and optional complex Gaussian noise) -> zero-filled reconstruction (inverse FFT of the
masked k-space; footnote 2 of Ma et al.'s journal extension).

Conventions (MONAI's ``monai.apps.reconstruction``): k-space is stored real-valued with a
trailing (real, imaginary) axis of size 2, centre at index ``n // 2``; the FFT is orthonormal,
so Gaussian noise of standard deviation ``s`` per real/imaginary component in k-space is noise
of the same standard deviation per component in the image.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data.fft_utils import fftn_centered, ifftn_centered
from monai.transforms.transform import MapTransform, Randomizable, RandomizableTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from .masks import make_kspace_mask
from .noise import _NoiseDictBase, _RandLevelNoise, _RandNoiseDictBase

__all__ = [
    "KspaceUndersample",
    "RandKspaceUndersample",
    "KspaceUndersampled",
    "RandKspaceUndersampled",
    "KspaceGaussianNoise",
    "RandKspaceGaussianNoise",
    "KspaceGaussianNoised",
    "RandKspaceGaussianNoised",
    "to_kspace",
    "from_kspace",
]


def _plane_first(x: torch.Tensor, slice_axis: int) -> torch.Tensor:
    """(C, *spatial) -> (C, [slice], H, W): put the two in-plane axes last."""
    if x.ndim == 3:
        return x
    if x.ndim != 4:
        raise ValueError(f"expected channel-first 2-D (C,H,W) or 3-D (C,H,W,D) input, got shape {tuple(x.shape)}.")
    return x.movedim(1 + slice_axis % 3, 1)


def to_kspace(img: torch.Tensor, slice_axis: int = 2) -> torch.Tensor:
    """Centred orthonormal 2-D FFT over the in-plane axes.

    Args:
        img: (C,H,W) or (C,H,W,D) real or complex tensor; for 3-D, ``slice_axis`` (spatial index)
            is the through-plane axis.
        slice_axis: spatial axis that is not Fourier transformed (3-D only).

    Returns:
        k-space (C,H,W,2) or (C,H,W,D,2), float32, last axis (real, imaginary).
    """
    x = _plane_first(torch.as_tensor(img), slice_axis)
    xr = torch.view_as_real(x.to(torch.complex64)) if torch.is_complex(x) else torch.stack([x.float(), torch.zeros_like(x, dtype=torch.float32)], -1)
    k = fftn_centered(xr, spatial_dims=2, is_complex=True)
    if img.ndim == 4:
        k = k.movedim(1, 1 + slice_axis % 3)
    return k


def from_kspace(ksp: torch.Tensor, slice_axis: int = 2) -> torch.Tensor:
    """Inverse of :func:`to_kspace`: returns a complex64 image (C,H,W) or (C,H,W,D)."""
    k = torch.as_tensor(ksp)
    if k.ndim == 5:
        k = k.movedim(1 + slice_axis % 3, 1)
    x = torch.view_as_complex(ifftn_centered(k.contiguous(), spatial_dims=2, is_complex=True).contiguous())
    if k.ndim == 5:
        x = x.movedim(1, 1 + slice_axis % 3)
    return x


def _mask_view(mask: np.ndarray, ndim: int, slice_axis: int) -> torch.Tensor:
    """(H', W') in-plane mask -> tensor broadcastable to the (C, *spatial) image."""
    m = torch.as_tensor(mask, dtype=torch.float32)
    if ndim == 3:
        return m[None]
    return m[None, None].movedim(1, 1 + slice_axis % 3)  # (1, 1, H', W') -> slice axis at its place


def _plane_shape(shape: Sequence[int], slice_axis: int) -> tuple[int, int]:
    spatial = list(shape[1:])
    if len(spatial) == 2:
        return int(spatial[0]), int(spatial[1])
    del spatial[slice_axis % 3]
    return int(spatial[0]), int(spatial[1])


def _undersample(
    img: NdarrayOrTensor,
    mask: np.ndarray,
    slice_axis: int,
    noise: np.ndarray | None,
    magnitude: bool | None,
) -> tuple[NdarrayOrTensor, NdarrayOrTensor, NdarrayOrTensor]:
    x = convert_to_tensor(img, track_meta=False)
    is_cplx = torch.is_complex(x)
    k = to_kspace(x, slice_axis)
    m = _mask_view(mask, x.ndim, slice_axis)[..., None]  # broadcast over (re, im)
    if noise is not None:
        k = k + torch.as_tensor(noise, dtype=k.dtype)
    ku = k * m
    zf = from_kspace(ku, slice_axis)
    mag = (not is_cplx) if magnitude is None else magnitude
    recon = zf.abs() if mag else zf
    if not is_cplx and not mag:
        recon = zf.real
    recon_out, *_ = convert_to_dst_type(recon, img, dtype=recon.dtype)
    like = img if isinstance(img, np.ndarray) else x  # k-space and mask carry no image geometry
    ku_out, *_ = convert_to_dst_type(ku, like, dtype=torch.float32)
    m_out, *_ = convert_to_dst_type(m[..., 0], like, dtype=torch.float32)
    return recon_out, ku_out, m_out


class _KspaceBase:
    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        acceleration: float = 8.0,
        mask_type: str = "poisson",
        calib_size: int | Sequence[int] | None = None,
        center_fraction: float = 0.08,
        alpha: float = 3.0,
        slice_axis: int = 2,
        noise_std: float = 0.0,
        magnitude: bool | None = None,
    ) -> None:
        self.acceleration = acceleration
        self.mask_type = mask_type
        self.calib_size = calib_size
        self.center_fraction = center_fraction
        self.alpha = alpha
        self.slice_axis = slice_axis
        self.noise_std = float(noise_std)
        self.magnitude = magnitude
        self._cache: dict[tuple, np.ndarray] = {}

    def _mask(self, plane: tuple[int, int], seed: int | None) -> np.ndarray:
        key = (plane, seed)
        if key not in self._cache:
            if len(self._cache) > 16:  # bounded: random masks must not accumulate
                self._cache.clear()
            self._cache[key] = make_kspace_mask(
                plane, self.mask_type, self.acceleration, seed=seed, calib_size=self.calib_size,
                center_fraction=self.center_fraction, alpha=self.alpha,
            )
        return self._cache[key]

    def _noise(self, shape: Sequence[int], rng: np.random.RandomState) -> np.ndarray | None:
        if self.noise_std <= 0:
            return None
        return rng.normal(0.0, self.noise_std, size=tuple(shape) + (2,)).astype(np.float32)


class KspaceUndersample(_KspaceBase, Transform):
    """Deterministic retrospective under-sampling: one fixed mask per in-plane size and ``seed``.

    Use it for evaluation and for the paper's fixed 8-fold Poisson-disk pattern; being
    deterministic, ``CacheDataset`` caches its output.

    Args:
        acceleration: under-sampling factor R (Ma et al., journal extension, §4.4: 8).
        mask_type: "poisson" (2-D variable-density Poisson disk), "random" or "equispaced"
            (MONAI's 1-D Cartesian line masks).
        calib_size: Poisson: side(s) of the fully sampled centre (default 8% of each side).
        center_fraction: Cartesian: fraction of central lines.
        alpha: Poisson: density fall-off with radius.
        slice_axis: 3-D input: the through-plane spatial axis; the mask covers the other two.
        noise_std: standard deviation of complex Gaussian noise added to k-space before masking
            (Ma et al., journal extension, Fig 8); 0 disables. Noise is seeded by ``seed`` (same noise per call).
        magnitude: return the magnitude of the zero-filled image; default: True for real
            input, False (complex output) for complex input.
        seed: seed of the mask (and noise).
    """

    def __init__(self, acceleration: float = 8.0, mask_type: str = "poisson", seed: int = 0, **kwargs: Any) -> None:
        super().__init__(acceleration, mask_type, **kwargs)
        self.seed = seed

    def undersample(self, img: NdarrayOrTensor) -> tuple[NdarrayOrTensor, NdarrayOrTensor, NdarrayOrTensor]:
        """Returns (zero-filled image, under-sampled k-space (..., 2), mask broadcastable to the image)."""
        plane = _plane_shape(img.shape, self.slice_axis)
        noise = self._noise(img.shape, np.random.RandomState(self.seed))
        return _undersample(img, self._mask(plane, self.seed), self.slice_axis, noise, self.magnitude)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        return self.undersample(img)[0]


class RandKspaceUndersample(_KspaceBase, Randomizable, Transform):
    """Under-sampling with a new mask (and noise) drawn per call, for augmentation.

    Same arguments as :class:`KspaceUndersample`; use ``set_random_state`` for reproducibility.
    A Poisson-disk mask takes ~0.2-0.3 s for 256x256, so a fresh mask every sample is slow on
    CPU; ``n_masks`` > 0 draws from a pool of that many masks instead.
    """

    def __init__(self, acceleration: float = 8.0, mask_type: str = "poisson", n_masks: int = 0, **kwargs: Any) -> None:
        super().__init__(acceleration, mask_type, **kwargs)
        self.n_masks = int(n_masks)
        self._seed_draw = 0

    def randomize(self, data: Any = None) -> None:
        self._seed_draw = int(self.R.randint(self.n_masks)) if self.n_masks > 0 else int(self.R.randint(2**31 - 1))

    def undersample(self, img: NdarrayOrTensor, randomize: bool = True) -> tuple[NdarrayOrTensor, NdarrayOrTensor, NdarrayOrTensor]:
        """Returns (zero-filled image, under-sampled k-space (..., 2), mask broadcastable to the image)."""
        if randomize:
            self.randomize()
        plane = _plane_shape(img.shape, self.slice_axis)
        noise = self._noise(img.shape, self.R)
        return _undersample(img, self._mask(plane, self._seed_draw), self.slice_axis, noise, self.magnitude)

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        return self.undersample(img, randomize)[0]


class _KspaceDictMixin:
    """Shared constructor and key loop of the dictionary k-space under-sampling transforms."""

    _transform_class: type

    def __init__(
        self,
        keys: KeysCollection,
        target_key: str | None = "{key}_target",
        kspace_key: str | None = "{key}_kspace",
        mask_key: str | None = "{key}_mask",
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.target_key, self.kspace_key, self.mask_key = target_key, kspace_key, mask_key
        self.transform = self._transform_class(**kwargs)

    def _apply(self, data: Mapping[Hashable, Any], fn) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            recon, ksp, mask = fn(img)
            if self.target_key is not None:
                d[self.target_key.format(key=key)] = img.clone() if isinstance(img, torch.Tensor) else np.copy(img)
            if self.kspace_key is not None:
                d[self.kspace_key.format(key=key)] = ksp
            if self.mask_key is not None:
                d[self.mask_key.format(key=key)] = mask
            d[key] = recon
        return d


class KspaceUndersampled(_KspaceDictMixin, MapTransform):
    """Dictionary version of :class:`KspaceUndersample`.

    ``d[key]`` becomes the zero-filled reconstruction (network input); the fully sampled image,
    the under-sampled k-space and the mask are kept for the loss and for data-consistency layers.

    Args:
        keys: image keys.
        target_key: where the fully sampled image goes (``"{key}"`` is formatted; e.g. "label").
        kspace_key: where the under-sampled k-space (..., 2) goes; None to drop it.
        mask_key: where the mask (broadcastable to the image) goes; None to drop it.
        allow_missing_keys: don't raise on missing keys.
        kwargs: :class:`KspaceUndersample` arguments.
    """

    backend = KspaceUndersample.backend
    _transform_class = KspaceUndersample

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        return self._apply(data, self.transform.undersample)


class RandKspaceUndersampled(_KspaceDictMixin, Randomizable, MapTransform):
    """Dictionary version of :class:`RandKspaceUndersample` (one mask per call, shared by all keys).

    Args: as :class:`KspaceUndersampled`, with :class:`RandKspaceUndersample` kwargs.
    """

    backend = RandKspaceUndersample.backend
    _transform_class = RandKspaceUndersample

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandKspaceUndersampled:
        super().set_random_state(seed, state)
        self.transform.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        self.transform.randomize()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        self.randomize()
        return self._apply(data, lambda img: self.transform.undersample(img, randomize=False))


# ----------------------------------------------------------------------------- k-space noise
def _kspace_noise(img: NdarrayOrTensor, std: float, rng: np.random.RandomState, slice_axis: int, magnitude: bool | None) -> NdarrayOrTensor:
    x = convert_to_tensor(img, track_meta=False)
    is_cplx = torch.is_complex(x)
    k = to_kspace(x, slice_axis)
    k = k + torch.as_tensor(rng.normal(0.0, std, size=tuple(k.shape)).astype(np.float32))
    y = from_kspace(k, slice_axis)
    mag = (not is_cplx) if magnitude is None else magnitude
    out = y.abs() if mag else (y if is_cplx else y.real)
    res, *_ = convert_to_dst_type(out, img, dtype=out.dtype)
    return res


class KspaceGaussianNoise(Transform):
    """Complex Gaussian noise of a fixed level added in k-space (Ma et al., journal extension, Fig 8, evaluation form).

    With the orthonormal FFT, ``std`` is also the per-component noise level in the image domain.
    Deterministic: the generator is re-seeded with ``seed`` at each call.

    Args:
        std: noise standard deviation per real/imaginary component.
        seed: noise seed.
        slice_axis: 3-D input: the through-plane axis.
        magnitude: return |image| (default for real input) or the complex/real part.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, std: float, seed: int = 0, slice_axis: int = 2, magnitude: bool | None = None) -> None:
        self.std, self.seed, self.slice_axis, self.magnitude = float(std), seed, slice_axis, magnitude

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if self.std <= 0:
            return img
        return _kspace_noise(img, self.std, np.random.RandomState(self.seed), self.slice_axis, self.magnitude)


class RandKspaceGaussianNoise(_RandLevelNoise):
    """Random form of :class:`KspaceGaussianNoise`: with probability ``prob``, std ~ U(std_range).

    Args:
        prob: probability to apply.
        std_range: (min, max) of the noise standard deviation.
        slice_axis: 3-D input: the through-plane axis.
        magnitude: as :class:`KspaceGaussianNoise`.
    """

    backend = KspaceGaussianNoise.backend
    skip_zero_level = True

    def __init__(self, prob: float = 0.1, std_range: Sequence[float] = (0.0, 0.1), slice_axis: int = 2, magnitude: bool | None = None) -> None:
        super().__init__(prob, std_range)
        self.std_range = self.level_range
        self.slice_axis, self.magnitude = slice_axis, magnitude

    def _add_noise(self, img: NdarrayOrTensor, level: float) -> NdarrayOrTensor:
        return _kspace_noise(img, level, self.R, self.slice_axis, self.magnitude)


class KspaceGaussianNoised(_NoiseDictBase):
    """Dictionary version of :class:`KspaceGaussianNoise`."""

    backend = KspaceGaussianNoise.backend

    def __init__(self, keys: KeysCollection, std: float, seed: int = 0, slice_axis: int = 2, magnitude: bool | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = KspaceGaussianNoise(std, seed, slice_axis, magnitude)


class RandKspaceGaussianNoised(_RandNoiseDictBase):
    """Dictionary version of :class:`RandKspaceGaussianNoise` (same draw for all keys' decision)."""

    backend = KspaceGaussianNoise.backend
    level_per_key = False

    def __init__(self, keys: KeysCollection, prob: float = 0.1, std_range: Sequence[float] = (0.0, 0.1), slice_axis: int = 2, magnitude: bool | None = None, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.transform = RandKspaceGaussianNoise(1.0, std_range, slice_axis, magnitude)
