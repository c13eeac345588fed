"""Building blocks shared by the papers' networks: conv -> norm -> act -> dropout units and a non-local block.

Every convolution with a kernel larger than 1 is built from a conv *spec* (``"conv"``,
``"hyper"``, ``"adaptive"``, ``("hyper", {"n_l": 8})``, ...) through
:func:`monai_hyperconv.layers.get_conv_type`, so one argument switches a whole network between
ordinary, hyper- and adaptive convolutions. 1x1 convolutions stay plain ``nn.ConvNd`` (the
papers keep them ordinary: "except for the final 1x1 convolution", Ma et al. 2022, footnote 1).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from monai.networks.layers.utils import get_act_layer, get_dropout_layer, get_norm_layer
from torch import nn

from ..layers.base import conv_class, ensure_tuple_dims
from ..layers.factories import ConvSpec, get_conv_type
from ..utils import check_positive_int, check_spatial_dims  # noqa: F401 (check_positive_int: re-exported)

__all__ = ["ConvNormAct", "DoubleConv", "NonLocalBlock", "make_conv", "check_spatial_dims", "dropout_layer"]

ArgSpec = Optional[Union[str, tuple]]
DropoutSpec = Optional[Union[float, str, tuple]]


def make_conv(
    conv: ConvSpec,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: Union[int, Sequence[int]] = 3,
    dilation: Union[int, Sequence[int]] = 1,
    bias: bool = True,
) -> nn.Module:
    """A stride-1 convolution with "same" output size, of the type named by ``conv``.

    Kernels of size 1 in every dimension are always a plain ``nn.ConvNd``. Padding is
    ``dilation * (k - 1) / 2`` per dimension, so kernels must be odd.

    Raises:
        ValueError: even kernel size, unknown conv type, bad ``spatial_dims``.
    """
    ks = ensure_tuple_dims(kernel_size, spatial_dims, "kernel_size")
    dl = ensure_tuple_dims(dilation, spatial_dims, "dilation")
    if any(k < 1 or k % 2 == 0 for k in ks):
        raise ValueError(f"kernel_size must be odd and positive (centred 'same' padding), got {kernel_size!r}.")
    if any(d < 1 for d in dl):
        raise ValueError(f"dilation must be >= 1, got {dilation!r}.")
    padding = tuple(d * (k - 1) // 2 for k, d in zip(ks, dl))
    if all(k == 1 for k in ks):
        ctor = conv_class(spatial_dims)
    else:
        ctor = get_conv_type(conv, spatial_dims)
    return ctor(in_channels, out_channels, kernel_size=ks, stride=1, padding=padding, dilation=dl, groups=1, bias=bias)


def dropout_layer(dropout: DropoutSpec) -> Optional[nn.Module]:
    """MONAI-style dropout: a probability or a ``(name, kwargs)`` spec; ``None``/0 gives no layer.

    Element-wise dropout (``dropout_dim=1``), as the official Keras code and MONAI's ``Convolution``.
    """
    if dropout is None or (isinstance(dropout, (int, float)) and not isinstance(dropout, bool) and dropout == 0):
        return None
    if isinstance(dropout, (int, float)) and not isinstance(dropout, bool) and not 0 <= dropout < 1:
        raise ValueError(f"dropout probability must be in [0, 1), got {dropout!r}.")
    return get_dropout_layer(name=dropout, dropout_dim=1)


class ConvNormAct(nn.Sequential):
    """``conv -> [norm] -> [act] -> [dropout]`` with "same" padding (children ``conv, norm, act, drop``).

    The generated convs carry their own bias, as the official hyper block (hyper-conv -> bias ->
    BN -> ReLU -> Dropout, Ma et al. 2022 code); ``bias=True`` before a norm is redundant but kept by default
    so parameter counts match the papers'.

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels, out_channels: channels.
        kernel_size, dilation: odd kernel size and dilation (int or per dimension).
        conv: conv spec (see :func:`monai_hyperconv.layers.get_conv_type`).
        norm, act: MONAI names or ``(name, kwargs)`` tuples; ``None`` for none.
        dropout: probability or MONAI dropout spec; ``None``/0 for none.
        bias: conv bias.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Union[int, Sequence[int]] = 3,
        dilation: Union[int, Sequence[int]] = 1,
        conv: ConvSpec = "conv",
        norm: ArgSpec = "batch",
        act: ArgSpec = "relu",
        dropout: DropoutSpec = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.add_module("conv", make_conv(conv, spatial_dims, in_channels, out_channels, kernel_size, dilation, bias))
        if norm is not None:
            self.add_module("norm", get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=out_channels))
        if act is not None:
            self.add_module("act", get_act_layer(name=act))
        drop = dropout_layer(dropout)
        if drop is not None:
            self.add_module("drop", drop)


