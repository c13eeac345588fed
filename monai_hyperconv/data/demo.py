"""Deterministic offline demo data sets in the Medical Segmentation Decathlon layout.

Each task writes ``dataset.json`` + ``imagesTr/`` (+ ``labelsTr/``) with NIfTI files carrying
real spacing and affine, so bundles read demo and real data through the same code path
(``monai.data.load_decathlon_datalist``; keys "training" and "validation"). Everything is built
from real images that ship inside PyPI packages plus simulation; what is real and what is
simulated is stated in each set's ``dataset.json["description"]`` and below:

* ``liver`` (3-D CT, int16 HU, labels 0 background / 1 liver / 2 lesion as MSD Task03).
  Real: the vertebra, paraspinal muscle and their CT texture (pydicom ``CT_small.dcm``, a real
  axial CT crop), pasted into every slice. Simulated: body outline, fat, muscle wall, bowel
  gas, aorta, kidneys, ribs, the liver (smoothly deformed ellipsoid) and 1-4 lesions of varied
  size and contrast, CT noise.
* ``ms`` (3-D MRI, 4 contrasts FLAIR/T1/T2/PD, two rater masks). Real: brain anatomy of the
  MNI ICBM152 2009 template (T1 image, GM/WM probability maps) and the real T1 contrast.
  Simulated: per-subject smooth deformations, FLAIR/T2/PD contrasts from tissue maps, a strong
  bias field, noise, white-matter lesions of 1-8 mm (per-lesion contrast from cortex level to far
  above it on FLAIR, bright on T2/PD, dark on T1; partial volume at borders), FLAIR-bright normal
  tissue that mimics lesions (periventricular rim, patchy cortex) and two raters whose masks
  differ at lesion borders. Made so that a FLAIR threshold does not solve it (see ``_MS_LESIONS``).
* ``brain_recon`` (2-D 256x256 T1 magnitude slices for k-space reconstruction). Real: axial
  slices of the MNI152 T1 template. Simulated: per-subject deformation, bias field, contrast
  (gamma) changes. No raw k-space exists: the transforms simulate acquisition.
* ``brain_seg`` (2-D coronal slices with label maps: 0 background, 1-3 left CSF/GM/WM,
  4-6 right CSF/GM/WM; "registration" pairs). Real: MNI152 T1 and tissue maps. Simulated:
  per-subject deformation and intensity changes; labels are the argmax of the deformed maps.
* ``trimap`` (2-D shapes, labels 0 background / 1 object / 2 border, like the Oxford-Pets
  tri-maps of Tek et al. 2020). Entirely simulated.
* ``digits`` (2-D, 10 classes, integer labels). Real: scikit-learn's 1,797 handwritten 8x8
  digits, resized to 28x28 (bilinear). Nothing simulated.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .io import DatasetExistsError, atomic_output_dir, save_nifti, write_dataset_json
from .sources import bias_field, load_digits, load_mni, load_real_ct, random_deformation, smooth_noise, warp

__all__ = ["DEMO_TASKS", "DEMO_DEFAULTS", "make_demo", "make_all_demos", "ensure_demo"]

# task -> (default n_subjects, default size)
DEMO_DEFAULTS: dict[str, tuple[int, tuple[int, ...]]] = {
    "liver": (16, (128, 128, 32)),
    "ms": (8, (96, 112, 96)),
    "brain_recon": (16, (256, 256)),
    "brain_seg": (24, (160, 192)),
    "trimap": (160, (96, 96)),
    "digits": (1797, (28, 28)),
}
DEMO_TASKS = tuple(DEMO_DEFAULTS)
# share of subjects in "validation" (default 0.2): the liver demo keeps 6 of 16 volumes (the same 10
# training volumes as before), because a validation Dice over 2 volumes (one with a 600-voxel
# lesion) swung by +-0.1 from epoch to epoch, and over 4 still by +-0.05
_VAL_FRACTION = {"liver": 0.375}

_LICENCE = (
    "Demo data for software tests and tutorials. MNI ICBM152 2009 template: Copyright (C) 1993-2009 "
    "Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute (permissive licence, "
    "shipped with nilearn). CT_small.dcm: pydicom test data (MIT). Digits: UCI ML hand-written digits, "
    "shipped with scikit-learn (BSD-3)."
)


def _split(n: int, val_fraction: float = 0.2) -> tuple[list[int], list[int]]:
    n_val = int(round(n * val_fraction)) if n >= 3 else (1 if n == 2 else 0)
    n_val = max(n_val, 1) if n >= 2 else 0
    return list(range(n - n_val)), list(range(n - n_val, n))


def _rng(seed: int, *key: int) -> np.random.Generator:
    # one independent stream per (seed, task, subject): subjects do not depend on n_subjects
    return np.random.default_rng([int(seed), *[int(k) for k in key]])


def _rel(p: Path, root: Path) -> str:
    return "./" + p.relative_to(root).as_posix()


# ----------------------------------------------------------------------------------- liver
def _liver(root: Path, seed: int, n: int, size: Sequence[int]) -> dict[str, Any]:
    X, Y, Z = (int(s) for s in size)
    sp = np.array([2.8 * 128 / X, 2.8 * 128 / Y, 5.0 * 32 / Z])  # ~358 x 358 x 160 mm field of view
    affine = np.diag([-sp[0], -sp[1], sp[2], 1.0])  # LPS scanner grid stored as RAS (as CT NIfTIs are)
    affine[:3, 3] = [sp[0] * X / 2, sp[1] * Y / 2, -sp[2] * Z / 2]
    ct, ct_sp = load_real_ct()
    # DICOM rows run anterior->posterior, columns right->left: our axis 0 is right->left, axis 1 ant->post
    patch = ndi.zoom(ct.T, (ct_sp / sp[0], ct_sp / sp[1]), order=1)
    x = (np.arange(X) - X / 2 + 0.5)[:, None, None] * sp[0]  # mm, + towards patient's left
    y = (np.arange(Y) - Y / 2 + 0.5)[None, :, None] * sp[1]  # mm, + towards posterior
    z = (np.arange(Z) - Z / 2 + 0.5)[None, None, :] * sp[2]
    items = []
    for s in range(n):
        rng = _rng(seed, 1, s)
        A = rng.uniform(140, 165) * (1 + 0.03 * np.sin(z / 40.0 + rng.uniform(0, 6)))
        B = rng.uniform(100, 120) * np.ones_like(z)
        f = rng.uniform(8, 20)
        e = lambda a, b: (x / a) ** 2 + (y / b) ** 2  # noqa: E731
        body, inner, cavity = e(A, B) < 1, e(A - f, B - f) < 1, e(A - f - 9, B - f - 9) < 1
        vol = np.full((X, Y, Z), -1000.0, np.float32)
        vol[body] = -100.0 + 10 * rng.standard_normal()
        vol[inner] = 50.0
        vol[cavity] = 35.0
        bowel = (smooth_noise((X, Y, Z), rng, 10) > 0.45) & cavity & (y < 20)
        vol[bowel] = -80.0
        vol[(smooth_noise((X, Y, Z), rng, 12) > 0.8) & cavity & (y < 0) & (x > 0)] = -850.0  # bowel gas
        # real vertebra + paraspinal muscle, blended in with a soft disc
        sy = (B - f - 9 - 38)[0, 0, 0]
        ph, pw = patch.shape
        ci, cj = int(round(X / 2)), int(round(Y / 2 + sy / sp[1]))
        i0, j0 = ci - ph // 2, cj - pw // 2
        pi, pj = np.mgrid[0:ph, 0:pw]
        rr = np.hypot((pi - ph / 2) * sp[0], (pj - pw / 2) * sp[1])
        w = np.clip((40.0 - rr) / 6.0, 0, 1)
        ia, ib, ja, jb = max(i0, 0), min(i0 + ph, X), max(j0, 0), min(j0 + pw, Y)
        ws = w[ia - i0 : ib - i0, ja - j0 : jb - j0, None]
        vol[ia:ib, ja:jb] = ws * patch[ia - i0 : ib - i0, ja - j0 : jb - j0, None] + (1 - ws) * vol[ia:ib, ja:jb]
        # aorta (contrast), kidneys (lower half), ribs
        vol[((x - 18) ** 2 + (y - sy + 38) ** 2 < 11**2) & (z < 1e9)] = rng.uniform(150, 250)
        for side in (-1, 1):
            kid = ((x - side * 70) / 28) ** 2 + ((y - sy + 5) / 22) ** 2 + ((z + 40) / 45) ** 2 < 1
            vol[kid & cavity] = rng.uniform(130, 180)
        ang = np.arctan2(y / B, x / A)
        rib = (np.abs(e(A - f - 4, B - f - 4) - 1) < 0.06) & (np.cos(6 * ang + z / 15.0) > 0.6) & (y > -60)
        vol[rib] = rng.uniform(400, 700)
        # liver: deformed ellipsoid in the right upper abdomen
        c = np.array([-A.mean() * 0.42, -rng.uniform(0, 25), rng.uniform(-10, 25)])
        r = np.array([rng.uniform(55, 75), rng.uniform(60, 80), rng.uniform(55, 80)])
        dl = ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2
        liver = (dl + 0.35 * smooth_noise((X, Y, Z), rng, 4) < 1) & cavity
        label = liver.astype(np.uint8)
        vol[liver] = rng.uniform(55, 70) + 5 * smooth_noise((X, Y, Z), rng, 16)[liver]
        # lesions of varied size and contrast, inside the liver
        depth = ndi.distance_transform_edt(liver, sampling=sp)
        n_les = int(rng.integers(1, 5))
        for k in range(n_les):
            rad = rng.uniform(5, 25) if k else rng.uniform(10, 25)
            cand = np.argwhere(depth > rad * 0.8)
            if len(cand) == 0:
                cand = np.argwhere(depth >= depth.max() * 0.8)
            ci3 = cand[rng.integers(len(cand))]
            cmm = ci3 * sp - np.array([X, Y, Z]) / 2 * sp + sp / 2
            d = np.sqrt(((x - cmm[0]) / rad) ** 2 + ((y - cmm[1]) / (rad * rng.uniform(0.8, 1.2))) ** 2 + ((z - cmm[2]) / rad) ** 2)
            d = d + 0.15 * smooth_noise((X, Y, Z), rng, 24)
            les = (d < 1) & liver
            dhu = -rng.uniform(20, 50) if rng.random() < 0.8 else rng.uniform(20, 40)
            soft = np.clip((1.15 - d) / 0.3, 0, 1) * liver  # labelled voxels (d < 1) get >= half the contrast
            vol += (dhu * soft).astype(np.float32)
            label[les] = 2
        noise = ndi.gaussian_filter(rng.standard_normal((X, Y, Z)).astype(np.float32), 0.7)
        vol += noise / (noise.std() + 1e-6) * rng.uniform(10, 20)
        vol = np.clip(np.rint(vol), -1024, 3071).astype(np.int16)
        name = f"liver_{s:03d}"
        ip, lp = root / "imagesTr" / f"{name}.nii.gz", root / "labelsTr" / f"{name}.nii.gz"
        save_nifti(vol, affine, ip)
        save_nifti(label, affine, lp, np.uint8)
        items.append({"image": _rel(ip, root), "label": _rel(lp, root)})
    return {
        "name": "demo-liver-lesion-ct",
        "description": (
            "Demo liver-lesion CT (3-D, int16 Hounsfield units, labels as MSD Task03). REAL: the vertebra, "
            "paraspinal muscle and their CT texture come from a real axial CT (pydicom CT_small.dcm), pasted "
            "into every slice. SIMULATED: body outline, fat, muscle wall, bowel and gas, aorta, kidneys, ribs, "
            "the liver (deformed ellipsoid), 1-4 lesions per subject of varied size and contrast, CT noise. "
            "For software testing and tutorials only; not for clinical or scientific claims."
        ),
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "liver", "2": "lesion"},
        "items": items,
    }


# -------------------------------------------------------------------------------------- ms
_MS_CONTRASTS = ("flair", "t1", "t2", "pd")
# relative tissue intensities (CSF, GM, WM, brightest lesion); T1 uses the real template instead.
# A lesion's own intensity lies between WM and the last value, at its per-contrast contrast.
_MS_TISSUE = {"flair": (0.12, 0.75, 0.58, 1.15), "t2": (1.0, 0.62, 0.45, 0.92), "pd": (0.85, 0.8, 0.66, 0.95)}
# Statistics of the simulated MS lesions and of what makes them hard to threshold, per subject. They
# are chosen to look qualitatively like MS data (many small lesions and few large ones; FLAIR contrast
# from cortex level to far above it; periventricular, deep and juxtacortical sites; FLAIR-bright normal
# tissue; an uncorrected intensity non-uniformity), not fitted to a data set:
#   number of lesions       uniform 8-20 drawn (overlaps and the raters' intersection leave fewer)
#   size                    log-uniform 1-8 mm "radius", semi-axes x 0.7-1.3 each, kept in 1-8 mm:
#                           at the default ~2 mm grid the smallest labelled lesions are 1-5 voxels
#   site                    55 % deep WM (WM prob. >= 0.9), 25 % periventricular (within 6 mm of a
#                           ventricle), 20 % juxtacortical (WM prob. 0.5-0.85 with GM next to it)
#   contrast (per lesion)   severity u ~ Beta(1, 1.25) (more faint lesions than bright ones); FLAIR
#                           contrast 0.3 + 0.7 u' (u' = u + N(0, 0.1), clipped), so a lesion's FLAIR
#                           lies between cortex level (0.75) and far above it (1.15); T2 and PD contrasts
#                           0.55 + 0.45 v' with v = (u + U(0, 1)) / 2 (v' = v + N(0, 0.1), clipped): above
#                           GM on T2/PD even when faint on FLAIR; T1 darkening 0.05 + 0.4 v
#   partial volume          each voxel holds the fraction of its volume inside the lesion
#                           (signed-distance approximation, rescaled to the ellipsoid's volume)
#   normal FLAIR-bright     a periventricular rim ("caps"/lining: the WM within 3 mm of the ventricles,
#   tissue                  fading by 5 mm, patchy) at 50-90 % of the brightest lesion contrast on FLAIR,
#                           10-25 % on T2/PD, T1-isointense; patchy cortex (GM FLAIR x (1 +- 0.15))
#   bias field              one smooth multiplicative field per subject, strength U(0.20, 0.25)
#   noise                   Rician, sigma 0.025 (tissue intensities ~0.1-1.2)
# Resulting label (default size, seed 0, 8 subjects): 110-760 lesion voxels (0.9-6.4 ml) in 4-16
# connected lesions per subject. A threshold on FLAIR cannot separate the faint lesions from cortex,
# the rim and bias-brightened tissue (fold-0 validation Dice of the best FLAIR threshold 0.41, against
# 0.91 on the earlier demo); a lesion is still a compact blob brighter than the WM around it, brighter
# than GM on T2/PD and darker on T1, which a model that sees all contrasts and the context can use.
_MS_LESIONS = {
    "n": (8, 20), "size_mm": (1.0, 8.0), "site_p": (0.55, 0.25, 0.20), "flair_c": (0.3, 1.0), "t2pd_c": (0.55, 1.0),
    "t1_drop": (0.05, 0.45), "rim_mm": 3.0, "rim_flair": (0.5, 0.9), "rim_t2pd": (0.1, 0.25), "gm_patch": 0.15,
    "bias": (0.20, 0.25), "noise": 0.025,
}


def _resample_mni(size: Sequence[int]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    maps, aff = load_mni()
    shape = maps["t1"].shape
    zoom = [t / s for t, s in zip(size, shape)]
    out = {k: np.clip(ndi.zoom(v, zoom, order=1), 0, 1).astype(np.float32) for k, v in maps.items() if k != "csf"}
    out["mask"] = (out["mask"] > 0.5).astype(np.float32)
    out["csf"] = np.clip(out["mask"] - out["gm"] - out["wm"], 0, 1)
    spacing = np.array(shape) / np.array(size)
    a = aff.copy()
    a[:3, :3] = aff[:3, :3] @ np.diag(spacing)
    a[:3, 3] = aff[:3, 3] + aff[:3, :3] @ ((spacing - 1) / 2)  # voxel centres stay inside the 1 mm grid
    return out, a


def _periventricular(base: dict[str, np.ndarray], vox_mm: np.ndarray, rim_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(rim weight in WM: 1 up to ``rim_mm`` from the ventricles, 0 two mm further; distance to them in mm).

    Ventricles: CSF (probability > 0.5) at least 15 mm inside the brain mask; sulcal CSF is near
    the surface, so this keeps the ventricles and deep cisterns."""
    brain = base["mask"] > 0.5
    depth = ndi.distance_transform_edt(brain, sampling=vox_mm)
    vent = (base["csf"] > 0.5) & (depth > 15.0)
    if not vent.any():  # very coarse grids
        return np.zeros_like(base["wm"]), np.full(base["wm"].shape, np.inf, np.float32)
    dist = ndi.distance_transform_edt(~vent, sampling=vox_mm).astype(np.float32)
    rim = np.clip(1.0 - (dist - rim_mm) / 2.0, 0, 1) * np.clip(base["wm"] * 2.0, 0, 1) * ~vent  # 2 mm fade
    return rim.astype(np.float32), dist


