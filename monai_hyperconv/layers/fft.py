"""FFT convolution: the cost of a stride-1 convolution that does not grow with the kernel size.

A direct convolution costs ``C_in/groups * C_out * prod(k) * prod(n)`` multiply-adds; through the
FFT it costs about ``(C_in + C_out + C_in/groups * C_out) * prod(N) log prod(N)`` for the transforms
plus ``C_in/groups * C_out * prod(N)`` complex products (``N`` the transform size, about
``n + k/2``), whatever ``k``. Large generated kernels (the Flat Hyper-CNN's 17x17 of Ma et al. 2022)
are where the second wins; CKConv/FlexConv/CCNN (Romero et al. 2022, Knigge et al. 2023) switch to
FFT convolutions for the same reason.

:func:`fft_conv` is a functional drop-in for ``F.conv{1,2,3}d`` at stride 1 (any dilation, groups,
explicit or ``"same"`` padding, every ``padding_mode``), built from ``torch.fft`` only, so it is
differentiable and traces under ``torch.export``. :func:`fft_is_faster` is the cost model that
``fft="auto"`` uses; :class:`FFTConvNd` is the exportable module a generated conv bakes into.
"""

from __future__ import annotations

import contextlib
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["fft_conv", "fft_is_faster", "fft_applicable", "FFTConvNd", "FFT_COST", "next_fast_len", "check_fft_arg",
           "kernel_spectrum", "direct_conv", "spectrum_cache", "fft_sizes"]

_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}

#: Cost-model constants: time per unit of work relative to one direct-conv multiply-add.
#: ``fft``: per element x log2(transform size) of a real FFT; ``mul``: per complex multiply-add in
#: the frequency domain. Refit for a device with ``scripts/bench_large_kernels.py --parts fit``
#: and assign here (``FFT_COST["cpu"] = {...}``). The CPU values are estimates (pocketfft at ~1/16 of
#: a oneDNN conv's throughput per unit, a complex multiply-add ~8 real ones at small-matmul
#: efficiency), see README "Performance"; the CUDA values are unmeasured guesses.
FFT_COST = {"cpu": {"fft": 16.0, "mul": 8.0}, "cuda": {"fft": 16.0, "mul": 8.0}}

#: never use the FFT for kernels with fewer taps than this (per ``spatial_dims``), whatever the model says
FFT_MIN_TAPS = {1: 16, 2: 25, 3: 27}


def check_fft_arg(fft) -> Union[str, bool]:
    """Validate the ``fft`` argument of a generated conv: ``"auto"``, ``True`` or ``False``."""
    if fft is True or fft is False or fft == "auto":
        return fft
    raise ValueError(f"fft must be 'auto', True or False, got {fft!r}.")


def next_fast_len(n: int) -> int:
    """Smallest ``m >= n`` whose prime factors are all 2, 3, 5 or 7 (fast sizes for pocketfft and cuFFT)."""
    m = max(1, int(n))
    while True:
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def _pairs(pad: Sequence[int], d: int) -> List[Tuple[int, int]]:
    """``F.pad``-ordered (last dimension first) ``[l, r, l, r, ...]`` -> per-dimension ``(l, r)`` in natural order."""
    pad = list(pad)
    return [(int(pad[2 * (d - 1 - i)]), int(pad[2 * (d - 1 - i) + 1])) for i in range(d)]


def _plan(
    n: Sequence[int], k_eff: Sequence[int], pads: Sequence[Tuple[int, int]], padding_mode: str
) -> Tuple[bool, List[Tuple[int, int]], List[int], List[int]]:
    """Transform sizes for a stride-1 correlation.

    Returns ``(pre_pad, pads, sizes, n_out)``: whether the input must first be padded with
    ``F.pad(mode=padding_mode)`` (after which ``pads`` are zero), the remaining zero paddings,
    the FFT size per dimension and the output size per dimension.
    """
    circular_direct = padding_mode == "circular" and all(
        l + r == k - 1 and k <= s and l <= s and r <= s for s, k, (l, r) in zip(n, k_eff, pads)
    )
    if circular_direct:
        # a circular convolution of the input's own size *is* circular padding + valid conv
        return False, list(pads), list(n), list(n)
    pre_pad = padding_mode != "zeros" and any(l or r for l, r in pads)
    if pre_pad:
        n = [s + l + r for s, (l, r) in zip(n, pads)]
        pads = [(0, 0)] * len(n)
    n_out = [s + l + r - k + 1 for s, k, (l, r) in zip(n, k_eff, pads)]
    # every input index an output reads is either itself or lands in the zero tail [n, N)
    sizes = [next_fast_len(max(s + l, s + r, o, k)) for s, k, o, (l, r) in zip(n, k_eff, n_out, pads)]
    return pre_pad, list(pads), sizes, n_out


