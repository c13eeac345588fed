"""Flat (no down-sampling) residual CNNs of Ma et al. 2022 and its journal extension: Flat Dilated CNN and Flat Hyper-CNN."""

from __future__ import annotations

from typing import List, Sequence, Union

import torch
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch import nn

from ..layers.base import conv_class
from ..layers.factories import ConvSpec, get_conv_type
from ..utils import check_dims_and_channels
from .blocks import ArgSpec, ConvNormAct, DropoutSpec, check_positive_int, make_conv

__all__ = ["FlatResidualCNN", "FlatResidualBlock"]


class FlatResidualBlock(nn.Module):
    """``h = act(norm(conv1(x)))`` [-> dropout], ``y = act(norm(conv2(h)) + h)``.

    The shortcut spans the second conv, whose input and output widths are equal, so a block
    that changes the width needs no projection; this keeps the Flat Dilated CNN at the papers'
    0.45M (a 1x1 projection shortcut on ``x`` would add ~22k parameters, +5%).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size, dilation,
                 conv: ConvSpec, act: ArgSpec, norm: ArgSpec, dropout: DropoutSpec, bias: bool) -> None:
        super().__init__()
        self.unit0 = ConvNormAct(spatial_dims, in_channels, out_channels, kernel_size=kernel_size, dilation=dilation,
                                 conv=conv, norm=norm, act=act, dropout=dropout, bias=bias)
        self.conv1 = make_conv(conv, spatial_dims, out_channels, out_channels, kernel_size, dilation, bias)
        self.norm1 = nn.Identity() if norm is None else get_norm_layer(name=norm, spatial_dims=spatial_dims,
                                                                       channels=out_channels)
        self.act1 = nn.Identity() if act is None else get_act_layer(name=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.unit0(x)
        return self.act1(self.norm1(self.conv1(h)) + h)


class FlatResidualCNN(nn.Module):
    """Flat residual CNN: every conv at full resolution, receptive field grown by dilation or kernel size.

    Ma et al. 2022 and the journal extension, §4.1 (after Yu & Koltun): the Flat Dilated CNN has 7 residual blocks of two
    3x3 convs with dilations 1, 2, 4, 8, 4, 2, 1 and widths 16, 32, 64, 128, 64, 32, 16
    (0.44M parameters, receptive field 1 + 2*2*22 = 89); the Flat Hyper-CNN replaces them by
    dense hyper-convs of the same extent, kernels 3, 5, 9, 17, 9, 5, 3 with N_L = 8, so
    ``(N_L + 1) c_in c_out`` equals a 3x3 conv's count (0.45M, 89 pixels). A plain 1x1 conv
    gives the logits. Where the papers apply dropout in these nets is not stated: ``dropout``
    (default none) goes between the two convs of each block.

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels, out_channels: input channels, output channels (logits).
        channels: width of each block (default 16, 32, 64, 128, 64, 32, 16), or one int ``c``: the
            first width of the same 1-2-4-8-4-2-1 profile (``c, 2c, 4c, 8c, 4c, 2c, c``; with 7 blocks
            as the papers' nets; an int is the first width, as for the UNets).
        kernel_size: one odd kernel size for all blocks or one per block.
        dilation: one dilation for all blocks or one per block.
        conv: conv spec for the block convs (``"conv"``, ``"hyper"``, ``("hyper", {"n_l": 8})``, ...).
        act, norm: MONAI specs (default ReLU, batch norm).
        dropout: dropout between each block's convs (default none).
        bias: conv biases.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = (16, 32, 64, 128, 64, 32, 16),
        kernel_size: Union[int, Sequence[int]] = 3,
        dilation: Union[int, Sequence[int]] = (1, 2, 4, 8, 4, 2, 1),
        conv: ConvSpec = "conv",
        act: ArgSpec = "relu",
        norm: ArgSpec = "batch",
        dropout: DropoutSpec = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.spatial_dims, self.in_channels, self.out_channels = check_dims_and_channels(
            spatial_dims, in_channels, out_channels)
        get_conv_type(conv, self.spatial_dims)
        if isinstance(channels, int) and not isinstance(channels, bool):
            channels = tuple(check_positive_int(channels, "channels") * m for m in (1, 2, 4, 8, 4, 2, 1))
        channels = tuple(channels)
        if not channels:
            raise ValueError("channels must name at least one block width.")
        for c in channels:
            check_positive_int(c, "channels")
        n = len(channels)
        ks = self._per_block(kernel_size, n, "kernel_size")
        dl = self._per_block(dilation, n, "dilation")
        self.blocks = nn.ModuleList()
        cin = in_channels
        for c, k, d in zip(channels, ks, dl):
            self.blocks.append(FlatResidualBlock(self.spatial_dims, cin, c, k, d, conv, act, norm, dropout, bias))
            cin = c
        self.head = conv_class(self.spatial_dims)(cin, out_channels, kernel_size=1, bias=True)

    @staticmethod
    def _per_block(value, n: int, name: str) -> list:
        if isinstance(value, int) and not isinstance(value, bool):
            return [value] * n
        vals = list(value)
        if len(vals) != n:
            raise ValueError(f"{name} must be an int or give one value per block ({n}), got {value!r}.")
        return vals

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.spatial_dims
        if x.dim() != d + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"FlatResidualCNN expects (batch, {self.in_channels}, {d} spatial dims), got {tuple(x.shape)}."
            )
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def rf_chain(self, path: str = "paper") -> List[nn.Module]:
        """Every conv in order (all paths coincide for a flat net)."""
        if path not in ("paper", "bottleneck", "output"):
            raise ValueError(f"path must be 'paper', 'bottleneck' or 'output', got {path!r}.")
        return [*self.blocks, self.head]