def _ms_lesion(grid: np.ndarray, centre: np.ndarray, r: np.ndarray, size: tuple[int, ...]) -> tuple[tuple[slice, ...], np.ndarray]:
    """Partial-volume fraction of an axis-aligned ellipsoid (centre and semi-axes ``r`` in voxels)."""
    lo = np.maximum(np.floor(centre - r - 2).astype(int), 0)
    hi = np.minimum(np.ceil(centre + r + 2).astype(int) + 1, size)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    d = np.sqrt(sum(((grid[i][sl] - centre[i]) / r[i]) ** 2 for i in range(3)))
    # the signed distance to the surface is about (d - 1) * r: a voxel is half inside on the surface
    pv = np.clip(0.5 - (d - 1.0) * float(np.exp(np.log(r).mean())), 0, 1)
    vol = 4.0 / 3.0 * np.pi * float(np.prod(r))  # true volume in voxels: small lesions are fainter, not bigger
    tot = float(pv.sum())
    if tot > vol > 0:
        pv *= vol / tot
    return sl, pv.astype(np.float32)


def _ms(root: Path, seed: int, n: int, size: Sequence[int]) -> dict[str, Any]:
    size = tuple(int(s) for s in size)
    base, affine = _resample_mni(size)
    P = _MS_LESIONS
    vox_mm = np.abs(np.diag(affine)[:3])
    base["rim"], base["vent_mm"] = _periventricular(base, vox_mm, P["rim_mm"])
    grid = np.indices(size, dtype=np.float32)
    # grids much coarser than the default (~2 mm; tests use ~6 mm) scale the lesions with the brain,
    # so that they keep voxels of their own
    size_mm = np.array(P["size_mm"]) * max(1.0, float(vox_mm.mean()) / 2.5)
    items = []
    for s in range(n):
        rng = _rng(seed, 2, s)
        disp = random_deformation(size, rng, amplitude=0.03 * min(size), coarse=5)
        m = {k: warp(base[k], disp) for k in ("t1", "gm", "wm", "csf", "mask", "rim")}
        m["vent_mm"] = warp(np.minimum(base["vent_mm"], 1e3), disp, cval=1e3)
        brain = m["mask"] > 0.5
        wm_max = float(m["wm"].max())
        sites = [
            np.argwhere(m["wm"] >= min(0.9, 0.9 * wm_max)),  # deep white matter
            np.argwhere((m["wm"] >= 0.5) & (m["vent_mm"] <= 6.0)),  # periventricular
            np.argwhere((m["wm"] >= 0.5) & (m["wm"] <= 0.85) & (ndi.maximum_filter(m["gm"], 3) > 0.5)),  # juxtacortical
        ]
        # per-voxel lesion fraction L and, where it is set, the per-contrast contrast of that lesion
        L = np.zeros(size, np.float32)
        C = {k: np.zeros(size, np.float32) for k in ("flair", "t2", "pd", "t1")}
        for _ in range(int(rng.integers(P["n"][0], P["n"][1] + 1))):
            site = int(rng.choice(3, p=P["site_p"]))
            cand = sites[site] if len(sites[site]) else sites[0]
            centre = cand[rng.integers(len(cand))] + rng.uniform(-0.5, 0.5, 3)
            rad = np.exp(rng.uniform(*np.log(size_mm)))
            r = np.clip(rad * rng.uniform(0.7, 1.3, 3), *size_mm) / vox_mm
            sl, pv = _ms_lesion(grid, centre, r, size)
            u = rng.beta(1.0, 1.25)
            cf = P["flair_c"][0] + (P["flair_c"][1] - P["flair_c"][0]) * np.clip(u + 0.1 * rng.standard_normal(), 0, 1)
            # T2/PD/T1 contrasts: half the FLAIR severity, half a lesion's own (a FLAIR-faint lesion
            # is often clear on T2/PD and T1 (e.g. an older, more destructive lesion), and vice versa)
            v = 0.5 * u + 0.5 * rng.uniform()
            ct2, cpd = P["t2pd_c"][0] + (P["t2pd_c"][1] - P["t2pd_c"][0]) * np.clip(v + 0.1 * rng.standard_normal(2), 0, 1)
            ct1 = P["t1_drop"][0] + (P["t1_drop"][1] - P["t1_drop"][0]) * v
            upd = pv > L[sl]
            L[sl] = np.where(upd, pv, L[sl])
            for k, c in (("flair", cf), ("t2", ct2), ("pd", cpd), ("t1", ct1)):
                C[k][sl] = np.where(upd, c, C[k][sl])
        L *= (m["wm"] + m["gm"] > 0.5)
        # two raters: the same lesions, borders perturbed independently (fine-scale noise + thresholds)
        raters = []
        for k, thr in ((0, 0.45), (1, 0.6)):
            nz = smooth_noise(size, rng, coarse=max(4, min(size) // 4))
            raters.append(((L + 0.5 * nz) > thr) & (L > 0.02) & brain)
        bias = bias_field(size, rng, rng.uniform(*P["bias"]))
        rim = m["rim"] * np.clip(0.7 + 0.7 * smooth_noise(size, rng, coarse=8), 0, 1)  # patchy periventricular rim
        gm_patch = 1.0 + P["gm_patch"] * smooth_noise(size, rng, coarse=6)  # patchy FLAIR-bright cortex
        rim_c = {"flair": rng.uniform(*P["rim_flair"]), "t2": rng.uniform(*P["rim_t2pd"]), "pd": rng.uniform(*P["rim_t2pd"])}
        files = []
        name = f"ms_{s:03d}"
        for con in _MS_CONTRASTS:
            if con == "t1":
                img = m["t1"] * (1 - C["t1"] * L)
            else:
                c_, g_, w_, l_ = (v * rng.uniform(0.95, 1.05) for v in _MS_TISSUE[con])
                gm = m["gm"] * g_ * (gm_patch if con == "flair" else 1.0)
                img = m["csf"] * c_ + gm + m["wm"] * w_ * (1 - rim) + m["wm"] * rim * (w_ + rim_c[con] * (l_ - w_))
                img = img * (1 - L) + L * (w_ + C[con] * (l_ - w_))
            sigma = P["noise"]
            img = np.sqrt((img * bias + sigma * rng.standard_normal(size)) ** 2 + (sigma * rng.standard_normal(size)) ** 2)
            img = np.where(brain, img, 0.0)  # skull-stripped like the ISBI "preprocessed" images
            p = root / "imagesTr" / f"{name}_{con}.nii.gz"
            save_nifti(np.clip(np.rint(img * 1000), 0, 32767), affine, p, np.int16)
            files.append(_rel(p, root))
        labs = []
        for k, r_ in enumerate(raters, 1):
            p = root / "labelsTr" / f"{name}_rater{k}.nii.gz"
            save_nifti(r_, affine, p, np.uint8)
            labs.append(_rel(p, root))
        items.append({"image": files, "label": labs})
    return {
        "name": "demo-ms-lesion-mri",
        "description": (
            "Demo MS-lesion MRI (3-D, four contrasts FLAIR, T1, T2, PD as separate files listed in 'image'; "
            "'label' lists the two raters' masks: fuse them, e.g. intersection as in the papers). REAL: brain "
            "anatomy of the MNI ICBM152 2009 template (T1 image and GM/WM probability maps) and the real T1 "
            "contrast. SIMULATED: per-subject smooth deformation, FLAIR/T2/PD contrasts from tissue maps, "
            "bias field (strength 0.20-0.25), Rician noise, and 8-20 white-matter lesions per subject (55 % deep, "
            "25 % periventricular, 20 % juxtacortical; log-uniform sizes of 1-8 mm semi-axes, the smallest a few "
            "voxels; partial volume at their borders; per-lesion contrast from cortex level to far above it on "
            "FLAIR, brighter than grey matter on T2/PD, darker on T1), normal FLAIR-bright tissue that "
            "mimics lesions (a patchy periventricular rim and patchy cortex), and two raters who disagree at lesion "
            "borders. A FLAIR threshold inside the brain cannot separate faint lesions from that tissue. For "
            "software testing and tutorials only."
        ),
        "tensorImageSize": "4D",
        "modality": {"0": "FLAIR", "1": "T1", "2": "T2", "3": "PD"},
        "labels": {"0": "background", "1": "lesion"},
        "items": items,
    }


# ----------------------------------------------------------------------------- brain 2-D
def _slice_affine(aff3: np.ndarray, axes: tuple[int, int], through: int, index: float, offset: tuple[float, float], zoom: tuple[float, float]) -> np.ndarray:
    """4x4 affine of a 2-D slice of a 3-D grid: in-plane ``axes``, shifted by ``offset`` voxels, resampled by ``zoom``."""
    a = np.eye(4)
    a[:3, 0] = aff3[:3, axes[0]] / zoom[0]
    a[:3, 1] = aff3[:3, axes[1]] / zoom[1]
    a[:3, 2] = aff3[:3, through]
    origin = np.zeros(3)
    origin[list(axes)] = offset
    origin[through] = index
    a[:3, 3] = aff3[:3, :3] @ origin + aff3[:3, 3]
    return a


def _fit2d(img: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """Centre crop / zero pad ``img`` to ``shape``; returns the array and the offset of out[0, 0] in img."""
    out = np.zeros(shape, img.dtype)
    off = []
    src, dst = [], []
    for n_in, n_out in zip(img.shape, shape):
        o = (n_in - n_out) // 2
        off.append(o)
        src.append(slice(max(o, 0), max(o, 0) + min(n_in, n_out)))
        dst.append(slice(max(-o, 0), max(-o, 0) + min(n_in, n_out)))
    out[tuple(dst)] = img[tuple(src)]
    return out, (off[0], off[1])


def _brain_recon(root: Path, seed: int, n: int, size: Sequence[int]) -> dict[str, Any]:
    maps, aff = load_mni()
    t1 = maps["t1"]
    h, w = (int(s) for s in size)
    items = []
    per_subject = 4
    for s in range(n):
        rng = _rng(seed, 3, s)
        zs = np.sort(rng.choice(np.arange(55, 136), per_subject, replace=False))
        gamma = rng.uniform(0.8, 1.25)
        for z in zs:
            sl, off = _fit2d(t1[:, :, z], (256, 256))
            zoom = (h / 256, w / 256)
            if (h, w) != (256, 256):
                sl = ndi.zoom(sl, zoom, order=1)[:h, :w]
            sl = warp(sl, random_deformation((h, w), rng, 0.015 * min(h, w), 5))
            sl = np.clip(sl, 0, None) ** gamma * bias_field((h, w), rng, 0.15)
            sl = (sl / (sl.max() + 1e-6)).astype(np.float32)
            a = _slice_affine(aff, (0, 1), 2, float(z), (off[0] - 0.5 + 0.5 / zoom[0], off[1] - 0.5 + 0.5 / zoom[1]), zoom)
            p = root / "imagesTr" / f"brain_{s:03d}_z{int(z):03d}.nii.gz"
            save_nifti(sl, a, p, np.float32)
            items.append({"image": _rel(p, root), "subject": f"brain_{s:03d}"})
    return {
        "name": "demo-brain-t1-reconstruction",
        "description": (
            f"Demo brain T1 slices for k-space reconstruction (2-D {h}x{w} magnitude images in [0, 1], "
            f"{per_subject} axial slices per subject; the fully sampled image is the target). REAL: axial "
            "slices of the MNI ICBM152 2009 T1 template. SIMULATED: per-subject smooth deformation, bias field "
            "and contrast (gamma) changes. No raw k-space: under-sampling is simulated by the transforms "
            "(monai_hyperconv.transforms.KspaceUndersampled). For software testing and tutorials only."
        ),
        "tensorImageSize": "2D",
        "modality": {"0": "T1"},
        "labels": {},
        "items": items,
        "group_key": "subject",
    }


_CORONAL_TO_PLANAR = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]])

