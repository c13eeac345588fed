"""monai-hyperconv: implicit-kernel convolutions (hyper-convolutions, adaptive kernels, scale-space
hypernetworks) as MONAI components.

Importing the package registers ``Conv["HYPER", d]`` and ``Conv["ADAPTIVE", d]`` in MONAI's
layer factory. ``bake`` reduces any model to plain convs; ``convert`` swaps the convs of any
network for generated ones.
"""

from ._version import __version__
from .layers import AdaptiveConv, GeneratedConv, HyperConv, bake, convert, get_conv_type, register_generated_conv
from . import networks  # noqa: E402  (registers the papers' networks)
from . import hypernets  # noqa: E402  (registers the scale-space networks)

__all__ = [
    "GeneratedConv", "HyperConv", "AdaptiveConv", "bake", "convert", "get_conv_type", "register_generated_conv",
    "__version__",
]
