"""Data-set preparation for bundles: demo on first use, validation before training, k-fold selection.

``prepare_dataset(task, dataset_dir, ...)`` is what a bundle's ``datalists`` item calls
(``"_target_": "monai_hyperconv.bundle.prepare_dataset"``). Everything that can go wrong with
the data (no ``dataset.json``, a missing file, a corrupt or truncated image, a wrong number of
channels) raises :class:`DatasetError` naming the file and the datalist key *before* any
training starts, instead of a stack trace from a data-loader worker an hour later.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DatasetError", "prepare_dataset", "validate_datalist", "select_fold", "list_inputs", "image_channels"]

logger = logging.getLogger(__name__)

_NIFTI = (".nii", ".nii.gz")
_IMAGE_EXT = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".dcm", ".png", ".jpg", ".tif", ".tiff")


class DatasetError(ValueError):
    """A data set is unusable (missing ``dataset.json`` or files, unreadable images, wrong channels)."""


def _is_nifti(path: str) -> bool:
    return path.lower().endswith(_NIFTI)


def _read(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Read an image completely (so truncated files fail); returns (array, affine or None)."""
    if os.path.isdir(path):  # DICOM series: let ITK read it
        from monai.transforms import LoadImage

        img = LoadImage(image_only=True, reader="ITKReader")(path)
        return np.asarray(img), np.asarray(img.affine)
    if _is_nifti(path):
        import nibabel as nib

        img = nib.load(path)
        return np.asanyarray(img.dataobj), np.asarray(img.affine)  # decompresses the whole file: catches truncation
    from monai.transforms import LoadImage

    img = LoadImage(image_only=True)(path)
    return np.asarray(img), np.asarray(getattr(img, "affine", None)) if hasattr(img, "affine") else None


def image_channels(path: str, spatial_dims: int) -> int:
    """Number of channels of one image file as MONAI's loader + ``EnsureChannelFirst`` would give.

    A NIfTI with more axes than ``spatial_dims`` carries its channels in the extra axes
    (a 4-D NIfTI of a 3-D task has ``shape[3]`` channels); a DICOM series has one.
    """
    return _channels(_read(path)[0].shape, spatial_dims)


def _channels(shape: Sequence[int], spatial_dims: int) -> int:
    return 1 if len(shape) <= spatial_dims else int(np.prod(shape[spatial_dims:]))


def _files(value: Any) -> list[str] | None:
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    if isinstance(value, Sequence) and value and all(isinstance(v, (str, os.PathLike)) for v in value):
        return [os.fspath(v) for v in value]
    return None


def _label_values(labels: Mapping[str, Any] | Sequence[int] | None) -> set[int] | None:
    """Allowed label values from ``dataset.json``'s ``labels`` ({"0": "background", ...}); None: unchecked."""
    if not labels:
        return None
    try:
        return {int(k) for k in labels}
    except (TypeError, ValueError):
        return None  # names instead of values (some datasets): nothing to check against