_SEG_LABELS = {"0": "background", "1": "left CSF", "2": "left GM", "3": "left WM", "4": "right CSF", "5": "right GM", "6": "right WM"}


def _brain_seg(root: Path, seed: int, n: int, size: Sequence[int]) -> dict[str, Any]:
    maps, aff = load_mni()
    h, w = (int(s) for s in size)
    mid_x = int(round(np.linalg.solve(aff, [0, 0, 0, 1])[0]))  # voxel of MNI x = 0
    j_mid = int(round(np.linalg.solve(aff, [0, 0, 0, 1])[1]))  # voxel of MNI y = 0 (mid-coronal)
    items = []
    for s in range(n):
        rng = _rng(seed, 4, s)
        j = int(j_mid + rng.integers(-14, 7))
        planes = {k: maps[k][:, j, :] for k in ("t1", "gm", "wm", "csf", "mask")}
        planes["left"] = (np.arange(maps["t1"].shape[0]) < mid_x)[:, None] * np.ones_like(planes["t1"])  # MNI x<0 is left
        scale = min(h / 160, w / 192)
        fitted = {}
        off = (0, 0)
        for k, v in planes.items():
            if scale != 1:
                v = ndi.zoom(v, scale, order=1)
            fitted[k], off = _fit2d(v.astype(np.float32), (h, w))
        disp = random_deformation((h, w), rng, 0.03 * min(h, w), 5)
        wm_ = {k: warp(v, disp) for k, v in fitted.items()}
        mask = wm_["mask"] > 0.5
        tissue = np.stack([1 - wm_["mask"], wm_["csf"], wm_["gm"], wm_["wm"]])
        lab = np.argmax(tissue, 0).astype(np.uint8)
        lab[~mask] = 0
        right = (wm_["left"] < 0.5) & (lab > 0)
        lab[right] += 3
        img = np.clip(wm_["t1"], 0, None) ** rng.uniform(0.85, 1.2) * bias_field((h, w), rng, 0.1)
        img = img + 0.01 * rng.standard_normal((h, w))
        img = np.where(mask, img, 0.0)
        img = (np.clip(img, 0, None) / (img.max() + 1e-6)).astype(np.float32)
        a = _slice_affine(aff, (0, 2), 1, float(j), (off[0] / 1.0 - 0.5 + 0.5 / scale, off[1] - 0.5 + 0.5 / scale), (scale, scale))
        # a coronal plane spans world x and z, but MONAI reads a 2-D image's geometry from the x/y rows
        # of its affine (singular here, so SaveImage fails): rotate world axes (y, z) -> (-z, y), a
        # proper rotation that keeps spacings and the slice position (now on world z)
        a = _CORONAL_TO_PLANAR @ a
        name = f"brain_{s:03d}"
        ip, lp = root / "imagesTr" / f"{name}.nii.gz", root / "labelsTr" / f"{name}.nii.gz"
        save_nifti(img, a, ip, np.float32)
        save_nifti(lab, a, lp, np.uint8)
        items.append({"image": _rel(ip, root), "label": _rel(lp, root)})
    return {
        "name": "demo-brain-label-maps",
        "description": (
            f"Demo brain label maps (2-D {h}x{w} coronal slices near the mid-coronal plane, like the neurite "
            "OASIS 2-D slices; labels 0 background, 1-3 left CSF/GM/WM, 4-6 right CSF/GM/WM) for scale-space "
            "segmentation, and 'registration' pairs (image = [fixed, moving], label = [fixed, moving]). REAL: "
            "MNI ICBM152 2009 T1 and GM/WM maps (CSF = brain mask - GM - WM). SIMULATED: per-subject smooth "
            "deformation, slice position, bias field, contrast and noise; labels are the argmax of the deformed "
            "tissue maps. For software testing and tutorials only."
        ),
        "tensorImageSize": "2D",
        "modality": {"0": "T1"},
        "labels": _SEG_LABELS,
        "items": items,
    }


