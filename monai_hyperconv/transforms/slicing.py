"""2-D slices of 3-D volumes and back.

The liver task trains a 2-D network on axial slices (Ma et al., journal extension, §4.2.1); the MS task's MB-UNet
uses slices along all three orthogonal planes (Ma et al. 2022). Training extracts slices with
:class:`VolumeToSlices` / :class:`VolumeToSlicesd`; inference stitches 2-D predictions back
with MONAI's ``SliceInferer`` (:func:`slice_inference`, :func:`orthogonal_slice_inference`).
:class:`SliceWise` / :class:`SliceWised` apply a per-image transform (e.g. min-max intensity scaling) to
each slice of a volume on its own, so a 2-D bundle's preprocessing of a stack equals that of its slices.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data import MetaTensor
from monai.inferers import SliceInferer
from monai.transforms.inverse import InvertibleTransform
from monai.transforms.transform import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

__all__ = [
    "VolumeToSlices",
    "SlicesToVolume",
    "VolumeToSlicesd",
    "SliceWise",
    "SliceWised",
    "slice_inference",
    "orthogonal_slice_inference",
]


def _slice_affine(affine: torch.Tensor, axis: int, index: int) -> torch.Tensor:
    """2-D (3x3) affine of slice ``index`` along spatial ``axis`` of a 3-D (4x4) affine.

    The slice's origin is moved to its position along ``axis``; the in-plane rows/columns are
    kept, so spacing and in-plane orientation survive (the through-plane coordinate is dropped).
    """
    a = torch.as_tensor(affine, dtype=torch.float64)
    origin = a[:3, 3] + a[:3, axis] * index
    keep = [i for i in range(3) if i != axis]
    out = torch.eye(3, dtype=torch.float64)
    out[:2, :2] = a[keep][:, keep]
    out[:2, 2] = origin[keep]
    return out


class VolumeToSlices(Transform):
    """(C, H, W, D) volume -> list of (C, ., .) slices along spatial ``axis``.

    MetaTensor slices get a 2-D affine (spacing and in-plane orientation of the volume, origin
    at the slice) and keep ``volume_affine``, ``slice_axis``, ``slice_index`` in their metadata
    so :class:`SlicesToVolume` restores the volume geometry.

    Args:
        axis: spatial axis to slice along (2 = axial for RAS volumes).
        indices: slice indices to extract; default all.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, axis: int = 2, indices: Sequence[int] | None = None) -> None:
        self.axis = axis
        self.indices = indices

    def __call__(self, img: NdarrayOrTensor) -> list[NdarrayOrTensor]:
        if img.ndim != 4:
            raise ValueError(f"expected a channel-first 3-D volume (C,H,W,D), got shape {tuple(img.shape)}.")
        ax = self.axis % 3
        n = img.shape[1 + ax]
        idx = range(n) if self.indices is None else [int(i) for i in self.indices]
        out: list[NdarrayOrTensor] = []
        for i in idx:
            sl = [slice(None)] * 4
            sl[1 + ax] = i
            if isinstance(img, MetaTensor):
                arr = img.as_tensor()[tuple(sl)].clone()
                meta = dict(img.meta)
                vol_aff = img.affine.clone()
                meta.update(
                    affine=_slice_affine(vol_aff, ax, i), volume_affine=vol_aff, slice_axis=ax, slice_index=i,
                    spatial_shape=np.asarray(arr.shape[1:]),
                )
                out.append(MetaTensor(arr, meta=meta, applied_operations=list(img.applied_operations)))
            else:
                arr = img[tuple(sl)]
                out.append(arr.clone() if isinstance(arr, torch.Tensor) else np.array(arr))
        return out


