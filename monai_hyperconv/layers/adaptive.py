"""Adaptive convolution kernel (Tek et al. 2020): learnable weights times a normalised Gaussian envelope."""

from __future__ import annotations

import math
import warnings
import weakref
from typing import Sequence, Tuple, Union

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch import nn

from .base import ConvNdSignature, GeneratedConv, _compiling

__all__ = ["AdaptiveConv", "AdaptiveConv1d", "AdaptiveConv2d", "AdaptiveConv3d"]

# id(sigma parameter) -> its AdaptiveConv, so the optimiser hook below touches only the sigmas that
# the stepping optimiser owns (O(its params)), never every layer alive in the process
_SIGMA_OWNERS: "weakref.WeakValueDictionary[int, AdaptiveConv]" = weakref.WeakValueDictionary()
_HOOK_HANDLE = None


def _project_sigmas(optimizer, args, kwargs) -> None:
    """Global optimiser post-step hook: the official code's clipping callback, with no user code."""
    with torch.no_grad():
        for group in optimizer.param_groups:
            for p in group["params"]:
                owner = _SIGMA_OWNERS.get(id(p))
                if owner is not None and owner.sigma is p:  # ids are reused: check identity
                    owner.project_sigma_()


def _ensure_hook() -> None:
    global _HOOK_HANDLE
    if _HOOK_HANDLE is None:
        _HOOK_HANDLE = register_optimizer_step_post_hook(_project_sigmas)


