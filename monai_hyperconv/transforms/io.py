"""Writing predictions in the geometry of their input file (NIfTI header copy, or ITK geometry for any input)."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform

from ..utils import atomic_write

__all__ = ["SaveLikeInputd", "SaveInInputGeometryd", "AddSliceAxisd", "DropSliceAxisd"]


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


def _itk_reference(path: str, dims: int = 3):
    """The ITK image information (no pixels) of ``path`` read as a ``dims``-D image: a file, or a
    DICOM series folder (its first series, slices ordered by ITK's ``GDCMSeriesFileNames`` as
    MONAI's ``ITKReader`` orders them). A one-slice image is thereby a volume of one slice, with the
    slice's 3-D position, spacing and direction."""
    import itk

    image_type = itk.Image[itk.F, dims]
    if os.path.isdir(path):
        names = itk.GDCMSeriesFileNames.New()
        names.SetDirectory(path)
        uids = names.GetSeriesUIDs()
        if not uids:
            raise ValueError(f"no DICOM series in {path}.")
        reader = itk.ImageSeriesReader[image_type].New(FileNames=names.GetFileNames(uids[0]), ImageIO=itk.GDCMImageIO.New())
    else:
        reader = itk.ImageFileReader[image_type].New(FileName=path)
    reader.UpdateOutputInformation()
    return reader.GetOutput()


class SaveInInputGeometryd(MapTransform):
    """Write ``key`` (one channel, channel-first) as an image with its input's exact geometry, as ITK reads it.

    The input (``source_key``'s ``filename_or_obj``: a NIfTI/NRRD/MHA file or a DICOM series
    folder) is read by ITK as a 3-D image (header only), and the prediction is written with its
    size, spacing, origin and direction (``itk.imwrite``); a NIfTI input's own header (affine,
    q/sform codes) is copied instead (nibabel), which ITK reads back as the input's geometry. So a one-slice input (a DICOM series of
    one file, a 128x128x1 NIfTI) gives a one-slice prediction at the slice's position rather than
    a 2-D image, and oblique or LPS-oriented inputs keep their direction. The prediction must be
    on the input's voxel grid (``Invertd`` after the preprocessing); a prediction without the
    singleton axes (e.g. 128x128 for 128x128x1) is reshaped.

    The output is ``<output_dir>/<input stem>_<postfix><output_ext>``; its path is stored in
    ``data[key + "_path"]``.

    Args:
        keys: the prediction key(s).
        output_dir: folder.
        postfix: file name postfix.
        source_key: key whose metadata names the input file (default "image").
        dtype: output dtype (uint8 for label maps, float32 for images).
        output_ext: file extension (ITK picks the format from it).
    """

    def __init__(self, keys, output_dir: str | os.PathLike, postfix: str = "seg", source_key: str = "image",
                 dtype: Any = np.uint8, output_ext: str = ".nii.gz") -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.postfix = postfix
        self.source_key = source_key
        self.dtype = dtype
        self.output_ext = output_ext if output_ext.startswith(".") else "." + output_ext

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        meta = getattr(d.get(self.source_key), "meta", None) or {}
        src = meta.get("filename_or_obj")
        if isinstance(src, (list, tuple)):  # several files of one image (channels): their geometry is shared
            src = src[0] if src else None
        if not src:
            raise ValueError(f"cannot tell the input file of {self.source_key!r}: no 'filename_or_obj' in its metadata.")
        src = str(src)
        nifti = src.lower().endswith((".nii", ".nii.gz")) and os.path.isfile(src)
        if nifti:  # the input's own header (ITK reads the output's geometry exactly as the input's)
            import nibabel as nib

            ref = nib.load(src)
            size = tuple(int(s) for s in ref.shape[:3])
        else:
            ref = _itk_reference(src)
            size = tuple(int(s) for s in ref.GetLargestPossibleRegion().GetSize())
        for key in self.key_iterator(d):
            arr = torch.as_tensor(d[key]).detach().cpu().numpy()
            if arr.ndim >= 2 and arr.shape[0] == 1:
                arr = arr[0]
            elif arr.ndim >= 2:
                raise ValueError(f"{key!r} has {arr.shape[0]} channels; {type(self).__name__} writes one.")
            if arr.shape != size:
                if [s for s in arr.shape if s != 1] != [s for s in size if s != 1]:
                    raise ValueError(f"{key!r} of shape {arr.shape} is not on the grid of its input {src} (size "
                                     f"{size}): invert the preprocessing (Invertd) before saving.")
                arr = arr.reshape(size)
            out = self.output_dir / f"{SaveLikeInputd._stem(src)}_{self.postfix}{self.output_ext}"
            d[f"{key}_path"] = str(out)
            if nifti and out.name.endswith((".nii", ".nii.gz")):
                header = ref.header.copy()
                header.set_intent("none")
                img = nib.Nifti1Image(arr.astype(self.dtype), ref.affine, header)
                img.set_data_dtype(self.dtype)
                img.header.set_slope_inter(1.0, 0.0)
                payload = _gz(img) if out.name.endswith(".gz") else img.to_bytes()
                atomic_write(out, lambda p, b=payload: Path(p).write_bytes(b))
                continue
            import itk

            iref = _itk_reference(src) if nifti else ref
            arr = arr.reshape(tuple(int(s) for s in iref.GetLargestPossibleRegion().GetSize()))
            img = itk.image_from_array(np.ascontiguousarray(np.transpose(arr.astype(self.dtype))))
            img.SetSpacing(iref.GetSpacing())
            img.SetOrigin(iref.GetOrigin())
            img.SetDirection(iref.GetDirection())
            out.parent.mkdir(parents=True, exist_ok=True)
            suffix = "".join(Path(out).suffixes[-2:]) if out.name.endswith(".gz") else out.suffix
            _itk_atomic_write(img, out, suffix)
        return d


def _itk_atomic_write(img, out: Path, suffix: str) -> None:
    """``itk.imwrite`` to a temporary file of the same format in ``out``'s folder, then ``os.replace``."""
    import itk

    import secrets

    tmp = out.with_name(f".{out.name}.{secrets.token_hex(6)}.tmp{suffix}")
    try:
        itk.imwrite(img, str(tmp))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()


class AddSliceAxisd(MapTransform):
    """Give a 2-D image (channel-first ``(C, H, W)``) a trailing slice axis of size 1 (``(C, H, W, 1)``).

    So a slice-wise 3-D pipeline (``Orientationd``, ``Resized`` to ``[size, size, -1]``,
    ``SliceInferer``) also runs on an input that a reader returns as 2-D (e.g. ITK reading a NIfTI of
    one slice). The affine is extended with a unit z axis; 3-D inputs pass unchanged. Write the
    prediction with :class:`SaveInInputGeometryd`, which takes the geometry from the input file.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        from monai.data import MetaTensor

        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            if x.ndim != 3:
                continue
            if isinstance(x, MetaTensor):
                aff = torch.as_tensor(x.affine, dtype=torch.float64)
                new = torch.eye(4, dtype=torch.float64)
                new[:2, :2], new[:2, 3] = aff[:2, :2], aff[:2, -1]
                y = x.unsqueeze(-1)
                y.affine = new
                d[key] = y
            else:
                d[key] = x[..., None]
        return d


class DropSliceAxisd(MapTransform):
    """Let a 2-D bundle take a one-slice volume: ``(C, H, W, 1)`` -> ``(C, H, W)`` (MONAI's ``SqueezeDim``,
    which also reduces the affine); 2-D images pass unchanged.

    A DICOM series of one file or a ``HxWx1`` NIfTI loads as a volume of one slice; write the
    prediction with :class:`SaveInInputGeometryd`, which restores the slice axis and the slice's
    3-D geometry from the input file.

    Raises:
        ValueError: for a volume of several slices (a 2-D network takes one slice), naming the key and shape.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        from monai.transforms import SqueezeDim

        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            if x.ndim != 4:
                continue
            if x.shape[-1] != 1:
                src = getattr(x, "meta", {}).get("filename_or_obj", "")
                raise ValueError(f"{key!r} {src} is a volume of {x.shape[-1]} slices (shape {tuple(x.shape)}); this "
                                 f"2-D bundle takes a 2-D image or one slice: give the slices one at a time.")
            d[key] = SqueezeDim(dim=3)(x)
        return d
