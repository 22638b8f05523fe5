"""The ovn network plugin: OVN's northbound database as the control plane under test (plugin.py)."""

from services.network.plugins.ovn.plugin import OvnPlugin

__all__ = ["OvnPlugin"]
