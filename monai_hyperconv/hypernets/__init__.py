"""Scale-space hypernetworks (Gonzalez Ortiz et al. 2023): variable resizing, the primary UNet, the SSHN and its baselines.

Importing this package registers in :func:`monai_hyperconv.networks.create_network`:
``"scale_space_unet"`` (the primary UNet, any conv type), ``"fixed_unet"`` (Fixed baseline,
phi = 0.5), ``"stochastic_unet"`` (Stochastic baseline, phi ~ U(0, 0.5) in training),
``"sshn_unet"`` (the hypernetwork), ``"film_unet"`` (FiLM baseline), and the registration
networks ``"registration_unet"`` and ``"sshn_registration"``
(:class:`~monai_hyperconv.hypernets.registration.RegistrationNet`) and ``"hypermorph"``
(:class:`~monai_hyperconv.hypernets.hypermorph.HyperMorph`, Hoopes et al. 2021/2022: conditioned on
the regularisation weight ``lam``; the knob machinery is in :mod:`monai_hyperconv.hypernets.knobs`).
"""

from ..networks.registry import register_network
from .heads import HEADS, ChunkedHead, FullHead, LowRankHead, head_num_params
from .predicted import FiLM, PhiHypernetwork, PredictedConv, ThetaSlot
from .resize import VariableResize, check_phi, check_phi_prior, resolve_phi, sample_phi, scaled_size
from .sshn import FiLMScaleSpaceUNet, ScaleSpaceHyperUNet
from .unet import MaterializedNetwork, ScaleSpaceUNet
from .registration import RegistrationNet
from .knobs import LAM, PHI, Knob, KnobHypernetwork, KnobHyperUNet, as_knobs
from .hypermorph import HyperMorph


__all__ = [
    "VariableResize", "scaled_size", "check_phi", "check_phi_prior", "resolve_phi", "sample_phi",
    "ScaleSpaceUNet", "MaterializedNetwork", "ScaleSpaceHyperUNet", "FiLMScaleSpaceUNet",
    "PredictedConv", "FiLM", "PhiHypernetwork", "ThetaSlot", "RegistrationNet",
    "fixed_unet", "stochastic_unet", "HEADS", "FullHead", "LowRankHead", "ChunkedHead", "head_num_params",
    "Knob", "PHI", "LAM", "as_knobs", "KnobHypernetwork", "KnobHyperUNet", "HyperMorph",
]


def fixed_unet(spatial_dims: int, in_channels: int, out_channels: int, phi: float = 0.5, **kwargs) -> ScaleSpaceUNet:
    """Fixed baseline (Gonzalez Ortiz et al. 2023, Sec. 4.3): the primary UNet trained and used at one ``phi`` (default 0.5)."""
    kwargs.pop("phi_prior", None)  # a Fixed UNet has no prior, whatever a shared config passes
    return ScaleSpaceUNet(spatial_dims, in_channels, out_channels, phi=phi, phi_prior=None, **kwargs)


def stochastic_unet(
    spatial_dims: int, in_channels: int, out_channels: int, phi_prior=(0.0, 0.5), phi=None, **kwargs
) -> ScaleSpaceUNet:
    """Stochastic baseline (Gonzalez Ortiz et al. 2023, Sec. 4.3): one UNet, ``phi ~ U(phi_prior)`` every training step."""
    return ScaleSpaceUNet(spatial_dims, in_channels, out_channels, phi=phi, phi_prior=phi_prior, **kwargs)


def _registration_unet(**kwargs):
    """VoxelMorph-style registration network (MONAI VoxelMorph + our scale-space UNet backbone)."""
    return RegistrationNet(**kwargs)


def _sshn_registration(**kwargs):
    """Registration network whose backbone is a scale-space hypernetwork (Gonzalez Ortiz et al. 2023, Sec. 4.1)."""
    kwargs.setdefault("backbone", "sshn")
    return RegistrationNet(**kwargs)


register_network("scale_space_unet", ScaleSpaceUNet)
register_network("fixed_unet", fixed_unet)
register_network("stochastic_unet", stochastic_unet)
register_network("sshn_unet", ScaleSpaceHyperUNet)
register_network("film_unet", FiLMScaleSpaceUNet)
register_network("registration_unet", _registration_unet)
register_network("sshn_registration", _sshn_registration)
register_network("hypermorph", HyperMorph)
