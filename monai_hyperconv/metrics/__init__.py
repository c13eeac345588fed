"""Efficiency and evaluation tools: FLOPs, Pareto sweeps over phi, registration metrics."""

from .flops import count_flops
from .pareto import (
    atomic_write, choose_phi, default_phis, dice_per_sample, pareto_front, pareto_sweep, plot_pareto, write_csv,
)
from .registration import FoldingFraction, folding_fraction, jacobian_determinant, label_dice, registration_dice, warp_labels
from .baselines import identity_registration_dice, majority_atlas_dice

__all__ = [
    "count_flops", "pareto_sweep", "pareto_front", "choose_phi", "default_phis", "dice_per_sample", "write_csv",
    "plot_pareto", "atomic_write",
    "warp_labels", "label_dice", "registration_dice", "jacobian_determinant", "folding_fraction",
    "FoldingFraction", "majority_atlas_dice", "identity_registration_dice",
]

from .smoothness import conv_weights, kernel_grid_size, kernel_laplacian, layer_smoothness, plot_kernel_grid

__all__ += ["kernel_laplacian", "layer_smoothness", "plot_kernel_grid", "conv_weights", "kernel_grid_size"]
