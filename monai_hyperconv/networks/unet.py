"""The UNet of the hyper-convolution papers (Ma et al. 2022 §4.1, journal extension §4.1), with a selectable conv type."""

from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import torch
from monai.networks.layers.factories import Pool
from torch import nn

from ..layers.base import conv_class
from ..layers.factories import ConvSpec, get_conv_type
from ..utils import check_dims_and_channels
from .blocks import ArgSpec, ConvNormAct, DoubleConv, DropoutSpec, NonLocalBlock, check_positive_int

__all__ = ["PaperUNet", "resolve_channels", "DROPOUT_PLACEMENTS"]

#: where a UNet puts its dropout layers (see :class:`PaperUNet`).
DROPOUT_PLACEMENTS = ("bottleneck", "all", "every_conv")


def resolve_channels(channels: Union[int, Sequence[int]], num_pools: int, name: str = "channels") -> Tuple[int, ...]:
    """``channels`` as one width per level (``num_pools + 1`` of them, the last the bottleneck's).

    An int is the first level's width, doubled after every pooling (32 -> 32, 64, 128, 256).
    """
    check_positive_int(num_pools, "num_pools")
    if isinstance(channels, int) and not isinstance(channels, bool):
        check_positive_int(channels, name)
        return tuple(channels * 2**i for i in range(num_pools + 1))
    if isinstance(channels, Sequence) and not isinstance(channels, str):
        ch = tuple(channels)
        if len(ch) != num_pools + 1:
            raise ValueError(
                f"{name} must give num_pools + 1 = {num_pools + 1} widths (one per level and the bottleneck), "
                f"got {len(ch)}: {ch!r}."
            )
        for c in ch:
            check_positive_int(c, name)
        return ch
    raise ValueError(f"{name} must be an int (first-level width) or a sequence of widths, got {channels!r}.")


def _check_placement(dropout_placement: str) -> str:
    if dropout_placement not in DROPOUT_PLACEMENTS:
        raise ValueError(f"dropout_placement must be one of {DROPOUT_PLACEMENTS}, got {dropout_placement!r}.")
    return dropout_placement


def _block_dropout(placement: str, is_bottleneck: bool) -> Tuple[int, ...]:
    """Units of a two-conv block followed by dropout, for a placement."""
    if placement == "every_conv":
        return (0, 1)
    if placement == "all" or is_bottleneck:
        return (0,)  # between the two convs, as the official conv_block / hyper_block
    return ()


def _single_dropout(placement: str) -> bool:
    """Whether a single-conv block (stem, up-sampling conv) ends with dropout."""
    return placement != "bottleneck"