def validate_datalist(
    items: Sequence[Mapping[str, Any]],
    file_keys: Sequence[str] = ("image", "label"),
    channels: Mapping[str, int] | None = None,
    spatial_dims: int = 3,
    check_load: bool = True,
    section: str = "training",
    source: str = "",
    labels: Mapping[str, Any] | Sequence[int] | None = None,
    label_key: str = "label",
    affine_tol: float = 1e-3,
    grid_groups: Sequence[Sequence[str]] | None = None,
) -> None:
    """Check every file of a datalist before training: present, readable, finite, consistent.

    Checks, per entry: every file exists and reads completely; channel counts; no NaN/inf voxel;
    all files of the entry (of one of ``grid_groups``) have the same spatial shape and (within
    ``affine_tol``) the same affine as the first of them; label values (files or integers under ``label_key``) are among
    ``labels``.

    Args:
        items: datalist entries (paths already absolute, as ``load_decathlon_datalist`` returns).
        file_keys: keys holding a path or a list of paths (one channel group per path).
        channels: expected channels per key, e.g. ``{"image": 1, "label": 1}``; a key holding a
            list of files counts the channels of all of them (four contrast files -> 4).
        spatial_dims: spatial dimensions of the images (2 or 3).
        check_load: read every image completely (catches corrupt and truncated files); without it
            only existence is checked.
        section: datalist section name, for messages.
        source: where the datalist came from (``dataset.json`` path), for messages.
        labels: allowed label values, e.g. ``dataset.json``'s ``{"0": "background", "1": "liver"}``
            (None or empty: not checked).
        label_key: the entry key holding labels (a file, files or a class index).
        affine_tol: absolute tolerance (mm) when comparing the affines of one entry's files.
        grid_groups: groups of keys whose files must share one grid (default: all ``file_keys``),
            e.g. ``(("fixed", "fixed_label"), ("moving", "moving_label"))`` for registration pairs.

    Raises:
        DatasetError: naming the section, the entry index, the key and the file.
    """
    where = f" ({source})" if source else ""
    allowed = _label_values(labels)
    if len(items) == 0:
        raise DatasetError(f"datalist section {section!r}{where} is empty.")
    groups = [tuple(g) for g in grid_groups] if grid_groups is not None else [tuple(file_keys)]
    group_of = {k: gi for gi, g in enumerate(groups) for k in g}
    for i, item in enumerate(items):
        refs: dict[int, tuple[str, tuple[int, ...], np.ndarray | None]] = {}  # group -> first file (path, shape, affine)
        for key in file_keys:
            if key not in item:
                raise DatasetError(f"{section}[{i}] has no key {key!r}{where}; entry: {dict(item)!r}.")
            files = _files(item[key])
            if files is None:
                raise DatasetError(f"{section}[{i}][{key!r}]{where} must be a file path or a list of paths, got {item[key]!r}.")
            n_ch = 0
            for f in files:
                if not os.path.exists(f):
                    raise DatasetError(f"{section}[{i}][{key!r}]{where}: file not found: {f}")
                if not check_load:
                    continue
                try:
                    arr, affine = _read(f)
                except Exception as e:  # corrupt, truncated, unsupported format
                    raise DatasetError(
                        f"{section}[{i}][{key!r}]{where}: cannot read image {f}: {type(e).__name__}: {e}"
                    ) from e
                n_ch += _channels(arr.shape, spatial_dims)
                at = f"{section}[{i}][{key!r}]{where}: {f}"
                if np.issubdtype(arr.dtype, np.floating):
                    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
                    if bad:
                        raise DatasetError(f"{at} has {bad} non-finite (NaN/inf) voxel(s) of {arr.size}; "
                                           f"fix or mask them before training.")
                shape = tuple(int(s) for s in arr.shape[:spatial_dims])
                gi = group_of.get(key)
                ref = refs.get(gi) if gi is not None else None
                if gi is not None and ref is None:
                    refs[gi] = (f, shape, affine)
                elif ref is not None:
                    if shape != ref[1]:
                        raise DatasetError(f"{at} has spatial shape {shape}, but {ref[0]} of the same entry has {ref[1]}; "
                                           f"image and label must be on the same grid.")
                    if affine is not None and ref[2] is not None and affine.shape == ref[2].shape and \
                            not np.allclose(affine, ref[2], atol=affine_tol, rtol=0):
                        raise DatasetError(f"{at}: its affine differs from that of {ref[0]} of the same entry by up to "
                                           f"{float(np.abs(affine - ref[2]).max()):.4g} (tolerance {affine_tol}); "
                                           f"image and label must be in the same space.\n{affine}\nvs\n{ref[2]}")
                if key == label_key and allowed is not None:
                    _check_label_values(np.unique(arr), allowed, at)
            if check_load and channels and key in channels and n_ch != int(channels[key]):
                raise DatasetError(
                    f"{section}[{i}][{key!r}]{where}: expected {channels[key]} channel(s), got {n_ch} from {files} "
                    f"(spatial_dims={spatial_dims})."
                )
        if allowed is not None and label_key not in file_keys and label_key in item and _files(item[label_key]) is None:
            _check_label_values(np.ravel(np.asarray(item[label_key])), allowed, f"{section}[{i}][{label_key!r}]{where}")


