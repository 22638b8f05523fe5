"""What the ovn plugin calls its rows in OVN's northbound database, the external_ids that say whose they
are, and the router ports' MACs: deterministic functions of the network config and the ids (no I/O).

A name is readable (the id it stands for, cleaned) and unique (a hash of the kind, the network config and
the id): ids are unique only within a network config, and two configs may share one NB.
"""

from __future__ import annotations

import hashlib
import re

# external_ids on every row the plugin makes: the network config (what DELETE removes) and the object.
NETCONFIG = "merak-netconfig"
VPC = "merak-vpc"
SUBNET = "merak-subnet"
GROUP = "merak-security-group"
RULE = "merak-rule"
VM = "merak-vm"

# A logical switch port name as the agents take it (OVS's iface-id): at most 128 characters.
_PORT_CHARS = re.compile(r"[^A-Za-z0-9_.:-]")
# OVN's port group names are identifiers: they appear in ACL matches as @name and $name_ip4.
_GROUP_CHARS = re.compile(r"[^A-Za-z0-9_]")
# The first byte of a router port's MAC: locally administered, unicast, and unlike the vhost NICs' (02),
# the VM ports' (06) and the native plugin's anycast gateway's (0e).
ROUTER_MAC_PREFIX = 0x0A


def _digest(kind: str, netconfig_id: str, key: str, length: int = 10) -> str:
    return hashlib.sha256(f"{kind}\0{netconfig_id}\0{key}".encode()).hexdigest()[:length]


def _readable(text: str, limit: int) -> str:
    return _PORT_CHARS.sub("_", text)[:limit]


def owned(netconfig_id: str, **more: str) -> dict[str, str]:
    """external_ids of a row the plugin makes for `netconfig_id` (`more`: VPC, subnet, ... by key)."""
    return {NETCONFIG: netconfig_id, **more}


def router(netconfig_id: str, vpc_id: str) -> str:
    """The Logical_Router of a VPC."""
    return f"merak-{_readable(vpc_id, 64)}-{_digest('lr', netconfig_id, vpc_id)}"


def switch(netconfig_id: str, subnet_id: str) -> str:
    """The Logical_Switch of a subnet."""
    return f"merak-{_readable(subnet_id, 64)}-{_digest('ls', netconfig_id, subnet_id)}"


def router_port(netconfig_id: str, subnet_id: str) -> str:
    """The Logical_Router_Port of a subnet on its VPC's router (the subnet's gateway)."""
    return f"merak-{_readable(subnet_id, 64)}-lrp-{_digest('lrp', netconfig_id, subnet_id)}"


def switch_router_port(netconfig_id: str, subnet_id: str) -> str:
    """The subnet switch's Logical_Switch_Port of type router (the peer of its router port)."""
    return f"merak-{_readable(subnet_id, 64)}-rtr-{_digest('lsp-router', netconfig_id, subnet_id)}"


def vm_port(netconfig_id: str, vm_id: str) -> str:
    """A VM's Logical_Switch_Port: the name its OVS interface carries as external_ids:iface-id."""
    return f"vm-{_readable(vm_id, 100)}-{_digest('lsp-vm', netconfig_id, vm_id, 12)}"


def port_group(netconfig_id: str, group_id: str) -> str:
    """The Port_Group of a security group."""
    return f"pg_{_GROUP_CHARS.sub('_', group_id)[:64]}_{_digest('pg', netconfig_id, group_id)}"


def drop_group(netconfig_id: str) -> str:
    """The config's Port_Group of every port in some security group (what its rules do not allow drops)."""
    return f"pg_merak_drop_{_digest('pg-drop', netconfig_id, '')}"


def router_mac(netconfig_id: str, slot: int) -> str:
    """A subnet's router port MAC: 0a, two bytes of the config's hash, the subnet's slot in three bytes
    (unique within the config, whose slots are)."""
    config = bytes.fromhex(_digest("mac", netconfig_id, "", 4))
    raw = bytes([ROUTER_MAC_PREFIX]) + config + (slot & 0xFFFFFF).to_bytes(3, "big")
    return ":".join(f"{b:02x}" for b in raw)
