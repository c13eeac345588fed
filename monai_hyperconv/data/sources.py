"""Real images that ship offline inside PyPI packages, and the simulation helpers built on them.

* MNI ICBM152 2009 templates (nilearn): skull-stripped T1, GM and WM probability maps,
  197x233x189 at 1 mm, RAS affine. Read with nibabel after locating the package with
  ``importlib.util.find_spec`` (importing nilearn itself is slow).
* ``CT_small.dcm`` (pydicom): a real 128x128 axial CT crop at 0.66 mm around a vertebra.
* 1,797 real 8x8 handwritten digits (scikit-learn), read from its bundled CSV.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "package_dir",
    "load_mni",
    "load_real_ct",
    "load_digits",
    "smooth_noise",
    "random_deformation",
    "warp",
    "bias_field",
]


def package_dir(name: str) -> Path:
    """Folder of an installed package, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the demo data need the '{name}' package (pip install {name}).")
    return Path(list(spec.submodule_search_locations)[0])


@functools.lru_cache(maxsize=1)
def load_mni() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """MNI152 2009 T1 (0..1), GM, WM, CSF probability maps and brain mask, and the 1 mm affine.

    CSF is ``mask - GM - WM`` (no CSF map ships), the brain mask is ``T1 > 0`` (skull-stripped).
    """
    d = package_dir("nilearn") / "datasets" / "data"
    out = {}
    affine = None
    for key, fn in (("t1", "t1"), ("gm", "gm"), ("wm", "wm")):
        img = nib.load(str(d / f"mni_icbm152_{fn}_tal_nlin_sym_09a_converted.nii.gz"))
        out[key] = np.asarray(img.dataobj, dtype=np.float32) / 255.0
        affine = img.affine
    out["mask"] = ndi.binary_fill_holes(out["t1"] > 0.02).astype(np.float32)
    out["csf"] = np.clip(out["mask"] - out["gm"] - out["wm"], 0.0, 1.0)
    return out, np.asarray(affine)


@functools.lru_cache(maxsize=1)
def load_real_ct() -> tuple[np.ndarray, float]:
    """The real CT crop of pydicom's ``CT_small.dcm`` in HU (rows anterior->posterior) and its pixel spacing (mm)."""
    import pydicom

    path = package_dir("pydicom") / "data" / "test_files" / "CT_small.dcm"
    ds = pydicom.dcmread(str(path))
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return hu, float(ds.PixelSpacing[0])


@functools.lru_cache(maxsize=1)
def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 real 8x8 digits (values 0..16) and their labels 0..9."""
    path = package_dir("sklearn") / "datasets" / "data" / "digits.csv.gz"
    if path.exists():
        with gzip.open(path, "rt") as f:
            data = np.loadtxt(f, delimiter=",", dtype=np.float32)
        return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits as _ld  # fallback if the file moves

    b = _ld()
    return b.images.astype(np.float32), b.target.astype(np.int64)


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) smooth interpolation weights (normalised Gaussian of one coarse spacing)."""
    pos = (np.arange(n_out) + 0.5) / n_out * n_in - 0.5
    w = np.exp(-0.5 * ((pos[:, None] - np.arange(n_in)[None, :]) / 0.6) ** 2)
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


def smooth_noise(shape: tuple[int, ...], rng: np.random.Generator, coarse: int = 4) -> np.ndarray:
    """Band-limited noise in about [-1, 1]: a coarse random grid smoothly interpolated.

    Separable matrix products (instead of ``ndimage.zoom``) keep 3-D fields fast.
    """
    c = max(2, int(coarse))
    z = rng.standard_normal([c] * len(shape)).astype(np.float32)
    for ax, n in enumerate(shape):
        z = np.moveaxis(np.tensordot(_interp_matrix(int(n), c), np.moveaxis(z, ax, 0), axes=(1, 0)), 0, ax)
    return np.ascontiguousarray(z / (np.abs(z).max() + 1e-6))


def random_deformation(shape: tuple[int, ...], rng: np.random.Generator, amplitude: float, coarse: int = 4) -> np.ndarray:
    """Smooth random displacement field (len(shape), *shape) in voxels, max ``amplitude``."""
    return np.stack([amplitude * smooth_noise(shape, rng, coarse) for _ in shape])


def warp(img: np.ndarray, disp: np.ndarray, order: int = 1, cval: float = 0.0) -> np.ndarray:
    """Resample ``img`` at ``identity + disp`` (linear by default, nearest with ``order=0``)."""
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in img.shape], indexing="ij")
    coords = [g + d for g, d in zip(grid, disp)]
    return ndi.map_coordinates(img, coords, order=order, mode="constant", cval=cval).astype(img.dtype)


def bias_field(shape: tuple[int, ...], rng: np.random.Generator, strength: float = 0.15) -> np.ndarray:
    """Smooth multiplicative intensity non-uniformity around 1 (MRI bias field)."""
    return (1.0 + strength * smooth_noise(shape, rng, coarse=3)).astype(np.float32)
