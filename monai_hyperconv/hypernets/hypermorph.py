"""HyperMorph (Hoopes et al. 2021, 2022): one registration network conditioned on the regularisation weight.

A VoxelMorph-style network (moving ⊕ fixed -> UNet -> dense displacement, MONAI ``Warp`` and,
optionally, ``DVF2DDF`` scaling-and-squaring; :class:`~monai_hyperconv.hypernets.RegistrationNet`)
whose UNet weights all come from a hypernetwork of ``lam`` (``lambda`` is a Python keyword), the
weight of the smoothness term in ``(1 - lam) * similarity + lam * smoothness``
(:class:`~monai_hyperconv.losses.HyperMorphLoss`). ``lam`` is drawn from its prior every training
step, so one trained model replaces a sweep of VoxelMorph models over lambda; at test time
``net(moving, fixed, lam=0.3)`` or ``net.materialize(lam=0.3)`` (a plain registration network).
The knob machinery (:mod:`monai_hyperconv.hypernets.knobs`) also allows ``phi`` (scale-space
resize factor, Gonzalez Ortiz et al. 2023) as a second knob: ``knobs=("lam", "phi")``.
"""

from __future__ import annotations

import copy
from typing import Dict, Optional, Sequence, Union

import torch

from ..utils import check_spatial_dims
from .knobs import KnobHyperUNet, as_knobs
from .registration import RegistrationNet
from .unet import accepts_old_width_depth_names

__all__ = ["HyperMorph"]


class HyperMorph(RegistrationNet):
    """HyperMorph registration network: ``ddf = UNet_{theta(lam)}(moving ⊕ fixed)``, ``moved = Warp(moving, ddf)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of *each* image.
        knobs: knob names / :class:`~monai_hyperconv.hypernets.knobs.Knob` objects / dicts (default
            ``("lam",)``: lam on [0, 1], training prior U(0, 1); e.g.
            ``[{"name": "lam", "prior": [0.0, 0.5]}]`` narrows the prior, ``("lam", "phi")`` adds the
            scale-space factor).
        channels, num_pools, convs_per_stage, act, norm: of the primary UNet, as
            :class:`~monai_hyperconv.hypernets.ScaleSpaceUNet` (default 16 channels at every stage,
            3 down-samplings).
        integration_steps: scaling-and-squaring steps (``DVF2DDF``; 0, the default, predicts the
            displacement directly; > 0 gives a diffeomorphic, stationary-velocity model).
        half_res: integrate at half resolution.
        phi: the fixed resize factor when ``phi`` is not a knob (default 0.5: 2x down-sampling).
        hyper_hidden, hyper_act, hyper_init_scale: of the hypernetwork (see
            :class:`~monai_hyperconv.hypernets.PhiHypernetwork`).
        flow_init_std: std of the flow layer's initial weights (VoxelMorph: 1e-5), not knob-dependent
            at initialisation, so training starts near the identity for every ``lam``.
    """

    @accepts_old_width_depth_names
    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        knobs=("lam",),
        channels: Union[int, Sequence[int]] = 16,
        num_pools: int = 3,
        convs_per_stage: int = 2,
        act: Union[str, tuple] = ("leakyrelu", {"negative_slope": 0.2}),
        norm: Optional[Union[str, tuple]] = None,
        integration_steps: int = 0,
        half_res: bool = False,
        phi: Optional[float] = 0.5,
        hyper_hidden: Sequence[int] = (10, 100),
        hyper_act: Union[str, tuple] = ("leakyrelu", {"negative_slope": 0.01}),
        hyper_init_scale: float = 0.1,
        flow_init_std: float = 1e-5,
    ) -> None:
        spatial_dims = check_spatial_dims(spatial_dims, (2, 3), reason="MONAI Warp")
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}.")
        knobs = as_knobs(knobs)
        if "phi" in [k.name for k in knobs]:
            phi = None
        net = KnobHyperUNet(spatial_dims, 2 * in_channels, spatial_dims, knobs=knobs, channels=channels,
                            num_pools=num_pools, convs_per_stage=convs_per_stage, act=act, norm=norm,
                            hyper_hidden=hyper_hidden, hyper_act=hyper_act, hyper_init_scale=hyper_init_scale,
                            phi=phi)
        net.scale_output_init(flow_init_std)
        super().__init__(spatial_dims=spatial_dims, in_channels=in_channels, backbone=net,
                         integration_steps=integration_steps, half_res=half_res)

    @property
    def knob_names(self):
        return self.backbone.knob_names

    def sample_knobs(self, generator: Optional[torch.Generator] = None) -> Dict[str, float]:
        """One draw of every knob from its training prior (what a training step uses)."""
        return self.backbone.sample_knobs(generator)

    def resolve_knobs(self, **knobs) -> Dict[str, float]:
        """The knob values ``forward`` would use (given; else a prior draw in training; else default; else error)."""
        return self.backbone.resolve_knobs(**knobs)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor, **knobs):  # type: ignore[override]
        """Args: moving, fixed ``(B, in_channels, *spatial)``; one keyword per knob (``lam=0.3``),
        required in evaluation, drawn from the prior in training when absent.

        Returns:
            ``(moved, ddf)``, ``ddf`` ``(B, spatial_dims, *spatial)`` in voxels (MONAI ``Warp`` convention).
        """
        self._check_pair(moving, fixed)
        x = self.backbone(torch.cat([moving, fixed], dim=1), **knobs)
        return self._warp_with_flow(moving, x)

    @torch.no_grad()
    def materialize(self, **knobs) -> RegistrationNet:  # type: ignore[override]
        """A plain :class:`RegistrationNet` for the given knob values (``net.materialize(lam=0.3)``):
        ``forward(moving, fixed) -> (moved, ddf)``, equal to ``self(moving, fixed, **knobs)``; in eval mode."""
        bb = self.backbone.materialize(**knobs)
        net = RegistrationNet(spatial_dims=self.spatial_dims, in_channels=self.in_channels, backbone=bb,
                              integration_steps=self.integration_steps, half_res=self.half_res)
        net.knobs = dict(bb.knobs)
        return net.to(next(self.parameters()).device).eval()
