"""Registration of generated-kernel convolutions in MONAI's ``Conv`` factory, and conv-spec resolution."""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Sequence, Tuple, Type, Union

from monai.networks.layers.factories import Conv, split_args

from ..utils import check_spatial_dims
from .adaptive import AdaptiveConv, AdaptiveConv1d, AdaptiveConv2d, AdaptiveConv3d
from .base import GeneratedConv, dim_variant
from .hyperconv import HyperConv, HyperConv1d, HyperConv2d, HyperConv3d

__all__ = ["register_generated_conv", "get_conv_type", "generated_conv_names", "ConvSpec"]

#: a conv type as networks accept it: ``"conv"``, ``"hyper"``, ``"adaptive"``, any name in MONAI's
#: ``Conv`` factory, or a ``(name, kwargs)`` tuple such as ``("hyper", {"n_l": 4})``.
ConvSpec = Union[str, Tuple[str, Dict[str, Any]]]

_REGISTRY: Dict[str, Dict[int, Type[GeneratedConv]]] = {}


def register_generated_conv(name: str, cls: Type[GeneratedConv], variants: Sequence[type] = ()) -> None:
    """Register a :class:`GeneratedConv` subclass under ``name`` in MONAI's ``Conv`` factory.

    After this, ``Conv[name, d]`` returns a class with ``nn.ConvNd``'s constructor signature, so code
    that asks the factory by name builds it. MONAI's own blocks (``Convolution``, ``UNet``, ...)
    always ask for ``Conv.CONV``; to put generated convs into them use
    :func:`monai_hyperconv.layers.convert` on the built network.

    Args:
        name: factory name (upper-cased by MONAI), e.g. ``"HYPER"``.
        cls: the generic class, constructor ``(spatial_dims, in_channels, out_channels, ...)``.
        variants: optional prebuilt 1-D, 2-D, 3-D classes; made with :func:`dim_variant` if omitted.
    """
    if not (isinstance(cls, type) and issubclass(cls, GeneratedConv)):
        raise TypeError(f"cls must be a GeneratedConv subclass, got {cls!r}.")
    by_dim = {d: v for d, v in zip((1, 2, 3), variants)} if variants else {d: dim_variant(cls, d) for d in (1, 2, 3)}
    key = name.upper()
    _REGISTRY[key] = by_dim

    def _factory(dim: int) -> type:
        return by_dim[check_spatial_dims(dim, tuple(by_dim), name=f"Conv[{key!r}, {dim}]: spatial_dims")]

    Conv.add_factory_callable(key, _factory, desc=f"monai_hyperconv {cls.__name__}")


def generated_conv_names() -> Tuple[str, ...]:
    """Names registered through :func:`register_generated_conv`."""
    return tuple(_REGISTRY)


def get_conv_type(conv: ConvSpec, spatial_dims: int) -> Callable[..., Any]:
    """Resolve a conv spec into a constructor with ``nn.ConvNd``'s signature.

    Args:
        conv: ``"conv"`` (plain ``nn.ConvNd``), ``"hyper"``, ``"adaptive"``, any other name in
            MONAI's ``Conv`` factory, or a ``(name, kwargs)`` tuple whose kwargs are bound to the
            generated conv (e.g. ``("hyper", {"n_l": 8})``). Matching is case-insensitive.
        spatial_dims: 1, 2 or 3.

    Returns:
        A callable ``(in_channels, out_channels, kernel_size=, stride=, padding=, dilation=,
        groups=, bias=)`` building the layer.
    """
    spatial_dims = check_spatial_dims(spatial_dims)
    try:
        name, kwargs = split_args(conv)
    except (TypeError, ValueError):
        raise ValueError(f"conv must be a name or a (name, kwargs) tuple, got {conv!r}.") from None
    if not isinstance(name, str):
        raise ValueError(f"conv must be a name or a (name, kwargs) tuple, got {conv!r}.")
    key = name.upper()
    if key in _REGISTRY:
        cls = _REGISTRY[key][spatial_dims]
        return functools.partial(cls, **kwargs) if kwargs else cls
    if key not in Conv.names:
        known = sorted({"CONV", *_REGISTRY})
        raise ValueError(f"Unknown conv type {name!r}; expected one of {known} or a name in MONAI's Conv factory.")
    cls = Conv[key, spatial_dims]
    return functools.partial(cls, **kwargs) if kwargs else cls


register_generated_conv("HYPER", HyperConv, (HyperConv1d, HyperConv2d, HyperConv3d))
register_generated_conv("ADAPTIVE", AdaptiveConv, (AdaptiveConv1d, AdaptiveConv2d, AdaptiveConv3d))
