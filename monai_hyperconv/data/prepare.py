"""Convert the public data sets' original layouts to the MSD layout the bundles read.

No download happens here: point each function (or ``scripts/prepare_*.py``) at a copy of the
data set. Every input NIfTI is read completely and checked: a missing modality, a corrupt or
truncated file, NaN voxels, or an image/label pair with different shape or affine raise
:class:`PreparationError` naming the file. Output is written atomically (a temporary folder
renamed at the end) and an existing non-empty output folder is only replaced with
``overwrite=True``.

* :func:`prepare_lits`: LiTS (``volume-N.nii`` / ``segmentation-N.nii``) or MSD Task03 Liver
  (``imagesTr/``, ``labelsTr/``) -> int16 HU CT + labels 0/1/2.
* :func:`prepare_isbi2015_ms`: ISBI 2015 longitudinal MS (``training/trainingXX/preprocessed/
  trainingXX_TT_{flair,mprage,t2,pd}_pp.nii``, ``masks/trainingXX_TT_mask{1,2}.nii``; test
  subjects without masks) -> four contrasts + two raters.
* :func:`prepare_brain_t1`: a folder of 3-D brain T1 NIfTI (ABIDE-like) -> 2-D axial slices
  in [0, 1] on a 256x256 grid for reconstruction.
* :func:`prepare_oasis_neurite`: neurite OASIS 2-D (``OASIS_OAS1_XXXX_MR1/slice_norm.nii.gz``,
  ``slice_seg4.nii.gz`` / ``slice_seg24.nii.gz``) -> image/label slices + registration pairs.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from .io import DatasetExistsError, atomic_output_dir, check_output_dir, save_nifti, write_dataset_json

__all__ = [
    "PreparationError",
    "run_prepare_cli",
    "load_nifti_checked",
    "check_same_grid",
    "split_items",
    "prepare_lits",
    "prepare_isbi2015_ms",
    "prepare_brain_t1",
    "prepare_oasis_neurite",
]


class PreparationError(ValueError):
    """A source file is missing, corrupt, inconsistent or contains invalid values (the message names it)."""


def _nii_files(folder: Path, pattern: str = "*") -> list[Path]:
    out = [p for ext in (".nii", ".nii.gz") for p in folder.rglob(pattern + ext) if not p.name.startswith("._")]
    return sorted(set(out))


def load_nifti_checked(path: str | os.PathLike, allow_nan: bool = False, squeeze: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI file completely and validate it.

    Args:
        path: file.
        allow_nan: accept NaN/inf voxels.
        squeeze: drop trailing singleton axes beyond the third (e.g. (H, W, 1) 2-D slices stay 3-D
            only if needed; (X, Y, Z, 1) becomes 3-D).

    Returns:
        (data, 4x4 affine).

    Raises:
        PreparationError: missing, corrupt or truncated file, or non-finite voxels.
    """
    p = Path(path)
    if not p.is_file():
        raise PreparationError(f"{p}: file not found.")
    try:
        img = nib.load(str(p))
        data = np.asarray(img.dataobj)
    except Exception as e:  # nibabel raises many types for truncated gzip / short data / bad header
        raise PreparationError(f"{p}: corrupt or truncated NIfTI ({type(e).__name__}: {e}).") from e
    if squeeze:
        while data.ndim > 3 and data.shape[-1] == 1:
            data = data[..., 0]
    if np.issubdtype(data.dtype, np.floating) and not allow_nan:
        bad = int((~np.isfinite(data)).sum())
        if bad:
            raise PreparationError(f"{p}: {bad} NaN/inf voxels.")
    return data, np.asarray(img.affine, dtype=np.float64)


def check_same_grid(ref: tuple[Path, np.ndarray, np.ndarray], other: tuple[Path, np.ndarray, np.ndarray], atol: float = 1e-3) -> None:
    """Raise :class:`PreparationError` if two (path, data, affine) differ in shape or affine."""
    (p0, d0, a0), (p1, d1, a1) = ref, other
    if d0.shape != d1.shape:
        raise PreparationError(f"{p1}: shape {d1.shape} does not match {p0} {d0.shape}.")
    if not np.allclose(a0, a1, atol=atol):
        raise PreparationError(f"{p1}: affine does not match {p0}:\n{a1}\nvs\n{a0}")


