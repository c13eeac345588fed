"""Image-domain noise corruptions for robustness sweeps (Ma et al., journal extension, §4.3, Fig 6; Karmann's blog).

Each corruption has a deterministic fixed-level form (re-seeded at every call, so an evaluation
sweep gives the same corruption whatever the data order or worker) and a random form for
augmentation (MONAI ``RandomizableTransform`` with ``prob`` and a level range). Gaussian noise
is MONAI's own ``RandGaussianNoise``; only a fixed-level wrapper is added here.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import RandGaussianNoise
from monai.transforms.transform import MapTransform, RandomizableTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

__all__ = [
    "salt_pepper",
    "speckle",
    "SaltPepperNoise",
    "RandSaltPepperNoise",
    "SpeckleNoise",
    "RandSpeckleNoise",
    "GaussianNoise",
    "SaltPepperNoised",
    "RandSaltPepperNoised",
    "SpeckleNoised",
    "RandSpeckleNoised",
    "GaussianNoised",
]


def salt_pepper(
    img: NdarrayOrTensor,
    fraction: float,
    rng: np.random.RandomState,
    salt_ratio: float = 0.5,
    low: float | None = None,
    high: float | None = None,
) -> NdarrayOrTensor:
    """Set exactly ``round(fraction * n_pixels)`` pixels to ``low`` (pepper) or ``high`` (salt).

    Pixel positions are shared by all channels (a corrupted pixel is corrupted in every channel);
    the blog's level 0 leaves the image intact, level 1 replaces every pixel.

    Args:
        img: channel-first image.
        fraction: fraction of pixels replaced, in [0, 1].
        rng: numpy random state.
        salt_ratio: fraction of the replaced pixels set to ``high``.
        low, high: pepper / salt values; default the image min / max.

    Returns:
        corrupted image, same type, dtype and metadata.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}.")
    x = convert_to_tensor(img, track_meta=False)
    lo = float(x.min()) if low is None else float(low)
    hi = float(x.max()) if high is None else float(high)
    spatial = tuple(x.shape[1:])
    n = int(np.prod(spatial))
    k = int(round(fraction * n))
    idx = rng.permutation(n)[:k]
    n_salt = int(round(salt_ratio * k))
    flat = x.reshape(x.shape[0], n).clone()
    flat[:, torch.as_tensor(idx[:n_salt], dtype=torch.long)] = hi
    flat[:, torch.as_tensor(idx[n_salt:], dtype=torch.long)] = lo
    out, *_ = convert_to_dst_type(flat.reshape(x.shape), img)
    return out


def speckle(img: NdarrayOrTensor, std: float, rng: np.random.RandomState) -> NdarrayOrTensor:
    """Multiplicative Gaussian (speckle) noise ``x + x * n``, ``n ~ N(0, std^2)`` (as scikit-image).

    Args:
        img: channel-first image.
        std: standard deviation of the multiplicative factor.
        rng: numpy random state.

    Returns:
        noisy image, same type and metadata (float).
    """
    x = convert_to_tensor(img, track_meta=False)
    xf = x.float() if not torch.is_floating_point(x) else x
    n = torch.as_tensor(rng.normal(0.0, std, size=tuple(x.shape)), dtype=xf.dtype)
    out, *_ = convert_to_dst_type(xf + xf * n, img, dtype=xf.dtype)
    return out


class _RandLevelNoise(RandomizableTransform):
    """Base of the random noise transforms: with probability ``prob``, a noise level ``~ U(level_range)``
    is drawn (one per :meth:`randomize`) and :meth:`_add_noise` applies it with the transform's generator.

    Subclasses implement ``_add_noise(img, level)``; with ``skip_zero_level = True`` a drawn level
    ``<= 0`` returns the input unchanged.
    """

    skip_zero_level = False

    def __init__(self, prob: float, level_range: Sequence[float]) -> None:
        RandomizableTransform.__init__(self, prob)
        self.level_range = tuple(float(v) for v in level_range)
        self._level = 0.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self._level = float(self.R.uniform(*self.level_range))

    def _add_noise(self, img: NdarrayOrTensor, level: float) -> NdarrayOrTensor:
        raise NotImplementedError

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        if randomize:
            self.randomize()
        if not self._do_transform or (self.skip_zero_level and self._level <= 0):
            return img
        return self._add_noise(img, self._level)