class SlicesToVolume(Transform):
    """List of (C, ., .) slices -> (C, H, W, D) volume stacked along spatial ``axis``.

    The volume affine is the slices' ``volume_affine`` metadata when present (see
    :class:`VolumeToSlices`), so ``SlicesToVolume(a)(VolumeToSlices(a)(v))`` equals ``v``
    including its affine.

    Args:
        axis: spatial axis to stack along.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, axis: int = 2) -> None:
        self.axis = axis

    def __call__(self, slices: Sequence[NdarrayOrTensor]) -> NdarrayOrTensor:
        if len(slices) == 0:
            raise ValueError("no slices to stack.")
        ax = self.axis % 3
        ts = [convert_to_tensor(s, track_meta=False) for s in slices]
        vol = torch.stack(ts, dim=1 + ax)
        first = slices[0]
        if isinstance(first, MetaTensor):
            meta = dict(first.meta)
            aff = meta.pop("volume_affine", None)
            for k in ("slice_axis", "slice_index"):
                meta.pop(k, None)
            meta["affine"] = torch.as_tensor(aff) if aff is not None else torch.eye(4, dtype=torch.float64)
            meta["spatial_shape"] = np.asarray(vol.shape[1:])
            return MetaTensor(vol, meta=meta)
        out, *_ = convert_to_dst_type(vol, first)
        return out


class VolumeToSlicesd(MapTransform):
    """Dictionary version of :class:`VolumeToSlices`: one data dict per slice (a list).

    MONAI's ``Compose`` maps the following transforms over the list and ``list_data_collate``
    flattens it into the batch, as with ``RandCropByPosNegLabeld``.

    Args:
        keys: volume keys, sliced together.
        axis: spatial axis.
        select_key: keep only slices where this key has at least ``min_foreground`` non-zero
            pixels (e.g. the label, to skip empty slices); None keeps all.
        min_foreground: see ``select_key``.
        allow_missing_keys: don't raise on missing keys.
    """

    backend = VolumeToSlices.backend

    def __init__(self, keys: KeysCollection, axis: int = 2, select_key: str | None = None, min_foreground: int = 1, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.axis, self.select_key, self.min_foreground = axis, select_key, int(min_foreground)

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return [d]
        ax = self.axis % 3
        n = d[keys[0]].shape[1 + ax]
        idx = list(range(n))
        if self.select_key is not None:
            sel = convert_to_tensor(d[self.select_key], track_meta=False) != 0
            counts = sel.movedim(1 + ax, 0).reshape(n, -1).sum(1)
            idx = [i for i in idx if int(counts[i]) >= self.min_foreground]
        splitter = VolumeToSlices(self.axis, idx)
        per_key = {k: splitter(d[k]) for k in keys}
        out = []
        for j, i in enumerate(idx):
            item = dict(d)
            for k in keys:
                item[k] = per_key[k][j]
            item["slice_index"] = i
            out.append(item)
        return out


class SliceWise(Transform):
    """Apply an array transform to each slice of a channel-first volume on its own.

    ``(C, H, W, D)`` -> the slices ``(C, H, W)`` along spatial ``axis`` go through ``transform`` one
    by one and are stacked back; a 2-D image ``(C, H, W)`` is one slice. So a 2-D bundle that
    scales each image to [0, 1] (``ScaleIntensity``) scales each slice of a stack as it would scale
    that slice given alone (a whole-volume min/max would not). The output keeps the input's
    metadata and applied operations. Only for transforms that keep the slice's shape and geometry
    and are not inverted (intensity transforms): invertible ones (resizing, cropping) are refused,
    as their inverse would not be tracked; apply those to the volume (e.g. ``Resized`` to
    ``[h, w, -1]``).

    Args:
        transform: the 2-D array transform (callable on a ``(C, H, W)`` tensor).
        axis: spatial axis along which the volume is sliced (2: the last).

    Raises:
        TypeError: for an invertible ``transform``.
        ValueError: for an input that is neither ``(C, H, W)`` nor ``(C, H, W, D)``.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, transform: Callable[[torch.Tensor], NdarrayOrTensor], axis: int = 2) -> None:
        if isinstance(transform, InvertibleTransform):
            raise TypeError(f"SliceWise: transform {type(transform).__name__} is invertible; its inverse would not be "
                            f"tracked slice by slice: apply it to the whole volume instead.")
        if not callable(transform):
            raise TypeError(f"SliceWise: transform must be callable, got {type(transform).__name__}.")
        self.transform = transform
        self.axis = axis

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        x = convert_to_tensor(img, track_meta=False)
        if x.ndim == 3:
            out = convert_to_tensor(self.transform(x), track_meta=False)
        elif x.ndim == 4:
            ax = 1 + self.axis % 3
            out = torch.stack([convert_to_tensor(self.transform(s), track_meta=False) for s in x.unbind(ax)], ax)
        else:
            raise ValueError(f"SliceWise: expected a channel-first 2-D image (C,H,W) or volume (C,H,W,D), got shape "
                             f"{tuple(x.shape)}.")
        res, *_ = convert_to_dst_type(out, img, dtype=out.dtype)
        return res


