"""Alcor's REST API as the stand-in answers it: one handler per Alcor manager (node, VPC, subnet, route,
security group, port), with the status codes and bodies alcor-reference.md gives."""

from __future__ import annotations

import copy
import ipaddress
import time
import uuid
from http import HTTPStatus
from typing import Any

from merak_tools.alcor_standin.southbound import Southbound
from merak_tools.alcor_standin.state import AlcorState, Recorded


class _Reply(Exception):
    """An answer decided deep in a handler."""

    def __init__(self, status: int, body: Any = None, message: str = "") -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.message = message


def _error(status: int, message: str) -> _Reply:
    return _Reply(status, message=message)


def _service_of(parts: list[str]) -> str:
    if parts and parts[0] == "nodes":
        return "node"
    if len(parts) >= 3 and parts[0] == "project":
        return {
            "vpcs": "vpc",
            "subnets": "subnet",
            "routers": "router",
            "security-groups": "sg",
            "security-group-rules": "sg",
            "ports": "port",
        }.get(parts[2], "")
    return ""


def spring_error(status: int, message: str, path: str) -> dict[str, Any]:
    """Spring Boot's default error body."""
    return {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "status": status,
        "error": HTTPStatus(status).phrase,
        "message": message,
        "path": path,
    }


class AlcorApi:
    """Alcor's answers on one listener (`service`; "" answers every service), over a shared state;
    a port bound, moved or deleted is told to `southbound` (which pushes goal states to hosts)."""

    def __init__(self, state: AlcorState, service: str, southbound: Southbound | None = None) -> None:
        self.state = state
        self.service = service
        self.southbound = southbound

    def respond(self, method: str, path: str, body: Any) -> tuple[int, Any, str]:
        """(status, JSON body, or bytes, or None) for one request, and the Alcor service it is for."""
        parts = path.strip("/").split("/")
        service = _service_of(parts)
        return (*self._answer(method, path, parts, service, body), service)

    def _answer(self, method: str, path: str, parts: list[str], service: str, body: Any) -> tuple[int, Any]:
        state = self.state
        with state.lock:
            if state.record:
                state.requests.append(Recorded(method, path, copy.deepcopy(body), self.service))
            if state.fail_next:
                return state.fail_next.pop(0), {"status": 500, "error": "forced", "message": "forced by test"}
            for rule in state.fail_rules:
                if rule.method == method and rule.path_part in path:
                    state.fail_rules.remove(rule)
                    return rule.status, spring_error(rule.status, rule.message, path)
            if not service or (self.service and service != self.service):
                return 404, {"status": 404, "error": "Not Found", "path": path}
            try:
                if service == "port":
                    return self._ports(method, parts[1], parts[3] if len(parts) > 3 else "", body)
                handler = getattr(self, f"_{service}")
                status, reply = handler(method, parts, body)
            except _Reply as reply_:
                if reply_.message:
                    return reply_.status, spring_error(reply_.status, reply_.message, path)
                return reply_.status, reply_.body
            return status, reply

    # --- node manager ------------------------------------------------------------------------

    def _node(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        state = self.state
        if method == "POST" and parts == ["nodes", "bulk"]:
            infos = (body or {}).get("host_infos")
            if not infos:  # null or empty: Alcor reads host_infos.get(0)
                raise _error(500, "host_infos is empty")
            echoed = []
            for n, info in enumerate(infos):
                state.nodes[info["node_id"]] = dict(info)
                echoed.append({**info, "ncm_uri": "null/bulk" if n == 0 else None})
            return 200, echoed
        if method == "DELETE" and len(parts) == 2:
            if state.nodes.pop(parts[1], None) is None:
                raise _error(500, f"Node Id {parts[1]} not existing")
            return 200, f"{{Node(Node) Id: {parts[1]}}}".encode()
        raise _error(405, "Method Not Allowed")

    # --- VPC manager -------------------------------------------------------------------------

    def _vpc(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        state = self.state
        project = parts[1]
        vpc_id = parts[3] if len(parts) > 3 else ""
        if method == "POST" and not vpc_id:
            network = (body or {}).get("network")
            if network is None:
                raise _error(500, "NullPointerException")
            vpc = dict(network)
            vpc["id"] = vpc.get("id") or str(uuid.uuid4())
            vpc["project_id"] = project
            vpc["tenant_id"] = vpc.get("tenant_id") or project
            vpc["provider:segmentation_id"] = state.next_segment
            vpc["status"] = "ACTIVE"
            vpc["subnets"] = None
            state.next_segment += 1
            state.vpcs[vpc["id"]] = vpc
            return 201, {"network": vpc}
        if method == "GET" and vpc_id:
            return 200, {"network": state.vpcs.get(vpc_id)}
        if method == "DELETE" and vpc_id:
            if vpc_id not in state.vpcs:
                return 200, {"id": None}
            if any(s["network_id"] == vpc_id for s in state.subnets.values()):
                raise _error(500, "SubnetsNotEmptyException")
            del state.vpcs[vpc_id]
            return 200, {"id": vpc_id}
        raise _error(405, "Method Not Allowed")

    # --- subnet manager ----------------------------------------------------------------------

    def _subnet(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        state = self.state
        project = parts[1]
        subnet_id = parts[3] if len(parts) > 3 else ""
        if method == "POST" and not subnet_id:
            request = (body or {}).get("subnet") or {}
            if not request.get("network_id") or not request.get("cidr"):
                raise _error(500, "ResourceNotValidException")
            cidr = ipaddress.IPv4Network(request["cidr"])
            gateway = request.get("gateway_ip") or str(cidr.network_address + 1)
            if ipaddress.IPv4Address(gateway) not in list(cidr.hosts()):
                raise _error(500, "GatewayIpUnsupported")
            vpc = state.vpcs.get(request["network_id"])
            if vpc is None:
                raise _error(500, "FallbackException")
            if vpc.get("cidr") and not cidr.subnet_of(ipaddress.IPv4Network(vpc["cidr"])):
                raise _error(500, "CidrNotWithinNetworkCidr")
            for other in state.subnets.values():
                if other["network_id"] == vpc["id"] and cidr.overlaps(ipaddress.IPv4Network(other["cidr"])):
                    raise _error(500, "CidrOverlapWithOtherSubnets")
            if not 16 <= cidr.prefixlen <= 28:
                raise _error(500, "verifyCidrBlock")
            subnet = dict(request)
            subnet.update(
                id=request.get("id") or str(uuid.uuid4()), project_id=project,
                tenant_id=request.get("tenant_id") or project, gateway_ip=gateway, attached_router_id=None,
            )  # fmt: skip
            subnet["gateway_port_detail"] = {
                "gateway_macAddress": "aa:bb:cc:00:00:01",
                "gateway_port_id": str(uuid.uuid4()),
            }
            state.subnets[subnet["id"]] = subnet
            return 201, {"subnet": subnet}
        if method == "GET" and subnet_id:
            return 200, {"subnet": state.subnets.get(subnet_id)}
        if method == "DELETE" and subnet_id:
            existing = state.subnets.get(subnet_id)
            if existing is None:
                return 200, {"id": None}
            if existing.get("attached_router_id"):
                raise _error(409, "SubnetBindRouter")
            if any(
                f.get("subnet_id") == subnet_id
                for p in state.ports.values()
                for f in p.get("fixed_ips") or []
            ):
                raise _error(409, "HavePortInSubnet")
            del state.subnets[subnet_id]
            return 200, {"id": subnet_id}
        raise _error(405, "Method Not Allowed")

    # --- route manager -----------------------------------------------------------------------

    def _router(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        state = self.state
        project = parts[1]
        router_id = parts[3] if len(parts) > 3 else ""
        action = parts[4] if len(parts) > 4 else ""
        if method == "POST" and not router_id:
            request = (body or {}).get("router")
            if request is None:
                raise _error(500, "NullPointerException")
            if request.get("status") not in (None, "ACTIVE", "DOWN", "BUILD", "ERROR"):
                raise _error(500, "ResourceNotValidException")
            router = dict(request)
            router.update(
                id=request.get("id") or str(uuid.uuid4()), project_id=project,
                tenant_id=request.get("tenant_id") or project, status="ACTIVE", gateway_ports=[],
            )  # fmt: skip
            state.routers[router["id"]] = router
            return 200, {"router": router}  # no @ResponseStatus: 200, not 201
        if method == "PUT" and action in ("add_router_interface", "remove_router_interface"):
            return self._interface(action, router_id, body or {})
        if method == "DELETE" and router_id and not action:
            existing = state.routers.get(router_id)
            if existing is None:
                return 200, {"id": None}
            if existing["gateway_ports"]:
                raise _error(409, "RouterHasAttachedInterfaces")
            del state.routers[router_id]
            return 200, {"id": router_id}
        raise _error(405, "Method Not Allowed")

    def _interface(self, action: str, router_id: str, request: dict[str, Any]) -> tuple[int, Any]:
        state = self.state
        nulls = dict.fromkeys(
            ("id", "network_id", "port_id", "subnet_id", "subnet_ids", "project_id", "tenant_id", "tags")
        )
        router = state.routers.get(router_id)
        if request.get("subnet_id") and request.get("port_id"):
            raise _error(400, "SpecifyBothSubnetIDAndPortID")
        if router is None:
            raise _error(500 if action == "add_router_interface" else 404, "RouterUnavailable")
        subnet = state.subnets.get(request.get("subnet_id") or "")
        if subnet is None:
            return 200, nulls
        port_id = subnet["gateway_port_detail"]["gateway_port_id"]
        if action == "add_router_interface":
            if subnet.get("attached_router_id"):
                raise _error(409, "PortIsAlreadyInUse")
            if router.get("owner") and router["owner"] != subnet["network_id"]:
                raise _error(409, "RouterHasMultipleVPCs")
            router["owner"] = subnet["network_id"]
            router["gateway_ports"].append(port_id)
            subnet["attached_router_id"] = router_id
        else:
            if subnet.get("attached_router_id") is None:
                raise _error(500, "subnet is not attached")
            subnet["attached_router_id"] = ""
            if port_id in router["gateway_ports"]:
                router["gateway_ports"].remove(port_id)
        return 200, {
            "id": router_id, "network_id": subnet["network_id"], "port_id": port_id,
            "subnet_id": subnet["id"], "subnet_ids": [subnet["id"]], "project_id": subnet["project_id"],
            "tenant_id": subnet["project_id"], "tags": [],
        }  # fmt: skip

    # --- security group manager --------------------------------------------------------------

    def _sg(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        project = parts[1]
        item = parts[3] if len(parts) > 3 else ""
        if parts[2] == "security-group-rules":
            return self._rule(method, project, item, body)
        state = self.state
        if method == "POST" and not item:
            request = (body or {}).get("security_group")
            if request is None:
                raise _error(412, "SecurityGroupRequired")
            if any(not isinstance(r, dict) for r in request.get("security_group_rules") or []):
                raise _Reply(400, {"status": 400, "error": "Bad Request"})
            if request.get("name") == "default":
                raise _error(412, "DefaultSecurityGroupExists")
            group = dict(request)
            group.update(id=request.get("id") or str(uuid.uuid4()), project_id=project)
            group["tenant_id"] = request.get("tenant_id") or project
            # Alcor drops the rules sent and makes two egress rules of its own.
            group["security_group_rules"] = [
                {
                    "id": str(uuid.uuid4()),
                    "security_group_id": group["id"],
                    "direction": "egress",
                    "ethertype": e,
                }
                for e in ("IPv4", "IPv6")
            ]
            state.groups[group["id"]] = group
            return 201, {"security_group": group}
        if method == "GET" and item:
            if item not in state.groups:
                raise _error(412, "SecurityGroupNotFound")
            return 200, {"security_group": state.groups[item]}
        if method == "DELETE" and item:
            if state.groups.pop(item, None) is None:
                raise _error(412, "SecurityGroupRequired")
            for rule_id in [r for r, rule in state.rules.items() if rule["security_group_id"] == item]:
                del state.rules[rule_id]
            return 200, None
        raise _error(405, "Method Not Allowed")

    def _rule(self, method: str, project: str, rule_id: str, body: Any) -> tuple[int, Any]:
        state = self.state
        if method == "POST" and not rule_id:
            request = (body or {}).get("security_group_rule")
            if request is None or not request.get("security_group_id") or not request.get("direction"):
                raise _error(412, "SecurityGroupRuleRequired")
            low, high = request.get("port_range_min"), request.get("port_range_max")
            if (low is not None or high is not None) and not request.get("protocol"):
                raise _error(412, "PortRangeWithoutProtocol")
            if request.get("protocol") in ("tcp", "udp") and (
                low is None or high is None or not 1 <= low <= high <= 65535
            ):
                raise _error(412, "PortRangeInvalid")
            prefix = request.get("remote_ip_prefix")
            if prefix:
                version = ipaddress.ip_network(prefix).version
                if f"IPv{version}" != request.get("ethertype"):
                    raise _error(409, "RemoteIpPrefixEtherTypeConflict")
                if request.get("remote_group_id"):
                    raise _error(409, "RemoteIpPrefixRemoteGroupIdConflict")
            remote = request.get("remote_group_id")
            if request["security_group_id"] not in state.groups or (remote and remote not in state.groups):
                raise _error(412, "SecurityGroupNotFound")
            rule = {**request, "id": request.get("id") or str(uuid.uuid4()), "project_id": project}
            state.rules[rule["id"]] = rule
            return 201, {"security_group_rule": rule}
        if method == "DELETE" and rule_id:
            if state.rules.pop(rule_id, None) is None:
                raise _error(412, "SecurityGroupRuleNotFound")
            return 200, None
        raise _error(405, "Method Not Allowed")

    # --- port manager ------------------------------------------------------------------------

    def _next_ip(self, fixed: dict[str, Any]) -> str:
        """As Alcor's IP manager: the next free address of the port's subnet (the gateway excluded)."""
        state = self.state
        subnet_id = str(fixed.get("subnet_id", ""))
        subnet = state.subnets.get(subnet_id)
        if subnet is None:
            return f"10.0.0.{state.next_host}"
        network = ipaddress.IPv4Network(subnet["cidr"])
        taken = state.taken.setdefault(subnet_id, {subnet["gateway_ip"]})
        first, size = int(network.network_address) + 1, network.num_addresses - 2
        start = state.cursor.get(subnet_id, 0)
        for step in range(size):  # from where the last search stopped: one step when nothing was freed
            offset = (start + step) % size
            address = str(ipaddress.IPv4Address(first + offset))
            if address not in taken:
                state.cursor[subnet_id] = offset + 1
                return address
        raise _error(500, "IpAddressNotEnough")

    def _hold(self, port: dict[str, Any], held: bool) -> None:
        """Mark a port's addresses taken (or free) in their subnets."""
        for ip in port.get("fixed_ips") or []:
            if "ip_address" not in ip:
                continue
            addresses = self.state.taken.setdefault(str(ip.get("subnet_id", "")), set())
            if held:
                addresses.add(ip["ip_address"])
            else:
                addresses.discard(ip["ip_address"])

    def _ports(self, method: str, project: str, port_id: str, body: Any) -> tuple[int, Any]:
        state = self.state
        missing = 404, {"status": 404, "error": "Not Found", "message": "PortEntityNotFound"}
        if method == "POST" and not port_id:
            port = dict((body or {}).get("port") or {})
            if not port.get("network_id"):
                return 412, {"status": 412, "error": "Precondition Failed", "message": "NetworkIdRequired"}
            if port.get("id") in state.ports:
                return 409, {"status": 409, "error": "Conflict", "message": "PortEntityExists"}
            port["id"] = port.get("id") or str(uuid.uuid4())
            port["project_id"] = project
            port.setdefault("tenant_id", project)
            host = state.next_host.to_bytes(3, "big")
            port.setdefault("mac_address", "aa:bb:cc:" + ":".join(f"{b:02x}" for b in host))
            fixed = port.get("fixed_ips") or [{}]
            fixed[0] = {**fixed[0], "ip_address": fixed[0].get("ip_address") or self._next_ip(fixed[0])}
            port["fixed_ips"] = fixed
            state.next_host += 1
            state.ports[port["id"]] = port
            self._hold(port, True)
            state.port_times[port["id"]] = {"posted": time.monotonic()}
            if self.southbound is not None and port.get("binding:host_id"):
                self.southbound.port_rebound(port)
            return 201, {"port": port}
        if method == "GET" and port_id:
            return (200, {"port": state.ports[port_id]}) if port_id in state.ports else missing
        if method == "PUT" and port_id:
            if port_id not in state.ports:
                return missing
            before = state.ports[port_id]
            merged = {
                **before,
                **{k: v for k, v in ((body or {}).get("port") or {}).items() if v is not None},
            }
            self._hold(before, False)
            self._hold(merged, True)
            state.ports[port_id] = merged
            binding = "binding:host_id"
            if self.southbound is not None and (before.get(binding) or "") != (merged.get(binding) or ""):
                self.southbound.port_rebound(merged)
            return 200, {"port": merged}
        if method == "DELETE" and port_id:
            gone = state.ports.pop(port_id, None)
            if gone is None:
                return missing
            self._hold(gone, False)
            if self.southbound is not None:
                self.southbound.port_deleted(gone)
            return 200, None
        return 405, {"status": 405, "error": "Method Not Allowed"}
