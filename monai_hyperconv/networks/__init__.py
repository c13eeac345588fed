"""Networks of the papers, with a selectable conv type, and a name registry.

Classes (MONAI conventions: ``(spatial_dims, in_channels, out_channels, ...)``, keyword-usable,
``conv="conv" | "hyper" | "adaptive" | (name, kwargs)``): :class:`PaperUNet`,
:class:`MultiBranchUNet`, :class:`FlatResidualCNN`, :class:`SimpleCNN`, :class:`SmallResNet`.
Registered names (``list_networks()``) cover the rows of Tables 1-4 of Ma et al. 2022 and its journal extension (HyperSeg: our implementation).
"""

from .blocks import ConvNormAct, DoubleConv, NonLocalBlock
from .classification import PreActResidualBlock, SimpleCNN, SmallResNet
from .flat import FlatResidualBlock, FlatResidualCNN
from .multibranch import MultiBranchUNet
from .receptive_field import chain_receptive_field, receptive_field
from .registry import create_network, list_networks, network_entry, register_network
from .hyperseg import HyperSegNet, PatchHyperNetwork, patchwise_conv  # registers "hyperseg"
from .first_layer import FirstLayerUNet  # registers "first_layer_unet"
from .unet import PaperUNet
from .output import init_output_layer, output_layer
from .paper import PAPER_ROWS, count_parameters, format_parameter_table, parameter_table  # registers the names

__all__ = [
    "create_network", "list_networks", "network_entry", "register_network",
    "PaperUNet", "MultiBranchUNet", "FlatResidualCNN", "FlatResidualBlock", "SimpleCNN", "SmallResNet",
    "PreActResidualBlock", "ConvNormAct", "DoubleConv", "NonLocalBlock",
    "receptive_field", "chain_receptive_field", "count_parameters", "parameter_table", "format_parameter_table",
    "PAPER_ROWS", "init_output_layer", "output_layer", "HyperSegNet", "PatchHyperNetwork", "patchwise_conv", "FirstLayerUNet",
]
