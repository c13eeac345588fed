"""Post-processing of registration outputs in MONAI engines."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.transforms import MapTransform

from ..metrics.registration import warp_labels

__all__ = ["SplitRegistrationOutputd"]


class SplitRegistrationOutputd(MapTransform):
    """Post-processing: ``pred = [moved, ddf]`` -> ``moved`` and ``ddf``; with ``moving_label`` present
    also ``pred_label`` = the moving labels warped by ``ddf`` (nearest neighbour), and with
    ``fixed_label`` present ``ref_label`` (a copy that MONAI engines keep in their output).

    Args:
        pred_key: key of the engine output. in_channels: channels of one image.
        moving_label_key: key of the moving label map (skipped when absent).
    """

    def __init__(self, pred_key: str = "pred", in_channels: int = 1, moving_label_key: str = "moving_label",
                 fixed_label_key: str = "fixed_label") -> None:
        super().__init__([pred_key])
        self.pred_key, self.in_channels = pred_key, int(in_channels)
        self.moving_label_key, self.fixed_label_key = moving_label_key, fixed_label_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        pred = d[self.pred_key]
        d["moved"] = pred[: self.in_channels]
        d["ddf"] = pred[self.in_channels:]
        if self.moving_label_key in d and d[self.moving_label_key] is not None:
            lab = torch.as_tensor(d[self.moving_label_key]).to(torch.as_tensor(pred).device)
            d["pred_label"] = warp_labels(lab[None], torch.as_tensor(d["ddf"])[None].float())[0]
        if self.fixed_label_key in d and d[self.fixed_label_key] is not None:
            # a new key: MONAI engines keep new post-processing keys in engine.state.output (batch keys
            # such as fixed_label stay in engine.state.batch), where metric output_transforms look
            d["ref_label"] = torch.as_tensor(d[self.fixed_label_key]).clone()
        return d