def _dilate(w: torch.Tensor, dilation: Sequence[int]) -> torch.Tensor:
    """Insert ``dilation - 1`` zeros between kernel taps (differentiable)."""
    if all(d == 1 for d in dilation):
        return w
    ks = w.shape[2:]
    out = w.new_zeros(*w.shape[:2], *[dl * (k - 1) + 1 for dl, k in zip(dilation, ks)])
    idx = (slice(None), slice(None)) + tuple(slice(None, None, dl) for dl in dilation)
    out[idx] = w
    return out


def kernel_spectrum(w: torch.Tensor, sizes: Sequence[int], groups: int = 1) -> torch.Tensor:
    """Spectrum of the *flipped* kernel zero-padded to ``sizes``, laid out for the per-frequency matmul.

    Flipping turns the convolution theorem's product into PyTorch's cross-correlation (the shift
    it introduces is undone by a roll of the output). The small kernel is permuted before the
    transform, so the large spectrum comes out in the matmul's layout without a copy, and it is
    transformed one axis at a time, so its zero rows are never transformed.

    Args:
        w: ``(C_out, C_in/groups, *k)`` kernel (already dilated).
        sizes: transform size per spatial dimension.
        groups: as ``nn.ConvNd``.

    Returns:
        Complex tensor ``(groups, *sizes[:-1], sizes[-1] // 2 + 1, C_in/groups, C_out/groups)``.
    """
    d = len(sizes)
    cout, cin_g = w.shape[:2]
    w = torch.flip(w, dims=tuple(range(2, 2 + d))).reshape(groups, cout // groups, cin_g, *w.shape[2:])
    w = w.permute(0, *range(3, 3 + d), 2, 1)  # (g, *k, Ci, Co)
    spec = torch.fft.rfft(w, n=int(sizes[-1]), dim=d)
    for i in range(d - 1):
        spec = torch.fft.fft(spec, n=int(sizes[i]), dim=1 + i)
    return spec


def _spectral_product(xf: torch.Tensor, wf: torch.Tensor, groups: int) -> torch.Tensor:
    """``out[b, o] = sum_i X[b, i] * K[o, i]`` per frequency, block-diagonal over groups.

    Args:
        xf: ``(B, C_in, *F)`` input spectrum.
        wf: ``(groups, *F, C_in/groups, C_out/groups)`` from :func:`kernel_spectrum`.

    Returns:
        ``(B, C_out, *F)``.
    """
    b, cin = xf.shape[:2]
    fshape = xf.shape[2:]
    nf = math.prod(fshape)
    cin_g, cout_g = wf.shape[-2:]
    # frequencies as the batch of a (B x C_in/g) @ (C_in/g x C_out/g) complex matmul per group
    x = xf.reshape(b, groups, cin_g, nf).permute(1, 3, 0, 2)  # (g, F, B, Ci)
    y = torch.matmul(x, wf.reshape(groups, nf, cin_g, cout_g))  # (g, F, B, Co)
    return y.permute(2, 0, 3, 1).reshape(b, groups * cout_g, *fshape)


def fft_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    padding: Union[Sequence[int], str] = 0,
    dilation: Union[int, Sequence[int]] = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    weight_spectrum: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Stride-1 ``F.conv{1,2,3}d`` (cross-correlation) computed with ``torch.fft``.

    Equal to ``F.conv{d}d(F.pad(x, pad, mode) if padding_mode != "zeros" else x, ...)`` up to float
    rounding (relative error ~1e-6 in float32). Under autocast, or for half-precision inputs, the
    transforms run in float32 (half-precision FFTs need power-of-two sizes) and the result is cast
    to the dtype the direct conv would have returned.

    Args:
        x: ``(B, C_in, *n)``.
        weight: ``(C_out, C_in/groups, *k)``.
        bias: ``(C_out,)`` or ``None``.
        padding: an int, a per-dimension tuple, ``"same"``/``"valid"``, or (if its length is
            ``2 * spatial_dims``) an ``F.pad``-ordered ``[left_last, right_last, ...]`` list.
        dilation: int or per-dimension tuple.
        groups: as ``nn.ConvNd``.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
        weight_spectrum: optional precomputed ``kernel_spectrum`` of the dilated weight for the
            sizes this call plans (a cache; must match, it is not checked).

    Returns:
        ``(B, C_out, *n_out)``.
    """
    d = x.dim() - 2
    if d not in (1, 2, 3) or weight.dim() != d + 2:
        raise ValueError(f"fft_conv expects (B, C, *spatial) input and kernel with 1-3 spatial dims, got "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}.")
    dil = [int(dilation)] * d if isinstance(dilation, int) else [int(v) for v in dilation]
    k_eff = [dl * (k - 1) + 1 for dl, k in zip(dil, weight.shape[2:])]
    pads = _padding_pairs(padding, k_eff, d)
    out_dtype = _result_dtype(x, weight)
    dev = x.device.type
    with torch.autocast(dev, enabled=False) if torch.is_autocast_enabled(dev) else contextlib.nullcontext():
        compute = torch.float64 if out_dtype == torch.float64 else torch.float32
        x = x.to(compute)
        w = _dilate(weight.to(compute), dil)
        pre_pad, pads, sizes, n_out = _plan(list(x.shape[2:]), k_eff, pads, padding_mode)
        if any(o < 1 for o in n_out):
            raise ValueError(f"fft_conv: kernel (effective size {k_eff}) larger than the padded input {tuple(x.shape)}.")
        if pre_pad:
            x = F.pad(x, [p for l, r in reversed(_padding_pairs(padding, k_eff, d)) for p in (l, r)], mode=padding_mode)
        dims = tuple(range(2, 2 + d))
        xf = torch.fft.rfftn(x, s=sizes, dim=dims)
        wf = kernel_spectrum(w, sizes, groups) if weight_spectrum is None else weight_spectrum
        y = torch.fft.irfftn(_spectral_product(xf, wf, groups), s=sizes, dim=dims)
        # with the flipped kernel, output j sits at circular index j - pad_left + k_eff - 1
        shifts = [l - (k - 1) for (l, _), k in zip(pads, k_eff)]
        if any(shifts):
            y = torch.roll(y, shifts=shifts, dims=dims)
        for i, o in enumerate(n_out):
            y = y.narrow(2 + i, 0, o)
        if bias is not None:
            y = y + bias.to(compute).view(1, -1, *([1] * d))
    return y.to(out_dtype)


def _result_dtype(x: torch.Tensor, w: torch.Tensor) -> torch.dtype:
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return torch.promote_types(x.dtype, w.dtype)


def _padding_pairs(padding, k_eff: Sequence[int], d: int) -> List[Tuple[int, int]]:
    if isinstance(padding, str):
        if padding == "valid":
            return [(0, 0)] * d
        if padding == "same":
            return [((k - 1) // 2, (k - 1) - (k - 1) // 2) for k in k_eff]
        raise ValueError(f"padding must be an int, a tuple, 'same' or 'valid', got {padding!r}.")
    if isinstance(padding, int):
        return [(padding, padding)] * d
    pad = [int(p) for p in padding]
    if len(pad) == d:
        return [(p, p) for p in pad]
    if len(pad) == 2 * d:
        return _pairs(pad, d)
    raise ValueError(f"padding must have {d} or {2 * d} entries, got {padding!r}.")


def fft_sizes(spatial_shape: Sequence[int], kernel_size: Sequence[int], dilation: Sequence[int] = (1, 1, 1),
              padding: Union[Sequence[int], str] = 0, padding_mode: str = "zeros") -> List[int]:
    """The transform size per spatial dimension that :func:`fft_conv` uses for this call."""
    d = len(kernel_size)
    k_eff = [dl * (k - 1) + 1 for dl, k in zip(list(dilation)[:d], kernel_size)]
    return _plan(list(spatial_shape), k_eff, _padding_pairs(padding, k_eff, d), padding_mode)[2]


def fft_applicable(transposed: bool, stride: Sequence[int]) -> bool:
    """The FFT path covers stride-1, non-transposed convolutions (others use the direct path)."""
    return not transposed and all(s == 1 for s in stride)


def fft_is_faster(
    x_shape: Sequence[int],
    out_channels: int,
    kernel_size: Sequence[int],
    dilation: Sequence[int],
    padding: Union[Sequence[int], str],
    groups: int = 1,
    padding_mode: str = "zeros",
    device_type: str = "cpu",
    cost: Optional[dict] = None,
) -> bool:
    """The modelled crossover of ``fft="auto"``: is the FFT path cheaper for this call?

    Direct: ``B * C_out * C_in/g * prod(k) * prod(n_out)`` multiply-adds (dilation does not add
    work). FFT: ``c_fft * (B*C_in + B*C_out + C_out*C_in/g) * prod(N) * log2(prod(N))`` for the
    transforms plus ``c_mul * B * C_out * C_in/g * prod(N')`` complex products (``N'`` the
    half-spectrum), with ``c_fft``, ``c_mul`` from :data:`FFT_COST` (fitted by
    ``scripts/bench_large_kernels.py --fit``). Kernels with fewer than :data:`FFT_MIN_TAPS` taps
    always use the direct path.
    """
    d = len(kernel_size)
    if math.prod(kernel_size) < FFT_MIN_TAPS.get(d, 27):
        return False
    b, cin = int(x_shape[0]), int(x_shape[1])
    n = [int(s) for s in x_shape[2:]]
    k_eff = [dl * (k - 1) + 1 for dl, k in zip(dilation, kernel_size)]
    _, _, sizes, n_out = _plan(n, k_eff, _padding_pairs(padding, k_eff, d), padding_mode)
    if any(o < 1 for o in n_out):
        return False
    c = (cost or FFT_COST).get(device_type, FFT_COST["cpu"])
    cin_g = cin // groups
    direct = b * out_channels * cin_g * math.prod(kernel_size) * math.prod(n_out)
    big_n = math.prod(sizes)
    half = big_n // sizes[-1] * (sizes[-1] // 2 + 1)
    fft = c["fft"] * (b * cin + b * out_channels + out_channels * cin_g) * big_n * math.log2(max(big_n, 2))
    fft += c["mul"] * b * out_channels * cin_g * half
    return fft < direct


class FFTConvNd(nn.Module):
    """A plain (baked) stride-1 convolution that runs through the FFT when that is cheaper.

    Holds the kernel as the parameter ``weight`` (``nn.ConvNd``'s layout and attribute names) and
    uses only torch ops, so ``torch.export.export`` turns it into a graph that loads without this
    package. With ``fft="auto"`` the path is chosen per call from the input shape by
    :func:`fft_is_faster` (a Python branch: an exported graph is specialised to the traced shape).
    In eval mode without autograd the kernel spectrum is cached per transform size.

    Args:
        weight: ``(C_out, C_in/groups, *k)`` kernel.
        bias: ``(C_out,)`` or ``None``.
        padding: int, per-dimension tuple, ``"same"`` or ``"valid"``.
        dilation: int or per-dimension tuple.
        groups: as ``nn.ConvNd``.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
        fft: ``"auto"`` (cost model), ``True`` (always FFT) or ``False`` (always direct).
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: Optional[torch.Tensor] = None,
        padding: Union[int, Sequence[int], str] = 0,
        dilation: Union[int, Sequence[int]] = 1,
        groups: int = 1,
        padding_mode: str = "zeros",
        fft: Union[str, bool] = "auto",
    ) -> None:
        super().__init__()
        d = weight.dim() - 2
        if d not in (1, 2, 3):
            raise ValueError(f"weight must be (C_out, C_in/groups, *k) with 1-3 spatial dims, got {tuple(weight.shape)}.")
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"padding_mode must be zeros, reflect, replicate or circular, got {padding_mode!r}.")
        self.spatial_dims = d
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self.in_channels = weight.shape[1] * groups
        self.out_channels = weight.shape[0]
        self.kernel_size = tuple(weight.shape[2:])
        self.stride = (1,) * d
        self.dilation = (int(dilation),) * d if isinstance(dilation, int) else tuple(int(v) for v in dilation)
        self.padding = padding if isinstance(padding, str) else (
            (int(padding),) * d if isinstance(padding, int) else tuple(int(p) for p in padding))
        self.groups = int(groups)
        self.padding_mode = padding_mode
        self.fft = check_fft_arg(fft)
        self._spec_cache: Optional[tuple] = None

    def use_fft(self, x: torch.Tensor) -> bool:
        """Whether this call takes the FFT path."""
        if self.fft == "auto":
            return fft_is_faster(x.shape, self.out_channels, self.kernel_size, self.dilation, self.padding,
                                 self.groups, self.padding_mode, x.device.type)
        return bool(self.fft)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_fft(x):
            return fft_conv(x, self.weight, self.bias, self.padding, self.dilation, self.groups, self.padding_mode,
                            weight_spectrum=self._cached_spectrum(x))
        return direct_conv(x, self.weight, self.bias, self.padding, self.dilation, self.groups, self.padding_mode)

    def _cached_spectrum(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        if torch.is_grad_enabled() or _tracing() or torch.is_autocast_enabled(x.device.type):
            return None
        return spectrum_cache(self, self.weight, x, self.padding, self.dilation, self.padding_mode,
                              (self.weight.data_ptr(), self.weight._version), self.groups)

    def _apply(self, fn, *args, **kwargs):
        self._spec_cache = None
        return super()._apply(fn, *args, **kwargs)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, padding={self.padding}"
        if self.dilation != (1,) * self.spatial_dims:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s + f", fft={self.fft!r}"


def direct_conv(x, weight, bias, padding, dilation, groups, padding_mode) -> torch.Tensor:
    """Stride-1 ``F.conv{d}d`` with ``nn.ConvNd``'s padding-mode handling (the non-FFT path)."""
    d = weight.dim() - 2
    if padding_mode != "zeros":
        dil = (dilation,) * d if isinstance(dilation, int) else tuple(dilation)
        k_eff = [dl * (k - 1) + 1 for dl, k in zip(dil, weight.shape[2:])]
        pad = [p for l, r in reversed(_padding_pairs(padding, k_eff, d)) for p in (l, r)]
        return _CONV_FN[d](F.pad(x, pad, mode=padding_mode), weight, bias, 1, 0, dilation, groups)
    return _CONV_FN[d](x, weight, bias, 1, padding, dilation, groups)


def spectrum_cache(owner, weight: torch.Tensor, x: torch.Tensor, padding, dilation, padding_mode: str,
                   version: tuple, groups: int = 1) -> torch.Tensor:
    """The kernel spectrum for ``x``'s transform sizes, cached on ``owner._spec_cache`` (inference only)."""
    d = weight.dim() - 2
    dil = [int(dilation)] * d if isinstance(dilation, int) else [int(v) for v in dilation]
    k_eff = [dl * (k - 1) + 1 for dl, k in zip(dil, weight.shape[2:])]
    _, _, sizes, _ = _plan(list(x.shape[2:]), k_eff, _padding_pairs(padding, k_eff, d), padding_mode)
    compute = torch.float64 if _result_dtype(x, weight) == torch.float64 else torch.float32
    key = (version, tuple(sizes), compute, weight.device, groups)
    if owner._spec_cache is None or owner._spec_cache[0] != key:
        owner._spec_cache = (key, kernel_spectrum(_dilate(weight.to(compute), dil), sizes, groups))
    return owner._spec_cache[1]


def _tracing() -> bool:
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return True
    try:
        if torch.compiler.is_compiling():
            return True
        return bool(getattr(torch.compiler, "is_exporting", lambda: False)())
    except AttributeError:  # pragma: no cover - older torch
        return False
