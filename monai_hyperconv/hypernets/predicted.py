"""Kernel generators fed by a hypernetwork of the rescaling factor (Gonzalez Ortiz et al. 2023, Eq. 2).

A hypernetwork output ``theta(phi)`` is computed once per forward pass and *bound* to a
:class:`ThetaSlot` shared by every consumer layer of one primary network; each
:class:`PredictedConv` (a :class:`~monai_hyperconv.layers.GeneratedConv`) and each :class:`FiLM`
layer reads its own contiguous slice of it. The binding is per thread (no global state), so one
network can serve concurrent forwards with different ``phi``.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch
from monai.networks.layers.utils import get_act_layer
from torch import nn

from ..layers.base import GeneratedConv
from .heads import make_head

__all__ = ["ThetaSlot", "PredictedConv", "FiLM", "PhiHypernetwork"]


class ThetaSlot:
    """Holder of the flat hypernetwork output for the forward pass running in the current thread.

    Deep copies (``copy.deepcopy``, ``bake``) and pickles get a fresh, empty slot; the copies of all
    layers that shared one slot share the new one (``deepcopy``'s memo keeps the sharing).
    """

    def __init__(self) -> None:
        self._local = threading.local()

    @contextlib.contextmanager
    def bind(self, theta: torch.Tensor) -> Iterator[torch.Tensor]:
        """Make ``theta`` visible to the consumer layers for the duration of the ``with`` block (re-entrant)."""
        prev = getattr(self._local, "theta", None)
        self._local.theta = theta
        try:
            yield theta
        finally:
            self._local.theta = prev

    def get(self) -> torch.Tensor:
        theta = getattr(self._local, "theta", None)
        if theta is None:
            raise RuntimeError(
                "No hypernetwork output is bound: a PredictedConv/FiLM layer was called outside its "
                "hypernetwork's forward. Call the owning network (net(x, phi)) or use net.materialize(phi)."
            )
        return theta

    def __deepcopy__(self, memo) -> "ThetaSlot":
        return ThetaSlot()

    def __reduce__(self):
        return (ThetaSlot, ())


class _SliceReader(nn.Module):
    """A layer that reads ``[offset, offset + num_predicted)`` of a bound hypernetwork output."""

    slot: Optional[ThetaSlot]
    offset: Optional[int]

    def attach(self, slot: ThetaSlot, offset: int) -> int:
        """Connect to ``slot`` at ``offset``; returns the offset after this layer's slice."""
        self.slot, self.offset = slot, int(offset)
        return self.offset + self.num_predicted

    def _slice(self, start: int, length: int) -> torch.Tensor:
        if self.slot is None or self.offset is None:
            raise RuntimeError(f"{type(self).__name__} is not attached to a hypernetwork.")
        theta = self.slot.get()
        return theta.narrow(0, self.offset + start, length)


class PredictedConv(GeneratedConv, _SliceReader):
    """A convolution whose weight and bias are a slice of a hypernetwork output ``theta(phi)``.

    It stores no parameters: ``generate_weight()`` / ``generate_bias()`` return views into the
    output bound by the owning hypernetwork for the current forward pass (weight first, then
    bias, weight in ``nn.ConvNd`` layout). ``to_conv()`` / :func:`~monai_hyperconv.layers.bake`
    therefore turn it into a plain conv holding ``theta(phi)`` while an output is bound.

    Args:
        spatial_dims, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, transposed, output_padding: as :class:`GeneratedConv` / ``nn.ConvNd``.
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
    ) -> None:
        # bias=False: the base would otherwise store a bias parameter; ours is predicted
        super().__init__(
            spatial_dims, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, False,
            padding_mode, transposed, output_padding, odd_kernel=False,
        )
        self.has_bias = bool(bias)
        self.slot = None
        self.offset = None

    @property
    def num_weight(self) -> int:
        return math.prod(self.weight_shape)

    @property
    def num_predicted(self) -> int:
        """Number of hypernetwork outputs this layer consumes (weight numel + bias numel)."""
        return self.num_weight + (self.out_channels if self.has_bias else 0)

    def generate_weight(self) -> torch.Tensor:
        return self._slice(0, self.num_weight).view(self.weight_shape)

    def generate_bias(self) -> Optional[torch.Tensor]:
        return self._slice(self.num_weight, self.out_channels) if self.has_bias else None

    def weight_and_bias(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        # never cached: theta changes with phi while no parameter of this layer changes, so the
        # base class's parameter-version cache would serve a stale kernel; slicing costs nothing
        return self.generate_weight(), self.generate_bias()

    def init_slices(self, gain: float) -> List[Tuple[int, int, float, float]]:
        """``(start, length, theta_0 std, scale std)`` per slice, relative to this layer's offset.

        Weight: Kaiming-normal ``gain / sqrt(fan_in)``; bias: theta_0 = 0, its phi-dependent part
        scaled like PyTorch's default conv bias (``1 / sqrt(fan_in)``).
        """
        std = gain / math.sqrt(self.fan_in)
        rows = [(0, self.num_weight, std, std)]
        if self.has_bias:
            rows.append((self.num_weight, self.out_channels, 0.0, 1.0 / math.sqrt(self.fan_in)))
        return rows

    def extra_repr(self) -> str:
        s = super().extra_repr().replace(", bias=False", "")
        return s + ("" if self.has_bias else ", bias=False") + f", offset={self.offset}"


class FiLM(_SliceReader):
    """Feature-wise linear modulation ``gamma * x + beta`` per channel (Perez et al.; Gonzalez Ortiz et al. 2023, Sec. 4.3).

    ``gamma`` and ``beta`` are a slice of a bound hypernetwork output (``channels`` each).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}.")
        self.channels = channels
        self.slot = None
        self.offset = None

    @property
    def num_predicted(self) -> int:
        return 2 * self.channels

    def init_slices(self, gain: float = 1.0) -> List[Tuple[int, int, float, float]]:
        # theta_0 gives the identity modulation (gamma = 1, beta = 0); the phi-dependent part is small
        return [(0, self.channels, 0.0, 1.0), (self.channels, self.channels, 0.0, 1.0)]

    def init_offsets(self) -> List[Tuple[int, int, float]]:
        """``(start, length, constant)`` of theta_0: ones for gamma, zeros for beta."""
        return [(0, self.channels, 1.0), (self.channels, self.channels, 0.0)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.channels:
            raise ValueError(f"FiLM expects {self.channels} channels, got {x.shape[1]}.")
        view = (1, self.channels) + (1,) * (x.dim() - 2)
        gamma = self._slice(0, self.channels).view(view)
        beta = self._slice(self.channels, self.channels).view(view)
        return x * gamma.to(x.dtype) + beta.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.channels}, offset={self.offset}"