def split_items(items: list[dict[str, Any]], val_fraction: float = 0.2, group_key: str | None = None) -> tuple[list, list]:
    """Deterministic train/validation split, the last groups (subjects) going to validation."""
    keys = [it.get(group_key, i) if group_key else i for i, it in enumerate(items)]
    groups = list(dict.fromkeys(keys))
    n_val = int(round(len(groups) * val_fraction))
    if len(groups) >= 2 and val_fraction > 0:
        n_val = max(1, min(n_val, len(groups) - 1))
    else:
        n_val = 0
    val_groups = set(groups[len(groups) - n_val :])
    tr = [it for it, k in zip(items, keys) if k not in val_groups]
    va = [it for it, k in zip(items, keys) if k in val_groups]
    return tr, va


def _rel(p: Path, root: Path) -> str:
    return "./" + p.relative_to(root).as_posix()


def _finish(tmp: Path, info: dict[str, Any], items: list[dict], val_fraction: float, group_key: str | None = None, test: list | None = None) -> str:
    tr, va = split_items(items, val_fraction, group_key)
    info.update(numTraining=len(tr), numValidation=len(va), training=tr, validation=va)
    if test:
        info.update(numTest=len(test), test=test)
    return write_dataset_json(tmp, info)


def _stem(p: Path) -> str:
    return p.name[: -len(".nii.gz")] if p.name.endswith(".nii.gz") else p.stem


# ------------------------------------------------------------------------------------ LiTS
def prepare_lits(src: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False, val_fraction: float = 0.2) -> str:
    """LiTS or MSD Task03 Liver -> MSD layout (int16 HU images, uint8 labels 0/1/2).

    Args:
        src: LiTS folder (``volume-N.nii``, ``segmentation-N.nii`` anywhere below) or MSD
            ``Task03_Liver`` folder (``imagesTr/``, ``labelsTr/``).
        out: output folder.
        overwrite: replace a non-empty ``out``.
        val_fraction: share of cases listed under "validation".

    Returns:
        path of ``dataset.json``.
    """
    src = Path(src)
    check_output_dir(out, overwrite)
    pairs: list[tuple[str, Path, Path]] = []
    for v in _nii_files(src, "volume-*"):
        m = re.match(r"volume-(\d+)", v.name)
        if not m:
            continue
        seg = [v.parent / f"segmentation-{m.group(1)}{ext}" for ext in (".nii", ".nii.gz")]
        seg = [s for s in seg if s.exists()] or list(src.rglob(f"segmentation-{m.group(1)}.nii*"))
        if not seg:
            raise PreparationError(f"{v}: no matching segmentation-{m.group(1)}.nii[.gz] label file.")
        pairs.append((f"liver_{int(m.group(1)):03d}", v, seg[0]))
    if not pairs and (src / "imagesTr").is_dir():
        for v in _nii_files(src / "imagesTr"):
            lab = [src / "labelsTr" / v.name]
            if not lab[0].exists():
                raise PreparationError(f"{v}: no matching label {lab[0]}.")
            pairs.append((_stem(v), v, lab[0]))
    if not pairs:
        raise PreparationError(f"{src}: no LiTS volume-N.nii[.gz] or MSD imagesTr/*.nii.gz found.")
    pairs.sort(key=lambda t: t[0])
    with atomic_output_dir(out, overwrite) as tmp:
        items = []
        for name, vp, sp in pairs:
            img, aff = load_nifti_checked(vp)
            lab, laff = load_nifti_checked(sp)
            check_same_grid((vp, img, aff), (sp, lab, laff))
            vals = np.unique(lab)
            if not np.isin(vals, [0, 1, 2]).all():
                raise PreparationError(f"{sp}: label values {vals.tolist()} outside 0/1/2.")
            ip, lp = tmp / "imagesTr" / f"{name}.nii.gz", tmp / "labelsTr" / f"{name}.nii.gz"
            save_nifti(np.clip(np.rint(img), -1024, 3071), aff, ip, np.int16)
            save_nifti(lab, aff, lp, np.uint8)
            items.append({"image": _rel(ip, tmp), "label": _rel(lp, tmp)})
        info = {
            "name": "LiTS / MSD Task03 Liver",
            "description": f"Liver and liver-lesion CT converted from {src.name} (HU kept as int16).",
            "reference": "Bilic et al., The Liver Tumor Segmentation Benchmark (LiTS), MedIA 2023",
            "tensorImageSize": "3D",
            "modality": {"0": "CT"},
            "labels": {"0": "background", "1": "liver", "2": "lesion"},
        }
        _finish(tmp, info, items, val_fraction)
    return str(Path(out).resolve() / "dataset.json")