class SliceWised(MapTransform):
    """Dictionary version of :class:`SliceWise`.

    Args:
        keys: image keys.
        transform: the 2-D array transform applied to each slice.
        axis: spatial axis along which the volumes are sliced.
        allow_missing_keys: don't raise on missing keys.
    """

    backend = SliceWise.backend

    def __init__(self, keys: KeysCollection, transform: Callable[[torch.Tensor], NdarrayOrTensor], axis: int = 2,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.slicewise = SliceWise(transform, axis)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.slicewise(d[key])
        return d


def slice_inference(
    inputs: torch.Tensor,
    network: Callable[[torch.Tensor], torch.Tensor],
    axis: int = 2,
    roi_size: Sequence[int] | None = None,
    sw_batch_size: int = 8,
    **kwargs: Any,
) -> torch.Tensor:
    """Run a 2-D network slice by slice over (N, C, H, W, D) volumes with MONAI's ``SliceInferer``.

    Args:
        inputs: (N, C, H, W, D) batch.
        network: 2-D network (N, C, h, w) -> (N, C', h, w).
        axis: spatial axis sliced along (0 = H, 1 = W, 2 = D).
        roi_size: 2-D window; default the whole slice (no tiling).
        sw_batch_size: slices per forward pass.
        kwargs: further ``SlidingWindowInferer`` arguments (overlap, mode, ...).

    Returns:
        (N, C', H, W, D) stitched prediction.
    """
    if inputs.ndim != 5:
        raise ValueError(f"expected (N, C, H, W, D) input, got shape {tuple(inputs.shape)}.")
    ax = axis % 3
    plane = [s for i, s in enumerate(inputs.shape[2:]) if i != ax]
    inferer = SliceInferer(roi_size=tuple(roi_size or plane), sw_batch_size=sw_batch_size, spatial_dim=ax, progress=False, **kwargs)
    return inferer(inputs, network)


def orthogonal_slice_inference(
    inputs: torch.Tensor,
    network: Callable[[torch.Tensor], torch.Tensor] | Sequence[Callable[[torch.Tensor], torch.Tensor]],
    axes: Sequence[int] = (0, 1, 2),
    sw_batch_size: int = 8,
) -> torch.Tensor:
    """Average of :func:`slice_inference` along several planes (the MB-UNet's three orthogonal views).

    Args:
        inputs: (N, C, H, W, D).
        network: one 2-D network for all planes, or one per entry of ``axes``.
        axes: spatial axes to slice along.
        sw_batch_size: slices per forward pass.

    Returns:
        (N, C', H, W, D) mean of the per-plane predictions.
    """
    nets = list(network) if isinstance(network, (list, tuple)) else [network] * len(axes)
    if len(nets) != len(axes):
        raise ValueError(f"got {len(nets)} networks for {len(axes)} axes.")
    preds = [slice_inference(inputs, n, a, sw_batch_size=sw_batch_size) for n, a in zip(nets, axes)]
    return torch.stack(preds, 0).mean(0)