# ------------------------------------------------------------------------------ trimap
def _trimap(root: Path, seed: int, n: int, size: Sequence[int]) -> dict[str, Any]:
    h, w = (int(s) for s in size)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    border = max(1, int(round(min(h, w) / 48)))  # pets tri-map borders are a few pixels wide
    items = []
    for s in range(n):
        rng = _rng(seed, 5, s)
        cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
        r0 = rng.uniform(0.18, 0.3) * min(h, w)
        th = np.arctan2(yy - cy, xx - cx)
        rad = np.ones_like(th)
        for k in range(2, 6):
            rad += rng.uniform(0, 0.25 / k * 2) * np.cos(k * th + rng.uniform(0, 2 * np.pi))
        obj = np.hypot(yy - cy, xx - cx) < r0 * rad
        inner = ndi.binary_erosion(obj, iterations=border)
        outer = ndi.binary_dilation(obj, iterations=border)
        lab = np.zeros((h, w), np.uint8)
        lab[inner] = 1
        lab[outer & ~inner] = 2
        bg = rng.uniform(0.2, 0.8) + 0.15 * smooth_noise((h, w), rng, 6)
        fg = rng.uniform(0.2, 0.8) + 0.1 * smooth_noise((h, w), rng, 12) + 0.08 * np.sin(xx * rng.uniform(0.2, 0.8) + yy * rng.uniform(0.2, 0.8))
        soft = ndi.gaussian_filter(obj.astype(np.float32), 1.0)  # blurred edge makes the border ambiguous
        img = soft * fg + (1 - soft) * bg + 0.03 * rng.standard_normal((h, w))
        img = np.clip(img, 0, 1).astype(np.float32)
        ip, lp = root / "imagesTr" / f"shape_{s:04d}.nii.gz", root / "labelsTr" / f"shape_{s:04d}.nii.gz"
        save_nifti(img, np.eye(4), ip, np.float32)
        save_nifti(lab, np.eye(4), lp, np.uint8)
        items.append({"image": _rel(ip, root), "label": _rel(lp, root)})
    return {
        "name": "demo-trimap-shapes",
        "description": (
            f"Demo tri-map segmentation ({h}x{w} grey-level images, labels 0 background / 1 object / 2 border, "
            "as the Oxford-IIIT Pets tri-maps of the adaptive-kernel paper, remapped from pets' 2/1/3). "
            "Entirely SIMULATED: random smooth star-shaped objects with textures on textured backgrounds, "
            "blurred edges and noise. Nothing real. For software testing and tutorials only."
        ),
        "tensorImageSize": "2D",
        "modality": {"0": "grey"},
        "labels": {"0": "background", "1": "object", "2": "border"},
        "items": items,
    }


