"""Registered networks of the papers' tables, parameter counting and the parity table.

Every registered constructor takes ``spatial_dims`` (default 2), ``in_channels``, ``out_channels``
(defaults: 1 in, 1 out; 4 contrasts for the MB-UNets; 10 classes for the classifiers) and any
argument of its class, which overrides the paper's setting (``conv=...`` included). The hyper
variants also accept ``n_l`` (the hyper-network's last hidden width, default 4; 8 for the flat
Hyper-CNN) as a shortcut for ``conv=("hyper", {"n_l": n_l})``; in the hyper UNets the
up-sampling conv follows ``kernel_size`` unless ``up_kernel_size`` is given (as the official code).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional

from torch import nn

from .classification import SimpleCNN, SmallResNet
from .flat import FlatResidualCNN
from .multibranch import MultiBranchUNet
from .receptive_field import receptive_field
from .registry import create_network, register_network
from .unet import PaperUNet

__all__ = ["count_parameters", "parameter_table", "format_parameter_table", "PAPER_ROWS"]

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

# settings shared by the hyper UNets of the official code: 5x5 hyper kernels, a stem to half the
# first width, a hyper up-sampling conv of the same size with BN, dropout in every block
_HYPER_UNET = dict(kernel_size=5, up_kernel_size=5, up_norm=True, stem=True, dropout_placement="all")


def _hyper_conv(kwargs: Dict[str, Any], default_n_l: int) -> Dict[str, Any]:
    n_l = kwargs.pop("n_l", None)
    if "conv" in kwargs:
        if n_l is not None:
            raise ValueError("give either n_l or conv, not both (conv=('hyper', {'n_l': ...}) sets N_L).")
        return kwargs
    kwargs["conv"] = ("hyper", {"n_l": default_n_l if n_l is None else n_l})
    return kwargs


def _factory(cls: type, defaults: Dict[str, Any], hyper_n_l: Optional[int] = None, in_channels: int = 1,
             out_channels: int = 1) -> Callable[..., nn.Module]:
    def build(spatial_dims: int = 2, in_channels: int = in_channels, out_channels: int = out_channels, **kwargs):
        if hyper_n_l is not None:
            kwargs = _hyper_conv(dict(kwargs), hyper_n_l)
        elif "n_l" in kwargs:
            raise ValueError("n_l applies to the hyper networks only; use conv=('hyper', {'n_l': ...}).")
        if defaults.get("up_kernel_size") == defaults.get("kernel_size") is not None and "kernel_size" in kwargs:
            # the official Hyper-UNet's up-sampling conv has its kernel size: keep them tied
            kwargs.setdefault("up_kernel_size", kwargs["kernel_size"])
        return cls(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                   **{**defaults, **kwargs})

    return build


def _register(name: str, cls: type, defaults: Dict[str, Any], description: str, **kw) -> None:
    fn = _factory(cls, defaults, **kw)
    fn.__name__ = name
    fn.__qualname__ = name
    fn.network_class = cls  # lets tools (e.g. the comparison runner) see the accepted keyword arguments
    fn.__doc__ = (
        f"{description}\n\n``{cls.__name__}(spatial_dims=2, ...)`` with {defaults or 'its defaults'}; "
        f"any keyword overrides them."
    )
    register_network(name, fn, description=description)


# ---------------------------------------------------------------- Table 1 (liver) and Table 2
_register("unet", PaperUNet, {}, "UNet 3x3 of Ma et al. 2022 (Table 1, 2.1M)")
_register("unet5", PaperUNet, {"kernel_size": 5}, "UNet 5x5, up-sampling conv stays 3x3 (Table 1, 5.3M)")
_register("dilated_unet", PaperUNet, {"dilation": 2}, "Dilated UNet 3x3, dilation 2 (Table 1, 2.1M)")
_register("nonlocal_unet", PaperUNet, {"non_local": True}, "Non-local UNet 3x3, dot-product block at the bottleneck (Table 1, 2.3M)")
_register("hyper_unet", PaperUNet, dict(_HYPER_UNET), "Hyper-UNet 5x5, N_L=4 (Table 1, 1.2M; Table 2 via kernel_size/n_l)", hyper_n_l=4)
_register("nonlocal_hyper_unet", PaperUNet, {**_HYPER_UNET, "non_local": True},
          "Non-local Hyper-UNet 5x5, N_L=4 (Table 1, 1.4M)", hyper_n_l=4)
_register("flat_dilated_cnn", FlatResidualCNN, {}, "Flat Dilated CNN, dilations 1,2,4,8,4,2,1 (Tables 1/3, 0.45M)")
_register("flat_hyper_cnn", FlatResidualCNN, {"kernel_size": (3, 5, 9, 17, 9, 5, 3), "dilation": 1},
          "Flat Hyper-CNN, dense hyper kernels 3..17..3, N_L=8 (Tables 1/3, 0.45M)", hyper_n_l=8)
# ---------------------------------------------------------------- Table 3 (MS lesions, 4 contrasts)
_MB = dict(in_channels=4)
_register("mb_unet", MultiBranchUNet, {}, "MB-UNet 3x3, one branch per contrast (Table 3, 2.1M)", **_MB)
_register("mb_unet5", MultiBranchUNet, {"kernel_size": 5}, "MB-UNet 5x5 (Table 3, 5.3M)", **_MB)
_register("dilated_mb_unet", MultiBranchUNet, {"dilation": 2}, "Dilated MB-UNet 3x3 (Table 3, 2.1M)", **_MB)
_register("nonlocal_mb_unet", MultiBranchUNet, {"non_local": True}, "Non-local MB-UNet 3x3 (Table 3, 2.3M)", **_MB)
_register("hyper_mb_unet", MultiBranchUNet, dict(_HYPER_UNET), "Hyper-MB-UNet 5x5, N_L=4 (Tables 3/4, 1.2M)",
          hyper_n_l=4, **_MB)
_register("nonlocal_hyper_mb_unet", MultiBranchUNet, {**_HYPER_UNET, "non_local": True},
          "Non-local Hyper-MB-UNet 5x5, N_L=4 (Table 3, 1.4M)", hyper_n_l=4, **_MB)
# ----------------------------------------------- classifiers (Tek et al. 2020 §4.2-4.3, Karmann's blog)
_register("simple_cnn", SimpleCNN, {}, "Simple 2-conv classifier of Tek et al. 2020 (1.6M on MNIST)", out_channels=10)
_register("small_resnet", SmallResNet, {}, "Small pre-activation ResNet classifier (Karmann's blog MNIST net)",
          out_channels=10)


def count_parameters(model: nn.Module, bn_running_stats: bool = False, trainable_only: bool = False) -> int:
    """Number of parameters of ``model``.

    Args:
        bn_running_stats: also count batch-norm running means and variances, as Keras'
            ``count_params`` does (the papers' official code is Keras; with this flag our counts
            reproduce its numbers exactly, e.g. 2,145,697 for the 3x3 UNet).
        trainable_only: count only parameters with ``requires_grad``.
    """
    n = sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
    if bn_running_stats:
        n += sum(m.running_mean.numel() + m.running_var.numel()
                 for m in model.modules() if isinstance(m, _NORMS) and m.running_mean is not None)
    return n


#: the papers' rows: (label, registered name, kwargs, paper params in millions, paper receptive field)
PAPER_ROWS: List[tuple] = [
    ("UNet 3x3", "unet", {}, 2.1, 68),
    ("UNet 5x5", "unet5", {}, 5.3, 128),
    ("Dilated UNet 3x3", "dilated_unet", {}, 2.1, 128),
    ("Non-local UNet 3x3", "nonlocal_unet", {}, 2.3, math.inf),
    ("HyperSeg (our implementation)", "hyperseg", {}, 1.2, math.inf),
    ("Hyper-UNet 5x5, N_L=4", "hyper_unet", {}, 1.2, 128),
    ("Non-local Hyper-UNet 5x5, N_L=4", "nonlocal_hyper_unet", {}, 1.4, math.inf),
    ("Hyper-UNet 5x5, N_L=2", "hyper_unet", {"n_l": 2}, 0.73, 128),
    ("Hyper-UNet 5x5, N_L=8", "hyper_unet", {"n_l": 8}, 2.2, 128),
    ("Hyper-UNet 3x3, N_L=4", "hyper_unet", {"kernel_size": 3}, 1.2, 68),
    ("Hyper-UNet 7x7, N_L=4", "hyper_unet", {"kernel_size": 7}, 1.2, 188),
    ("Flat Dilated CNN", "flat_dilated_cnn", {}, 0.45, 89),
    ("Flat Hyper-CNN", "flat_hyper_cnn", {}, 0.45, 89),
    ("MB-UNet 3x3 (4 contrasts)", "mb_unet", {}, 2.1, 68),
    ("MB-UNet 5x5", "mb_unet5", {}, 5.3, 128),
    ("Dilated MB-UNet 3x3", "dilated_mb_unet", {}, 2.1, 128),
    ("Non-local MB-UNet 3x3", "nonlocal_mb_unet", {}, 2.3, math.inf),
    ("Hyper-MB-UNet 5x5, N_L=4", "hyper_mb_unet", {}, 1.2, 128),
    ("Non-local Hyper-MB-UNet 5x5, N_L=4", "nonlocal_hyper_mb_unet", {}, 1.4, math.inf),
    ("Simple CNN (Tek et al. 2020, MNIST 28x28)", "simple_cnn", {}, 1.6, None),
    ("Small ResNet (blog, MNIST)", "small_resnet", {}, None, None),
]


def parameter_table(rows: Optional[List[tuple]] = None) -> List[Dict[str, Any]]:
    """Build every paper row's network (2-D, 32 start channels, 1 input channel or 4 contrasts, 1 output)
    and report its parameters and receptive field next to the papers'.

    Returns:
        One dict per row: ``model`` (label), ``network`` (registered name), ``kwargs``, ``params``
        (PyTorch parameters), ``params_keras`` (with batch-norm running statistics, the official
        code's convention), ``paper_params`` (float, in parameters, or ``None``), ``rel_diff``
        (``params / paper_params - 1``), ``receptive_field`` (``"paper"`` path, pixels or inf) and
        ``paper_receptive_field``.
    """
    out = []
    for label, name, kwargs, paper_m, paper_rf in rows if rows is not None else PAPER_ROWS:
        net = create_network(name, **kwargs)
        params = count_parameters(net)
        paper = None if paper_m is None else paper_m * 1e6
        out.append({
            "model": label, "network": name, "kwargs": dict(kwargs), "params": params,
            "params_keras": count_parameters(net, bn_running_stats=True), "paper_params": paper,
            "rel_diff": None if paper is None else params / paper - 1,
            "receptive_field": receptive_field(net), "paper_receptive_field": paper_rf,
        })
    return out


def _fmt_rf(v) -> str:
    if v is None:
        return "-"
    return "all pixels" if v == math.inf else f"{v} px"


def format_parameter_table(table: Optional[List[Dict[str, Any]]] = None) -> str:
    """The parity table as Markdown (what ``scripts/param_table.py`` prints for the README)."""
    table = parameter_table() if table is None else table
    lines = [
        "| Model | `create_network` | Params (ours) | Params (paper) | Diff | Receptive field (ours / paper) |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in table:
        call = row["network"] + "".join(f", {k}={v!r}" for k, v in row["kwargs"].items())
        paper = "-" if row["paper_params"] is None else f"{row['paper_params'] / 1e6:.2f}M"
        diff = "-" if row["rel_diff"] is None else f"{100 * row['rel_diff']:+.1f}%"
        lines.append(
            f"| {row['model']} | `{call}` | {row['params'] / 1e6:.3f}M | {paper} | {diff} | "
            f"{_fmt_rf(row['receptive_field'])} / {_fmt_rf(row['paper_receptive_field'])} |"
        )
    return "\n".join(lines)
