"""Baking generated-kernel models into plain PyTorch convs, and converting plain models into generated ones."""

from __future__ import annotations

import copy
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .base import GeneratedConv, ensure_tuple_dims
from .factories import ConvSpec, get_conv_type
from .fft import check_fft_arg

__all__ = ["bake", "convert", "count_generated"]

logger = logging.getLogger(__name__)

_PLAIN_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_PLAIN_CONVTS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _replace_children(module: nn.Module, fn) -> nn.Module:
    """Replace, depth first, every descendant ``m`` for which ``fn(name, m)`` returns a module."""

    def visit(parent: nn.Module, prefix: str) -> None:
        for name, child in list(parent.named_children()):
            full = f"{prefix}.{name}" if prefix else name
            new = fn(full, child)
            if new is not None:
                setattr(parent, name, new)
            else:
                visit(child, full)

    root = fn("", module)
    if root is not None:
        return root
    visit(module, "")
    return module


def count_generated(model: nn.Module) -> int:
    """Number of :class:`GeneratedConv` layers in ``model``."""
    return sum(isinstance(m, GeneratedConv) for m in model.modules())


def bake(model: nn.Module, inplace: bool = False, fft: Union[str, bool] = False) -> nn.Module:
    """Reduce every generated-kernel conv in ``model`` to a plain conv holding the generated weights.

    The baked model computes the same outputs (float32 max abs difference < 1e-5), keeps the
    train/eval mode of every layer, and depends only on torch (plus whatever else the original
    used).

    ``fft`` chooses what a large kernel becomes (the trade-off is speed against portability):

    * ``False`` (default, the behaviour before the option existed): every layer becomes an
      ``nn.ConvNd``/``nn.ConvTransposeNd``. Most portable: scripts, ``torch.export``-s, ONNX-exports,
      fuses and quantises like any network; but a large kernel then costs its direct
      convolution's ``prod(k)`` per pixel again (a 17x17 layer is ~30x a 3x3).
    * ``"auto"``: stride-1, non-transposed layers whose kernel has at least
      :data:`~monai_hyperconv.layers.fft.FFT_MIN_TAPS` taps (and whose own ``fft`` is not
      ``False``) become :class:`~monai_hyperconv.layers.fft.FFTConvNd`, which picks the FFT or the
      direct path per call from the input shape (the same cost model as the generated layer), so
      the baked model keeps the generated one's speed. ``FFTConvNd`` is built from torch ops
      only: ``torch.export.export`` traces it (the branch is fixed at the traced shape) and the
      exported program loads without this package. It does not ONNX-export (complex tensors) and
      is not a ``nn.ConvNd`` for tools that look for one (fusion, quantisation).
    * ``True``: every stride-1, non-transposed layer becomes an ``FFTConvNd`` that always uses the FFT.

    Args:
        model: any module (a :class:`GeneratedConv` itself, too).
        inplace: modify ``model`` instead of a deep copy.
        fft: ``False``, ``"auto"`` or ``True`` (above).

    Returns:
        The baked model.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"bake expects an nn.Module, got {type(model).__name__}.")
    fft = check_fft_arg(fft)
    target = model if inplace else copy.deepcopy(model)
    return _replace_children(target, lambda _n, m: m.to_conv(fft=fft) if isinstance(m, GeneratedConv) else None)


def _padded_target(weight: torch.Tensor, new_ks: Tuple[int, ...]) -> torch.Tensor:
    """Zero-pad a kernel symmetrically to ``new_ks`` (the padded kernel computes the same conv)."""
    pads: List[int] = []
    for k_old, k_new in zip(reversed(weight.shape[2:]), reversed(new_ks)):
        extra = (k_new - k_old) // 2
        pads += [extra, extra]
    return F.pad(weight, pads)


def convert(
    model: nn.Module,
    conv: ConvSpec = ("hyper", {"n_l": 4}),
    kernel_size: Optional[Union[int, Sequence[int]]] = None,
    fit: bool = False,
    fit_steps: int = 200,
    transposed: bool = True,
    return_report: bool = False,
) -> Union[nn.Module, Tuple[nn.Module, List[Dict[str, Any]]]]:
    """Swap the convolutions of any network (MONAI's or not) for generated-kernel convolutions, in place.

    Every ``nn.ConvNd`` (and, with ``transposed=True``, ``nn.ConvTransposeNd``) whose kernel is
    larger than 1 in some dimension becomes the generated conv named by ``conv``, with the same
    channels, stride, dilation, groups, bias and padding mode. With ``kernel_size`` the new kernel
    is larger (odd) and the padding grows by ``dilation * (k_new - k_old) / 2`` so every output
    shape is unchanged. Layers with an even kernel (not representable on a centred grid) are
    left as they are and listed in the report.

    Args:
        model: the network, modified in place.
        conv: generated conv spec, e.g. ``"hyper"``, ``"adaptive"``, ``("hyper", {"n_l": 8})``.
        kernel_size: optional new (odd) kernel size; must not be smaller than a layer's own.
        fit: first fit each generated kernel to reproduce the existing one (zero-padded to the new
            size) by L2, the papers' kernel-fitting analysis (Ma et al. 2022, Fig 8; journal extension, Fig 11); the existing
            bias is always copied.
        fit_steps: gradient steps of the fit after its closed-form start (see ``fit_to_kernel``).
        transposed: also convert transposed convolutions.
        return_report: also return one row per layer: name, kernel sizes, ``status``
            (``converted`` or why not), and with ``fit`` the relative L2 fitting error
            ``||K_gen - K||/||K||``.

    Returns:
        ``model``, or ``(model, report)`` with ``return_report=True``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert expects an nn.Module, got {type(model).__name__}.")
    if isinstance(conv, str) and conv.lower() == "conv":
        raise ValueError("convert(conv='conv') would be a no-op; name a generated conv such as 'hyper' or 'adaptive'.")
    report: List[Dict[str, Any]] = []

    def swap(name: str, m: nn.Module) -> Optional[nn.Module]:
        is_t = isinstance(m, _PLAIN_CONVTS)
        if not (isinstance(m, _PLAIN_CONVS) or (transposed and is_t)):
            return None
        old_ks = tuple(m.kernel_size)
        row: Dict[str, Any] = {"layer": name or "<root>", "type": type(m).__name__, "kernel_size": old_ks}
        if all(k == 1 for k in old_ks):
            return None
        d = len(old_ks)
        if any(k % 2 == 0 for k in old_ks):
            row["status"] = "skipped: even kernel"
            report.append(row)
            return None
        new_ks = old_ks if kernel_size is None else ensure_tuple_dims(kernel_size, d, "kernel_size")
        if any(n < o or (n - o) % 2 for n, o in zip(new_ks, old_ks)):
            raise ValueError(
                f"kernel_size {kernel_size!r} must be odd and >= the existing kernel {old_ks} of layer {name!r}."
            )
        padding = m.padding
        if not isinstance(padding, str):
            padding = tuple(p + dl * (n - o) // 2 for p, dl, n, o in zip(padding, m.dilation, new_ks, old_ks))
        elif padding == "valid" and new_ks != old_ks:
            padding = tuple(dl * (n - o) // 2 for dl, n, o in zip(m.dilation, new_ks, old_ks))
        ctor = get_conv_type(conv, d)
        extra: Dict[str, Any] = {}
        if is_t:
            extra = {"transposed": True, "output_padding": tuple(m.output_padding)}
        new = ctor(
            m.in_channels, m.out_channels, kernel_size=new_ks, stride=tuple(m.stride), padding=padding,
            dilation=tuple(m.dilation), groups=m.groups, bias=m.bias is not None,
            **({"padding_mode": m.padding_mode} if not is_t else {}), **extra,
        )
        if not isinstance(new, GeneratedConv):
            raise ValueError(f"conv {conv!r} does not build a generated-kernel conv (got {type(new).__name__}).")
        new = new.to(device=m.weight.device, dtype=m.weight.dtype)
        with torch.no_grad():
            if m.bias is not None and new.bias is not None:
                new.bias.copy_(m.bias)
        if fit:
            target = _padded_target(m.weight.detach(), new_ks)
            row["fit_rel_error"] = new.fit_to_kernel(target, steps=fit_steps)
        new.train(m.training)
        row.update(status="converted", new_kernel_size=new_ks, new_type=type(new).__name__)
        report.append(row)
        return new

    model = _replace_children(model, swap)
    n = sum(r["status"] == "converted" for r in report)
    if fit and n:
        errs = [r["fit_rel_error"] for r in report if "fit_rel_error" in r]
        logger.info("convert: %d layers fitted, relative L2 error mean %.4f max %.4f", n, sum(errs) / len(errs), max(errs))
    return (model, report) if return_report else model
