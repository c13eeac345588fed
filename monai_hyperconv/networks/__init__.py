"""Networks of the papers, with a selectable conv type, and a name registry."""

from .registry import create_network, list_networks, network_entry, register_network

__all__ = ["create_network", "list_networks", "network_entry", "register_network"]