class PaperUNetEncoder(nn.Module):
    """Contracting path of :class:`PaperUNet`: optional stem, then one two-conv block per level.

    ``forward`` returns the block outputs of every level (the skip features, before pooling).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: Sequence[int],
        kernel_size, dilation, conv: ConvSpec, act: ArgSpec, norm: ArgSpec, dropout: DropoutSpec,
        dropout_placement: str, stem: bool, bias: bool,
    ) -> None:
        super().__init__()
        common = dict(kernel_size=kernel_size, dilation=dilation, conv=conv, norm=norm, act=act, bias=bias)
        if stem:
            if channels[0] < 2:
                raise ValueError(f"a stem needs a first-level width >= 2 (it maps to half of it), got {channels[0]}.")
            # the official Hyper-UNet's stem: one conv to half the first width, so every encoder
            # block takes width/2 inputs (Ma et al. 2022 code, hyper=k)
            self.stem: nn.Module = ConvNormAct(
                spatial_dims, in_channels, channels[0] // 2,
                dropout=dropout if _single_dropout(dropout_placement) else None, **common,
            )
            cin = channels[0] // 2
        else:
            self.stem = nn.Identity()
            cin = in_channels
        self.blocks = nn.ModuleList()
        for c in channels:
            self.blocks.append(DoubleConv(spatial_dims, cin, c, dropout=dropout,
                                          dropout_after=_block_dropout(dropout_placement, False), **common))
            cin = c
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        h = self.stem(x)
        skips = []
        for i, block in enumerate(self.blocks):
            h = block(h if i == 0 else self.pool(h))
            skips.append(h)
        return skips

    def rf_chain(self, include_stem: bool = True) -> List[nn.Module]:
        """Modules from the input to the deepest skip, in order (for :func:`receptive_field`)."""
        chain: List[nn.Module] = [self.stem] if include_stem else []
        for i, block in enumerate(self.blocks):
            if i:
                chain.append(self.pool)
            chain.append(block)
        return chain


class PaperUNetDecoder(nn.Module):
    """Bottleneck (+ optional non-local block) and expanding path of :class:`PaperUNet`, with the 1x1 head."""

    def __init__(
        self,
        spatial_dims: int,
        out_channels: int,
        channels: Sequence[int],
        kernel_size, dilation, conv: ConvSpec, act: ArgSpec, norm: ArgSpec, dropout: DropoutSpec,
        dropout_placement: str, non_local: bool, up_kernel_size, up_norm: bool, bias: bool,
    ) -> None:
        super().__init__()
        common = dict(conv=conv, act=act, bias=bias)
        num_pools = len(channels) - 1
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)
        self.bottleneck = DoubleConv(
            spatial_dims, channels[-2], channels[-1], kernel_size=kernel_size, dilation=dilation, norm=norm,
            dropout=dropout, dropout_after=_block_dropout(dropout_placement, True), **common,
        )
        self.non_local: nn.Module = NonLocalBlock(spatial_dims, channels[-1]) if non_local else nn.Identity()
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for lvl in reversed(range(num_pools)):  # deepest first
            self.ups.append(nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                # one conv after nearest up-sampling, as the official code (Conv2D(dim, 3, relu));
                # its hyper block adds BN and dropout (up_norm / dropout_placement)
                ConvNormAct(spatial_dims, channels[lvl + 1], channels[lvl], kernel_size=up_kernel_size,
                            norm=norm if up_norm else None,
                            dropout=dropout if _single_dropout(dropout_placement) else None, **common),
            ))
            self.blocks.append(DoubleConv(
                spatial_dims, 2 * channels[lvl], channels[lvl], kernel_size=kernel_size, dilation=dilation,
                norm=norm, dropout=dropout, dropout_after=_block_dropout(dropout_placement, False), **common,
            ))
        # plain 1x1 output conv; logits (the papers apply a sigmoid here, we leave it to the loss)
        self.head = conv_class(spatial_dims)(channels[0], out_channels, kernel_size=1, bias=True)

    def forward(self, skips: List[torch.Tensor]) -> torch.Tensor:
        h = self.non_local(self.bottleneck(self.pool(skips[-1])))
        for up, block, skip in zip(self.ups, self.blocks, reversed(skips)):
            h = block(torch.cat([skip, up(h)], dim=1))  # [skip, up] order as the official code
        return self.head(h)

    def rf_chain(self, to_output: bool = False) -> List[nn.Module]:
        chain: List[nn.Module] = [self.pool, self.bottleneck, self.non_local]
        if to_output:
            for up, block in zip(self.ups, self.blocks):
                chain += [up, block]
            chain.append(self.head)
        return chain


class PaperUNet(nn.Module):
    """The UNet of the hyper-convolution papers (Ma et al. 2022 §4.1, journal extension §4.1), any conv type, 2-D or 3-D.

    Max-pool down, nearest up-sampling followed by one conv up, concatenated skips, two
    ``conv -> norm -> act`` units per scale, channels doubling per pooling, a plain 1x1 output
    conv. Variants of the papers' Table 1 by argument: ``kernel_size`` (UNet 3x3 / 5x5),
    ``dilation`` (Dilated UNet), ``non_local`` (Non-local UNet: a dot-product non-local block after
    the bottleneck), ``conv`` (Hyper-UNet: ``("hyper", {"n_l": 4})``; adaptive kernels:
    ``"adaptive"``). The registered names in :mod:`monai_hyperconv.networks.paper` bundle the
    papers' exact settings (e.g. ``hyper_unet``: 5x5 hyper-convs, stem, hyper up-sampling conv).

    Returns logits: the papers end with a sigmoid, apply it (or use a loss with
    ``sigmoid=True``) yourself.

    Args:
        spatial_dims: 2 or 3 (1 works too).
        in_channels: input channels.
        out_channels: output channels (logits).
        channels: first-level width (doubled per pooling; default 32 as the papers) or one width
            per level including the bottleneck (``num_pools + 1`` values).
        num_pools: number of max-poolings (default 3, as the papers). Inputs must be divisible by
            ``2**num_pools`` in every spatial dimension.
        kernel_size: odd kernel size of the block convs (int or per dimension).
        dilation: dilation of the block convs (Dilated UNet: 2, so a 3x3 spans 5x5).
        conv: conv type of every conv with kernel > 1: ``"conv"``, ``"hyper"``, ``"adaptive"`` or
            ``(name, kwargs)``, e.g. ``("hyper", {"n_l": 8})``. The 1x1 output conv stays plain.
        act: activation, MONAI name or ``(name, kwargs)`` (default ReLU).
        norm: normalisation, MONAI name or ``(name, kwargs)``; ``None`` for none (default batch).
        dropout: dropout probability or MONAI dropout spec (default 0.5, as the papers).
        dropout_placement: ``"bottleneck"`` (plain UNet of the official code: between the
            bottleneck's two convs), ``"all"`` (the official hyper blocks: after the first conv of
            every two-conv block and after the stem and every up-sampling conv) or ``"every_conv"``.
        non_local: add a non-local block after the bottleneck (Non-local UNet).
        up_kernel_size: kernel of the conv after each up-sampling (default 3; the plain 5x5 UNet
            keeps 3, the official Hyper-UNet uses its hyper kernel size).
        up_norm: normalise after the up-sampling conv (the official hyper block does; the
            plain UNet's ``Conv2D(dim, 3, activation='relu')`` does not).
        stem: start with one conv to ``channels[0] // 2`` (the official Hyper-UNet's stem, so every
            encoder block takes width/2 inputs).
        bias: conv biases (kept before the norm, as the official code, for its parameter counts).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Union[int, Sequence[int]] = 32,
        num_pools: int = 3,
        kernel_size: Union[int, Sequence[int]] = 3,
        dilation: Union[int, Sequence[int]] = 1,
        conv: ConvSpec = "conv",
        act: ArgSpec = "relu",
        norm: ArgSpec = "batch",
        dropout: DropoutSpec = 0.5,
        dropout_placement: str = "bottleneck",
        non_local: bool = False,
        up_kernel_size: Union[int, Sequence[int]] = 3,
        up_norm: bool = False,
        stem: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.spatial_dims, self.in_channels, self.out_channels = check_dims_and_channels(
            spatial_dims, in_channels, out_channels)
        self.channels = resolve_channels(channels, num_pools)
        self.num_pools = num_pools
        _check_placement(dropout_placement)
        get_conv_type(conv, self.spatial_dims)  # fail early, with the factory's message, on an unknown conv
        self.encoder = PaperUNetEncoder(
            self.spatial_dims, in_channels, self.channels[:-1], kernel_size, dilation, conv, act, norm, dropout,
            dropout_placement, stem, bias,
        )
        self.decoder = PaperUNetDecoder(
            self.spatial_dims, out_channels, self.channels, kernel_size, dilation, conv, act, norm, dropout,
            dropout_placement, non_local, up_kernel_size, up_norm, bias,
        )

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear ``ValueError`` for a wrong rank, channel count or a size not divisible by ``2**num_pools``."""
        check_input_shape(self, x, self.in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.decoder(self.encoder(x))

    def rf_chain(self, path: str = "paper") -> List[nn.Module]:
        """Modules along a path, for :func:`monai_hyperconv.networks.receptive_field`.

        ``"paper"``: first encoder block to the bottleneck (the papers' tables; no stem),
        ``"bottleneck"``: input (stem included) to the bottleneck, ``"output"``: input to the
        logits along the deepest path.
        """
        if path not in ("paper", "bottleneck", "output"):
            raise ValueError(f"path must be 'paper', 'bottleneck' or 'output', got {path!r}.")
        return self.encoder.rf_chain(include_stem=path != "paper") + self.decoder.rf_chain(to_output=path == "output")


def check_input_shape(net: nn.Module, x: torch.Tensor, in_channels: int) -> None:
    """Shared input check of the UNets: rank, channels and divisibility by ``2**num_pools``."""
    d, p = net.spatial_dims, net.num_pools
    name = type(net).__name__
    if x.dim() != d + 2:
        raise ValueError(f"{name} ({d}-D) expects a {d + 2}-D input (batch, channel, spatial...), got {tuple(x.shape)}.")
    if x.shape[1] != in_channels:
        raise ValueError(f"{name} expects {in_channels} input channels, got {x.shape[1]} (input {tuple(x.shape)}).")
    size = tuple(int(s) for s in x.shape[2:])
    if any(s % 2**p for s in size):
        raise ValueError(
            f"{name} with num_pools={p} needs every spatial size divisible by 2**{p} = {2**p}; "
            f"got spatial size {size}. Pad or crop the input (e.g. monai.transforms.DivisiblePad(k={2**p}))."
        )
