"""Writing predictions in the geometry of their input file."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform

from ..utils import atomic_write

__all__ = ["SaveLikeInputd"]


class SaveLikeInputd(MapTransform):
    """Write ``key`` (channel-first, one sample) as NIfTI in the geometry of its input file.

    MONAI's ``SaveImaged`` re-derives a 2-D affine from the first two rows of the 4x4 one, which
    is singular for 2-D slices that are not axial (e.g. coronal slices, whose second in-plane
    axis points along world z); this writer copies the input NIfTI's own affine and header
    instead (for a non-NIfTI input, e.g. a DICOM series, the affine from the loaded metadata).
    The output is ``<output_dir>/<input stem>[_<name_key's input stem>]_<postfix>.nii.gz``; the path
    is stored in ``data[key + "_path"]``. Multi-channel arrays (a displacement field) are written
    with the components last, as NIfTI expects.

    Args:
        keys: the prediction key(s).
        output_dir: folder.
        postfix: file name postfix.
        source_key: key whose metadata names the input file (default "image").
        dtype: output dtype (default uint8 for label maps).
        name_key: optional second key whose input file stem is appended (registration: the moving image).
    """

    def __init__(self, keys, output_dir: str | os.PathLike, postfix: str = "seg", source_key: str = "image",
                 dtype: Any = np.uint8, name_key: str | None = None) -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.postfix = postfix
        self.source_key = source_key
        self.dtype = dtype
        self.name_key = name_key

    @staticmethod
    def _stem(path: str) -> str:
        stem = os.path.basename(str(path).rstrip("/"))
        for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm"):
            if stem.lower().endswith(ext):
                return stem[: -len(ext)]
        return stem

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        import nibabel as nib

        d = dict(data)
        src_obj = d.get(self.source_key)
        meta = getattr(src_obj, "meta", None) or {}
        for key in self.key_iterator(d):
            arr = torch.as_tensor(d[key]).detach().cpu().numpy()
            if arr.ndim >= 2 and arr.shape[0] == 1:
                arr = arr[0]
            elif arr.ndim >= 2:  # vectors (e.g. a displacement field): NIfTI keeps components last
                arr = np.moveaxis(arr, 0, -1)
            src = meta.get("filename_or_obj") or getattr(d[key], "meta", {}).get("filename_or_obj")
            if not src:
                raise ValueError(f"cannot tell the input file of {key!r}: no 'filename_or_obj' in its metadata.")
            src = str(src)
            header = None
            if src.lower().endswith((".nii", ".nii.gz")) and os.path.isfile(src):
                ref = nib.load(src)
                affine, header = ref.affine, ref.header.copy()
                if tuple(arr.shape[: len(ref.shape)]) != tuple(ref.shape):
                    raise ValueError(f"prediction shape {arr.shape} differs from the input {src} {ref.shape}.")
            else:
                aff = np.asarray(torch.as_tensor(meta.get("original_affine", meta.get("affine", np.eye(4)))))
                affine = np.eye(4)
                n = min(aff.shape[0], 4) - 1
                affine[:n, :n], affine[:n, 3] = aff[:n, :n], aff[:n, -1]
            img = nib.Nifti1Image(arr.astype(self.dtype), affine, header)
            img.set_data_dtype(self.dtype)
            stem = self._stem(src)
            if self.name_key is not None:
                other = getattr(d.get(self.name_key), "meta", {}).get("filename_or_obj")
                if other:
                    stem = f"{stem}_{self._stem(str(other))}"
            out = self.output_dir / f"{stem}_{self.postfix}.nii.gz"
            payload = img.to_bytes() if not str(out).endswith(".gz") else _gz(img)
            atomic_write(out, lambda p, b=payload: Path(p).write_bytes(b))
            d[f"{key}_path"] = str(out)
        return d


def _gz(img) -> bytes:
    import gzip

    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)
