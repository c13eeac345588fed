"""The primary network of Gonzalez Ortiz et al. 2023: a UNet whose down/up-sampling layers are ``R_phi``.

With plain convs it is the paper's Fixed baseline (a default ``phi``) and Stochastic baseline
(``phi`` drawn from a prior in training); with predicted convs it is the SSHN's primary network.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch import nn

from ..layers.base import GeneratedConv
from ..layers.factories import get_conv_type
from ..utils import check_positive_int, check_spatial_dims
from .resize import VariableResize, check_phi, check_phi_prior, resolve_phi

__all__ = ["ScaleSpaceUNet", "MaterializedNetwork", "leaky_slope", "accepts_old_width_depth_names"]


def leaky_slope(act) -> float:
    """Negative slope of a LeakyReLU act spec (0 for anything else): sets the Kaiming gain."""
    name, kwargs = (act, {}) if isinstance(act, str) else (act[0], dict(act[1]) if len(act) > 1 else {})
    if isinstance(name, str) and name.lower() in ("leakyrelu", "leaky_relu"):
        return float(kwargs.get("negative_slope", 0.01))
    return 0.0


def _n_stages_to_num_pools(n_stages):
    if not isinstance(n_stages, int) or isinstance(n_stages, bool) or n_stages < 1:
        raise ValueError(f"n_stages must be a positive int, got {n_stages!r}.")
    return n_stages - 1


#: deprecated keyword -> (its replacement, value conversion, note in the warning)
_RENAMED: Tuple[Tuple[str, str, Callable, str], ...] = (
    ("features", "channels", lambda v: v, ""),
    ("n_stages", "num_pools", _n_stages_to_num_pools, " (num_pools = n_stages - 1)"),
)


def accepts_old_width_depth_names(init: Callable) -> Callable:
    """Let an ``__init__`` taking ``channels``/``num_pools`` (the names of :mod:`monai_hyperconv.networks`)
    also take their former names ``features`` (same meaning as ``channels``) and ``n_stages``
    (encoder stages, ``num_pools + 1``), with a ``FutureWarning`` naming the new name.
    The old names are accepted in 0.1.x and will be removed in 0.2.0.

    (``monai.utils.deprecated_arg(new_name=...)`` renames without converting the value, and
    ``n_stages`` is not ``num_pools``.)
    """

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        for old, new, convert, note in _RENAMED:
            if old not in kwargs:
                continue
            if new in kwargs:
                raise TypeError(f"{type(self).__name__}: got both {new!r} and its deprecated name {old!r}; "
                                f"pass {new!r} only.")
            warnings.warn(
                f"{type(self).__name__}: argument `{old}` is deprecated and will be removed in 0.2.0; "
                f"use `{new}`{note}.", FutureWarning, stacklevel=2,
            )
            kwargs[new] = convert(kwargs.pop(old))
        return init(self, *args, **kwargs)

    return wrapper


def _stage_channels(channels: Union[int, Sequence[int]], num_pools: int) -> Tuple[int, ...]:
    """One width per encoder stage (``num_pools + 1``); an int is the same at every stage (not doubled)."""
    n = num_pools + 1
    if isinstance(channels, int) and not isinstance(channels, bool):
        widths: Tuple[int, ...] = (channels,) * n
    else:
        widths = tuple(int(c) for c in channels)
        if len(widths) != n:
            raise ValueError(f"channels must be an int or num_pools + 1 = {n} ints (one per encoder stage), "
                             f"got {channels!r}.")
    if any(c < 1 for c in widths):
        raise ValueError(f"channels must be positive, got {channels!r}.")
    return widths


class _Stage(nn.Module):
    """``convs_per_stage`` x (conv -> [norm] -> act) at one resolution."""

    def __init__(self, make_conv: Callable[..., nn.Module], spatial_dims: int, in_ch: int, out_ch: int,
                 n_convs: int, kernel_size: int, act, norm) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        for i in range(n_convs):
            layers.append(make_conv(in_ch if i == 0 else out_ch, out_ch, kernel_size=kernel_size,
                                    padding=kernel_size // 2, bias=True))
            if norm is not None:
                layers.append(get_norm_layer(norm, spatial_dims=spatial_dims, channels=out_ch))
            layers.append(get_act_layer(act))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ScaleSpaceUNet(nn.Module):
    """UNet with variable resizing ``R_phi`` (Gonzalez Ortiz et al. 2023, Sec. 3 and 4.4).

    ``num_pools + 1`` encoder stages and ``num_pools`` decoder stages, ``convs_per_stage`` convs
    each (conv -> [norm] -> act), LeakyReLU by default. Between encoder stages (``num_pools``
    times, where :class:`~monai_hyperconv.networks.PaperUNet` max-pools) the features are
    resized to ``round(phi * size)`` (bi/trilinear); each decoder stage up-samples to its skip
    connection's exact size, concatenates, and convolves. A 1x1 conv gives the output.

    The factor used by ``forward(x, phi=None)``: ``phi`` if given; else, in training with
    ``phi_prior``, a draw from ``U(phi_prior)`` (the Stochastic baseline); else the default
    ``phi`` (the Fixed baseline); else an error.

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        channels: width of every encoder stage, an int (the same at every stage, paper: 32; unlike
            :class:`~monai_hyperconv.networks.PaperUNet`'s, not doubled) or ``num_pools + 1`` ints.
        num_pools: down-samplings ``R_phi`` (default 4: the paper's 5 encoder stages); 0 gives a
            single stage.
        convs_per_stage: convs per stage (default 2).
        kernel_size: conv kernel size (odd; default 3).
        act: activation name or (name, kwargs) (default LeakyReLU with slope 0.2).
        norm: optional norm name or (name, kwargs) (default None, as the paper).
        conv: conv type, ``"conv" | "hyper" | "adaptive" | (name, kwargs)``, or a callable with
            ``nn.ConvNd``'s signature (used by the hypernetwork variants).
        phi: default rescaling factor in (0, 1] (None: phi must be given outside training).
        phi_prior: ``(low, high)`` of the uniform training prior (None: no sampling).
        mode: resize mode, ``"linear"`` (bi/trilinear) by default.

    ``features`` and ``n_stages`` (= ``num_pools + 1``), the former names of ``channels`` and the
    depth, are still accepted with a ``FutureWarning`` (removed in 0.2.0).
    """

    accepts_phi = True

    @accepts_old_width_depth_names
    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Union[int, Sequence[int]] = 32,
        num_pools: int = 4,
        convs_per_stage: int = 2,
        kernel_size: int = 3,
        act: Union[str, tuple] = ("leakyrelu", {"negative_slope": 0.2}),
        norm: Optional[Union[str, tuple]] = None,
        conv: Union[str, tuple, Callable[..., nn.Module]] = "conv",
        phi: Optional[float] = 0.5,
        phi_prior: Optional[Sequence[float]] = None,
        mode: str = "linear",
    ) -> None:
        super().__init__()
        spatial_dims = check_spatial_dims(spatial_dims)
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels),
                        ("convs_per_stage", convs_per_stage)):
            check_positive_int(v, name)
        if not isinstance(num_pools, int) or isinstance(num_pools, bool) or num_pools < 0:
            raise ValueError(f"num_pools must be an int >= 0, got {num_pools!r}.")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size!r}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.channels = _stage_channels(channels, num_pools)
        self.num_pools = num_pools
        self.phi = None if phi is None else check_phi(phi)
        self.phi_prior = check_phi_prior(phi_prior)
        self.act_slope = leaky_slope(act)
        make_conv = conv if callable(conv) else get_conv_type(conv, spatial_dims)
        f = self.channels
        self.encoder = nn.ModuleList(
            [_Stage(make_conv, spatial_dims, in_channels if i == 0 else f[i - 1], f[i], convs_per_stage, kernel_size,
                    act, norm) for i in range(num_pools + 1)]
        )
        self.decoder = nn.ModuleList(
            [_Stage(make_conv, spatial_dims, f[i] + f[i + 1], f[i], convs_per_stage, kernel_size, act, norm)
             for i in reversed(range(num_pools))]
        )
        self.out_conv = make_conv(f[0], out_channels, kernel_size=1, padding=0, bias=True)
        self.resize = VariableResize(spatial_dims, mode)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Kaiming-normal plain convs (gain of the LeakyReLU), zero biases; generated convs keep their own init."""
        gain = math.sqrt(2.0 / (1.0 + self.act_slope**2))
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and not isinstance(m, GeneratedConv):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0.0, gain / math.sqrt(fan_in))
                if m.bias is not None:
                    m.bias.zero_()

    def resolve_phi(self, phi=None) -> float:
        """The factor ``forward`` would use (see the class docstring); raises on invalid/missing phi."""
        return resolve_phi(phi, self.training, self.phi, self.phi_prior)

    def forward(self, x: torch.Tensor, phi=None) -> torch.Tensor:
        """Args: x ``(B, in_channels, *spatial)``; phi in (0, 1] (see class docstring).
        Returns: ``(B, out_channels, *spatial)``."""
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects (B, {self.in_channels}, {self.spatial_dims} spatial dims), "
                f"got shape {tuple(x.shape)}."
            )
        p = self.resolve_phi(phi)
        skips: List[torch.Tensor] = []
        for i, stage in enumerate(self.encoder):
            if i > 0:
                x = self.resize(x, phi=p)
            x = stage(x)
            skips.append(x)
        skips.pop()  # the bottleneck is not a skip
        for stage in self.decoder:
            skip = skips.pop()
            x = self.resize(x, size=skip.shape[2:])
            x = stage(torch.cat([skip, x.to(skip.dtype)], dim=1))
        return self.out_conv(x)

    def feature_sizes(self, size: Sequence[int], phi: float) -> List[Tuple[int, ...]]:
        """Spatial size of every encoder stage for an input of spatial ``size`` at ``phi``."""
        from .resize import scaled_size

        sizes = [tuple(int(s) for s in size)]
        for _ in range(self.num_pools):
            sizes.append(scaled_size(sizes[-1], phi))
        return sizes

    def __getattr__(self, name: str):
        """``features`` and ``n_stages``: deprecated aliases of ``channels`` and ``num_pools + 1``, with a
        ``FutureWarning`` (removed in 0.2.0). Resolved here, after ``nn.Module``'s lookup fails, so that
        ``dir()``-based introspection (TorchScript, ``inspect``) does not see or trigger them."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name not in ("features", "n_stages"):
                raise
        new = "channels" if name == "features" else "num_pools"
        note = " (n_stages = num_pools + 1)" if name == "n_stages" else ""
        warnings.warn(f"{type(self).__name__}.{name} is deprecated and will be removed in 0.2.0; use .{new}{note}.",
                      FutureWarning, stacklevel=2)
        return self.channels if name == "features" else self.num_pools + 1

    def extra_repr(self) -> str:
        return f"channels={self.channels}, phi={self.phi}, phi_prior={self.phi_prior}"


class MaterializedNetwork(nn.Module):
    """An ordinary network ``forward(x)`` = ``net(x, phi)`` with ``phi`` fixed (what gets deployed).

    Args:
        net: a network taking ``(x, phi)`` (a baked :class:`ScaleSpaceUNet`).
        phi: the fixed rescaling factor.
    """

    accepts_phi = False

    def __init__(self, net: nn.Module, phi: float) -> None:
        super().__init__()
        self.net = net
        self.phi = check_phi(phi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, phi=self.phi)

    def extra_repr(self) -> str:
        return f"phi={self.phi}"
