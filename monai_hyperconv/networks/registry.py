"""A name registry for networks, in the manner of timm's ``create_model``."""

from __future__ import annotations

import fnmatch
from typing import Callable, Dict, List, Optional

from torch import nn

__all__ = ["register_network", "create_network", "list_networks", "network_entry"]

_NETWORKS: Dict[str, Callable[..., nn.Module]] = {}
_DESCRIPTIONS: Dict[str, str] = {}


def register_network(name: str, fn: Optional[Callable[..., nn.Module]] = None, description: str = ""):
    """Register a network constructor under ``name`` (case-insensitive); usable as a decorator.

    ``fn`` is a class or function taking MONAI-style keyword arguments
    (``spatial_dims``, ``in_channels``, ``out_channels``, ...). Registering a taken name raises,
    so two modules cannot silently shadow each other.
    """
    key = name.lower()

    def _add(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if key in _NETWORKS and _NETWORKS[key] is not f:
            raise ValueError(f"A network named {key!r} is already registered ({_NETWORKS[key]!r}).")
        _NETWORKS[key] = f
        doc = (getattr(f, "__doc__", None) or "").strip().splitlines()
        _DESCRIPTIONS[key] = description or (doc[0] if doc else "")
        return f

    return _add(fn) if fn is not None else _add


def network_entry(name: str) -> Callable[..., nn.Module]:
    """The constructor registered under ``name``."""
    key = name.lower()
    if key not in _NETWORKS:
        raise KeyError(f"Unknown network {name!r}. Registered: {', '.join(sorted(_NETWORKS))}.")
    return _NETWORKS[key]


def create_network(name: str, **kwargs) -> nn.Module:
    """Build the network registered under ``name`` with keyword arguments, e.g.
    ``create_network("hyper_unet", spatial_dims=2, in_channels=1, out_channels=1)``.

    The returned module carries its definition as ``network_def`` (``{"_target_":
    "monai_hyperconv.networks.create_network", "name": name, **kwargs}``), which the bundles save
    next to the weights so a checkpoint says which network it holds."""
    net = network_entry(name)(**kwargs)
    try:
        net.network_def = {"_target_": "monai_hyperconv.networks.create_network", "name": name, **kwargs}
    except (AttributeError, TypeError):  # a constructor returning something that takes no attributes
        pass
    return net


def list_networks(pattern: Optional[str] = None, with_descriptions: bool = False):
    """Registered names (sorted), optionally filtered by a glob ``pattern``; with descriptions as a dict."""
    names: List[str] = sorted(n for n in _NETWORKS if pattern is None or fnmatch.fnmatch(n, pattern.lower()))
    return {n: _DESCRIPTIONS[n] for n in names} if with_descriptions else names
