"""How VMs are created and deleted, per plugin: native (our IPAM + the agents' batch API), alcor (Merak's
PRECREATE -> CREATE through the agents, which call Alcor's port manager) or ovn (our IPAM, a logical
switch port per VM in OVN, the VM plugged into its host's chassis). A registry picks one.
"""

from __future__ import annotations

from merak.errors import InvalidArgument
from services.compute.contracts import PluginName
from services.compute.plugins.alcor import AlcorVms
from services.compute.plugins.base import Call, Calls, VmPlugin, raise_activity_error
from services.compute.plugins.native import NativeVms
from services.compute.plugins.ovn import OvnVms

__all__ = [
    "PLUGINS",
    "AlcorVms",
    "Call",
    "Calls",
    "NativeVms",
    "OvnVms",
    "VmPlugin",
    "plugin_type",
    "raise_activity_error",
]

PLUGINS: dict[str, type[VmPlugin]] = {cls.name: cls for cls in (NativeVms, AlcorVms, OvnVms)}


def plugin_type(name: str, field: str = "config.plugin") -> type[VmPlugin]:
    """The plugin called `name` ("" = native); an unknown name is an error that lists the known ones."""
    found = PLUGINS.get(name or PluginName.NATIVE)
    if found is None:
        raise InvalidArgument(field, f"unknown plugin {name!r}; known: {', '.join(sorted(PLUGINS))}")
    return found