def _check_label_values(values: np.ndarray, allowed: set[int], at: str) -> None:
    vals = np.asarray(values)
    if not np.issubdtype(vals.dtype, np.number):
        raise DatasetError(f"{at}: label {vals.tolist()!r} is not a number; dataset.json labels are {sorted(allowed)}.")
    bad = [v for v in vals.tolist() if not (float(v).is_integer() and int(v) in allowed)]
    if bad:
        shown = ", ".join(f"{v:g}" for v in bad[:10]) + (" ..." if len(bad) > 10 else "")
        raise DatasetError(f"{at}: label value(s) {shown} not among dataset.json's labels {sorted(allowed)}.")


def select_fold(
    datalist: Sequence[Mapping[str, Any]], fold: int, num_folds: int = 5, seed: int = 0, group_key: str | None = None
) -> tuple[list[dict], list[dict]]:
    """k-fold split with MONAI's ``partition_dataset``: fold ``fold`` validates, the others train.

    Args:
        datalist: all labelled entries.
        fold: 0 .. num_folds - 1.
        num_folds: k.
        seed: shuffling seed (the same seed gives the same folds on every machine).
        group_key: keep entries sharing this key's value (e.g. a subject id) in one fold.

    Returns:
        (train, validation) lists.
    """
    from monai.data import partition_dataset

    if not 0 <= int(fold) < int(num_folds):
        raise ValueError(f"fold must be in [0, {num_folds}), got {fold}.")
    data = [dict(d) for d in datalist]
    if group_key:
        groups = list(dict.fromkeys(d[group_key] for d in data))
        if len(groups) < num_folds:
            raise ValueError(f"{len(groups)} groups ({group_key!r}) cannot make {num_folds} folds.")
        parts = partition_dataset(groups, num_partitions=int(num_folds), shuffle=True, seed=int(seed))
        val_groups = set(parts[int(fold)])
        return [d for d in data if d[group_key] not in val_groups], [d for d in data if d[group_key] in val_groups]
    if len(data) < num_folds:
        raise ValueError(f"{len(data)} entries cannot make {num_folds} folds.")
    parts = partition_dataset(data, num_partitions=int(num_folds), shuffle=True, seed=int(seed))
    val = parts[int(fold)]
    train = [d for k, p in enumerate(parts) if k != int(fold) for d in p]
    return train, val


