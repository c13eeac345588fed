"""Receptive fields, computed exactly layer by layer from a built network's modules."""

from __future__ import annotations

import math
from typing import Iterable, List, Optional, Sequence, Tuple, Union

from torch import nn

from ..layers.base import GeneratedConv
from .blocks import NonLocalBlock

__all__ = ["receptive_field", "chain_receptive_field"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVTS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
# layers after which every output sees the whole input
_GLOBAL = (NonLocalBlock, nn.Linear, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
           nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)

RF = Union[int, float, Tuple[Union[int, float], ...]]


def _tup(v, d: int) -> Tuple[int, ...]:
    if isinstance(v, (tuple, list)):
        return tuple(int(x) for x in v) if len(v) == d else tuple(int(v[0]) for _ in range(d))
    return (int(v),) * d


def _infer_dims(modules: Sequence[nn.Module]) -> int:
    for top in modules:
        for m in top.modules():
            if isinstance(m, GeneratedConv):
                return m.spatial_dims
            if isinstance(m, _CONVS + _CONVTS):
                return len(m.kernel_size)
    raise ValueError("cannot infer spatial_dims: no convolution on the path; pass spatial_dims=.")


def _pad(m: nn.Module, k: Tuple[int, ...], dl: Tuple[int, ...], d: int) -> Tuple[int, ...]:
    pad = getattr(m, "padding", 0)
    if isinstance(pad, str):
        return tuple(x * (y - 1) // 2 for x, y in zip(dl, k)) if pad == "same" else (0,) * d
    return _tup(pad, d)


def _ops(modules: Sequence[nn.Module], d: int) -> List[tuple]:
    """Flatten modules into geometric ops per dimension: ("conv", k, dil, stride, pad, transposed), ("up", f, mode), ("all",)."""
    ops: List[tuple] = []

    def visit(m: nn.Module) -> None:
        if isinstance(m, _GLOBAL):
            ops.append(("all",))
        elif isinstance(m, GeneratedConv) or isinstance(m, _CONVS + _CONVTS + _POOLS):
            k = _tup(m.kernel_size, d)
            dl = _tup(getattr(m, "dilation", 1), d)
            stride = m.stride if m.stride is not None else m.kernel_size  # pools: stride None means kernel
            transposed = isinstance(m, _CONVTS) or bool(getattr(m, "transposed", False))
            ops.append(("conv", k, dl, _tup(stride, d), _pad(m, k, dl, d), transposed))
        elif isinstance(m, nn.Upsample):
            if m.scale_factor is None:
                raise ValueError("receptive_field needs nn.Upsample with a scale_factor, not a fixed size.")
            f = _tup(m.scale_factor, d) if isinstance(m.scale_factor, (tuple, list)) else (m.scale_factor,) * d
            if any(float(x) != int(x) or int(x) < 1 for x in f):
                raise ValueError(f"receptive_field supports integer up-sampling factors only, got {m.scale_factor!r}.")
            ops.append(("up", tuple(int(x) for x in f), m.mode))
        else:
            for child in m.children():
                visit(child)

    for mod in modules:
        visit(mod)
    return ops


def _extent_1d(ops: List[tuple], i: int, p: int) -> int:
    """Input extent feeding output position ``p`` along dimension ``i``: interval propagated backwards."""
    a = b = p
    for op in reversed(ops):
        if op[0] == "conv":
            _, k, dl, s, pad, transposed = op
            span = dl[i] * (k[i] - 1)
            if transposed:  # out = in * s - pad + t * dl
                a, b = -((-(a + pad[i] - span)) // s[i]), (b + pad[i]) // s[i]
            else:  # out position o reads in positions o * s - pad + [0, span]
                a, b = a * s[i] - pad[i], b * s[i] - pad[i] + span
        else:  # up-sampling by f
            f = op[1][i]
            if op[2] == "nearest":
                a, b = a // f, b // f
            else:  # (bi/tri)linear, align_corners=False: fine x samples coarse (x + 0.5) / f - 0.5
                a, b = math.floor((a + 0.5) / f - 0.5), math.ceil((b + 0.5) / f - 0.5)
    return b - a + 1


def chain_receptive_field(modules: Iterable[nn.Module], spatial_dims: Optional[int] = None) -> RF:
    """Exact receptive field of one output unit of a chain of layers, in input pixels.

    The modules (and their children, in registration order) are reduced to convolutions and
    poolings (kernel, dilation, stride, padding), up-samplings and "global" layers. The input
    interval feeding one output position is then propagated backwards through them exactly
    (nearest up-sampling maps fine ``[a, b]`` to coarse ``[a // f, b // f]``), on an unbounded
    grid (no image border). With up-sampling the extent depends on the output position's phase
    (nearest up-sampling is not shift-equivariant), so the maximum over one period is returned.
    Norms, activations, dropout and identities do not change it; a non-local block, linear layer
    or adaptive/global pooling makes it infinite. Containers are walked as chains, which is exact
    for the residual blocks here (their shortcuts add no extent).

    Returns:
        An int (the same in every dimension), a per-dimension tuple (anisotropic), or ``math.inf``.
    """
    modules = list(modules)
    d = spatial_dims or _infer_dims(modules)
    ops = _ops(modules, d)
    if any(op[0] == "all" for op in ops):
        return math.inf
    out = []
    for i in range(d):
        period = 1
        for op in ops:
            period *= op[3][i] if op[0] == "conv" else op[1][i]
        base = 1 << 20  # far from 0: no border effects in the floor divisions
        out.append(max(_extent_1d(ops, i, base + p) for p in range(period)))
    res = tuple(out)
    return res[0] if all(v == res[0] for v in res) else res


def receptive_field(model: Union[nn.Module, str, Sequence[nn.Module]], path: str = "paper",
                    spatial_dims: Optional[int] = None, **kwargs) -> RF:
    """Receptive field of a network, computed exactly layer by layer from its built modules.

    Args:
        model: a network of this package (any with an ``rf_chain(path)`` method), a registered
            name (built with ``create_network(model, **kwargs)``), or a sequence of layers / any
            module treated as a plain chain (its layers in registration order).
        path: for the UNets, ``"paper"`` (default): the convention of the papers' tables (Ma et al.
            2022 and journal extension, Tables 1-4): one bottleneck feature along the contracting path, i.e. the encoder
            blocks, poolings and bottleneck block, not counting the Hyper-UNet's single-conv stem
            (the tables give its 3x3 variant the plain 3x3 UNet's 68 pixels). This reproduces
            68 (3x3, 3 poolings), 128 (5x5 or dilation 2), 188 (7x7) and, for the flat nets, 89.
            ``"bottleneck"``: the same with the stem; ``"output"``: one logit, along the deepest
            path (bottleneck and the whole expanding path; the skip paths see a subset of it),
            maximised over the output position's phase (116 px for the 3x3 UNet: 108 or 116
            depending on the position, because nearest up-sampling is not shift-equivariant).
            Flat nets: all paths are the whole net.
            A non-local block gives ``math.inf`` ("all pixels").
        spatial_dims: only needed for chains without convolutions.
        kwargs: constructor arguments when ``model`` is a registered name.

    Returns:
        The receptive field in input pixels: an int, a per-dimension tuple if anisotropic, or ``math.inf``.
    """
    if isinstance(model, str):
        from .registry import create_network

        model = create_network(model, **kwargs)
    elif kwargs:
        raise TypeError(f"unexpected keyword arguments for a built model: {sorted(kwargs)}.")
    if isinstance(model, nn.Module) and hasattr(model, "rf_chain"):
        chain = model.rf_chain(path)
        spatial_dims = spatial_dims or getattr(model, "spatial_dims", None)
    elif isinstance(model, nn.Module):
        chain = [model]
    else:
        chain = list(model)
    return chain_receptive_field(chain, spatial_dims)
