"""VoxelMorph-style registration (Gonzalez Ortiz et al. 2023, Sec. 4.1) on MONAI's ``VoxelMorph``, with our backbones.

MONAI's :class:`monai.networks.nets.VoxelMorph` already is the framework the paper uses
(UNet(moving ⊕ fixed) -> flow, optional scaling-and-squaring integration with ``DVF2DDF``,
warping with ``Warp``) and takes any backbone, so :class:`RegistrationNet` subclasses it: same
constructor attributes (``backbone``, ``dvf2ddf``, ``warp``, ``integration_steps``,
``half_res``), same output ``(moved, ddf)``. Its ``forward`` is overridden, and only because
MONAI's cannot serve as is:

- it calls ``backbone(x)`` with no way to pass ``phi``, which scale-space backbones need;
- its ``half_res`` path hard-codes ``mode="trilinear"``, which fails for 2-D images;
- a moving/fixed mismatch is reported as one generic shape error; ours names the channel,
  batch or spatial mismatch.
"""

from __future__ import annotations

import copy
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from monai.networks.nets import VoxelMorph
from torch import nn

from ..layers.base import GeneratedConv
from ..utils import check_spatial_dims
from .sshn import FiLMScaleSpaceUNet, ScaleSpaceHyperUNet
from .unet import MaterializedNetwork, ScaleSpaceUNet, accepts_old_width_depth_names

__all__ = ["RegistrationNet"]

_LINEAR = {2: "bilinear", 3: "trilinear"}


def _init_flow(conv: nn.Module, std: float) -> None:
    """Start the flow head near zero (VoxelMorph: N(0, 1e-5) weights, zero bias), for any conv type."""
    target = None
    with torch.no_grad():
        if isinstance(conv, nn.modules.conv._ConvNd):
            conv.weight.normal_(0.0, std)
        elif isinstance(conv, GeneratedConv):
            target = torch.randn(conv.weight_shape) * std
        if getattr(conv, "bias", None) is not None:
            conv.bias.zero_()
    if target is not None:
        conv.fit_to_kernel(target, steps=0)  # closed form for hyper/adaptive kernels (exact for 1x1)


