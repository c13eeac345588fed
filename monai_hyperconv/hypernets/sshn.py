"""Scale-space hypernetworks (Gonzalez Ortiz et al. 2023) and the FiLM baseline."""

from __future__ import annotations

import copy
import math
from typing import List, Optional, Sequence, Union

import torch
from torch import nn

from ..layers.convert import bake
from .predicted import FiLM, PhiHypernetwork, PredictedConv, ThetaSlot
from .resize import check_phi, check_phi_prior, resolve_phi
from .unet import MaterializedNetwork, ScaleSpaceUNet, accepts_old_width_depth_names

__all__ = ["ScaleSpaceHyperUNet", "FiLMScaleSpaceUNet"]

_DEFAULT_ACT = ("leakyrelu", {"negative_slope": 0.2})


class _PhiConditioned(nn.Module):
    """Shared parts: a primary :class:`ScaleSpaceUNet`, a hypernetwork of phi, and the phi logic."""

    accepts_phi = True
    primary: ScaleSpaceUNet
    hyper: PhiHypernetwork

    def _setup_phi(self, phi, phi_prior) -> None:
        self.phi = None if phi is None else check_phi(phi)
        self.phi_prior = check_phi_prior(phi_prior)

    def resolve_phi(self, phi=None) -> float:
        """The factor ``forward`` would use: ``phi``; a prior draw in training; the default; else an error."""
        return resolve_phi(phi, self.training, self.phi, self.phi_prior)

    def _attach(self, readers: Sequence[nn.Module]) -> int:
        self._slot = ThetaSlot()
        offset = 0
        for r in readers:
            offset = r.attach(self._slot, offset)
        return offset

    def theta(self, phi) -> torch.Tensor:
        """The flat hypernetwork output for ``phi`` (validated), computed once for all layers."""
        return self.hyper(check_phi(phi))

    def forward(self, x: torch.Tensor, phi=None) -> torch.Tensor:
        """Args: x ``(B, in_channels, *spatial)``; phi in (0, 1] (required in eval unless a default is set).
        Returns: ``(B, out_channels, *spatial)``."""
        p = self.resolve_phi(phi)
        with self._slot.bind(self.hyper(p)):  # theta(phi) once per forward, read by every layer
            return self.primary(x, phi=p)