class PhiHypernetwork(nn.Module):
    """The hypernetwork ``theta(phi) = W h([phi, 1 - phi]) + theta_0`` (Gonzalez Ortiz et al. 2023, Sec. 3 and 4.4).

    ``h`` is an MLP with LeakyReLU after every hidden layer (hidden widths 10 and 100 by default,
    Kaiming-initialised weights, zero biases, as the paper); the output layer is linear with one
    output per primary parameter. Its bias ``theta_0`` is an ordinarily initialised primary
    network and ``W`` is scaled per parameter slice so that ``W h`` starts at ``init_scale`` times
    that slice's scale: the initial predicted network is a well-initialised UNet for every phi
    (with ``W`` Kaiming too, the variance would double at every layer).

    Deliberate difference from a bare MLP: ``h`` is multiplied by a constant
    ``1 / E_phi ||h(phi)||_1`` (fixed at construction, stored as a buffer). It changes no function
    the network can represent, only how far one optimiser step moves ``theta``: with Adam, a step
    of size ``lr`` on every entry of ``W`` moves ``theta`` by up to ``lr * ||h||_1`` (~50-100 x lr
    for the default widths), so without it an SSHN diverges at learning rates that suit the plain
    UNet. With it, ``theta`` moves by at most about ``lr`` through ``W`` (plus ``lr`` through ``theta_0``).

    The output head (:mod:`~monai_hyperconv.hypernets.heads`) is the paper's full ``W`` by default
    (``H x P`` weights: 100 x the primary's parameter count). ``head="low_rank"`` (``W = U V``, rank
    ``rank``) and ``head="chunked"`` (chunks of ``chunk_size`` values, each ``A (e_c * h)`` with a
    shared ``A`` and a learned chunk embedding ``e_c``, after von Oswald et al. 2020) keep ``theta``
    affine in ``h`` with orders of magnitude fewer parameters (what makes 3-D SSHNs fit); every
    head stores ``theta_0`` as ``out.bias`` and generates exactly ``out_features`` values.

    Args:
        out_features: number of predicted values (the primary's parameter count).
        hidden: hidden widths (default (10, 100)).
        act: activation name or (name, kwargs) (default LeakyReLU, slope 0.01 as PyTorch's).
        init_scale: std of ``W h`` relative to each slice's scale at initialisation (default 0.1).
        head: ``"full"`` (default, the paper's), ``"low_rank"`` or ``"chunked"``.
        rank: rank ``r`` of ``"low_rank"`` (required there, at most the last hidden width).
        chunk_size: values per chunk of ``"chunked"`` (required there).
        segments: lengths of consecutive output segments (e.g. each layer's weight and bias) that no
            chunk straddles (``"chunked"`` only; default one segment).
    """

    def __init__(
        self,
        out_features: int,
        hidden: Sequence[int] = (10, 100),
        act: Union[str, tuple] = ("leakyrelu", {"negative_slope": 0.01}),
        init_scale: float = 0.1,
        head: str = "full",
        rank: Optional[int] = None,
        chunk_size: Optional[int] = None,
        segments: Optional[Sequence[int]] = None,
    ) -> None:
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if not isinstance(out_features, int) or out_features < 1:
            raise ValueError(f"out_features must be a positive int, got {out_features!r}.")
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden widths must be positive, got {hidden!r}.")
        if not (init_scale >= 0 and math.isfinite(init_scale)):
            raise ValueError(f"init_scale must be a finite number >= 0, got {init_scale!r}.")
        self.hidden = hidden
        self.init_scale = float(init_scale)
        widths = (self._input_width(), *hidden)
        layers: List[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            lin = nn.Linear(a, b)
            nn.init.kaiming_normal_(lin.weight, nonlinearity="leaky_relu")
            nn.init.zeros_(lin.bias)
            layers += [lin, get_act_layer(act)]
        self.body = nn.Sequential(*layers)
        self.head = head
        self.out = make_head(head, widths[-1], out_features, rank=rank, chunk_size=chunk_size, segments=segments)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("feature_scale", torch.ones(()))
        with torch.no_grad():
            l1 = torch.stack([self.body(x).abs().sum() for x in self._calibration_inputs()]).mean()
            self.feature_scale.fill_(1.0 / float(l1.clamp_min(1e-6)))

    # Input-side hooks (overridden by monai_hyperconv.hypernets.knobs.KnobHypernetwork, which
    # conditions on named knobs instead of phi alone): the input width and the inputs over which
    # the constant feature scale and the initial output energy are averaged.
    def _input_width(self) -> int:
        return 2

    def _calibration_inputs(self) -> List[torch.Tensor]:
        """Encoded inputs spanning the conditioning range (CPU, float32): ``[phi, 1 - phi]`` at 33 phis."""
        return [torch.stack([p, 1 - p]) for p in torch.linspace(0.0, 1.0, 33)]

    def _feature_energy(self) -> torch.Tensor:
        """``E ||h||^2`` over the conditioning range (sets the initial scale of ``W``)."""
        grid = torch.linspace(0.0, 1.0, 33, device=self.out.bias.device)  # every head has a bias (theta_0)
        return torch.stack([self.features(float(p)).pow(2).sum() for p in grid]).mean().clamp_min(1e-12)

    @property
    def out_features(self) -> int:
        return self.out.out_features

    def encode(self, phi: float) -> torch.Tensor:
        """The input ``[phi, 1 - phi]`` on this network's device and dtype."""
        w = self.out.bias
        return torch.tensor([phi, 1.0 - phi], device=w.device, dtype=w.dtype)

    def features(self, phi: float) -> torch.Tensor:
        """``h([phi, 1 - phi])``, times the constant ``feature_scale``."""
        return self.body(self.encode(phi)) * self.feature_scale

    def forward(self, phi: float) -> torch.Tensor:
        """The flat vector ``theta(phi)`` of shape ``(out_features,)``."""
        return self.out(self.features(phi))

    @torch.no_grad()
    def init_output(self, slices: Sequence[Tuple[int, int, float, float]],
                    offsets: Sequence[Tuple[int, int, float]] = ()) -> None:
        """Initialise ``theta_0`` and ``W`` slice by slice.

        Args:
            slices: ``(start, length, theta0_std, scale)``: theta_0 ~ N(0, theta0_std^2) and
                W rows ~ N(0, (init_scale * scale)^2 / E||h||^2), so std(W h) = init_scale * scale.
            offsets: ``(start, length, constant)`` added to theta_0 (e.g. FiLM's gamma = 1).
        """
        energy = self._feature_energy()
        row_std = None if self.head == "full" else torch.zeros_like(self.out.bias)
        for start, length, std0, scale in slices:
            b = self.out.bias.narrow(0, start, length)
            if std0 > 0:
                b.normal_(0.0, std0)
            else:
                b.zero_()
            if row_std is None:  # the full head: W rows drawn slice by slice, as ever (same random stream)
                self.out.weight.narrow(0, start, length).normal_(0.0, self.init_scale * scale / math.sqrt(energy.item()))
            else:
                row_std.narrow(0, start, length).fill_(self.init_scale * scale)
        if row_std is not None:  # structured heads: one draw over all slices (rows in no slice: no phi-dependence)
            self.out.init_dependence(row_std, energy.item())
        for start, length, const in offsets:
            self.out.bias.narrow(0, start, length).add_(const)

    @torch.no_grad()
    def zero_dependence(self, start: int, length: int) -> None:
        """Make ``theta[start:start + length]`` independent of phi (equal to ``theta_0`` there)."""
        self.out.zero_dependence(start, length)

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, init_scale={self.init_scale}, head={self.head!r}"
