"""Fusion of several raters' binary masks.

The MS-lesion experiments (Ma et al. 2022 and its journal extension, ISBI 2015) train on the intersection of the two
experts' masks; union and majority vote are provided for comparison.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms.transform import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

__all__ = ["FUSION_MODES", "fuse_masks", "FuseLabels", "FuseLabelsd"]

FUSION_MODES = ("intersection", "union", "majority")


def fuse_masks(masks: NdarrayOrTensor | Sequence[NdarrayOrTensor], mode: str = "intersection") -> NdarrayOrTensor:
    """Fuse raters' masks (non-zero = foreground).

    Args:
        masks: either one channel-first array whose channels are the raters (R, *spatial), or a
            sequence of R arrays of equal shape (each (1, *spatial) or (*spatial)).
        mode: "intersection" (all raters), "union" (any rater) or "majority" (strictly more
            than half of the raters; with two raters this equals the intersection).

    Returns:
        (1, *spatial) mask of 0/1 with the type, dtype and metadata of the (first) input.
    """
    if mode not in FUSION_MODES:
        raise ValueError(f"mode must be one of {FUSION_MODES}, got {mode!r}.")
    if isinstance(masks, (list, tuple)):
        ref = masks[0]
        ts = [convert_to_tensor(m, track_meta=False) for m in masks]
        if any(t.shape != ts[0].shape for t in ts):
            raise ValueError(f"rater masks differ in shape: {[tuple(t.shape) for t in ts]}.")
        stack = torch.stack([t.reshape(t.shape[1:]) if t.ndim > 0 and t.shape[0] == 1 else t for t in ts])
    else:
        ref = masks
        stack = convert_to_tensor(masks, track_meta=False)
    fg = stack != 0
    n = fg.shape[0]
    votes = fg.sum(0, keepdim=True)
    if mode == "intersection":
        out = votes == n
    elif mode == "union":
        out = votes > 0
    else:
        out = 2 * votes > n
    res, *_ = convert_to_dst_type(out, ref, dtype=getattr(ref, "dtype", None))
    return res


class FuseLabels(Transform):
    """Array transform: :func:`fuse_masks` with a fixed ``mode``.

    Args:
        mode: "intersection", "union" or "majority".
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, mode: str = "intersection") -> None:
        if mode not in FUSION_MODES:
            raise ValueError(f"mode must be one of {FUSION_MODES}, got {mode!r}.")
        self.mode = mode

    def __call__(self, masks: NdarrayOrTensor | Sequence[NdarrayOrTensor]) -> NdarrayOrTensor:
        return fuse_masks(masks, self.mode)


class FuseLabelsd(MapTransform):
    """Dictionary version of :class:`FuseLabels`.

    With one key, its channels are the raters (e.g. ``"label": [rater1.nii.gz, rater2.nii.gz]``
    loaded by ``LoadImaged`` + ``EnsureChannelFirstd``); with several keys, each key is one rater.

    Args:
        keys: rater key(s).
        name: output key; default the first key.
        mode: "intersection", "union" or "majority".
        allow_missing_keys: fuse only the keys present.
    """

    backend = FuseLabels.backend

    def __init__(self, keys: KeysCollection, name: str | None = None, mode: str = "intersection", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.name = name if name is not None else self.keys[0]
        self.fuser = FuseLabels(mode)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        present = list(self.key_iterator(d))
        if not present:
            return d
        d[self.name] = self.fuser(d[present[0]] if len(present) == 1 else [d[k] for k in present])
        return d
