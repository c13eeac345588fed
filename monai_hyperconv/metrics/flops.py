"""Inference FLOPs with ``torch.utils.flop_counter`` (Gonzalez Ortiz et al. 2023 report inference GFLOPs per phi)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops"]


def _device_dtype(model: nn.Module):
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32


def _shapes(input_shape) -> Sequence[tuple]:
    items = list(input_shape)
    nested = bool(items) and all(isinstance(i, (tuple, list, torch.Size)) for i in items)
    shapes = [tuple(int(v) for v in i) for i in items] if nested else [tuple(int(v) for v in items)]
    for s in shapes:
        if not s or min(s) < 1:
            raise ValueError(f"input_shape must be positive ints (or a list of such shapes), got {input_shape!r}.")
    return shapes


def count_flops(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    device: Optional[torch.device] = None,
    dtype: Optional[torch.dtype] = None,
    **forward_kwargs,
) -> int:
    """FLOPs of one forward pass of ``model`` on a zero tensor of ``input_shape``.

    Counted (by ``torch.utils.flop_counter.FlopCounterMode``, 2 FLOPs per multiply-add):
    convolutions, transposed convolutions, linear layers and other matrix products. Not counted:
    bias additions, activations, normalisation, pooling, interpolation (the ``R_phi`` resizes),
    concatenation and other element-wise work; FFTs count 0. So resizing changes the count
    only through the sizes of the feature maps the convs see, as the paper's counter.

    The forward runs without autograd and with the model in eval mode (restored afterwards), so
    train-time behaviour such as phi sampling does not apply: pass ``phi=`` for phi-dependent nets.
    A hypernetwork's own FLOPs (tiny) are included unless you count a materialised network.

    Args:
        model: the network.
        input_shape: full input shape including batch and channels, e.g. ``(1, 1, 256, 256)``, or a
            list of shapes for a model with several inputs (e.g. moving and fixed images).
        device, dtype: of the dummy input (default: the model's first floating parameter's).
        forward_kwargs: extra keyword arguments of ``model.forward`` (e.g. ``phi=0.3``).

    Returns:
        Total FLOPs (int).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"count_flops expects an nn.Module, got {type(model).__name__}.")
    shapes = _shapes(input_shape)
    dev, dt = _device_dtype(model)
    xs = [torch.zeros(s, device=device or dev, dtype=dtype or dt) for s in shapes]
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(*xs, **forward_kwargs)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