class RegistrationNet(VoxelMorph):
    """Deformable registration network: ``ddf = backbone(moving ⊕ fixed)``, ``moved = Warp(moving, ddf)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of *each* image (the backbone sees ``2 * in_channels``).
        backbone: ``"unet"`` (a :class:`ScaleSpaceUNet`, the Fixed/Stochastic primary), ``"sshn"``
            (a :class:`ScaleSpaceHyperUNet`: phi over its resize layers), ``"film"``, or any module
            mapping ``2 * in_channels`` to ``spatial_dims`` channels at the input size.
        conv: conv type of the ``"unet"``/``"film"`` backbone (``"conv" | "hyper" | "adaptive" | (name, kwargs)``).
        channels, num_pools, convs_per_stage, act, norm: of the built backbone, as
            :class:`ScaleSpaceUNet` (defaults: 16 channels at every stage, 3 down-samplings, i.e.
            4 stages; ``features``/``n_stages`` are deprecated names, as there).
        integration_steps: scaling-and-squaring steps (``DVF2DDF``); 0 (default) predicts the
            displacement directly, as the paper; > 0 is diffeomorphic.
        half_res: integrate at half resolution.
        phi: default factor of a ``"unet"`` backbone (default 0.5); for ``"sshn"``/``"film"`` a
            default used in eval when none is given (default None: required).
        phi_prior: training prior (default None for ``"unet"``, (0, 0.5) for ``"sshn"``/``"film"``).
        flow_init_std: std of the flow layer's initial weights (VoxelMorph: 1e-5): starts near identity.
        backbone_kwargs: further keyword arguments of the built backbone.
    """

    @accepts_old_width_depth_names
    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        backbone: Union[str, nn.Module] = "unet",
        conv: Union[str, tuple] = "conv",
        channels: Union[int, Sequence[int]] = 16,
        num_pools: int = 3,
        convs_per_stage: int = 2,
        act: Union[str, tuple] = ("leakyrelu", {"negative_slope": 0.2}),
        norm: Optional[Union[str, tuple]] = None,
        integration_steps: int = 0,
        half_res: bool = False,
        phi: Optional[float] = None,
        phi_prior: Optional[Sequence[float]] = None,
        flow_init_std: float = 1e-5,
        **backbone_kwargs,
    ) -> None:
        spatial_dims = check_spatial_dims(spatial_dims, (2, 3), reason="MONAI Warp")
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}.")
        if not isinstance(integration_steps, int) or integration_steps < 0:
            raise ValueError(f"integration_steps must be an int >= 0, got {integration_steps!r}.")
        common = dict(channels=channels, num_pools=num_pools, convs_per_stage=convs_per_stage, act=act, norm=norm,
                      **backbone_kwargs)
        if isinstance(backbone, nn.Module):
            net = backbone
        elif backbone == "unet":
            net = ScaleSpaceUNet(spatial_dims, 2 * in_channels, spatial_dims, conv=conv,
                                 phi=0.5 if phi is None and phi_prior is None else phi, phi_prior=phi_prior, **common)
            _init_flow(net.out_conv, flow_init_std)
        elif backbone == "sshn":
            net = ScaleSpaceHyperUNet(spatial_dims, 2 * in_channels, spatial_dims, phi=phi,
                                      phi_prior=(0.0, 0.5) if phi_prior is None else phi_prior, **common)
            net.scale_output_init(flow_init_std)
        elif backbone == "film":
            net = FiLMScaleSpaceUNet(spatial_dims, 2 * in_channels, spatial_dims, conv=conv, phi=phi,
                                     phi_prior=(0.0, 0.5) if phi_prior is None else phi_prior, **common)
            _init_flow(net.primary.out_conv.conv, flow_init_std)
        else:
            raise ValueError(f"backbone must be 'unet', 'sshn', 'film' or an nn.Module, got {backbone!r}.")
        super().__init__(backbone=net, integration_steps=integration_steps, half_res=half_res,
                         spatial_dims=spatial_dims)
        self.in_channels = in_channels

    @property
    def accepts_phi(self) -> bool:
        return bool(getattr(self.backbone, "accepts_phi", False))

    def _check_pair(self, moving: torch.Tensor, fixed: torch.Tensor) -> None:
        for name, t in (("moving", moving), ("fixed", fixed)):
            if not isinstance(t, torch.Tensor) or t.dim() != self.spatial_dims + 2:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"{name} must be a (B, C, {self.spatial_dims} spatial dims) tensor, got {shape}.")
        if moving.shape[1] != self.in_channels or fixed.shape[1] != self.in_channels:
            raise ValueError(
                f"moving has {moving.shape[1]} channel(s) and fixed has {fixed.shape[1]}; this network expects "
                f"in_channels={self.in_channels} for each image."
            )
        if moving.shape[0] != fixed.shape[0]:
            raise ValueError(f"moving and fixed batch sizes differ: {moving.shape[0]} vs {fixed.shape[0]}.")
        if moving.shape[2:] != fixed.shape[2:]:
            raise ValueError(
                f"moving spatial shape {tuple(moving.shape[2:])} != fixed spatial shape {tuple(fixed.shape[2:])}: "
                "resample both images onto one grid first."
            )

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor, phi=None):  # type: ignore[override]
        """Args: moving, fixed ``(B, in_channels, *spatial)``; phi for scale-space backbones.

        Returns:
            ``(moved, ddf)``: the warped moving image and the displacement ``(B, spatial_dims, *spatial)``
            in voxels (MONAI ``Warp`` convention).
        """
        self._check_pair(moving, fixed)
        x = torch.cat([moving, fixed], dim=1)
        if self.accepts_phi:
            x = self.backbone(x, phi=phi)
        elif phi is not None:
            raise ValueError(f"phi was given but the backbone {type(self.backbone).__name__} takes no phi.")
        else:
            x = self.backbone(x)
        return self._warp_with_flow(moving, x)

    def _warp_with_flow(self, moving: torch.Tensor, x: torch.Tensor):
        """The backbone output ``x`` -> ``(moved, ddf)``: shape check, optional half-resolution
        integration (``DVF2DDF``), warping (``Warp``). Shared with HyperMorph."""
        if x.shape[1] != self.spatial_dims or x.shape[2:] != moving.shape[2:]:
            raise ValueError(
                f"the backbone must output (B, {self.spatial_dims}, {tuple(moving.shape[2:])}), got {tuple(x.shape)}."
            )
        mode = _LINEAR[self.spatial_dims]
        if self.half_res:
            x = F.interpolate(x, scale_factor=0.5, mode=mode, align_corners=True) * 0.5  # voxels halve too
        if self.diffeomorphic:
            x = self.dvf2ddf(x)
        if self.half_res:
            x = F.interpolate(x * 2.0, size=moving.shape[2:], mode=mode, align_corners=True)
        return self.warp(moving, x), x

    @torch.no_grad()
    def materialize(self, phi) -> "RegistrationNet":
        """A copy whose backbone is the plain network for ``phi`` (``backbone.materialize(phi)``, or the
        backbone with ``phi`` fixed); call it as ``net(moving, fixed)``. In eval mode."""
        if hasattr(self.backbone, "materialize"):
            fixed_bb = self.backbone.materialize(phi)
        elif self.accepts_phi:
            fixed_bb = MaterializedNetwork(copy.deepcopy(self.backbone), phi)
        else:
            raise ValueError(f"the backbone {type(self.backbone).__name__} has no phi to fix.")
        # deep-copy everything else, substituting the materialised backbone for the original
        return copy.deepcopy(self, {id(self.backbone): fixed_bb}).eval()
