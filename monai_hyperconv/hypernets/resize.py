"""Variable resizing R_phi (Gonzalez Ortiz et al. 2023, Sec. 3 and 4.4) and the rescaling-factor helpers."""

from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..utils import check_spatial_dims

__all__ = ["check_phi", "check_phi_prior", "resolve_phi", "sample_phi", "scaled_size", "VariableResize"]

_LINEAR_MODE = {1: "linear", 2: "bilinear", 3: "trilinear"}


def check_phi(phi) -> float:
    """Validate a rescaling factor and return it as a Python float.

    Args:
        phi: a number, or a one-element tensor / array, in ``(0, 1]``.

    Returns:
        ``float(phi)``.

    Raises:
        ValueError: ``phi`` is not a finite number in ``(0, 1]``.
    """
    if isinstance(phi, bool):
        raise ValueError(f"phi must be a number in (0, 1], got {phi!r}.")
    if isinstance(phi, torch.Tensor):
        if phi.numel() != 1:
            raise ValueError(f"phi must be a single number in (0, 1] (one per batch), got a tensor of shape {tuple(phi.shape)}.")
        value = float(phi.detach().reshape(()).item())
    elif isinstance(phi, numbers.Real) or hasattr(phi, "__float__"):
        try:
            value = float(phi)
        except (TypeError, ValueError):
            raise ValueError(f"phi must be a number in (0, 1], got {phi!r}.") from None
    else:
        raise ValueError(f"phi must be a number in (0, 1], got {phi!r}.")
    if not math.isfinite(value) or not 0.0 < value <= 1.0:
        raise ValueError(f"phi (the rescaling factor) must be in (0, 1], got {value!r}.")
    return value


def check_phi_prior(prior: Optional[Sequence[float]]) -> Optional[Tuple[float, float]]:
    """Validate a uniform training prior ``(low, high)`` with ``0 <= low < high <= 1`` (``None`` passes)."""
    if prior is None:
        return None
    try:
        lo, hi = (float(v) for v in prior)
    except (TypeError, ValueError):
        raise ValueError(f"phi_prior must be a (low, high) pair or None, got {prior!r}.") from None
    if not (0.0 <= lo < hi <= 1.0):
        raise ValueError(f"phi_prior must satisfy 0 <= low < high <= 1, got {prior!r}.")
    return lo, hi


def sample_phi(prior: Tuple[float, float], generator: Optional[torch.Generator] = None) -> float:
    """Draw ``phi ~ U(low, high]`` (the paper's ``p(phi)``, default ``U(0, 0.5)``).

    The interval is half-open at ``low`` so that ``phi = 0`` (an undefined resize) is never drawn.
    Drawn on the CPU: resize sizes are Python ints anyway, so no device sync is added.
    """
    lo, hi = prior
    u = 1.0 - float(torch.rand((), generator=generator))  # in (0, 1]
    return lo + (hi - lo) * u


def resolve_phi(phi, training: bool, default: Optional[float], prior: Optional[Tuple[float, float]]) -> float:
    """The factor a forward pass uses: the given ``phi``; else, in training with a prior, a draw from it;
    else the module's ``default``; else an error (phi is required in evaluation).

    Raises:
        ValueError: ``phi`` is invalid, or missing with no default outside training.
    """
    if phi is not None:
        return check_phi(phi)
    if training and prior is not None:
        return sample_phi(prior)
    if default is not None:
        return default
    if prior is not None:
        raise ValueError(
            "phi is required in evaluation mode: this network samples phi from its prior only in training. "
            "Call net(x, phi=...) with phi in (0, 1], or net.train()."
        )
    raise ValueError("phi is required: this network has no default phi and no training prior.")


def scaled_size(size: Sequence[int], phi: float) -> Tuple[int, ...]:
    """``max(1, round(phi * s))`` per spatial dimension (Gonzalez Ortiz et al. 2023, Sec. 4.4: multiply and round to nearest).

    Rounding is half-up (``floor(phi * s + 0.5)``), not Python's banker's rounding, so e.g. 33 at
    0.5 gives 17 like the paper's "nearest integer". (The group's research code truncates instead.)
    """
    phi = check_phi(phi)
    # the 1e-9 guards against phi * s landing just below .5 through float error (0.3 * 5 = 1.4999...)
    return tuple(max(1, int(math.floor(phi * int(s) + 0.5 + 1e-9))) for s in size)


class VariableResize(nn.Module):
    """Resizing layer ``R_phi``: linear interpolation by a continuous factor, or to an exact size.

    ``forward(x, phi)`` resizes the spatial dims of ``x`` to :func:`scaled_size` (down-sampling for
    ``phi < 1``); ``forward(x, size=skip.shape[2:])`` up-samples to the skip connection's exact size,
    as the paper's decoder does. Bilinear (2-D) / trilinear (3-D) with ``align_corners=False``.

    Args:
        spatial_dims: 1, 2 or 3.
        mode: ``"linear"`` (bi/trilinear by dimension, default), or any ``F.interpolate`` mode.
    """

    def __init__(self, spatial_dims: int, mode: str = "linear") -> None:
        super().__init__()
        self.spatial_dims = spatial_dims = check_spatial_dims(spatial_dims)
        self.mode = _LINEAR_MODE[spatial_dims] if mode == "linear" else mode

    def forward(self, x: torch.Tensor, phi=None, size: Optional[Sequence[int]] = None) -> torch.Tensor:
        if (phi is None) == (size is None):
            raise ValueError("VariableResize needs exactly one of phi or size.")
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(f"expected a {self.spatial_dims + 2}-D input, got shape {tuple(x.shape)}.")
        if size is not None:
            target = tuple(int(s) for s in size)
            if len(target) != self.spatial_dims or min(target) < 1:
                raise ValueError(f"size must be {self.spatial_dims} positive ints, got {tuple(size)}.")
        else:
            target = scaled_size(x.shape[2:], phi)
        if tuple(x.shape[2:]) == target:
            return x  # phi = 1 or an exact match: interpolation would be an identity copy
        align = False if self.mode in ("linear", "bilinear", "bicubic", "trilinear") else None
        return F.interpolate(x, size=target, mode=self.mode, align_corners=align)

    def extra_repr(self) -> str:
        return f"spatial_dims={self.spatial_dims}, mode={self.mode!r}"
