"""The one home of the package's idea: a convolution whose kernel is computed, not stored.

:class:`GeneratedConv` owns everything a convolution needs *except* its weight: stride,
padding (including ``"same"`` and non-zero padding modes), dilation, groups, transposition and
the functional call. Subclasses only say how the kernel is produced
(:meth:`GeneratedConv.generate_weight`); everything else -- baking to a plain ``nn.ConvNd``,
conversion of existing networks, registration in MONAI's ``Conv`` factory -- works for any
subclass without knowing which one it is.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..utils import check_positive_int, check_spatial_dims
from .fft import FFT_MIN_TAPS, FFTConvNd, check_fft_arg, fft_applicable, fft_conv, fft_is_faster, spectrum_cache

__all__ = ["GeneratedConv", "ConvNdSignature", "dim_variant", "ensure_tuple_dims", "conv_class", "conv_transpose_class"]

_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONVT_FN = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_CONV_CLS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONVT_CLS = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def conv_class(spatial_dims: int) -> type:
    """``nn.Conv{1,2,3}d`` for ``spatial_dims``."""
    return _CONV_CLS[check_spatial_dims(spatial_dims)]


def conv_transpose_class(spatial_dims: int) -> type:
    """``nn.ConvTranspose{1,2,3}d`` for ``spatial_dims``."""
    return _CONVT_CLS[check_spatial_dims(spatial_dims)]


def ensure_tuple_dims(value, spatial_dims: int, name: str) -> Tuple[int, ...]:
    """Expand an int (or a length-``spatial_dims`` sequence) into a tuple, naming ``name`` on error."""
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return (int(value),) * spatial_dims
    if isinstance(value, Sequence) and not isinstance(value, str):
        vals = tuple(value)
        if len(vals) == 1:
            vals = vals * spatial_dims
        if len(vals) == spatial_dims and all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
            return tuple(int(v) for v in vals)
    raise ValueError(f"{name} must be an int or a sequence of {spatial_dims} ints, got {value!r}.")


class GeneratedConv(nn.Module):
    """Base class of convolutions whose kernel is produced by a generator at run time.

    The constructor takes MONAI's convention ``(spatial_dims, in_channels, out_channels, ...)``
    and ``nn.ConvNd``'s semantics for ``kernel_size``, ``stride``, ``padding`` (int, tuple,
    ``"same"`` or ``"valid"``), ``dilation``, ``groups``, ``bias`` and ``padding_mode``.
    With ``transposed=True`` it behaves as ``nn.ConvTransposeNd`` (``output_padding`` then applies).

    Subclasses implement :meth:`generate_weight`; they may override :meth:`generate_bias` (the
    default returns the stored ``bias`` parameter).

    Kernel caching: a kernel is generated once per forward. In addition, when autograd is off
    (``torch.no_grad()``/``inference_mode``, e.g. evaluation), the generated kernel is cached and
    reused until a parameter of the layer changes (in-place update, ``load_state_dict``, device or
    dtype move), so repeated inference costs the same as a plain conv.

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: int or per-dimension tuple.
        stride, padding, dilation, groups, bias, padding_mode, output_padding: as ``nn.ConvNd``
            / ``nn.ConvTransposeNd``.
        transposed: behave as a transposed convolution.
        odd_kernel: require an odd kernel size in every dimension (generators defined on a grid
            centred at the origin need it).
        fft: how stride-1, non-transposed calls are computed: ``False`` (default) never uses the FFT
            path, ``"auto"`` picks it (:func:`~monai_hyperconv.layers.fft.fft_conv`) per call when the
            cost model :func:`~monai_hyperconv.layers.fft.fft_is_faster` says it is cheaper (large
            kernels; its CPU constants are estimates, not yet fitted on an idle machine, so it is not
            the default yet), ``True`` always uses it. Strided and transposed calls always use
            the direct path. Both paths agree to float rounding (~1e-6 relative in float32).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Union[int, Sequence[int]] = 3,
        stride: Union[int, Sequence[int]] = 1,
        padding: Union[int, Sequence[int], str] = 0,
        dilation: Union[int, Sequence[int]] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        transposed: bool = False,
        output_padding: Union[int, Sequence[int]] = 0,
        odd_kernel: bool = True,
        fft: Union[str, bool] = False,
    ) -> None:
        super().__init__()
        self.fft = check_fft_arg(fft)
        d = check_spatial_dims(spatial_dims)
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            check_positive_int(v, name)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by groups ({groups})."
            )
        ks = ensure_tuple_dims(kernel_size, d, "kernel_size")
        if any(k < 1 for k in ks):
            raise ValueError(f"kernel_size must be positive, got {kernel_size!r}.")
        if odd_kernel and any(k % 2 == 0 for k in ks):
            raise ValueError(
                f"kernel_size must be odd in every dimension for {type(self).__name__} "
                f"(its kernel grid is centred on the origin), got {kernel_size!r}."
            )
        self.spatial_dims = d
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = ks
        self.stride = ensure_tuple_dims(stride, d, "stride")
        self.dilation = ensure_tuple_dims(dilation, d, "dilation")
        if any(s < 1 for s in self.stride) or any(s < 1 for s in self.dilation):
            raise ValueError(f"stride and dilation must be >= 1, got {stride!r}, {dilation!r}.")
        self.groups = groups
        self.transposed = bool(transposed)
        self.output_padding = ensure_tuple_dims(output_padding, d, "output_padding")
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"padding_mode must be zeros, reflect, replicate or circular, got {padding_mode!r}.")
        if self.transposed and padding_mode != "zeros":
            raise ValueError("Only padding_mode='zeros' is supported for transposed convolutions.")
        self.padding_mode = padding_mode
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"padding must be an int, a tuple, 'same' or 'valid', got {padding!r}.")
            if padding == "same" and (self.transposed or any(s != 1 for s in self.stride)):
                raise ValueError("padding='same' is not supported for strided or transposed convolutions.")
            self.padding: Union[str, Tuple[int, ...]] = padding
            if padding == "same":
                # as nn.ConvNd: total padding d*(k-1), the extra pixel on the right
                rev = []
                for dil, k in zip(self.dilation, self.kernel_size):
                    total = dil * (k - 1)
                    left = total // 2
                    rev = [left, total - left] + rev
                self._reversed_padding_repeated_twice = rev
            else:
                self._reversed_padding_repeated_twice = [0, 0] * d
        else:
            self.padding = ensure_tuple_dims(padding, d, "padding")
            self._reversed_padding_repeated_twice = [p for p in reversed(self.padding) for _ in range(2)]
        if bias:
            self.bias: Optional[nn.Parameter] = nn.Parameter(torch.zeros(out_channels))
        else:
            self.register_parameter("bias", None)
        self._cache_key: Optional[tuple] = None
        self._cache: Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]] = None
        self._spec_cache: Optional[tuple] = None

    # ------------------------------------------------------------------ generator interface
    @property
    def weight_shape(self) -> Tuple[int, ...]:
        """Shape of the generated kernel, as the matching ``nn.ConvNd``'s ``weight``."""
        if self.transposed:
            return (self.in_channels, self.out_channels // self.groups, *self.kernel_size)
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    @property
    def fan_in(self) -> int:
        """Fan-in of the equivalent ordinary convolution (``c_in / groups * prod(k)``)."""
        return (self.in_channels // self.groups) * math.prod(self.kernel_size)

    def generate_weight(self) -> torch.Tensor:
        """Return the kernel, shaped :attr:`weight_shape`. Subclasses implement it."""
        raise NotImplementedError

    def generate_bias(self) -> Optional[torch.Tensor]:
        """Return the bias (``None`` for no bias). Default: the stored ``bias`` parameter."""
        return self.bias

    def fit_to_kernel(self, target: torch.Tensor, steps: int = 200, lr: float = 1e-2) -> float:
        """Fit this layer's generator so its kernel reproduces ``target`` (L2), in place.

        The default runs ``steps`` Adam steps on every parameter except the bias; subclasses
        start from a closed-form solution where one exists.

        Args:
            target: a kernel shaped :attr:`weight_shape`.
            steps: optimisation steps.
            lr: Adam learning rate.

        Returns:
            The relative L2 error ``||K_gen - target|| / ||target||`` after fitting.
        """
        target = target.detach().to(self.bias.device if self.bias is not None else target.device)
        if tuple(target.shape) != self.weight_shape:
            raise ValueError(f"target kernel shape {tuple(target.shape)} != weight shape {self.weight_shape}.")
        params = [p for n, p in self.named_parameters() if n != "bias" and p.requires_grad]
        if steps > 0 and params:
            opt = torch.optim.Adam(params, lr=lr)
            scale = target.pow(2).mean().clamp_min(1e-12)
            best_loss, best_state = float("inf"), None
            for _ in range(steps + 1):
                opt.zero_grad()
                loss = (self.generate_weight() - target).pow(2).mean() / scale
                # keep the best parameters seen (before the step that follows), so fitting
                # never ends worse than its closed-form start
                if loss.item() < best_loss:
                    best_loss = loss.item()
                    best_state = {k: v.detach().clone() for k, v in self.state_dict().items()}
                if _ == steps:
                    break
                loss.backward()
                opt.step()
            if best_state is not None:
                self.load_state_dict(best_state)
        return self.relative_kernel_error(target)

    @torch.no_grad()
    def relative_kernel_error(self, target: torch.Tensor) -> float:
        """``||K_gen - target|| / ||target||`` (eps-guarded)."""
        w = self.generate_weight()
        return float((w - target).norm() / target.norm().clamp_min(1e-12))

    # ------------------------------------------------------------------ weight with caching
    def _version_key(self) -> tuple:
        # the autocast state is part of the key: a kernel generated under bf16/fp16 autocast has
        # that precision and must not be reused by a later fp32 forward (or the other way round)
        return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in self.parameters()) + tuple(
            (b.data_ptr(), b._version) for b in self.buffers()
        ) + _autocast_state()

    def weight_and_bias(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The kernel and bias for this forward; cached while autograd is off and parameters are unchanged."""
        if torch.is_grad_enabled() or torch.jit.is_scripting() or _compiling():
            self._cache = None
            return self.generate_weight(), self.generate_bias()
        key = self._version_key()
        if self._cache is None or self._cache_key != key:
            self._cache = (self.generate_weight(), self.generate_bias())
            self._cache_key = key
        return self._cache

    @property
    def weight(self) -> torch.Tensor:
        """The current kernel (generated), so code that reads ``conv.weight`` keeps working."""
        return self.generate_weight()

    def _apply(self, fn, *args, **kwargs):
        self._cache = None
        self._spec_cache = None
        return super()._apply(fn, *args, **kwargs)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, output_size: Optional[Sequence[int]] = None) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"{type(self).__name__} expects a {self.spatial_dims + 2}-D input (batch, channel, spatial...), "
                f"got shape {tuple(x.shape)}."
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects {self.in_channels} input channels, got {x.shape[1]}.")
        w, b = self.weight_and_bias()
        if w.dtype != x.dtype and not torch.is_autocast_enabled():
            w = w.to(x.dtype)
            b = None if b is None else b.to(x.dtype)
        if self.transposed:
            out_pad = self.output_padding
            if output_size is not None:
                out_pad = self._output_padding_for(x, output_size)
            return _CONVT_FN[self.spatial_dims](
                x, w, b, self.stride, self.padding, out_pad, self.groups, self.dilation
            )
        if self.use_fft(x):
            spec = None
            if not (torch.is_grad_enabled() or _compiling() or torch.jit.is_scripting()
                    or torch.is_autocast_enabled(x.device.type)):
                # inference: the kernel is cached (weight_and_bias), so cache its spectrum too
                spec = spectrum_cache(self, w, x, self._reversed_padding_repeated_twice, self.dilation,
                                      self.padding_mode, self._version_key(), self.groups)
            return fft_conv(x, w, b, self._reversed_padding_repeated_twice, self.dilation, self.groups,
                            self.padding_mode, weight_spectrum=spec)
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return _CONV_FN[self.spatial_dims](x, w, b, self.stride, 0, self.dilation, self.groups)
        return _CONV_FN[self.spatial_dims](x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def use_fft(self, x: torch.Tensor) -> bool:
        """Whether a call on ``x`` takes the FFT path (see the ``fft`` argument)."""
        fft = getattr(self, "fft", False)  # modules pickled before the option existed: the direct path
        if fft is False or not fft_applicable(self.transposed, self.stride):
            return False
        if fft is True:
            return True
        return fft_is_faster(x.shape, self.out_channels, self.kernel_size, self.dilation,
                             self._reversed_padding_repeated_twice, self.groups, self.padding_mode, x.device.type)

    def _output_padding_for(self, x: torch.Tensor, output_size: Sequence[int]) -> Tuple[int, ...]:
        size = list(output_size)[-self.spatial_dims :]
        out = []
        for i in range(self.spatial_dims):
            base = (
                (x.shape[i + 2] - 1) * self.stride[i]
                - 2 * self.padding[i]  # type: ignore[index]
                + self.dilation[i] * (self.kernel_size[i] - 1)
                + 1
            )
            op = size[i] - base
            if not 0 <= op < max(self.stride[i], self.dilation[i]):
                raise ValueError(f"output_size {tuple(output_size)} is not reachable from input {tuple(x.shape)}.")
            out.append(op)
        return tuple(out)

    # ------------------------------------------------------------------ baking
    @torch.no_grad()
    def to_conv(self, fft: Union[str, bool] = False) -> nn.Module:
        """A plain ``nn.ConvNd`` (or ``nn.ConvTransposeNd``, or ``FFTConvNd``) whose output equals this layer's.

        The generated kernel is computed once and stored as an ordinary parameter; the result
        depends on torch only.

        Args:
            fft: ``False`` (default): always an ``nn.ConvNd``/``nn.ConvTransposeNd``. ``"auto"``:
                a stride-1, non-transposed layer whose kernel is large enough for the FFT to be considered (:data:`~monai_hyperconv.layers.fft.FFT_MIN_TAPS`)
                becomes an :class:`~monai_hyperconv.layers.fft.FFTConvNd` choosing its path per
                call; ``True``: every stride-1, non-transposed layer becomes an ``FFTConvNd`` that
                always uses the FFT.

        Returns:
            The baked module (in this layer's train/eval mode).
        """
        fft = check_fft_arg(fft)
        w, b = self.generate_weight(), self.generate_bias()
        if fft is not False and fft_applicable(self.transposed, self.stride):
            # asked for at bake time, so the layer's own (training-time) choice does not matter here
            if fft is True or math.prod(self.kernel_size) >= FFT_MIN_TAPS[self.spatial_dims]:
                conv = FFTConvNd(w.detach(), None if b is None else b.detach(), self.padding, self.dilation,
                                 self.groups, self.padding_mode, fft=fft)
                conv.train(self.training)
                return conv
        common = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups,
                      bias=b is not None)
        if self.transposed:
            conv = _CONVT_CLS[self.spatial_dims](
                self.in_channels, self.out_channels, self.kernel_size, output_padding=self.output_padding, **common
            )
        else:
            conv = _CONV_CLS[self.spatial_dims](
                self.in_channels, self.out_channels, self.kernel_size, padding_mode=self.padding_mode, **common
            )
        conv = conv.to(device=w.device, dtype=w.dtype)
        conv.weight.copy_(w.detach())
        if b is not None:
            conv.bias.copy_(b.detach())  # type: ignore[union-attr]
        conv.train(self.training)
        return conv

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * self.spatial_dims:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self.spatial_dims:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.transposed:
            s += ", transposed=True"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        if getattr(self, "fft", "auto") != "auto":
            s += f", fft={self.fft}"
        return s


class ConvNdSignature:
    """Mixin giving a generated conv ``nn.ConvNd``'s constructor ``(in, out, kernel_size, stride, padding,
    dilation, groups, bias, padding_mode, **kwargs)``, with ``spatial_dims`` from the class (``_dims``).

    ``class HyperConv2d(ConvNdSignature, HyperConv): _dims = 2`` is what MONAI's ``Conv`` factory builds.
    """

    _dims: int = 0

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", **kwargs):
        super().__init__(self._dims, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, **kwargs)


def dim_variant(base: type, dims: int) -> type:
    """A ``nn.ConvNd``-signature subclass ``(in, out, kernel_size, stride, padding, ...)`` of ``base``
    (``class {base}{dims}d(ConvNdSignature, base): _dims = dims``, made at run time)."""
    name = f"{base.__name__}{dims}d"
    doc = f"{dims}-D :class:`{base.__name__}` with ``nn.Conv{dims}d``'s constructor signature (for MONAI's ``Conv`` factory)."
    return type(name, (ConvNdSignature, base), {"_dims": dims, "__doc__": doc, "__module__": base.__module__})


def _autocast_state() -> tuple:
    """(enabled, dtype) of autocast for CPU and CUDA: what changes the precision of a generated kernel."""
    return tuple((torch.is_autocast_enabled(d), torch.get_autocast_dtype(d)) for d in ("cpu", "cuda"))


def _compiling() -> bool:
    try:
        return bool(torch.compiler.is_compiling())
    except AttributeError:  # pragma: no cover - older torch
        return False
