"""Generated-kernel convolutions: the base layer, hyper-convolution, adaptive convolution, baking and conversion.

Importing this package registers ``"HYPER"`` and ``"ADAPTIVE"`` in MONAI's ``Conv`` factory.
"""

from .adaptive import AdaptiveConv, AdaptiveConv1d, AdaptiveConv2d, AdaptiveConv3d
from .base import GeneratedConv, conv_class, conv_transpose_class, dim_variant, ensure_tuple_dims
from .convert import bake, convert, count_generated
from .fft import FFTConvNd, fft_conv, fft_is_faster
from .factories import ConvSpec, generated_conv_names, get_conv_type, register_generated_conv
from .hyperconv import HyperConv, HyperConv1d, HyperConv2d, HyperConv3d, hyperconv_num_params

__all__ = [
    "GeneratedConv", "HyperConv", "HyperConv1d", "HyperConv2d", "HyperConv3d", "hyperconv_num_params",
    "AdaptiveConv", "AdaptiveConv1d", "AdaptiveConv2d", "AdaptiveConv3d",
    "bake", "convert", "count_generated", "register_generated_conv", "get_conv_type", "generated_conv_names",
    "ConvSpec", "FFTConvNd", "fft_conv", "fft_is_faster", "dim_variant", "ensure_tuple_dims", "conv_class", "conv_transpose_class",
]