# ------------------------------------------------------------------------------ ISBI 2015
ISBI_CONTRASTS = {"flair": "flair", "t1": "mprage", "t2": "t2", "pd": "pd"}


def prepare_isbi2015_ms(src: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False, val_fraction: float = 0.2) -> str:
    """ISBI 2015 longitudinal MS lesion challenge -> MSD layout with four contrasts and two raters.

    Training time points (both ``mask1``/``mask2`` present) go to ``imagesTr``/``labelsTr``
    ("training"/"validation", split by subject); time points without masks go to ``imagesTs``
    ("test"). Item: ``{"image": [flair, t1, t2, pd], "label": [rater1, rater2], "subject": ...}``.

    Args:
        src: folder containing ``*_flair_pp.nii[.gz]`` files (e.g. ``training/`` and ``testdata_website/``).
        out: output folder.
        overwrite: replace a non-empty ``out``.
        val_fraction: share of training subjects listed under "validation".

    Returns:
        path of ``dataset.json``.
    """
    src = Path(src)
    check_output_dir(out, overwrite)
    flairs = _nii_files(src, "*_flair_pp")
    if not flairs:
        raise PreparationError(f"{src}: no ISBI 2015 *_flair_pp.nii[.gz] files found.")
    with atomic_output_dir(out, overwrite) as tmp:
        items, test = [], []
        for fl in flairs:
            prefix = re.sub(r"_flair_pp$", "", _stem(fl))
            ext = fl.name[len(prefix) + len("_flair_pp") :]
            subject = prefix.rsplit("_", 1)[0]
            paths = {c: fl.parent / f"{prefix}_{tag}_pp{ext}" for c, tag in ISBI_CONTRASTS.items()}
            for c, p in paths.items():
                if not p.is_file():
                    alt = [q for q in (p.with_name(f"{prefix}_{ISBI_CONTRASTS[c]}_pp.nii"), p.with_name(f"{prefix}_{ISBI_CONTRASTS[c]}_pp.nii.gz")) if q.is_file()]
                    if not alt:
                        raise PreparationError(f"{p}: missing {c.upper()} contrast for {prefix}.")
                    paths[c] = alt[0]
            mask_dir = fl.parent.parent / "masks"
            masks = [next((mask_dir / f"{prefix}_mask{k}{e}" for e in (".nii", ".nii.gz") if (mask_dir / f"{prefix}_mask{k}{e}").is_file()), None) for k in (1, 2)]
            if (masks[0] is None) != (masks[1] is None):
                missing = mask_dir / f"{prefix}_mask{1 if masks[0] is None else 2}.nii"
                raise PreparationError(f"{missing}: missing rater mask (the other rater's mask exists).")
            loaded = {c: (p, *load_nifti_checked(p)) for c, p in paths.items()}
            ref = loaded["flair"]
            for c in ("t1", "t2", "pd"):
                check_same_grid(ref, loaded[c])
            is_train = masks[0] is not None
            folder = "imagesTr" if is_train else "imagesTs"
            files = []
            for c in ISBI_CONTRASTS:
                p, d, a = loaded[c]
                op = tmp / folder / f"{prefix}_{c}.nii.gz"
                save_nifti(d, a, op, np.float32)
                files.append(_rel(op, tmp))
            if not is_train:
                test.append({"image": files, "subject": subject})
                continue
            labs = []
            for k, mp in enumerate(masks, 1):
                d, a = load_nifti_checked(mp)
                check_same_grid(ref, (mp, d, a))
                vals = np.unique(d)
                if not np.isin(vals, [0, 1]).all():
                    raise PreparationError(f"{mp}: mask values {vals.tolist()} are not binary.")
                op = tmp / "labelsTr" / f"{prefix}_rater{k}.nii.gz"
                save_nifti(d, a, op, np.uint8)
                labs.append(_rel(op, tmp))
            items.append({"image": files, "label": labs, "subject": subject})
        if not items and not test:
            raise PreparationError(f"{src}: nothing to convert.")
        info = {
            "name": "ISBI 2015 longitudinal MS lesion segmentation",
            "description": (
                f"Converted from {src.name}: 'image' lists FLAIR, T1 (MPRAGE), T2, PD; 'label' lists rater 1 and "
                "rater 2 masks (fuse them, e.g. intersection as in the hyper-convolution papers)."
            ),
            "reference": "Carass et al., Longitudinal multiple sclerosis lesion segmentation, NeuroImage 2017",
            "tensorImageSize": "4D",
            "modality": {"0": "FLAIR", "1": "T1", "2": "T2", "3": "PD"},
            "labels": {"0": "background", "1": "lesion"},
        }
        _finish(tmp, info, items, val_fraction, group_key="subject", test=test)
    return str(Path(out).resolve() / "dataset.json")


