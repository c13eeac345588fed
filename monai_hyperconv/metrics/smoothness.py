"""Kernel smoothness: the mean absolute Laplacian of learned kernels (Ma et al. 2022, Figs 7-8; journal extension, Figs 10-11).

The papers quantify the smoothness of a kernel by "its average 2nd-order spatial derivative
(Laplacian)" and list it per layer (lower = smoother). The papers do not give the stencil; we use
the standard discrete Laplacian, the sum over spatial axes of the second difference
``K[x - e_a] - 2 K[x] + K[x + e_a]``, i.e. the 5-point stencil in 2-D (``[[0, 1, 0], [1, -4, 1],
[0, 1, 0]]``) and the 7-point stencil in 3-D, evaluated by default on the kernel's **interior**
only (``boundary="interior"``: the taps whose full stencil lies inside the kernel, 3x3 of a 5x5
kernel). This is the reading in which a constant or linear kernel has zero curvature, which is
what "smooth" means; zero padding (``boundary="zeros"``) instead counts the jump to the implicit
zeros around the kernel, and ``"replicate"`` repeats the edge taps (a Neumann boundary).
The value of one kernel is the mean over its evaluated taps of ``|Laplacian|``; a layer's value
is the mean over its ``out x in`` kernels (the papers' "layer-wise average Laplacian").

Reference values (2-D, interior): a constant or linear ramp gives 0; the checkerboard
``(-1)^(i+j)`` gives 8, the maximum for taps in ``[-1, 1]`` (4 neighbours of opposite sign plus
4 times the centre); in 3-D the checkerboard gives 12.

The raw value scales with the kernel's magnitude, so networks whose kernels have different
scales (e.g. hyper-convs vs. plain convs before batch norm) are also compared by the
scale-free ``laplacian_rel = mean|Lap| / mean|K|`` that :func:`layer_smoothness` reports.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..layers.base import GeneratedConv
from ..utils import check_spatial_dims
from .pareto import atomic_write

__all__ = ["kernel_laplacian", "layer_smoothness", "plot_kernel_grid", "conv_weights", "kernel_grid_size", "BOUNDARIES"]

#: boundary handling of :func:`kernel_laplacian`
BOUNDARIES = ("interior", "zeros", "replicate")

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _laplacian_map(k: torch.Tensor, d: int, boundary: str) -> torch.Tensor:
    """Discrete Laplacian of the last ``d`` dims of ``k``; axes shorter than 3 (interior) are not differentiated."""
    if boundary == "interior":
        axes = [a for a in range(d) if k.shape[k.dim() - d + a] >= 3]
        if not axes:
            raise ValueError(
                f"kernel_laplacian(boundary='interior') needs a kernel size >= 3 in some dimension, "
                f"got spatial shape {tuple(k.shape[-d:])}."
            )
        # crop every differentiated axis to its interior
        core = k
        for a in axes:
            core = core.narrow(k.dim() - d + a, 1, k.shape[k.dim() - d + a] - 2)
        lap = -2.0 * len(axes) * core
        for a in axes:
            dim = k.dim() - d + a
            n = k.shape[dim]
            lo, hi = k.narrow(dim, 0, n - 2), k.narrow(dim, 2, n - 2)
            for b in axes:  # crop the other differentiated axes to the interior
                if b != a:
                    db = k.dim() - d + b
                    lo = lo.narrow(db, 1, k.shape[db] - 2)
                    hi = hi.narrow(db, 1, k.shape[db] - 2)
            lap = lap + lo + hi
        return lap
    # padded variants: every spatial axis is differentiated at every tap
    lead = k.shape[:-d]
    flat = k.reshape(-1, 1, *k.shape[-d:])
    pads: List[int] = [1, 1] * d
    if boundary == "zeros":
        padded = F.pad(flat, pads)
    else:
        padded = F.pad(flat, pads, mode="replicate")
    lap = -2.0 * d * flat
    for a in range(d):
        dim = 2 + a
        n = padded.shape[dim]
        lo, hi = padded.narrow(dim, 0, n - 2), padded.narrow(dim, 2, n - 2)
        for b in range(d):
            if b != a:
                lo = lo.narrow(2 + b, 1, padded.shape[2 + b] - 2)
                hi = hi.narrow(2 + b, 1, padded.shape[2 + b] - 2)
        lap = lap + lo + hi
    return lap.reshape(*lead, *k.shape[-d:])


def kernel_laplacian(
    weight: torch.Tensor,
    spatial_dims: Optional[int] = None,
    boundary: str = "interior",
    reduction: str = "mean",
) -> torch.Tensor:
    """Mean absolute discrete Laplacian of each kernel (the papers' kernel smoothness; lower = smoother).

    Args:
        weight: kernels whose last ``spatial_dims`` dimensions are spatial, e.g. a conv weight
            ``(out, in, kH, kW)`` or ``(out, in, kD, kH, kW)``, or a single kernel ``(kH, kW)``.
        spatial_dims: number of spatial dimensions; inferred from ``weight.dim()`` when ``None``:
            2 -> 2 (one 2-D kernel), 3 -> 3 (one 3-D kernel), 4 -> 2 and 5 -> 3 (conv weights).
            Pass ``spatial_dims=1`` for a ``Conv1d`` weight.
        boundary: ``"interior"`` (default: the stencil only where it fits inside the kernel; axes
            shorter than 3 are not differentiated), ``"zeros"`` (kernel zero-padded by one tap) or
            ``"replicate"`` (edge taps repeated). See the module docstring.
        reduction: ``"mean"`` (a scalar: mean over all kernels), ``"none"`` (one value per
            kernel, shape ``weight.shape[:-spatial_dims]``) or ``"map"`` (the signed Laplacian
            at every evaluated tap).

    Returns:
        A float tensor, differentiable with respect to ``weight`` (usable as a regulariser).
    """
    if not isinstance(weight, torch.Tensor):
        weight = torch.as_tensor(weight)
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}.")
    if reduction not in ("mean", "none", "map"):
        raise ValueError(f"reduction must be 'mean', 'none' or 'map', got {reduction!r}.")
    if spatial_dims is None:
        inferred = {2: 2, 3: 3, 4: 2, 5: 3}
        if weight.dim() not in inferred:
            raise ValueError(
                f"cannot infer spatial_dims from a {weight.dim()}-D tensor of shape {tuple(weight.shape)}; "
                f"pass spatial_dims=."
            )
        spatial_dims = inferred[weight.dim()]
    spatial_dims = check_spatial_dims(spatial_dims)
    if weight.dim() < spatial_dims:
        raise ValueError(f"spatial_dims must be <= weight.dim(), got {spatial_dims!r} for shape {tuple(weight.shape)}.")
    k = weight if weight.is_floating_point() else weight.float()
    lap = _laplacian_map(k, spatial_dims, boundary)
    if reduction == "map":
        return lap
    per_kernel = lap.abs().flatten(lap.dim() - spatial_dims).mean(-1)
    return per_kernel if reduction == "none" else per_kernel.mean()


def _spatial_weight(m: nn.Module) -> Optional[Tuple[torch.Tensor, int]]:
    """``(weight, spatial_dims)`` of a convolution (plain or generated), else ``None``."""
    if isinstance(m, GeneratedConv):
        return m.weight, m.spatial_dims
    if isinstance(m, _CONVS):
        return m.weight, len(m.kernel_size)
    return None


def conv_weights(model: nn.Module, min_kernel: int = 3) -> Dict[str, torch.Tensor]:
    """Every convolution's kernel (generated ones included), by module name, in registration order.

    Convolutions whose kernel is smaller than ``min_kernel`` in every dimension (1x1 projections)
    are left out: they have no spatial structure.
    """
    out: Dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, m in model.named_modules():
            got = _spatial_weight(m)
            if got is None:
                continue
            w, d = got
            if max(w.shape[-d:]) < min_kernel:
                continue
            out[name or "<root>"] = w.detach()
    return out


def layer_smoothness(
    model: Union[nn.Module, Mapping[str, torch.Tensor]],
    boundary: str = "interior",
    min_kernel: int = 3,
) -> List[Dict[str, Any]]:
    """Per-layer kernel smoothness (Ma et al. 2022, Fig 7 / journal extension, Fig 10): one row per convolution.

    Works for plain ``nn.ConvNd`` / ``nn.ConvTransposeNd`` and for every :class:`GeneratedConv`
    (hyper-, adaptive convs: their generated ``.weight``). 1x1 convs are skipped.

    Args:
        model: a network, or a mapping ``name -> weight`` (conv layout).
        boundary: see :func:`kernel_laplacian`.
        min_kernel: skip layers whose kernel is smaller than this in every dimension.

    Returns:
        Rows in the model's order: ``layer`` (module name), ``type``, ``kernel_size`` (tuple),
        ``n_kernels`` (``out x in``), ``laplacian`` (mean |Laplacian| over the layer's kernels),
        ``mean_abs_weight`` (mean |K|) and ``laplacian_rel`` (``laplacian / mean_abs_weight``,
        scale-free).
    """
    if isinstance(model, nn.Module):
        types = {name or "<root>": type(m).__name__ for name, m in model.named_modules()}
        weights = conv_weights(model, min_kernel=min_kernel)
    else:
        types = {}
        weights = {}
        for k, v in model.items():
            v = torch.as_tensor(v).detach()
            if v.dim() < 3:
                raise ValueError(f"weight {k!r} must be in conv layout (out, in, *k), got shape {tuple(v.shape)}.")
            if max(v.shape[2:]) >= min_kernel:
                weights[k] = v
    rows = []
    for name, w in weights.items():
        d = w.dim() - 2
        lap = float(kernel_laplacian(w, spatial_dims=d, boundary=boundary))
        mabs = float(w.abs().mean())
        rows.append({
            "layer": name, "type": types.get(name, "weight"), "kernel_size": tuple(int(s) for s in w.shape[2:]),
            "n_kernels": int(w.shape[0] * w.shape[1]), "laplacian": lap, "mean_abs_weight": mabs,
            "laplacian_rel": lap / mabs if mabs > 0 else float("nan"),
        })
    return rows


def _as_weights(model_or_weights) -> Dict[str, torch.Tensor]:
    if isinstance(model_or_weights, nn.Module):
        return conv_weights(model_or_weights)
    if isinstance(model_or_weights, Mapping):
        return {str(k): torch.as_tensor(v).detach() for k, v in model_or_weights.items()}
    if isinstance(model_or_weights, Sequence) and not isinstance(model_or_weights, (str, bytes)):
        return {f"layer{i}": torch.as_tensor(v).detach() for i, v in enumerate(model_or_weights)}
    raise TypeError(
        f"plot_kernel_grid expects a module, a mapping name -> weight or a list of weights, "
        f"got {type(model_or_weights).__name__}."
    )


def kernel_grid_size(n_rows: int, n_kernels: int = 8, cell_px: int = 48, label_px: int = 240,
                     title_px: int = 36) -> Tuple[int, int]:
    """Pixel size ``(width, height)`` of the PNG that :func:`plot_kernel_grid` writes."""
    return label_px + n_kernels * cell_px, title_px + n_rows * cell_px


def plot_kernel_grid(
    model_or_weights: Union[nn.Module, Mapping[str, torch.Tensor], Sequence[torch.Tensor]],
    path: Union[str, os.PathLike],
    n_kernels: int = 8,
    seed: int = 0,
    title: Optional[str] = None,
    layers: Optional[Sequence[str]] = None,
    boundary: str = "interior",
    cell_px: int = 48,
    label_px: int = 240,
    title_px: int = 36,
    dpi: int = 100,
    cmap: str = "gray",
) -> str:
    """A PNG of learned kernels as Ma et al. 2022, Fig 7 / journal extension, Fig 10: one row per layer, ``n_kernels`` per row.

    Each row shows ``n_kernels`` kernels (``out, in`` pairs) of one layer chosen at random with
    ``seed`` (all of them if the layer has fewer), each on its own symmetric grey scale
    (``[-max|K|, max|K|]``, mid-grey = 0), and is labelled with the layer's name, kernel size and
    mean |Laplacian| (the papers' per-row value). 3-D kernels show their central slice along the
    first spatial axis. The image is ``kernel_grid_size(rows, n_kernels, ...)`` pixels, rendered
    with matplotlib's Agg canvas and written atomically (temporary file, then ``os.replace``).

    Args:
        model_or_weights: a network (its convs with kernel >= 3, generated ones included), a
            mapping ``name -> weight`` or a list of weights (conv layout).
        path: output PNG.
        n_kernels: kernels per row.
        seed: random choice of the kernels shown.
        title: figure title (default: none, the title band stays empty).
        layers: only these layer names, in this order.
        boundary: Laplacian boundary handling (see :func:`kernel_laplacian`).
        cell_px, label_px, title_px, dpi: geometry.
        cmap: matplotlib colour map.

    Returns:
        ``path`` as a string.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    weights = _as_weights(model_or_weights)
    if layers is not None:
        missing = [n for n in layers if n not in weights]
        if missing:
            raise KeyError(f"layers {missing} not found; available: {list(weights)}.")
        weights = {n: weights[n] for n in layers}
    if not weights:
        raise ValueError("plot_kernel_grid: no convolution kernels to show.")
    if n_kernels < 1:
        raise ValueError(f"n_kernels must be >= 1, got {n_kernels}.")
    width, height = kernel_grid_size(len(weights), n_kernels, cell_px, label_px, title_px)
    # one mosaic image (fast even for many layers): each kernel nearest-resized into its cell on its
    # own symmetric scale [-1, 1]; NaN (drawn white) separates the cells
    margin = max(1, cell_px // 16)
    inner = cell_px - 2 * margin
    mosaic = np.full((len(weights) * cell_px, n_kernels * cell_px), np.nan, dtype=np.float32)
    gen = torch.Generator().manual_seed(int(seed))
    labels = []
    for r, (name, w) in enumerate(weights.items()):
        w = w.detach().float().cpu()
        d = w.dim() - 2
        if d < 1:
            raise ValueError(f"weight {name!r} must be in conv layout (out, in, *k), got shape {tuple(w.shape)}.")
        ks = tuple(w.shape[2:])
        flat = w.reshape(-1, *ks)
        lap = float(kernel_laplacian(w, spatial_dims=d, boundary=boundary)) if max(ks) >= 3 else float("nan")
        labels.append(f"{name}\n{'x'.join(map(str, ks))}  |Lap| {lap:.4g}")
        idx = torch.randperm(flat.shape[0], generator=gen)[:n_kernels]
        for c, i in enumerate(idx.tolist()):
            k = flat[i]
            while k.dim() > 2:  # 3-D: central slice along the first spatial axis
                k = k[k.shape[0] // 2]
            if k.dim() == 1:
                k = k[None]
            k = k.numpy()
            vmax = float(np.abs(k).max()) or 1.0
            rows_i = (np.arange(inner) * k.shape[0]) // inner
            cols_i = (np.arange(inner) * k.shape[1]) // inner
            y0, x0 = r * cell_px + margin, c * cell_px + margin
            mosaic[y0:y0 + inner, x0:x0 + inner] = k[np.ix_(rows_i, cols_i)] / vmax
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    if title:
        fig.text(0.5, 1 - 0.5 * title_px / height, title, ha="center", va="center", fontsize=10)
    ax = fig.add_axes([label_px / width, 0, 1 - label_px / width, 1 - title_px / height])
    cm = matplotlib.colormaps[cmap].copy()
    cm.set_bad("white")
    ax.imshow(mosaic, cmap=cm, vmin=-1, vmax=1, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    for r, text in enumerate(labels):
        y = 1 - (title_px + (r + 0.5) * cell_px) / height
        fig.text(4 / width, y, text, ha="left", va="center", fontsize=7)

    def _write(tmp: str) -> None:
        fig.savefig(tmp, format="png", dpi=dpi)

    return atomic_write(os.fspath(path), _write)