# ------------------------------------------------------------------------------ digits
def _digits(root: Path, seed: int, n: int, size: Sequence[int]) -> dict[str, Any]:
    images, targets = load_digits()
    h, w = (int(s) for s in size)
    order = np.random.default_rng(seed).permutation(len(images))[:n]  # stratification by chance
    items = []
    for k, idx in enumerate(order):
        img = ndi.zoom(images[idx] / 16.0, (h / 8, w / 8), order=1, grid_mode=True, mode="grid-constant")
        img = np.clip(img, 0, 1).astype(np.float32)
        p = root / "imagesTr" / f"digit_{k:04d}.nii.gz"
        save_nifti(img, np.eye(4), p, np.float32)
        items.append({"image": _rel(p, root), "label": int(targets[idx])})
    return {
        "name": "demo-digits",
        "description": (
            f"Demo digit classification (2-D {h}x{w}, 10 classes, integer labels; load with "
            "load_decathlon_datalist(..., is_segmentation=False)). REAL: scikit-learn's 1,797 handwritten 8x8 "
            "digits (UCI ML hand-written digits), resized bilinearly to the grid; nothing simulated."
        ),
        "tensorImageSize": "2D",
        "modality": {"0": "grey"},
        "labels": {str(i): str(i) for i in range(10)},
        "items": items,
    }


_BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {
    "liver": _liver,
    "ms": _ms,
    "brain_recon": _brain_recon,
    "brain_seg": _brain_seg,
    "trimap": _trimap,
    "digits": _digits,
}


def make_demo(
    task: str,
    out_dir: str | os.PathLike,
    seed: int = 0,
    n_subjects: int | None = None,
    size: Sequence[int] | None = None,
    overwrite: bool = False,
) -> str:
    """Generate one demo data set in MSD layout, atomically.

    Args:
        task: one of ``DEMO_TASKS`` (liver, ms, brain_recon, brain_seg, trimap, digits).
        out_dir: data set folder (gets ``dataset.json``, ``imagesTr/``, ``labelsTr/``).
        seed: random seed; the output is a deterministic function of (task, seed, n_subjects, size).
        n_subjects: number of subjects (images for trimap/digits); default ``DEMO_DEFAULTS``.
        size: spatial size; default ``DEMO_DEFAULTS`` (liver (X,Y,Z), ms (X,Y,Z), 2-D tasks (H,W)).
        overwrite: replace an existing non-empty ``out_dir``; otherwise it is an error.

    Returns:
        path of the written ``dataset.json``.
    """
    if task not in _BUILDERS:
        raise ValueError(f"unknown demo task {task!r}; choose from {DEMO_TASKS} (or use make_all_demos).")
    n_def, size_def = DEMO_DEFAULTS[task]
    n = int(n_subjects) if n_subjects is not None else n_def
    if task == "digits":
        n = min(n, 1797)
    if n < 1:
        raise ValueError(f"n_subjects must be >= 1, got {n}.")
    sz = tuple(int(s) for s in (size if size is not None else size_def))
    if len(sz) != len(size_def):
        raise ValueError(f"size for {task!r} must have {len(size_def)} entries, got {sz}.")
    out = Path(out_dir)
    with atomic_output_dir(out, overwrite) as tmp:
        info = _BUILDERS[task](tmp, seed, n, sz)
        items = info.pop("items")
        group_key = info.pop("group_key", None)
        if group_key:  # keep a subject's slices on one side of the split
            groups = list(dict.fromkeys(it[group_key] for it in items))
            _, vg = _split(len(groups), _VAL_FRACTION.get(task, 0.2))
            val_groups = {groups[i] for i in vg}
            tr = [it for it in items if it[group_key] not in val_groups]
            va = [it for it in items if it[group_key] in val_groups]
        else:
            ti, vi = _split(len(items), _VAL_FRACTION.get(task, 0.2))
            tr, va = [items[i] for i in ti], [items[i] for i in vi]
        info.update(
            reference="monai_hyperconv.data.make_demo",
            licence=_LICENCE,
            release="demo",
            task=task,
            seed=int(seed),
            size=list(sz),
            numTraining=len(tr),
            numValidation=len(va),
            training=tr,
            validation=va,
        )
        if task == "brain_seg":
            info["registration"] = [
                {"image": [a["image"], b["image"]], "label": [a["label"], b["label"]]} for a, b in zip(tr, tr[1:] + tr[:1])
            ] if len(tr) > 1 else []
        write_dataset_json(tmp, info)
    return str(out.resolve() / "dataset.json")


