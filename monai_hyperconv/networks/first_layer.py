"""A UNet whose first convolution has its own conv type and kernel size (Tek et al. 2020 §4.4).

Tek et al. 2020 (adaptive kernels) segment Oxford-IIIT Pets tri-maps with a U-Net whose *first*
convolution is a 7x7 adaptive conv and compare it with a 3x3 and a 7x7 ordinary first conv;
the rest of the network is unchanged. :class:`FirstLayerUNet` is that network: one
``first_conv`` ``conv -> norm -> act`` unit of ``first_kernel_size`` on the input, followed by a
:class:`~monai_hyperconv.networks.PaperUNet` (whose own convs follow ``conv``).
Registered as ``"first_layer_unet"``.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn

from ..layers.factories import ConvSpec, get_conv_type
from ..utils import check_dims_and_channels
from .blocks import ArgSpec, ConvNormAct, DropoutSpec, check_positive_int
from .registry import register_network
from .unet import PaperUNet, check_input_shape, resolve_channels

__all__ = ["FirstLayerUNet"]


class FirstLayerUNet(nn.Module):
    """UNet with a separately chosen first convolution (Tek et al. 2020 §4.4 tri-map segmentation).

    ``input -> first (first_conv, first_kernel_size) -> norm -> act -> PaperUNet -> logits``.

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: input channels.
        out_channels: output channels (logits, e.g. 3 tri-map classes).
        first_conv: conv type of the first layer: ``"adaptive"`` (default, Tek et al.'s 7x7 adaptive
            kernel), ``"conv"``, ``"hyper"`` or ``(name, kwargs)``.
        first_kernel_size: odd kernel size of the first layer (default 7).
        first_channels: output channels of the first layer (default: the UNet's first width).
        channels: first-level width of the UNet (doubled per pooling) or one width per level.
        num_pools: max-poolings of the UNet (inputs divisible by ``2**num_pools``).
        kernel_size: kernel size of the UNet's block convs.
        conv: conv type of the UNet's other convs (default plain ``"conv"``).
        act, norm: MONAI activation / normalisation specs (also used after the first conv).
        dropout: dropout probability of the UNet (placement ``dropout_placement``).
        dropout_placement: see :class:`PaperUNet`.
        bias: conv biases.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 3,
        first_conv: ConvSpec = "adaptive",
        first_kernel_size: Union[int, Sequence[int]] = 7,
        first_channels: Optional[int] = None,
        channels: Union[int, Sequence[int]] = 16,
        num_pools: int = 3,
        kernel_size: Union[int, Sequence[int]] = 3,
        conv: ConvSpec = "conv",
        act: ArgSpec = "relu",
        norm: ArgSpec = "batch",
        dropout: DropoutSpec = 0.0,
        dropout_placement: str = "bottleneck",
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.spatial_dims, self.in_channels, self.out_channels = check_dims_and_channels(
            spatial_dims, in_channels, out_channels)
        self.num_pools = check_positive_int(num_pools, "num_pools")
        widths = resolve_channels(channels, num_pools)
        self.first_channels = check_positive_int(first_channels or widths[0], "first_channels")
        get_conv_type(first_conv, self.spatial_dims)  # fail early on an unknown conv type
        self.first = ConvNormAct(
            self.spatial_dims, self.in_channels, self.first_channels, kernel_size=first_kernel_size,
            conv=first_conv, norm=norm, act=act, bias=bias,
        )
        self.unet = PaperUNet(
            self.spatial_dims, self.first_channels, self.out_channels, channels=widths, num_pools=num_pools,
            kernel_size=kernel_size, conv=conv, act=act, norm=norm, dropout=dropout,
            dropout_placement=dropout_placement, bias=bias,
        )

    def check_input(self, x: torch.Tensor) -> None:
        """Clear ``ValueError`` for a wrong rank, channel count or size not divisible by ``2**num_pools``."""
        check_input_shape(self, x, self.in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.unet(self.first(x))


register_network(
    "first_layer_unet", FirstLayerUNet,
    description="UNet whose first conv has its own type/kernel (Tek et al. 2020 §4.4: 7x7 adaptive first conv)",
)
