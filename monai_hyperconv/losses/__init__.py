"""Losses: dimension-generic total variation, the unsupervised registration loss and HyperMorph's."""

from .hypermorph import HyperMorphLoss
from .registration import RegistrationLoss
from .tv import TotalVariationLoss

__all__ = ["TotalVariationLoss", "RegistrationLoss", "HyperMorphLoss"]