def make_all_demos(out_dir: str | os.PathLike, seed: int = 0, overwrite: bool = False, tasks: Sequence[str] = DEMO_TASKS) -> dict[str, str]:
    """Generate several demo sets into ``out_dir/<task>``.

    Returns:
        task -> dataset.json path.
    """
    return {t: make_demo(t, Path(out_dir) / t, seed=seed, overwrite=overwrite) for t in tasks}


def ensure_demo(task: str, out_dir: str | os.PathLike, seed: int = 0, **kwargs: Any) -> str:
    """Return ``out_dir/dataset.json``, generating the demo set first if it is missing.

    Bundles call this on first use. An existing ``dataset.json`` is never regenerated; a
    non-empty folder without one is an error (it is not ours to overwrite). Two processes racing
    to generate are safe: the loser keeps the winner's data set.

    Args:
        task: demo task.
        out_dir: data set folder.
        seed: seed used when generating.
        kwargs: further :func:`make_demo` arguments (n_subjects, size).

    Returns:
        path of ``dataset.json``.
    """
    js = Path(out_dir) / "dataset.json"
    if js.is_file():
        return str(js.resolve())
    try:
        return make_demo(task, out_dir, seed=seed, **kwargs)
    except DatasetExistsError:
        if js.is_file():  # another process finished first
            return str(js.resolve())
        raise
