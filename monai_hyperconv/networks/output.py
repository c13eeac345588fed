"""Initialising a network's output layer, whatever the network (bundles swap networks freely)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ["output_layer", "init_output_layer"]

_LAYER_TYPES = (nn.Linear, nn.modules.conv._ConvNd)


def output_layer(network: nn.Module) -> nn.Module:
    """The layer producing ``network``'s output: ``network.decoder.head``, ``network.head``, or else
    the last convolution / linear layer (plain or generated) in registration order.

    Raises:
        ValueError: when the network has no such layer.
    """
    from ..layers import GeneratedConv

    net = getattr(network, "module", network)  # DDP / DataParallel
    for path in ("decoder.head", "head"):
        m = net
        for part in path.split("."):
            m = getattr(m, part, None)
        if isinstance(m, nn.Module):
            return m
    def last_layer(module: nn.Module):
        # registration order, depth first, but not into a layer: a generated conv's own MLP is not an output
        found = None
        for child in module.children():
            inner = child if isinstance(child, _LAYER_TYPES + (GeneratedConv,)) else last_layer(child)
            if inner is not None:
                found = inner
        return found

    last = last_layer(net)
    if last is None:
        raise ValueError(f"{type(net).__name__} has no convolution or linear layer to initialise as its output layer.")
    return last


@torch.no_grad()
def init_output_layer(network: nn.Module, bias: Optional[float] = None, zero_weight: bool = False) -> nn.Module:
    """Set the output layer's bias to ``bias`` (e.g. a low lesion prior) and/or zero its weight
    (a residual network then starts as the identity).

    Networks whose output layer is generated (e.g. :class:`~monai_hyperconv.networks.HyperSegNet`)
    provide their own ``init_output_layer(bias, zero_weight)`` method, which is used instead.
    A ``None`` bias and ``zero_weight=False`` leave the network untouched.

    Returns:
        ``network``.
    """
    if bias is None and not zero_weight:
        return network
    net = getattr(network, "module", network)
    if hasattr(net, "init_output_layer"):
        net.init_output_layer(bias=bias, zero_weight=zero_weight)
        return network
    layer = output_layer(net)
    from ..layers import GeneratedConv

    if zero_weight:
        if isinstance(layer, GeneratedConv):
            raise ValueError(f"zero_weight: the output layer of {type(net).__name__} is a generated conv "
                             f"({type(layer).__name__}); its kernel cannot be set to zero directly.")
        layer.weight.zero_()
    if bias is not None:
        if getattr(layer, "bias", None) is None:
            raise ValueError(f"bias={bias}: the output layer of {type(net).__name__} ({type(layer).__name__}) has no bias.")
        layer.bias.fill_(float(bias))
    return network