# ------------------------------------------------------------------------------- brain T1
def prepare_brain_t1(
    src: str | os.PathLike,
    out: str | os.PathLike,
    overwrite: bool = False,
    val_fraction: float = 0.2,
    size: Sequence[int] = (256, 256),
    slices_per_volume: int = 10,
    slab: float = 0.5,
) -> str:
    """A folder of 3-D brain T1 NIfTI (ABIDE-like) -> 2-D axial slices for reconstruction.

    Each volume is reoriented to the closest RAS orientation, its intensities mapped to [0, 1]
    (0 to the 99.5th percentile, clipped), and ``slices_per_volume`` axial slices evenly spaced
    in the central ``slab`` of the head's extent are zero-padded to square and resized to
    ``size`` (Ma et al., journal extension, §4.4: 256x256 in [0, 1]).

    Args:
        src: folder searched recursively for ``*.nii`` / ``*.nii.gz``.
        out: output folder.
        overwrite: replace a non-empty ``out``.
        val_fraction: share of volumes (subjects) listed under "validation".
        size: in-plane output size.
        slices_per_volume: slices taken from each volume.
        slab: central fraction of the non-zero axial extent the slices are taken from.

    Returns:
        path of ``dataset.json``.
    """
    src = Path(src)
    check_output_dir(out, overwrite)
    files = _nii_files(src)
    if not files:
        raise PreparationError(f"{src}: no .nii / .nii.gz files found.")
    h, w = (int(s) for s in size)
    with atomic_output_dir(out, overwrite) as tmp:
        items = []
        for f in files:
            data, aff = load_nifti_checked(f)
            if data.ndim != 3:
                raise PreparationError(f"{f}: expected a 3-D T1 volume, got shape {data.shape}.")
            img = nib.as_closest_canonical(nib.Nifti1Image(data.astype(np.float32), aff))
            vol, aff = np.asarray(img.dataobj, dtype=np.float32), img.affine
            hi = float(np.percentile(vol, 99.5))
            if not hi > 0:
                raise PreparationError(f"{f}: image is empty (99.5th percentile <= 0).")
            vol = np.clip(vol / hi, 0, 1)
            nz = np.flatnonzero((vol > 0.05).any((0, 1)))
            if nz.size == 0:
                raise PreparationError(f"{f}: image is empty.")
            lo_z, hi_z = nz[0], nz[-1]
            c, half = (lo_z + hi_z) / 2, (hi_z - lo_z) * slab / 2
            zs = np.unique(np.rint(np.linspace(c - half, c + half, slices_per_volume)).astype(int))
            subject = _stem(f)
            n = max(vol.shape[0], vol.shape[1])
            for z in zs:
                sq = np.zeros((n, n), np.float32)
                o0, o1 = (n - vol.shape[0]) // 2, (n - vol.shape[1]) // 2
                sq[o0 : o0 + vol.shape[0], o1 : o1 + vol.shape[1]] = vol[:, :, z]
                sl = np.clip(ndi.zoom(sq, (h / n, w / n), order=1), 0, 1)[:h, :w].astype(np.float32)
                a = np.eye(4)
                a[:3, 0] = aff[:3, 0] * n / h
                a[:3, 1] = aff[:3, 1] * n / w
                a[:3, 2] = aff[:3, 2]
                a[:3, 3] = aff[:3, :3] @ np.array([-o0 - 0.5 + 0.5 * n / h, -o1 - 0.5 + 0.5 * n / w, z]) + aff[:3, 3]
                op = tmp / "imagesTr" / f"{subject}_z{int(z):03d}.nii.gz"
                save_nifti(sl, a, op, np.float32)
                items.append({"image": _rel(op, tmp), "subject": subject})
        info = {
            "name": "Brain T1 slices for reconstruction",
            "description": f"{h}x{w} axial T1 slices in [0, 1] from the 3-D volumes of {src.name}; targets are the images.",
            "tensorImageSize": "2D",
            "modality": {"0": "T1"},
            "labels": {},
        }
        _finish(tmp, info, items, val_fraction, group_key="subject")
    return str(Path(out).resolve() / "dataset.json")


# -------------------------------------------------------------------------- neurite OASIS
OASIS_SEG4_LABELS = {"0": "background", "1": "cortex", "2": "subcortical grey matter", "3": "white matter", "4": "CSF"}


