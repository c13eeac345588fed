"""Measurements behind ``docs/training.md``: how far an optimiser step moves a generated kernel.

A plain conv under Adam moves every kernel entry by about ``lr`` per step, whatever its size.
These helpers measure the same quantity for any :class:`~monai_hyperconv.layers.GeneratedConv`,
so parametrisations can be compared side by side (``scripts/diagnose_training.py``).
"""

from __future__ import annotations

from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import nn

from .base import GeneratedConv

__all__ = ["kernel_step_per_lr", "kernel_of", "grad_norms_by_group"]


def kernel_of(layer: nn.Module) -> torch.Tensor:
    """The (generated or stored) kernel of a conv layer, detached."""
    return layer.weight.detach().clone()


def kernel_step_per_lr(
    make_layer: Callable[[], nn.Module], channels: int, lr: float = 1e-4, steps: int = 10, size: int = 16,
    seed: int = 0,
) -> float:
    """RMS change of a 2-D conv layer's kernel entries after ``steps`` Adam steps, per unit ``lr * steps``.

    The layer regresses a random target from a random input (MSE), from a seeded init; a plain
    ``nn.Conv2d`` gives 1.0 (every entry moves by ``lr`` per step while its gradient sign is stable).

    Args:
        make_layer: builds the layer (``channels -> channels``, "same" padding).
        channels: input = output channels.
        lr: Adam learning rate (small, so the measurement stays in the linear regime).
        steps: Adam steps.
        size: spatial size of the random batch (4 images).
        seed: seeds both the layer's init and the batch.

    Returns:
        ``||K_steps - K_0||_rms / (lr * steps)``.
    """
    torch.manual_seed(seed)
    layer = make_layer()
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(4, channels, size, size, generator=gen)
    y = torch.randn(4, channels, size, size, generator=gen)
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    w0 = kernel_of(layer)
    for _ in range(steps):
        opt.zero_grad()
        F.mse_loss(layer(x), y).backward()
        opt.step()
    return float((kernel_of(layer) - w0).pow(2).mean().sqrt() / (lr * steps))


def grad_norms_by_group(layer: GeneratedConv) -> Dict[str, float]:
    """L2 norms of the current gradients of a generated conv's parameters, per parameter group.

    Groups for a :class:`~monai_hyperconv.layers.HyperConv`: ``hidden`` (the MLP before the
    output layer), ``out_weight``, ``out_bias``, ``bias``; other layers report every parameter.
    """
    out: Dict[str, float] = {}
    for name, p in layer.named_parameters():
        group = "hidden" if name.startswith("hidden_net.") else name.replace("out_layer.", "out_")
        g = 0.0 if p.grad is None else float(p.grad.pow(2).sum())
        out[group] = out.get(group, 0.0) + g
    return {k: v**0.5 for k, v in out.items()}
