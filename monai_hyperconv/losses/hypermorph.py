"""HyperMorph's loss (Hoopes et al. 2021, 2022): ``(1 - lam) * similarity + lam * smoothness``, lam per step."""

from __future__ import annotations

import math
import numbers
from typing import Optional, Union

import torch
from monai.losses import BendingEnergyLoss
from monai.utils import LossReduction
from torch import nn

from .registration import RegistrationLoss

__all__ = ["HyperMorphLoss", "check_lam"]


def check_lam(lam, name: str = "lam") -> Union[float, torch.Tensor]:
    """A regularisation weight in [0, 1]: a number or a one-element tensor (kept as a tensor, on its device).

    Raises:
        ValueError: not a single finite number in [0, 1].
    """
    if isinstance(lam, torch.Tensor):
        if lam.numel() != 1:
            raise ValueError(f"{name} must be one number per batch, got a tensor of shape {tuple(lam.shape)}.")
        v = float(lam.detach().reshape(()).item())
    elif isinstance(lam, numbers.Real) and not isinstance(lam, bool):
        v = float(lam)
    else:
        raise ValueError(f"{name} must be a number in [0, 1], got {lam!r}.")
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ValueError(f"{name} (the regularisation weight) must be in [0, 1], got {v!r}.")
    return lam.reshape(()) if isinstance(lam, torch.Tensor) else v


class HyperMorphLoss(RegistrationLoss):
    """``L(lam) = (1 - lam) * L_sim(moved, fixed) + lam * L_smooth(ddf)`` (Hoopes et al. 2021).

    Args:
        spatial_dims: 2 or 3.
        similarity: ``"mse"`` (default), ``"lncc"`` (MONAI ``LocalNormalizedCrossCorrelationLoss``),
            ``"mi"`` (MONAI ``GlobalMutualInformationLoss``) or a loss module ``(moved, fixed) -> scalar``.
        smoothness: ``"tv"`` (our :class:`~monai_hyperconv.losses.TotalVariationLoss`, default; with
            ``penalty="l2"`` it is VoxelMorph's Grad-l2) or ``"bending"`` (MONAI ``BendingEnergyLoss``).
        penalty: ``"l1"`` or ``"l2"`` forward differences for TV.
        image_sigma: MSE is divided by ``image_sigma ** 2`` (HyperMorph's normalisation of MSE,
            which balances the two terms; None: no scaling).
        similarity_kwargs: keyword arguments of the MONAI similarity loss.
        reduction: ``"mean"`` or ``"sum"`` over the batch.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        similarity: Union[str, nn.Module] = "mse",
        smoothness: str = "tv",
        penalty: str = "l2",
        image_sigma: Optional[float] = None,
        similarity_kwargs: Optional[dict] = None,
        reduction: Union[LossReduction, str] = LossReduction.MEAN,
    ) -> None:
        super().__init__(spatial_dims=spatial_dims, similarity=similarity, lambda_reg=1.0, penalty=penalty,
                         similarity_kwargs=similarity_kwargs, reduction=reduction)
        if smoothness not in ("tv", "bending"):
            raise ValueError(f"smoothness must be 'tv' or 'bending', got {smoothness!r}.")
        if image_sigma is not None and not (isinstance(image_sigma, numbers.Real) and image_sigma > 0):
            raise ValueError(f"image_sigma must be a positive number or None, got {image_sigma!r}.")
        if image_sigma is not None and self.similarity_name != "mse":
            raise ValueError(f"image_sigma scales MSE only, but similarity is {self.similarity_name!r}.")
        self.smoothness = smoothness
        self.image_sigma = None if image_sigma is None else float(image_sigma)
        self.bending = BendingEnergyLoss(reduction=self.reduction) if smoothness == "bending" else None

    def components(self, moved: torch.Tensor, fixed: torch.Tensor, ddf: torch.Tensor, lam) -> dict:  # type: ignore[override]
        """``{"similarity", "regularization", "total", "lam"}`` (tensors; ``lam`` as given, checked)."""
        lam = check_lam(lam)
        c = super().components(moved, fixed, ddf)
        sim = c["similarity"]
        if self.image_sigma is not None:
            sim = sim / self.image_sigma**2
        reg = c["regularization"] if self.bending is None else self.bending(ddf.float())
        if isinstance(lam, torch.Tensor):
            lam = lam.to(device=sim.device, dtype=torch.float32)
        return {"similarity": sim, "regularization": reg, "total": (1 - lam) * sim + lam * reg, "lam": lam}

    def forward(self, moved: torch.Tensor, fixed: torch.Tensor, ddf: torch.Tensor, lam) -> torch.Tensor:  # type: ignore[override]
        """Args: moved (warped moving image), fixed, ddf ``(B, spatial_dims, *spatial)``, lam in [0, 1]
        (the value the network was conditioned on in this step). Returns: the loss."""
        return self.components(moved, fixed, ddf, lam)["total"]
