"""Atomic dataset folders, NIfTI writing and ``dataset.json`` (Medical Segmentation Decathlon layout)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

__all__ = ["DatasetExistsError", "atomic_output_dir", "check_output_dir", "save_nifti", "write_dataset_json"]


class DatasetExistsError(FileExistsError):
    """The output folder exists and is not empty, and ``overwrite`` was not given."""


def _non_empty(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def check_output_dir(out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Raise :class:`DatasetExistsError` when ``out_dir`` is a non-empty folder and not ``overwrite``.

    Returns:
        ``out_dir`` as an absolute ``Path``.
    """
    out = Path(out_dir).expanduser().resolve()
    if _non_empty(out) and not overwrite:
        raise DatasetExistsError(f"{out} exists and is not empty; pass overwrite=True (--overwrite) to replace it.")
    return out


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to ``out_dir``; rename it to ``out_dir`` on success.

    On any exception the temporary folder is removed and ``out_dir`` is untouched, so no
    half-written data set is ever left at ``out_dir``. An existing non-empty ``out_dir`` is
    only replaced with ``overwrite=True`` (the old one is removed after the new one is in place).

    Args:
        out_dir: final folder.
        overwrite: allow replacing a non-empty ``out_dir``.

    Yields:
        the temporary folder to write into.
    """
    out = check_output_dir(out_dir, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        old = None
        if out.exists():
            if _non_empty(out):
                check_output_dir(out, overwrite)  # someone may have written it meanwhile
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
                os.rename(out, old / "d")
            else:
                out.rmdir() if out.is_dir() else out.unlink()
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_nifti(array: np.ndarray, affine: np.ndarray, path: str | os.PathLike, dtype: Any = None) -> str:
    """Write ``array`` with ``affine`` (4x4, voxel -> RAS mm) as NIfTI; spacing goes in the header.

    Returns:
        the path written.
    """
    arr = np.asarray(array if dtype is None else np.asarray(array).astype(dtype))
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return str(path)


def write_dataset_json(root: str | os.PathLike, info: dict[str, Any]) -> str:
    """Write ``root/dataset.json`` (MSD layout: name, description, modality, labels, training, ...)."""
    info = dict(info)
    info.setdefault("numTraining", len(info.get("training", [])))
    path = Path(root) / "dataset.json"
    path.write_text(json.dumps(info, indent=2))
    return str(path)
