"""Classification networks of Tek et al. 2020 (adaptive kernels, §4.2-4.3) and Karmann's hyper-conv blog MNIST net."""

from __future__ import annotations

import math
from typing import List, Sequence, Union

import torch
from monai.networks.layers.factories import Pool
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch import nn

from ..layers.base import conv_class, ensure_tuple_dims
from ..layers.factories import ConvSpec, get_conv_type
from ..utils import check_dims_and_channels
from .blocks import ArgSpec, ConvNormAct, DropoutSpec, check_positive_int, dropout_layer, make_conv

__all__ = ["SimpleCNN", "SmallResNet", "PreActResidualBlock"]


class SimpleCNN(nn.Module):
    """The simple convolutional classifier of Tek et al. 2020 §4.2 (Table 1, left), any conv type.

    ``[conv -> norm -> act] x len(channels)``, a 2x max-pool after the last conv (or after every
    conv with ``pool_every_conv=True``, the classic "conv -> relu -> pool, twice" MNIST CNN),
    flatten, dropout, a dense layer of ``hidden`` units with batch norm and activation, dropout,
    and a linear output (logits; the paper ends with a softmax). With the defaults (two 3x3 convs
    of 32 kernels, 256 hidden units) and 28x28 MNIST inputs it has the paper's 1.6M parameters.

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: input channels.
        out_channels: number of classes.
        img_size: spatial input size (int or per dimension), needed to size the dense layer.
        channels: width of each conv (default (32, 32)).
        kernel_size: odd kernel size of the convs ("same" padding).
        hidden: width of the dense layer (0 for none: flatten straight into the output).
        conv: conv spec (``"conv"``, ``"adaptive"``, ``"hyper"``, ``(name, kwargs)``).
        act, norm: MONAI specs (the dense layer uses batch norm whenever ``norm`` is not ``None``).
        dropout: dropout before and after the dense layer (default 0.5, as the paper).
        pool_every_conv: pool after every conv instead of once after the last.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        img_size: Union[int, Sequence[int]] = 28,
        channels: Sequence[int] = (32, 32),
        kernel_size: Union[int, Sequence[int]] = 3,
        hidden: int = 256,
        conv: ConvSpec = "conv",
        act: ArgSpec = "relu",
        norm: ArgSpec = "batch",
        dropout: DropoutSpec = 0.5,
        pool_every_conv: bool = False,
    ) -> None:
        super().__init__()
        d, self.in_channels, _ = check_dims_and_channels(spatial_dims, in_channels, out_channels)
        self.spatial_dims = d
        self.img_size = ensure_tuple_dims(img_size, d, "img_size")
        channels = tuple(channels)
        if not channels:
            raise ValueError("channels must name at least one conv width.")
        get_conv_type(conv, d)
        layers: List[nn.Module] = []
        size = list(self.img_size)
        cin = in_channels
        for i, c in enumerate(check_positive_int(c, "channels") for c in channels):
            layers.append(ConvNormAct(d, cin, c, kernel_size=kernel_size, conv=conv, norm=norm, act=act))
            if pool_every_conv or i == len(channels) - 1:
                layers.append(Pool[Pool.MAX, d](kernel_size=2, stride=2))
                size = [s // 2 for s in size]
            cin = c
        if min(size) < 1:
            raise ValueError(f"img_size {self.img_size} is too small for {len(channels)} poolings.")
        self.features = nn.Sequential(*layers)
        flat = cin * math.prod(size)
        head: List[nn.Module] = [nn.Flatten()]
        for m in (dropout_layer(dropout),):
            if m is not None:
                head.append(m)
        if hidden:
            head.append(nn.Linear(flat, check_positive_int(hidden, "hidden")))
            if norm is not None:
                head.append(nn.BatchNorm1d(hidden))
            if act is not None:
                head.append(get_act_layer(name=act))
            m = dropout_layer(dropout)
            if m is not None:
                head.append(m)
            flat = hidden
        head.append(nn.Linear(flat, out_channels))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.img_size:
            raise ValueError(
                f"SimpleCNN expects input (batch, {self.in_channels}, *{self.img_size}) (img_size sizes its dense "
                f"layer), got {tuple(x.shape)}."
            )
        return self.classifier(self.features(x))

    def rf_chain(self, path: str = "paper") -> List[nn.Module]:
        """The conv/pool feature extractor (the dense layers see everything)."""
        return list(self.features)


def _norm_act(spatial_dims: int, channels: int, norm: ArgSpec, act: ArgSpec) -> List[nn.Module]:
    """``[norm, act]`` layers of a pre-activation (either left out when its spec is ``None``)."""
    out: List[nn.Module] = []
    if norm is not None:
        out.append(get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=channels))
    if act is not None:
        out.append(get_act_layer(name=act))
    return out


class PreActResidualBlock(nn.Module):
    """Pre-activation residual block ``x + conv(act(norm(conv(act(norm(x))))))`` (He et al. 2016; the blog's block)."""

    def __init__(self, spatial_dims: int, channels: int, kernel_size, conv: ConvSpec, act: ArgSpec, norm: ArgSpec) -> None:
        super().__init__()
        # bias-free convs: every conv is followed by a norm (as the blog's ResidualBlock)
        self.body = nn.Sequential(
            *_norm_act(spatial_dims, channels, norm, act),
            make_conv(conv, spatial_dims, channels, channels, kernel_size, bias=False),
            *_norm_act(spatial_dims, channels, norm, act),
            make_conv(conv, spatial_dims, channels, channels, kernel_size, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SmallResNet(nn.Module):
    """A small pre-activation ResNet classifier, any conv type (Karmann's blog MNIST net; Tek et al. 2020 §4.3).

    A plain 1x1 stem to ``channels``; ``num_stages`` stages of ``blocks_per_stage``
    :class:`PreActResidualBlock` s; between stages norm -> act -> plain 1x1 conv doubling the width
    -> 2x max-pool; then norm -> act -> global max-pool -> [dropout] -> linear (logits). The defaults
    (8 channels, 4 stages of 2 blocks, 3x3 kernels) are the blog's MNIST classifier, which on
    28x28 inputs ends on a 3x3 map pooled globally; global pooling makes the net size-agnostic.
    Tek et al. 2020's ResNet (16 filters, 3 stages) is ``channels=16, num_stages=3``.

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: input channels.
        out_channels: number of classes.
        channels: width of the first stage (doubled per stage).
        num_stages: stages (poolings = ``num_stages - 1``).
        blocks_per_stage: residual blocks per stage.
        kernel_size: odd kernel size of the residual convs.
        conv: conv spec for the residual convs (1x1 convs stay plain).
        act, norm: MONAI specs.
        dropout: dropout before the linear layer (default none).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: int = 8,
        num_stages: int = 4,
        blocks_per_stage: int = 2,
        kernel_size: Union[int, Sequence[int]] = 3,
        conv: ConvSpec = "conv",
        act: ArgSpec = "relu",
        norm: ArgSpec = "batch",
        dropout: DropoutSpec = None,
    ) -> None:
        super().__init__()
        d, self.in_channels, _ = check_dims_and_channels(spatial_dims, in_channels, out_channels)
        self.spatial_dims = d
        check_positive_int(channels, "channels")
        check_positive_int(num_stages, "num_stages")
        check_positive_int(blocks_per_stage, "blocks_per_stage")
        get_conv_type(conv, d)
        conv1x1 = conv_class(d)

        layers: List[nn.Module] = [conv1x1(in_channels, channels, kernel_size=1)]
        c = channels
        for s in range(num_stages):
            if s:
                layers += [*_norm_act(d, c, norm, act), conv1x1(c, 2 * c, kernel_size=1, bias=False), Pool[Pool.MAX, d](kernel_size=2, stride=2)]
                c *= 2
            layers += [PreActResidualBlock(d, c, kernel_size, conv, act, norm) for _ in range(blocks_per_stage)]
        layers += _norm_act(d, c, norm, act)
        self.features = nn.Sequential(*layers)
        head: List[nn.Module] = [Pool[Pool.ADAPTIVEMAX, d](1), nn.Flatten()]
        drop = dropout_layer(dropout)
        if drop is not None:
            head.append(drop)
        head.append(nn.Linear(c, out_channels))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"SmallResNet expects (batch, {self.in_channels}, {self.spatial_dims} spatial dims), got {tuple(x.shape)}."
            )
        return self.classifier(self.features(x))

    def rf_chain(self, path: str = "paper") -> List[nn.Module]:
        """The feature extractor before global pooling."""
        return list(self.features)