class DoubleConv(nn.Sequential):
    """Two :class:`ConvNormAct` units, the papers' "two convolutions per scale".

    Args:
        dropout: probability/spec of the dropout layers.
        dropout_after: which units end with dropout: ``()`` none, ``(0,)`` after the first
            (the official code), ``(0, 1)`` after both.
        Other arguments as :class:`ConvNormAct`.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Union[int, Sequence[int]] = 3,
        dilation: Union[int, Sequence[int]] = 1,
        conv: ConvSpec = "conv",
        norm: ArgSpec = "batch",
        act: ArgSpec = "relu",
        dropout: DropoutSpec = None,
        dropout_after: Tuple[int, ...] = (),
        bias: bool = True,
    ) -> None:
        super().__init__()
        common = dict(kernel_size=kernel_size, dilation=dilation, conv=conv, norm=norm, act=act, bias=bias)
        self.add_module("unit0", ConvNormAct(spatial_dims, in_channels, out_channels,
                                             dropout=dropout if 0 in dropout_after else None, **common))
        self.add_module("unit1", ConvNormAct(spatial_dims, out_channels, out_channels,
                                             dropout=dropout if 1 in dropout_after else None, **common))


class NonLocalBlock(nn.Module):
    """Non-local block, dot-product form (Wang et al. 2018; used at the UNet bottleneck by Ma et al. 2022 and its journal extension).

    ``y = x + W_z( (1/N) theta(x) phi(x)^T g(x) )`` with 1x1 projections ``theta, phi, g: C -> C/2``
    and ``W_z: C/2 -> C``, all without bias (as the reference code), ``N`` the number of positions.

    Because the dot-product form has no softmax, the product is evaluated as
    ``theta (phi^T g) / N``: mathematically identical, but O(N C^2) instead of O(N^2 C) time and
    without the N x N affinity in memory, so it also runs on 3-D bottlenecks.

    Args:
        spatial_dims: 1, 2 or 3.
        channels: input (= output) channels ``C``.
        inter_channels: projection width (default ``max(1, C // 2)``).
    """

    def __init__(self, spatial_dims: int, channels: int, inter_channels: Optional[int] = None) -> None:
        super().__init__()
        d = check_spatial_dims(spatial_dims)
        check_positive_int(channels, "channels")
        inter = max(1, channels // 2) if inter_channels is None else check_positive_int(inter_channels, "inter_channels")
        conv = conv_class(d)
        self.spatial_dims = d
        self.theta = conv(channels, inter, 1, bias=False)
        self.phi = conv(channels, inter, 1, bias=False)
        self.g = conv(channels, inter, 1, bias=False)
        self.out = conv(inter, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        theta = self.theta(x).flatten(2)  # (B, C', N)
        phi = self.phi(x).flatten(2)
        g = self.g(x).flatten(2)
        n = theta.shape[-1]
        # (theta^T phi / N) g^T  ==  theta^T (phi g^T) / N  (associativity; no softmax in this form)
        ctx = torch.bmm(phi, g.transpose(1, 2)) / n  # (B, C', C')
        y = torch.bmm(ctx.transpose(1, 2), theta)  # (B, C', N)
        y = y.reshape(b, -1, *x.shape[2:])
        return x + self.out(y)