class SaltPepperNoise(Transform):
    """Salt-and-pepper noise of a fixed level (deterministic: re-seeded with ``seed`` per call).

    Args:
        fraction: fraction of pixels replaced.
        salt_ratio: share of salt (``high``) among the replaced pixels.
        low, high: pepper / salt values; default the image's min / max.
        seed: noise seed.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, fraction: float, salt_ratio: float = 0.5, low: float | None = None, high: float | None = None, seed: int = 0) -> None:
        self.fraction, self.salt_ratio, self.low, self.high, self.seed = fraction, salt_ratio, low, high, seed

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        return salt_pepper(img, self.fraction, np.random.RandomState(self.seed), self.salt_ratio, self.low, self.high)


class RandSaltPepperNoise(_RandLevelNoise):
    """Random salt-and-pepper noise: with probability ``prob``, fraction ~ U(fraction_range).

    Args:
        prob: probability to apply.
        fraction_range: (min, max) fraction of pixels replaced.
        salt_ratio, low, high: as :class:`SaltPepperNoise`.
    """

    backend = SaltPepperNoise.backend

    def __init__(self, prob: float = 0.1, fraction_range: Sequence[float] = (0.0, 0.1), salt_ratio: float = 0.5, low: float | None = None, high: float | None = None) -> None:
        super().__init__(prob, fraction_range)
        self.fraction_range = self.level_range
        self.salt_ratio, self.low, self.high = salt_ratio, low, high

    def _add_noise(self, img: NdarrayOrTensor, level: float) -> NdarrayOrTensor:
        return salt_pepper(img, level, self.R, self.salt_ratio, self.low, self.high)


class SpeckleNoise(Transform):
    """Speckle noise of a fixed level (deterministic: re-seeded with ``seed`` per call).

    Args:
        std: standard deviation of the multiplicative Gaussian factor.
        seed: noise seed.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, std: float, seed: int = 0) -> None:
        self.std, self.seed = float(std), seed

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        return speckle(img, self.std, np.random.RandomState(self.seed))


class RandSpeckleNoise(_RandLevelNoise):
    """Random speckle noise: with probability ``prob``, std ~ U(std_range).

    Args:
        prob: probability to apply.
        std_range: (min, max) of the multiplicative noise standard deviation.
    """

    backend = SpeckleNoise.backend

    def __init__(self, prob: float = 0.1, std_range: Sequence[float] = (0.0, 0.1)) -> None:
        super().__init__(prob, std_range)
        self.std_range = self.level_range

    def _add_noise(self, img: NdarrayOrTensor, level: float) -> NdarrayOrTensor:
        return speckle(img, level, self.R)


class GaussianNoise(Transform):
    """Additive Gaussian noise of a fixed level: MONAI's ``RandGaussianNoise`` with ``prob=1``,
    ``sample_std=False``, re-seeded with ``seed`` at every call (the evaluation form; for
    augmentation use MONAI's ``RandGaussianNoise`` directly).

    Args:
        std: noise standard deviation.
        mean: noise mean.
        seed: noise seed.
    """

    backend = RandGaussianNoise.backend

    def __init__(self, std: float, mean: float = 0.0, seed: int = 0) -> None:
        self.std, self.mean, self.seed = float(std), float(mean), seed
        self._t = RandGaussianNoise(prob=1.0, mean=mean, std=std, sample_std=False)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if self.std <= 0:
            return img
        self._t.set_random_state(seed=self.seed)
        return self._t(img)


class _NoiseDictBase(MapTransform):
    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class SaltPepperNoised(_NoiseDictBase):
    """Dictionary version of :class:`SaltPepperNoise`."""

    backend = SaltPepperNoise.backend

    def __init__(self, keys: KeysCollection, fraction: float, salt_ratio: float = 0.5, low: float | None = None, high: float | None = None, seed: int = 0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = SaltPepperNoise(fraction, salt_ratio, low, high, seed)


class SpeckleNoised(_NoiseDictBase):
    """Dictionary version of :class:`SpeckleNoise`."""

    backend = SpeckleNoise.backend

    def __init__(self, keys: KeysCollection, std: float, seed: int = 0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = SpeckleNoise(std, seed)


class GaussianNoised(_NoiseDictBase):
    """Dictionary version of :class:`GaussianNoise`."""

    backend = GaussianNoise.backend

    def __init__(self, keys: KeysCollection, std: float, mean: float = 0.0, seed: int = 0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = GaussianNoise(std, mean, seed)


class _RandNoiseDictBase(RandomizableTransform, MapTransform):
    """Base of the random dictionary noise transforms: one apply decision for all keys; the noise
    level is drawn per key (``level_per_key = True``) or once per call."""

    level_per_key = True

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.transform.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        if not self.level_per_key:
            self.transform.randomize()
        for key in self.key_iterator(d):
            if self.level_per_key:
                self.transform.randomize()
            d[key] = self.transform(d[key], randomize=False)
        return d


class RandSaltPepperNoised(_RandNoiseDictBase):
    """Dictionary version of :class:`RandSaltPepperNoise`."""

    backend = SaltPepperNoise.backend

    def __init__(self, keys: KeysCollection, prob: float = 0.1, fraction_range: Sequence[float] = (0.0, 0.1), salt_ratio: float = 0.5, low: float | None = None, high: float | None = None, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.transform = RandSaltPepperNoise(1.0, fraction_range, salt_ratio, low, high)


class RandSpeckleNoised(_RandNoiseDictBase):
    """Dictionary version of :class:`RandSpeckleNoise`."""

    backend = SpeckleNoise.backend

    def __init__(self, keys: KeysCollection, prob: float = 0.1, std_range: Sequence[float] = (0.0, 0.1), allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.transform = RandSpeckleNoise(1.0, std_range)
