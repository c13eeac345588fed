"""Registration evaluation (Gonzalez Ortiz et al. 2023, Sec. 4.1): label Dice after nearest-neighbour warping, and folding."""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import torch
from monai.metrics import CumulativeIterationMetric
from monai.networks.blocks import Warp

__all__ = ["warp_labels", "label_dice", "registration_dice", "jacobian_determinant", "folding_fraction", "FoldingFraction"]


def _check_ddf(ddf: torch.Tensor) -> int:
    if ddf.dim() not in (4, 5) or ddf.shape[1] != ddf.dim() - 2:
        raise ValueError(
            f"ddf must be (B, spatial_dims, *spatial) with 2 or 3 spatial dims, got shape {tuple(ddf.shape)}."
        )
    return ddf.dim() - 2


def warp_labels(labels: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
    """Warp a label map with nearest-neighbour interpolation (labels stay labels; outside -> 0).

    Args:
        labels: ``(B, 1, *spatial)`` integer-valued (any dtype).
        ddf: ``(B, spatial_dims, *spatial)`` displacement in voxels (MONAI ``Warp`` convention).

    Returns:
        The warped labels, ``(B, 1, *spatial)``, same dtype as ``labels``.
    """
    _check_ddf(ddf)
    if labels.shape[0] != ddf.shape[0] or labels.shape[2:] != ddf.shape[2:]:
        raise ValueError(f"labels {tuple(labels.shape)} and ddf {tuple(ddf.shape)} differ in batch or spatial size.")
    warped = Warp(mode="nearest", padding_mode="zeros")(labels.to(ddf.dtype), ddf)
    return warped.round().to(labels.dtype)


def label_dice(pred: torch.Tensor, ref: torch.Tensor, labels: Sequence[int]) -> torch.Tensor:
    """Dice per sample and label, ``(B, len(labels))``; a label absent from both scores 1 (no NaN)."""
    if pred.shape != ref.shape:
        raise ValueError(f"label maps differ in shape: {tuple(pred.shape)} vs {tuple(ref.shape)}.")
    out = []
    for lab in labels:
        p, r = (pred == lab).flatten(1), (ref == lab).flatten(1)
        inter = (p & r).sum(1).double()
        total = (p.sum(1) + r.sum(1)).double()
        out.append(torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total)))
    return torch.stack(out, 1) if out else torch.zeros(pred.shape[0], 0, dtype=torch.float64, device=pred.device)


def registration_dice(
    moving_labels: torch.Tensor,
    fixed_labels: torch.Tensor,
    ddf: torch.Tensor,
    labels: Optional[Sequence[int]] = None,
) -> Dict[Union[int, str], float]:
    """Warp the moving labels (nearest) and compare with the fixed labels, per label and on average.

    Args:
        moving_labels, fixed_labels: ``(B, 1, *spatial)`` label maps.
        ddf: ``(B, spatial_dims, *spatial)`` displacement from the registration network.
        labels: labels to score (default: every non-zero label in either map).

    Returns:
        ``{label: Dice averaged over the batch, ..., "mean": mean over labels}``.
    """
    warped = warp_labels(moving_labels, ddf)
    fixed = fixed_labels.to(warped.dtype)
    if labels is None:
        found = torch.unique(torch.cat([moving_labels.flatten(), fixed_labels.flatten()]).round())
        labels = [int(v) for v in found.tolist() if int(v) != 0]
    d = label_dice(warped, fixed, labels)
    result: Dict[Union[int, str], float] = {int(lab): float(d[:, i].mean()) for i, lab in enumerate(labels)}
    result["mean"] = float(d.mean()) if d.numel() else float("nan")
    return result


def jacobian_determinant(ddf: torch.Tensor) -> torch.Tensor:
    """Determinant of the Jacobian of ``x -> x + u(x)`` per voxel, by central differences.

    ``J = I + grad u`` with ``u = ddf`` in voxel units, channel ``i`` the displacement along
    spatial axis ``i`` (MONAI ``Warp``); one-sided differences at the borders (``np.gradient``,
    as voxelmorph's evaluation). Computed in float64.

    Args:
        ddf: ``(B, spatial_dims, *spatial)``, 2 or 3 spatial dims.

    Returns:
        ``(B, *spatial)`` determinants.
    """
    d = _check_ddf(ddf)
    if min(ddf.shape[2:]) < 2:
        raise ValueError(f"every spatial size must be >= 2 for finite differences, got {tuple(ddf.shape[2:])}.")
    u = ddf.double()
    # grads[i][j] = d u_i / d x_j, each (B, *spatial)
    grads = [torch.gradient(u[:, i], dim=tuple(range(1, d + 1))) for i in range(d)]
    jac = torch.stack([torch.stack(list(g), -1) for g in grads], -2)  # (B, *spatial, d, d)
    jac = jac + torch.eye(d, dtype=jac.dtype, device=jac.device)
    return torch.linalg.det(jac)


def folding_fraction(ddf: torch.Tensor) -> torch.Tensor:
    """Fraction of voxels with a non-positive Jacobian determinant (folding), per sample ``(B,)``."""
    det = jacobian_determinant(ddf)
    return (det <= 0).flatten(1).double().mean(1)


class FoldingFraction(CumulativeIterationMetric):
    """MONAI metric: fraction of voxels with a non-positive Jacobian determinant of ``x + ddf(x)``.

    ``y_pred`` is the ddf ``(B, d, *spatial)``; ``y`` is ignored. Use with ``IgniteMetricHandler``
    and ``MetricsSaver`` for per-case values.
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        return folding_fraction(torch.as_tensor(y_pred)).float().reshape(-1, 1)

    def aggregate(self, reduction: str | None = None):  # type: ignore[override]
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("the data to aggregate must be a PyTorch Tensor.")
        return data.mean() if (reduction or self.reduction) == "mean" else data
