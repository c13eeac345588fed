"""k-space sampling masks.

The hyper-convolution journal paper (Ma et al., journal extension, §4.4) under-samples 256x256 brain T1 slices
8-fold "using a Poisson-disk variable-density sampling strategy". MONAI only ships 1-D
Cartesian line masks (``monai.apps.reconstruction``), so the 2-D variable-density Poisson-disk
mask is implemented here with numpy; the 1-D Cartesian masks are wrapped from MONAI.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["poisson_disc_mask", "cartesian_mask", "make_kspace_mask", "MASK_TYPES"]

MASK_TYPES = ("poisson", "random", "equispaced")

# Radii are quantised to this step so the disc "stamps" (flat index offsets) can be cached.
_R_STEP = 0.05


def _calib_box(shape: tuple[int, int], calib_size: int | Sequence[int]) -> tuple[slice, slice]:
    cs = (int(calib_size),) * 2 if np.isscalar(calib_size) else tuple(int(c) for c in calib_size)
    return tuple(slice(n // 2 - c // 2, n // 2 - c // 2 + c) for n, c in zip(shape, cs))  # type: ignore[return-value]


def poisson_disc_mask(
    shape: Sequence[int],
    acceleration: float = 8.0,
    calib_size: int | Sequence[int] | None = None,
    alpha: float = 3.0,
    seed: int | None = 0,
    tol: float = 0.02,
    max_iter: int = 24,
) -> np.ndarray:
    """2-D variable-density Poisson-disk sampling mask with a fully sampled calibration centre.

    A point is kept only if no earlier kept point lies closer than the local minimum distance
    ``r(k) = s * (1 + alpha * |k|)``, where ``|k|`` is the k-space radius normalised to 1 at the
    edge midpoints. Local density therefore falls like ``1 / r(k)^2`` with radius. Candidates are
    visited in a random order fixed by ``seed`` (greedy dart throwing on the k-space lattice); the
    scale ``s`` is found by bisection so that at least the requested number of samples is
    reached, and the surplus (at most ``tol``) is removed at random outside the calibration
    region, so the achieved acceleration equals ``acceleration`` up to rounding of one sample.

    Args:
        shape: (H, W) of the k-space plane.
        acceleration: under-sampling factor R = H*W / number of samples (paper: 8).
        calib_size: side(s) of the fully sampled centre box; default 8% of each side (at least 4).
        alpha: density fall-off; 0 gives uniform Poisson-disk sampling.
        seed: random seed; the mask is a deterministic function of (shape, parameters, seed).
        tol: accepted surplus of samples before trimming, as a fraction of the target.
        max_iter: bisection steps for the scale ``s``.

    Returns:
        boolean array of ``shape``, True where k-space is sampled, centre at ``(H//2, W//2)``
        (the convention of ``monai.data.fft_utils.fftn_centered``).
    """
    h, w = (int(s) for s in shape)
    if h < 2 or w < 2:
        raise ValueError(f"shape must be at least 2x2, got {tuple(shape)}.")
    if acceleration < 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}.")
    n_total = h * w
    n_target = int(round(n_total / acceleration))
    if calib_size is None:
        calib_size = (max(4, int(round(0.08 * h))), max(4, int(round(0.08 * w))))
    box = _calib_box((h, w), calib_size)
    calib = np.zeros((h, w), bool)
    calib[box] = True
    n_calib = int(calib.sum())
    if n_calib > n_target:
        raise ValueError(
            f"calibration region ({n_calib} samples) exceeds the {n_target} samples of acceleration {acceleration}."
        )
    rng = np.random.default_rng(seed)
    if n_target == n_total:
        return np.ones((h, w), bool)

    ky = (np.arange(h) - h // 2) / (h / 2.0)
    kx = (np.arange(w) - w // 2) / (w / 2.0)
    rho = np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    profile = (1.0 + alpha * rho).ravel()

    cand = np.flatnonzero(~calib.ravel())
    cand = cand[rng.permutation(cand.size)]
    calib_idx = np.flatnonzero(calib.ravel())

    def run(scale: float, stop_at: int) -> list[int] | None:
        radius = scale * profile
        r_max = float(radius.max())
        pad = int(np.ceil(r_max)) + 1
        wp = w + 2 * pad
        blocked = np.zeros((h + 2 * pad) * wp, bool)
        rq = np.rint(radius / _R_STEP).astype(np.int64)
        stamps: dict[int, np.ndarray] = {}

        def stamp(q: int) -> np.ndarray:
            off = stamps.get(q)
            if off is None:
                r = q * _R_STEP
                ri = int(np.ceil(r))
                dy, dx = np.mgrid[-ri : ri + 1, -ri : ri + 1]
                keep = dy**2 + dx**2 < r * r
                off = (dy[keep] * wp + dx[keep]).astype(np.int64)
                stamps[q] = off
            return off

        padded = ((np.arange(n_total) // w) + pad) * wp + (np.arange(n_total) % w) + pad
        for i in calib_idx.tolist():
            blocked[padded[i] + stamp(int(rq[i]))] = True
        accepted: list[int] = []
        pl = padded.tolist()
        rql = rq.tolist()
        limit = stop_at - n_calib
        for c in cand.tolist():
            p = pl[c]
            if blocked[p]:
                continue
            accepted.append(c)
            if len(accepted) > limit:
                return None  # too dense: the scale is too small
            blocked[p + stamp(rql[c])] = True
        return accepted

    need = n_target - n_calib
    upper = int(np.floor(n_target * (1 + tol))) + 1
    lo, hi = 0.0, 4.0 / (1.0 + alpha)  # scale 0: everything accepted
    while True:  # grow hi until it yields too few samples
        res = run(hi, n_total)
        if res is not None and len(res) < need:
            break
        hi *= 2.0
    best: list[int] | None = None
    for _ in range(max_iter):
        mid = 0.5 * (lo + hi)
        res = run(mid, upper)
        if res is None:
            lo = mid
        elif len(res) < need:
            hi = mid
        else:
            best = res
            break
    if best is None:  # fall back: the densest admissible scale, then trim
        best = run(lo, n_total) or cand.tolist()
    chosen = np.asarray(best, dtype=np.int64)
    if chosen.size > need:  # trim the surplus uniformly at random (keeps the density profile)
        chosen = chosen[np.sort(rng.choice(chosen.size, need, replace=False))]
    mask = calib.ravel().copy()
    mask[chosen] = True
    return mask.reshape(h, w)


def cartesian_mask(
    shape: Sequence[int],
    acceleration: float = 4.0,
    center_fraction: float = 0.08,
    kind: str = "random",
    seed: int | None = 0,
) -> np.ndarray:
    """1-D Cartesian line mask from MONAI (``RandomKspaceMask`` / ``EquispacedKspaceMask``).

    MONAI samples whole columns (the last axis, phase encoding); the line pattern is broadcast
    over the rows. MONAI's random mask matches the acceleration only in expectation.

    Args:
        shape: (H, W) of the k-space plane.
        acceleration: under-sampling factor.
        center_fraction: fraction of central columns always kept.
        kind: "random" or "equispaced".
        seed: seed for MONAI's random state.

    Returns:
        boolean (H, W) mask.
    """
    import torch
    from monai.apps.reconstruction.transforms.array import EquispacedKspaceMask, RandomKspaceMask

    cls = {"random": RandomKspaceMask, "equispaced": EquispacedKspaceMask}.get(kind)
    if cls is None:
        raise ValueError(f"kind must be 'random' or 'equispaced', got {kind!r}.")
    h, w = (int(s) for s in shape)
    t = cls(center_fractions=[center_fraction], accelerations=[acceleration], spatial_dims=2, is_complex=True)
    t.set_random_state(seed=seed)
    t(torch.zeros(1, h, w, 2))
    line = np.asarray(t.mask).reshape(-1) > 0
    return np.broadcast_to(line[None, :], (h, w)).copy()


def make_kspace_mask(
    shape: Sequence[int],
    mask_type: str = "poisson",
    acceleration: float = 8.0,
    seed: int | None = 0,
    calib_size: int | Sequence[int] | None = None,
    center_fraction: float = 0.08,
    alpha: float = 3.0,
) -> np.ndarray:
    """Dispatch to :func:`poisson_disc_mask` or :func:`cartesian_mask` by ``mask_type``.

    Args:
        shape: (H, W).
        mask_type: one of ``MASK_TYPES``: "poisson", "random" (MONAI lines) or "equispaced" (MONAI lines).
        acceleration: under-sampling factor.
        seed: random seed.
        calib_size: Poisson only: fully sampled centre box.
        center_fraction: Cartesian only: fraction of central lines kept.
        alpha: Poisson only: density fall-off.

    Returns:
        boolean (H, W) mask.
    """
    if mask_type == "poisson":
        return poisson_disc_mask(shape, acceleration, calib_size=calib_size, alpha=alpha, seed=seed)
    if mask_type in ("random", "equispaced"):
        return cartesian_mask(shape, acceleration, center_fraction=center_fraction, kind=mask_type, seed=seed)
    raise ValueError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}.")