class ScaleSpaceHyperUNet(_PhiConditioned):
    """Scale-space hypernetwork (SSHN, Gonzalez Ortiz et al. 2023): ``y = f_phi(x; h(phi; omega))`` (Eq. 2).

    The primary :class:`ScaleSpaceUNet` has only :class:`PredictedConv` layers and no parameters
    of its own; a :class:`PhiHypernetwork` ``theta(phi) = W h([phi, 1 - phi]) + theta_0``
    predicts every primary weight and bias (``hyper.out_features`` equals the parameter count of
    the same UNet with plain convs). In training ``phi ~ U(phi_prior)`` each forward (paper:
    ``U(0, 0.5)``); in evaluation ``phi`` is required unless a default ``phi`` is given.
    :meth:`materialize` returns the deployable plain network for one ``phi``.

    Args:
        spatial_dims, in_channels, out_channels, channels, num_pools, convs_per_stage, kernel_size,
            act, norm, mode: as :class:`ScaleSpaceUNet` (norm layers must be parameter-free, e.g.
            ``("instance", {"affine": False})``, since only conv parameters are predicted;
            ``features``/``n_stages`` are deprecated names, as there).
        hyper_hidden: hidden widths of the hypernetwork (default (10, 100), the paper's).
        hyper_act: hypernetwork activation (default LeakyReLU).
        hyper_init_scale: initial std of the phi-dependent part ``W h`` relative to theta_0's.
        phi_prior: ``(low, high)`` of the training prior (default (0, 0.5)).
        phi: optional default factor (used outside training when none is given).
        hyper_head: the hypernetwork's output head (see :class:`PhiHypernetwork`): ``"full"`` (default,
            the paper's ``W``, 100 x the primary's parameters), ``"low_rank"`` (``W = U V``) or
            ``"chunked"`` (a shared map and one learned embedding per chunk; chunks never straddle a
            layer's weight or bias). The structured heads make 3-D SSHNs affordable (README, Measured).
        hyper_rank: rank of ``"low_rank"`` (required there, e.g. 8).
        hyper_chunk_size: values per chunk of ``"chunked"`` (required there, e.g. 1024).
    """

    @accepts_old_width_depth_names
    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Union[int, Sequence[int]] = 32,
        num_pools: int = 4,
        convs_per_stage: int = 2,
        kernel_size: int = 3,
        act: Union[str, tuple] = _DEFAULT_ACT,
        norm: Optional[Union[str, tuple]] = None,
        hyper_hidden: Sequence[int] = (10, 100),
        hyper_act: Union[str, tuple] = ("leakyrelu", {"negative_slope": 0.01}),
        hyper_init_scale: float = 0.1,
        phi_prior: Optional[Sequence[float]] = (0.0, 0.5),
        phi: Optional[float] = None,
        mode: str = "linear",
        hyper_head: str = "full",
        hyper_rank: Optional[int] = None,
        hyper_chunk_size: Optional[int] = None,
    ) -> None:
        super().__init__()
        self._setup_phi(phi, phi_prior)

        def make_conv(in_ch, out_ch, **kw):
            return PredictedConv(spatial_dims, in_ch, out_ch, **kw)

        self.primary = ScaleSpaceUNet(
            spatial_dims, in_channels, out_channels, channels=channels, num_pools=num_pools,
            convs_per_stage=convs_per_stage, kernel_size=kernel_size, act=act, norm=norm, conv=make_conv,
            phi=None, phi_prior=None, mode=mode,
        )
        stored = [n for n, p in self.primary.named_parameters()]
        if stored:
            raise ValueError(
                f"The SSHN predicts conv parameters only, but the primary has other learnable parameters "
                f"({stored[:3]}...): use norm=None or a parameter-free norm such as ('instance', {{'affine': False}})."
            )
        self.convs: List[PredictedConv] = [m for m in self.primary.modules() if isinstance(m, PredictedConv)]
        total = self._attach(self.convs)
        segments = [n for conv in self.convs for _, n, _, _ in conv.init_slices(1.0)]  # each weight, each bias
        self.hyper = self._make_hypernetwork(total, hidden=hyper_hidden, act=hyper_act, init_scale=hyper_init_scale,
                                             head=hyper_head, rank=hyper_rank, chunk_size=hyper_chunk_size,
                                             segments=segments)
        self.reset_parameters()

    def _make_hypernetwork(self, out_features: int, **kwargs) -> PhiHypernetwork:
        """The hypernetwork of ``out_features`` primary parameters (a subclass conditions it on other inputs)."""
        return PhiHypernetwork(out_features, **kwargs)

    @property
    def num_primary_params(self) -> int:
        """Parameters of the primary network (= hypernetwork outputs)."""
        return self.hyper.out_features

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """theta_0: a Kaiming-initialised primary UNet; W: small per-slice (see :class:`PhiHypernetwork`)."""
        gain = math.sqrt(2.0 / (1.0 + self.primary.act_slope**2))
        slices = []
        for conv in self.convs:
            g = 1.0 if conv is self.primary.out_conv else gain  # the output conv is linear
            slices += [(conv.offset + s, n, std0, sc) for s, n, std0, sc in conv.init_slices(g)]
        self.hyper.init_output(slices)

    @torch.no_grad()
    def scale_output_init(self, std: float) -> None:
        """Re-initialise the output conv's slice to ``N(0, std^2)`` weights, zero bias, no phi-dependence
        (registration nets start from a near-zero flow, as VoxelMorph)."""
        c = self.primary.out_conv
        b = self.hyper.out.bias
        self.hyper.zero_dependence(c.offset, c.num_predicted)
        b.narrow(0, c.offset, c.num_weight).normal_(0.0, std)
        if c.has_bias:
            b.narrow(0, c.offset + c.num_weight, c.out_channels).zero_()

    @torch.no_grad()
    def materialize(self, phi) -> MaterializedNetwork:
        """The deployable network for ``phi``: ``theta(phi)`` baked into a plain-conv UNet, phi fixed.

        Returns an ordinary module ``forward(x)`` (in eval mode, on this network's device) equal to
        ``self(x, phi)`` up to float rounding; it has no hypernetwork, costs exactly the primary's
        FLOPs and can be exported with ``torch.export``.
        """
        p = check_phi(phi)
        theta = self.hyper(p)
        # copy the primary but keep the *same* slot in the copy, so binding theta here feeds the copy
        primary = copy.deepcopy(self.primary, {id(self._slot): self._slot})
        with self._slot.bind(theta):
            baked = bake(primary, inplace=True)
        baked.phi, baked.phi_prior = p, None
        return MaterializedNetwork(baked, p).eval()

    def extra_repr(self) -> str:
        return (f"num_primary_params={self.num_primary_params}, hyper_head={self.hyper.head!r}, phi={self.phi}, "
                f"phi_prior={self.phi_prior}")


