"""Unsupervised registration loss: image similarity + lambda * total variation (Gonzalez Ortiz et al. 2023, Sec. 4.1)."""

from __future__ import annotations

from typing import Optional, Union

import torch
from monai.losses import GlobalMutualInformationLoss, LocalNormalizedCrossCorrelationLoss
from monai.utils import LossReduction
from torch import nn
from torch.nn.modules.loss import _Loss

from ..utils import check_spatial_dims
from .tv import TotalVariationLoss

__all__ = ["RegistrationLoss"]


class RegistrationLoss(_Loss):
    """``L = L_sim(moved, fixed) + lambda_reg * TV(ddf)`` (Gonzalez Ortiz et al. 2023, Sec. 4.1; VoxelMorph's objective).

    Args:
        spatial_dims: 2 or 3 (LNCC needs it).
        similarity: ``"mse"`` (default, the paper's), ``"lncc"`` (MONAI's
            ``LocalNormalizedCrossCorrelationLoss``), ``"mi"`` (MONAI's ``GlobalMutualInformationLoss``),
            or any loss module ``(moved, fixed) -> scalar``.
        lambda_reg: weight of the total-variation term (>= 0).
        penalty: ``"l1"`` or ``"l2"`` forward differences for TV.
        similarity_kwargs: keyword arguments of the MONAI similarity loss (e.g. ``{"kernel_size": 7}``).
        reduction: ``"mean"`` or ``"sum"`` over the batch for MSE and TV (MONAI's similarity
            losses are built with the same reduction).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        similarity: Union[str, nn.Module] = "mse",
        lambda_reg: float = 0.01,
        penalty: str = "l2",
        similarity_kwargs: Optional[dict] = None,
        reduction: Union[LossReduction, str] = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if self.reduction == LossReduction.NONE.value:
            raise ValueError("RegistrationLoss supports reduction 'mean' or 'sum' (its terms have different shapes).")
        spatial_dims = check_spatial_dims(spatial_dims)
        if not lambda_reg >= 0:
            raise ValueError(f"lambda_reg must be >= 0, got {lambda_reg!r}.")
        kw = dict(similarity_kwargs or {})
        self.spatial_dims = spatial_dims
        self.lambda_reg = float(lambda_reg)
        if isinstance(similarity, nn.Module):
            self.similarity = similarity
        elif similarity == "mse":
            self.similarity = nn.MSELoss(reduction="mean") if not kw else nn.MSELoss(**kw)
        elif similarity == "lncc":
            self.similarity = LocalNormalizedCrossCorrelationLoss(spatial_dims=spatial_dims, reduction=self.reduction, **kw)
        elif similarity == "mi":
            self.similarity = GlobalMutualInformationLoss(reduction=self.reduction, **kw)
        else:
            raise ValueError(f"similarity must be 'mse', 'lncc', 'mi' or a loss module, got {similarity!r}.")
        self.similarity_name = similarity if isinstance(similarity, str) else type(similarity).__name__
        self.tv = TotalVariationLoss(penalty=penalty, reduction=self.reduction)

    def components(self, moved: torch.Tensor, fixed: torch.Tensor, ddf: torch.Tensor) -> dict:
        """``{"similarity": ..., "regularization": ..., "total": ...}`` (tensors)."""
        if moved.shape != fixed.shape:
            raise ValueError(f"moved {tuple(moved.shape)} and fixed {tuple(fixed.shape)} differ in shape.")
        if ddf.shape[0] != moved.shape[0] or ddf.shape[2:] != moved.shape[2:]:
            raise ValueError(f"ddf {tuple(ddf.shape)} does not match the images {tuple(moved.shape)}.")
        sim = self.similarity(moved, fixed)
        if self.similarity_name == "mse" and self.reduction == LossReduction.SUM.value:
            sim = sim * moved.shape[0]  # nn.MSELoss averages over the batch too
        reg = self.tv(ddf)
        return {"similarity": sim, "regularization": reg, "total": sim + self.lambda_reg * reg}

    def forward(self, moved: torch.Tensor, fixed: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
        """Args: moved (warped moving image), fixed, ddf ``(B, spatial_dims, *spatial)``. Returns: the loss."""
        return self.components(moved, fixed, ddf)["total"]