class AdaptiveConv(GeneratedConv):
    """Adaptive convolution kernel: ``K_q = W_q * U_q`` (Tek et al. 2020, Eq. 5-7, 21).

    For output filter ``q`` the envelope ``U_q(g) = exp(-|g - mu|^2 / (2 sigma_q^2 + 1e-8))`` is
    evaluated on the kernel grid normalised to [0, 1] per axis (``g_i = x_i / (k_i - 1)``) with
    the centre ``mu`` fixed at 0.5, repeated over the input channels, and normalised so every
    filter's envelope has RMS 1 over (input channels x taps) (Theorem 3.1 / Eq. 21, the official
    code's default). ``W`` is He-uniform, so ``K`` starts with a He-like variance.

    ``sigma`` is learnable, one per output filter, initialised as ``linspace(*sigma_init)`` and
    kept within ``[1/n, n]`` (``n`` the largest kernel size) without any user callback: the
    forward pass uses the clamped value, and after every ``torch.optim`` step the stored
    parameter is projected back onto the interval (projected gradient descent, as the official
    training callback).

    Args:
        spatial_dims, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, transposed, output_padding, fft: as :class:`GeneratedConv` / ``nn.ConvNd``
            (``fft``: ``"auto"``, ``True`` or ``False``, the FFT path for large kernels).
        sigma_init: (first, last) of the linearly spaced initial sigmas (default (0.1, 0.5)).
        normalize: normalise the envelope to RMS 1 per filter (default True).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Union[int, Sequence[int]] = 3,
        stride: Union[int, Sequence[int]] = 1,
        padding: Union[int, Sequence[int], str] = 0,
        dilation: Union[int, Sequence[int]] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        transposed: bool = False,
        output_padding: Union[int, Sequence[int]] = 0,
        sigma_init: Tuple[float, float] = (0.1, 0.5),
        normalize: bool = True,
        fft: Union[str, bool] = False,
    ) -> None:
        super().__init__(
            spatial_dims, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, transposed, output_padding, odd_kernel=True, fft=fft,
        )
        try:
            lo, hi = (float(v) for v in sigma_init)
        except (TypeError, ValueError):
            raise ValueError(f"sigma_init must be a (first, last) pair of numbers, got {sigma_init!r}.") from None
        if not (lo > 0 and hi > 0):
            raise ValueError(f"sigma_init values must be positive, got {sigma_init!r}.")
        if lo > hi:
            raise ValueError(f"sigma_init range is inverted: first ({lo}) > last ({hi}).")
        n = max(self.kernel_size)
        self.sigma_bounds = (1.0 / n, float(n))
        self.normalize = bool(normalize)
        self.weight_param = nn.Parameter(torch.empty(self.weight_shape))
        self.sigma = nn.Parameter(torch.linspace(lo, hi, self._n_filters))
        axes = [
            (torch.arange(k, dtype=torch.float32) / (k - 1)) if k > 1 else torch.full((1,), 0.5)
            for k in self.kernel_size
        ]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
        self.register_buffer("sq_dist", (grid - 0.5).pow(2).sum(-1), persistent=False)  # |g - mu|^2, kernel-shaped
        self.reset_parameters()
        self._register_sigma()
        _ensure_hook()

    @property
    def _n_filters(self) -> int:
        # one sigma per output filter: dim 0 of a conv weight, dim 1 of a transposed one
        return self.out_channels if not self.transposed else self.weight_shape[1] * self.groups

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """He-uniform weights (limit sqrt(6 / fan_in)), zero bias."""
        bound = math.sqrt(6.0 / self.fan_in)
        nn.init.uniform_(self.weight_param, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _register_sigma(self) -> None:
        # also called from every forward, so deep copies (which skip __init__) and layers whose
        # parameters were replaced are projected too
        if _SIGMA_OWNERS.get(id(self.sigma)) is not self:
            _SIGMA_OWNERS[id(self.sigma)] = self

    @torch.no_grad()
    def project_sigma_(self) -> None:
        """Clamp the stored ``sigma`` onto ``[1/n, n]`` in place; a NaN sigma (a diverged step) is reset
        to the upper bound (the widest envelope) with a warning, since clamping keeps NaN."""
        bad = torch.isnan(self.sigma)
        if bool(bad.any()):
            warnings.warn(f"{type(self).__name__}: {int(bad.sum())} NaN sigma value(s) (a diverged optimiser step) "
                          f"reset to the bound {self.sigma_bounds[1]:g}.", RuntimeWarning, stacklevel=2)
            self.sigma.masked_fill_(bad, self.sigma_bounds[1])
        self.sigma.clamp_(*self.sigma_bounds)

    def envelope(self) -> torch.Tensor:
        """The (normalised) envelope per output filter, shape ``(n_filters, *kernel_size)``."""
        if not (torch.jit.is_scripting() or _compiling()):
            self._register_sigma()
        sigma = self.sigma.clamp(*self.sigma_bounds)
        view = (-1,) + (1,) * self.spatial_dims
        u = torch.exp(-self.sq_dist.unsqueeze(0) / (2 * sigma.view(view).pow(2) + 1e-8))
        if self.normalize:
            # RMS over (c_in, taps) equals RMS over taps since U is repeated over input channels
            dims = tuple(range(1, u.dim()))
            u = u * torch.rsqrt(u.pow(2).mean(dim=dims, keepdim=True).clamp_min(1e-12))
        return u

    def generate_weight(self) -> torch.Tensor:
        u = self.envelope()
        if not self.transposed:
            return self.weight_param * u.unsqueeze(1)
        # transposed weight is (c_in, c_out/groups, *k): filters are (group, out-in-group) pairs
        g, co = self.groups, self.weight_shape[1]
        w = self.weight_param.view(g, -1, co, *self.kernel_size)
        return (w * u.view(g, 1, co, *self.kernel_size)).view(self.weight_shape)

    def fit_to_kernel(self, target: torch.Tensor, steps: int = 0, lr: float = 1e-2) -> float:  # noqa: ARG002
        """Reproduce ``target`` exactly: ``W = target / U`` (the envelope is strictly positive).

        Returns the relative L2 error (float rounding only, unless the envelope underflows).
        """
        if tuple(target.shape) != self.weight_shape:
            raise ValueError(f"target kernel shape {tuple(target.shape)} != weight shape {self.weight_shape}.")
        with torch.no_grad():
            u = self.envelope()
            if not self.transposed:
                u = u.unsqueeze(1)
            else:
                g, co = self.groups, self.weight_shape[1]
                u = u.view(g, 1, co, *self.kernel_size).expand(g, self.in_channels // g, co, *self.kernel_size)
                u = u.reshape(self.weight_shape)
            self.weight_param.copy_(target.to(self.weight_param) / u.clamp_min(1e-12))
        # already optimal: no gradient steps (``steps`` is accepted for a uniform interface)
        return self.relative_kernel_error(target)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", sigma_bounds={tuple(round(b, 4) for b in self.sigma_bounds)}"


class AdaptiveConv1d(ConvNdSignature, AdaptiveConv):
    """1-D :class:`AdaptiveConv` with ``nn.Conv1d``'s constructor signature (what MONAI's ``Conv`` factory builds)."""

    _dims = 1


class AdaptiveConv2d(ConvNdSignature, AdaptiveConv):
    """2-D :class:`AdaptiveConv` with ``nn.Conv2d``'s constructor signature (what MONAI's ``Conv`` factory builds)."""

    _dims = 2


class AdaptiveConv3d(ConvNdSignature, AdaptiveConv):
    """3-D :class:`AdaptiveConv` with ``nn.Conv3d``'s constructor signature (what MONAI's ``Conv`` factory builds)."""

    _dims = 3