class _FiLMConv(nn.Module):
    """conv followed by FiLM (Gonzalez Ortiz et al. 2023, Sec. 4.3: FiLM after every convolution)."""

    def __init__(self, conv: nn.Module, film: FiLM) -> None:
        super().__init__()
        self.conv = conv
        self.film = film

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.film(self.conv(x))


class FiLMScaleSpaceUNet(_PhiConditioned):
    """FiLM baseline (Gonzalez Ortiz et al. 2023, Sec. 4.3): the primary UNet with its own conv weights and FiLM
    ``gamma * conv(x) + beta`` after every conv, ``gamma, beta`` predicted from ``[phi, 1 - phi]``
    by an MLP; phi sampled from the prior in training.

    Args: as :class:`ScaleSpaceHyperUNet`, plus ``conv`` (the primary's conv type, default plain).
    At initialisation the modulation is the identity plus a small phi-dependent part.
    """

    @accepts_old_width_depth_names
    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Union[int, Sequence[int]] = 32,
        num_pools: int = 4,
        convs_per_stage: int = 2,
        kernel_size: int = 3,
        act: Union[str, tuple] = _DEFAULT_ACT,
        norm: Optional[Union[str, tuple]] = None,
        conv: Union[str, tuple] = "conv",
        hyper_hidden: Sequence[int] = (10, 100),
        hyper_act: Union[str, tuple] = ("leakyrelu", {"negative_slope": 0.01}),
        hyper_init_scale: float = 0.1,
        phi_prior: Optional[Sequence[float]] = (0.0, 0.5),
        phi: Optional[float] = None,
        mode: str = "linear",
    ) -> None:
        super().__init__()
        self._setup_phi(phi, phi_prior)
        from ..layers.factories import get_conv_type

        base = get_conv_type(conv, spatial_dims)

        def make_conv(in_ch, out_ch, **kw):
            return _FiLMConv(base(in_ch, out_ch, **kw), FiLM(out_ch))

        self.primary = ScaleSpaceUNet(
            spatial_dims, in_channels, out_channels, channels=channels, num_pools=num_pools,
            convs_per_stage=convs_per_stage, kernel_size=kernel_size, act=act, norm=norm, conv=make_conv,
            phi=None, phi_prior=None, mode=mode,
        )
        self.films: List[FiLM] = [m for m in self.primary.modules() if isinstance(m, FiLM)]
        total = self._attach(self.films)
        self.hyper = PhiHypernetwork(total, hidden=hyper_hidden, act=hyper_act, init_scale=hyper_init_scale)
        with torch.no_grad():
            self.hyper.init_output(
                [(f.offset + s, n, s0, sc) for f in self.films for s, n, s0, sc in f.init_slices()],
                [(f.offset + s, n, c) for f in self.films for s, n, c in f.init_offsets()],
            )

    @torch.no_grad()
    def materialize(self, phi) -> MaterializedNetwork:
        """A plain UNet for ``phi``: each FiLM folded into its conv (``w' = gamma w``, ``b' = gamma b + beta``).

        Only for plain convs (``conv="conv"``); returns an ordinary module ``forward(x)`` in eval mode.
        """
        p = check_phi(phi)
        theta = self.hyper(p)
        primary = copy.deepcopy(self.primary, {id(self._slot): self._slot})
        primary = bake(primary, inplace=True)  # generated convs (if any) to plain convs first

        def fold(m: nn.Module) -> None:
            for name, child in list(m.named_children()):
                if isinstance(child, _FiLMConv):
                    c, f = child.conv, child.film
                    gamma = theta.narrow(0, f.offset, f.channels)
                    beta = theta.narrow(0, f.offset + f.channels, f.channels)
                    c.weight.mul_(gamma.view((-1,) + (1,) * (c.weight.dim() - 1)).to(c.weight))
                    b = c.bias if c.bias is not None else torch.zeros_like(gamma)
                    new_b = (b * gamma + beta).to(c.weight)
                    if c.bias is None:
                        c.bias = nn.Parameter(new_b)
                    else:
                        c.bias.copy_(new_b)
                    setattr(m, name, c)
                else:
                    fold(child)

        fold(primary)
        primary.phi, primary.phi_prior = p, None
        return MaterializedNetwork(primary, p).eval()
