"""Export a trained network as a plain (baked) model that runs without ``monai_hyperconv``.

``export_baked(network, ckpt_file, filepath, input_shape)`` loads the weights, reduces every
generated-kernel conv to an ``nn.ConvNd`` (:func:`monai_hyperconv.bake`), checks the baked
model against the original on a random input, and saves it atomically as TorchScript
(``.ts``, ``torch.jit.load``) or as a ``torch.export`` program (``.pt2``, ``torch.export.load``).
It also writes the baked ``state_dict`` next to it (``<stem>_weights.pt``), which MONAI's
``ckpt_export`` can load into ``$monai_hyperconv.bake(@network_def)``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..utils import atomic_write
from .checkpoint import atomic_save, unwrap

__all__ = ["load_weights", "bake_checkpoint", "export_baked"]

logger = logging.getLogger(__name__)

_NESTED_KEYS = ("network", "model", "state_dict", "net")


def load_weights(network: torch.nn.Module, ckpt_file: str | os.PathLike, key: str | None = None, strict: bool = True) -> torch.nn.Module:
    """Load a checkpoint into ``network``: a plain ``state_dict`` (``model.pt``), a nested one
    (``{"network": ...}`` from ``checkpoint_last.pt``, ``{"model": ...}``) or one saved from a
    DDP model (``module.`` prefixes are stripped)."""
    if not Path(ckpt_file).is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt_file} (train first, or pass --ckpt_file).")
    sd: Any = torch.load(ckpt_file, map_location="cpu", weights_only=False)
    if key is not None:
        sd = sd[key]
    elif isinstance(sd, Mapping) and not any(isinstance(v, torch.Tensor) for v in sd.values()):
        for k in _NESTED_KEYS:
            if k in sd:
                sd = sd[k]
                break
    if any(k.startswith("module.") for k in sd):
        sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    unwrap(network).load_state_dict(sd, strict=strict)
    return network


def bake_checkpoint(network: torch.nn.Module, ckpt_file: str | os.PathLike | None = None, key: str | None = None) -> torch.nn.Module:
    """Load ``ckpt_file`` (if given) into ``network`` and return the baked copy in eval mode."""
    from ..layers import bake

    net = unwrap(network)
    if ckpt_file is not None:
        load_weights(net, ckpt_file, key)
    return bake(net).eval()


def _max_diff(a, b) -> float:
    """Largest absolute difference of two outputs (tensors, or tuples/lists of tensors)."""
    if isinstance(a, (tuple, list)):
        return max(_max_diff(x, y) for x, y in zip(a, b))
    return float((a - b).abs().max().item())


def export_baked(
    network: torch.nn.Module,
    ckpt_file: str | os.PathLike | None,
    filepath: str | os.PathLike,
    input_shape: Sequence[int],
    method: str | None = None,
    key: str | None = None,
    atol: float = 1e-4,
    device: str | torch.device = "cpu",
) -> str:
    """Bake ``network`` (with ``ckpt_file``'s weights) and save it as a self-contained model.

    Args:
        network: the (hyper/adaptive) network as built by the bundle's ``network_def``.
        ckpt_file: weights (``models/model.pt`` or ``models/checkpoint_last.pt``); None: as is.
        filepath: output; ``.ts``/``.pt`` -> TorchScript (traced), ``.pt2`` -> ``torch.export``.
        input_shape: example input shape incl. batch, e.g. ``[1, 1, 256, 256]``, or a list of shapes
            for a network of several inputs (registration: ``[moving_shape, fixed_shape]``).
        method: "torchscript" or "export"; default from the suffix.
        key: checkpoint key of the weights (auto-detected if None).
        atol: max abs difference allowed between the baked export and the original network.
        device: device for tracing (the saved model is mapped to CPU on load by default).

    Returns:
        the written path.
    """
    out = Path(filepath)
    method = method or ("export" if out.suffix == ".pt2" else "torchscript")
    if method not in ("torchscript", "export"):
        raise ValueError(f"method must be 'torchscript' or 'export', got {method!r}.")
    shapes = list(input_shape)
    if not (shapes and isinstance(shapes[0], (list, tuple))):
        shapes = [shapes]  # one input
    net = unwrap(network).to(device)
    if ckpt_file is not None:
        load_weights(net, ckpt_file, key)
    net.eval()
    baked = bake_checkpoint(net).to(device)
    xs = tuple(torch.rand(*[int(v) for v in s], device=device) for s in shapes)
    with torch.no_grad():
        ref = net(*xs)
        err = _max_diff(ref, baked(*xs))
        if err > atol:
            raise RuntimeError(f"baked network differs from the original by {err:.2e} > {atol}.")
        if method == "torchscript":
            mod = torch.jit.trace(baked, xs, check_trace=False)
            atomic_write(out, lambda p: torch.jit.save(mod, p))
            exported = torch.jit.load(str(out), map_location=device)
        else:
            ep = torch.export.export(baked, xs)
            atomic_write(out, lambda p: torch.export.save(ep, p))
            exported = torch.export.load(str(out)).module()
        err2 = _max_diff(ref, exported(*xs))
    if err2 > atol:
        raise RuntimeError(f"exported model differs from the original by {err2:.2e} > {atol}.")
    atomic_save(baked.cpu().state_dict(), out.with_name(out.stem + "_weights.pt"))
    logger.info(f"exported baked network to {out} ({method}; max abs diff {err2:.1e})")
    return str(out)