def prepare_dataset(
    task: str | None,
    dataset_dir: str | os.PathLike,
    sections: Sequence[str] = ("training", "validation"),
    file_keys: Sequence[str] = ("image", "label"),
    channels: Mapping[str, int] | None = None,
    spatial_dims: int = 3,
    is_segmentation: bool = True,
    check_load: bool = True,
    fold: int | None = None,
    num_folds: int = 5,
    seed: int = 0,
    group_key: str | None = None,
    demo_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, list[dict]]:
    """Make sure a data set is there and usable; return its datalists.

    1. If ``dataset_dir`` does not exist and ``task`` is a demo task, generate the demo set there
       (:func:`monai_hyperconv.data.ensure_demo`; ``demo_kwargs`` e.g. ``{"n_subjects": 4}``).
    2. Read ``dataset_dir/dataset.json`` (Decathlon layout, paths relative to ``dataset_dir``).
    3. Validate every section (files exist and load completely; channel counts; no NaN/inf voxel;
       image and label on the same grid; label values among ``dataset.json``'s ``labels``; see
       :func:`validate_datalist`) -> :class:`DatasetError`.
    4. With ``fold`` set, pool all labelled sections and re-split them into ``num_folds`` folds
       (``fold`` validates), reproducibly from ``seed``.

    Args:
        task: demo task name (``monai_hyperconv.data.DEMO_TASKS``) or None (never generate).
        dataset_dir: data set folder.
        sections: datalist sections to return ("training", "validation", "test", ...). A missing
            "validation" section is taken from the end of "training" (20 %).
        file_keys: keys whose values are image files.
        channels: expected channel counts per key (see :func:`validate_datalist`).
        spatial_dims: 2 or 3.
        is_segmentation: passed to ``load_decathlon_datalist`` (False: "label" is a class index).
        check_load: read all images completely.
        fold, num_folds, seed, group_key: cross-validation (see :func:`select_fold`).
        demo_kwargs: extra ``make_demo`` arguments when generating.

    Returns:
        ``{section: datalist}`` with absolute paths.
    """
    from monai.data import load_decathlon_datalist

    root = Path(dataset_dir).expanduser()
    if not root.exists():
        if task is None:
            raise DatasetError(f"dataset_dir {root} does not exist (and no demo task is set to generate it).")
        from ..data import ensure_demo

        logger.info(f"dataset_dir {root} does not exist: generating the {task!r} demo data set there.")
        ensure_demo(task, root, **dict(demo_kwargs or {}))
    js = root / "dataset.json"
    if not js.is_file():
        raise DatasetError(
            f"no dataset.json in dataset_dir {root}: expected the Medical Segmentation Decathlon layout "
            f"(dataset.json + imagesTr/ ...; see monai_hyperconv.data.make_demo)."
        )
    try:
        meta = json.loads(js.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{js} is not valid JSON: {e}") from e
    out: dict[str, list[dict]] = {}
    for sec in sections:
        if sec in meta:
            out[sec] = load_decathlon_datalist(str(js), is_segmentation=is_segmentation, data_list_key=sec, base_dir=str(root))
    if "training" in sections and "training" not in out:
        raise DatasetError(f"{js} has no 'training' section (keys: {sorted(meta)}).")
    if "validation" in sections and "validation" not in out and "training" in out:
        tr = out["training"]
        n_val = max(1, len(tr) // 5) if len(tr) > 1 else 0
        out["training"], out["validation"] = tr[: len(tr) - n_val], tr[len(tr) - n_val :]
    for sec, items in out.items():
        keys = [k for k in file_keys if sec != "test" or k == "image"]
        validate_datalist(items, keys, channels, spatial_dims, check_load, sec, str(js), labels=meta.get("labels"))
    if fold is not None:
        pool = out.get("training", []) + out.get("validation", [])
        out["training"], out["validation"] = select_fold(pool, fold, num_folds, seed, group_key)
    for sec, items in out.items():
        logger.info(f"{js}: {sec} {len(items)} entries" + (f" (fold {fold}/{num_folds})" if fold is not None else ""))
    return out


def _is_dicom_dir(path: Path) -> bool:
    files = [f for f in path.iterdir() if f.is_file()]
    if not files:
        return False
    if any(f.suffix.lower() == ".dcm" for f in files):
        return True
    try:  # DICOM files without extension: "DICM" at byte 128
        with open(files[0], "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def list_inputs(input_path: str | os.PathLike | None = None, dataset_dir: str | os.PathLike | None = None,
                section: str = "validation", key: str = "image") -> list[dict]:
    """Inference inputs as a datalist ``[{key: path}]``.

    ``input_path`` may be an image file, a DICOM series folder, a folder of images and/or DICOM
    series sub-folders, or a ``dataset.json``; with no ``input_path``, ``dataset_dir``'s
    ``dataset.json`` section ``section`` (falls back to "test", then "training").

    Raises:
        DatasetError: when nothing to infer is found.
    """
    if input_path is None or str(input_path) == "":
        if dataset_dir is None:
            raise DatasetError("give input_path (a file, a folder or a DICOM series) or dataset_dir.")
        input_path = Path(dataset_dir) / "dataset.json"
    p = Path(input_path).expanduser()
    if not p.exists():
        raise DatasetError(f"inference input not found: {p}")
    if p.is_file() and p.name.endswith(".json"):
        from monai.data import load_decathlon_datalist

        meta = json.loads(p.read_text())
        for sec in (section, "test", "training"):
            if sec in meta:
                items = load_decathlon_datalist(str(p), data_list_key=sec, base_dir=str(p.parent))
                return [{key: it[key] if isinstance(it, dict) else it} for it in items]
        raise DatasetError(f"{p} has no {section!r}, 'test' or 'training' section.")
    if p.is_file():
        return [{key: str(p)}]
    if _is_dicom_dir(p):
        return [{key: str(p)}]
    out = []
    for f in sorted(p.iterdir()):
        if f.is_dir() and _is_dicom_dir(f):
            out.append({key: str(f)})
        elif f.is_file() and f.name.lower().endswith(_IMAGE_EXT) and f.suffix.lower() != ".dcm":
            out.append({key: str(f)})
    if not out:
        raise DatasetError(f"no images (NIfTI, NRRD, MHA, DICOM series) found in {p}.")
    return out
