"""Total variation of a field, any number of spatial dims (MONAI has none)."""

from __future__ import annotations

from typing import Union

import torch
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

__all__ = ["TotalVariationLoss"]


class TotalVariationLoss(_Loss):
    """Total variation by forward differences, as in the registration of Gonzalez Ortiz et al. 2023 (Sec. 4.1) and voxelmorph's Grad.

    For ``x`` of shape ``(B, C, *spatial)`` and every spatial axis ``d`` the forward difference
    ``D_d x = x[..., i+1, ...] - x[..., i, ...]``; the per-sample loss is
    ``(1/n_dims) sum_d mean(|D_d x|)`` (``penalty="l1"``) or ``... mean((D_d x)^2)`` (``"l2"``),
    the mean running over channels and positions. Axes of size 1 contribute 0.
    Computed in float32 at least (squares of large fp16 displacements would overflow).

    Args:
        penalty: ``"l1"`` or ``"l2"`` (default, smoothness of a displacement field).
        reduction: ``"mean"`` (over the batch), ``"sum"`` or ``"none"`` (per sample, ``(B,)``).
    """

    def __init__(self, penalty: str = "l2", reduction: Union[LossReduction, str] = LossReduction.MEAN) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if penalty not in ("l1", "l2"):
            raise ValueError(f"penalty must be 'l1' or 'l2', got {penalty!r}.")
        self.penalty = penalty

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Args: input ``(B, C, *spatial)`` with at least one spatial dim. Returns: the loss."""
        if input.dim() < 3:
            raise ValueError(f"expected (B, C, *spatial) with at least one spatial dim, got shape {tuple(input.shape)}.")
        x = input if input.dtype in (torch.float32, torch.float64) else input.float()
        n = x.dim() - 2
        per_sample = x.new_zeros(x.shape[0])
        for d in range(2, x.dim()):
            if x.shape[d] < 2:
                continue
            diff = x.narrow(d, 1, x.shape[d] - 1) - x.narrow(d, 0, x.shape[d] - 1)
            term = diff.abs() if self.penalty == "l1" else diff.pow(2)
            per_sample = per_sample + term.flatten(1).mean(1)
        per_sample = per_sample / n
        if self.reduction == LossReduction.MEAN.value:
            return per_sample.mean()
        if self.reduction == LossReduction.SUM.value:
            return per_sample.sum()
        return per_sample