def prepare_oasis_neurite(
    src: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False, val_fraction: float = 0.2, labels: str = "seg4"
) -> str:
    """neurite OASIS 2-D slices -> MSD layout with registration pairs.

    Args:
        src: folder of ``OASIS_OAS1_XXXX_MR1/`` subject folders with ``slice_norm.nii.gz`` and
            ``slice_seg4.nii.gz`` / ``slice_seg24.nii.gz``.
        out: output folder.
        overwrite: replace a non-empty ``out``.
        val_fraction: share of subjects listed under "validation".
        labels: "seg4" or "seg24".

    Returns:
        path of ``dataset.json`` (keys training, validation, registration).
    """
    if labels not in ("seg4", "seg24"):
        raise ValueError(f"labels must be 'seg4' or 'seg24', got {labels!r}.")
    src = Path(src)
    check_output_dir(out, overwrite)
    norms = sorted(p for p in src.rglob("slice_norm.nii*") if not p.name.startswith("._"))
    if not norms:
        raise PreparationError(f"{src}: no */slice_norm.nii[.gz] found (neurite OASIS 2-D layout).")
    n_max = 4 if labels == "seg4" else 24
    with atomic_output_dir(out, overwrite) as tmp:
        items = []
        for npth in norms:
            subj = npth.parent.name
            seg = [npth.parent / f"slice_{labels}{e}" for e in (".nii.gz", ".nii")]
            seg = [s for s in seg if s.is_file()]
            if not seg:
                raise PreparationError(f"{npth.parent / f'slice_{labels}.nii.gz'}: missing label map for {subj}.")
            img, aff = load_nifti_checked(npth)
            lab, laff = load_nifti_checked(seg[0])
            img, lab = np.squeeze(img), np.squeeze(lab)
            check_same_grid((npth, img, aff), (seg[0], lab, laff))
            vals = np.unique(lab)
            if vals.min() < 0 or vals.max() > n_max:
                raise PreparationError(f"{seg[0]}: label values {vals.tolist()} outside 0..{n_max}.")
            ip, lp = tmp / "imagesTr" / f"{subj}.nii.gz", tmp / "labelsTr" / f"{subj}.nii.gz"
            save_nifti(img, aff, ip, np.float32)
            save_nifti(lab, aff, lp, np.uint8)
            items.append({"image": _rel(ip, tmp), "label": _rel(lp, tmp)})
        info = {
            "name": f"neurite OASIS 2-D ({labels})",
            "description": f"OASIS-1 2-D coronal slices from {src.name} (neurite-oasis), label maps {labels}.",
            "reference": "Marcus et al., OASIS, J Cogn Neurosci 2007; Hoopes et al., HyperMorph, IPMI 2021",
            "tensorImageSize": "2D",
            "modality": {"0": "T1"},
            "labels": OASIS_SEG4_LABELS if labels == "seg4" else {str(i): str(i) for i in range(25)},
        }
        tr, _ = split_items(items, val_fraction)
        info["registration"] = [{"image": [a["image"], b["image"]], "label": [a["label"], b["label"]]} for a, b in zip(tr, tr[1:] + tr[:1])] if len(tr) > 1 else []
        _finish(tmp, info, items, val_fraction)
    return str(Path(out).resolve() / "dataset.json")


def run_prepare_cli(prepare_fn, description: str, argv: Sequence[str] | None = None, add_arguments=None) -> int:
    """Command line of the ``scripts/prepare_*.py`` wrappers: ``--src --out [--overwrite] [--val-fraction]``.

    Args:
        prepare_fn: ``prepare_fn(src, out, overwrite=, val_fraction=, **extra)`` returning the dataset.json path.
        description: help text (the script's docstring).
        argv: arguments (default ``sys.argv[1:]``).
        add_arguments: optional ``f(parser)`` adding script-specific options; each becomes a keyword of ``prepare_fn``.

    Returns:
        0 on success (the dataset.json path is printed), 2 on a preparation error (printed to stderr).
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="source folder in the data set's original layout")
    parser.add_argument("--out", required=True, help="output folder (MSD layout); must not exist or be empty")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of subjects listed as validation")
    common = {a.dest for a in parser._actions}
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    extra = {a.dest: getattr(args, a.dest) for a in parser._actions if a.dest not in common}
    try:
        path = prepare_fn(args.src, args.out, overwrite=args.overwrite, val_fraction=args.val_fraction, **extra)
    except (PreparationError, DatasetExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0
