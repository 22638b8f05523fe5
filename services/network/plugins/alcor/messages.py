"""The JSON Merak sends Alcor to make each object, and what it reads back from Alcor's replies."""

from __future__ import annotations

from typing import Any

from merak.errors import Unavailable
from merak.logs import get_logger
from services.network.models import Node, RouterSpec, RuleSpec, SecurityGroupSpec, VpcSpec, VpcState

log = get_logger(__name__)


def host_info(node: Node, aca_port: int) -> dict[str, Any]:
    """A node as Merak registered it in `POST /nodes/bulk` (`local_ip` is where Alcor reaches ACA)."""
    return {
        "data-path-ip": node.datapath_ip,
        "local_ip": node.container_ip or node.datapath_ip,
        "mac_address": node.mac,
        "node_id": node.id,
        "node_name": node.name,
        "server_port": aca_port,
        "veth": node.veth,
    }


def vpc_body(netconfig_id: str, index: int, vpc: VpcSpec) -> dict[str, Any]:
    """Merak's VPC body, with the VPC's own id (empty: Alcor makes one), name and tenant."""
    return {
        "network": {
            "admin_state_up": True,
            "revision_number": 0,
            "cidr": vpc.cidr,
            "default": True,
            "description": "vpc",
            "dns_domain": "domain",
            "id": vpc.id,
            "is_default": True,
            "mtu": 1400,
            "name": f"merak-{netconfig_id}-vpc{index}",
            "port_security_enabled": True,
            "project_id": vpc.project_id,
            "tenant_id": vpc.tenant_id,
        }
    }


def subnet_body(netconfig_id: str, i: int, j: int, vpc: VpcSpec, vpc_id: str) -> dict[str, Any]:
    """Merak's subnet body plus the gateway, so Alcor's router port and the VMs' route agree."""
    subnet = vpc.subnets[j]
    return {
        "subnet": {
            "cidr": subnet.cidr,
            "id": subnet.id,
            "name": f"merak-{netconfig_id}-vpc{i}-subnet{j}",
            "ip_version": 4,
            "network_id": vpc_id,
            "gateway_ip": subnet.gateway,
            "tenant_id": vpc.tenant_id,
        }
    }


def group_body(netconfig_id: str, index: int, group: SecurityGroupSpec) -> dict[str, Any]:
    """A security group; its rules go separately (Alcor would ignore them here)."""
    inner: dict[str, Any] = {
        "name": group.name or f"merak-{netconfig_id}-sg{index}",
        "description": f"merak network config {netconfig_id}",
        "project_id": group.project_id,
        "tenant_id": group.tenant_id,
        "security_group_rules": [],
    }
    if group.id:
        inner["id"] = group.id  # only a missing id makes Alcor generate one
    return {"security_group": inner}


def rule_body(
    group: SecurityGroupSpec, rule: RuleSpec, group_id: str, remote_group_id: str
) -> dict[str, Any]:
    """A rule for `POST /security-group-rules`; fields the rule leaves open are left out."""
    inner: dict[str, Any] = {
        "security_group_id": group_id,
        "direction": rule.direction,
        "ethertype": rule.ethertype,
        "project_id": group.project_id,
        "tenant_id": group.tenant_id,
    }
    optional: dict[str, Any] = {
        "id": rule.id,
        "name": rule.name,
        "description": rule.description,
        "protocol": rule.protocol,
        "port_range_min": rule.port_min,
        "port_range_max": rule.port_max,
        "remote_ip_prefix": rule.remote_ip_prefix,
        "remote_group_id": remote_group_id,
    }
    inner.update({key: value for key, value in optional.items() if value not in ("", None)})
    return {"security_group_rule": inner}


def router_body(netconfig_id: str, index: int, router: RouterSpec, vpc: VpcState) -> dict[str, Any]:
    """Merak's router body with the VPC's tenant and project, and the VPC as external network."""
    return {
        "router": {
            "admin_state_up": True,
            "description": "router",
            "distributed": True,
            "external_gateway_info": {"enable_snat": True, "external_fixed_ips": [], "network_id": vpc.id},
            "ha": True,
            "id": router.id,
            "name": router.name or f"merak-{netconfig_id}-router{index}",
            "project_id": vpc.project_id,
            "status": "BUILD",
            "tenant_id": vpc.tenant_id,
        }
    }


# --- replies --------------------------------------------------------------------------------------


def id_from(reply: Any, wrapper: str, what: str) -> str:
    """The id of what Alcor made (`<wrapper>.id` of its reply); a reply without one is Unavailable."""
    item = reply.get(wrapper) if isinstance(reply, dict) else None
    value = item.get("id") if isinstance(item, dict) else None
    if not isinstance(value, str) or not value:
        log.warning("alcor_reply_unexpected", creating=what, reply=str(reply)[:200])
        raise Unavailable(f"alcor's reply to creating {what} has no {wrapper}.id")
    return value


def segmentation_id(reply: Any) -> int:
    """The VNI Alcor gave the VPC (`provider:segmentation_id`), or 0."""
    network = reply.get("network") if isinstance(reply, dict) else None
    segment = network.get("provider:segmentation_id") if isinstance(network, dict) else None
    return segment if isinstance(segment, int) else 0
