"""Losses: dimension-generic total variation and the unsupervised registration loss."""

from .registration import RegistrationLoss
from .tv import TotalVariationLoss

__all__ = ["TotalVariationLoss", "RegistrationLoss"]
