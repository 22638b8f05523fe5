"""Merak's REST entities (its JSON field names) and their mapping to and from the scenario protos; no I/O.

Bodies are what Merak's scenario manager parsed (services/scenario-manager/entities/entities.go): every
field optional, numbers unsigned, lists may be null, enums as free text mapped the way Merak mapped them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import BaseModel, ConfigDict, Field

from merak.errors import InvalidArgument
from merak.v1 import compute_pb2, scenario_pb2, topology_pb2

UInt = Annotated[int, Field(ge=0, le=2**32 - 1)]
# Set by the service (and by actions): a body's value is ignored.
SERVER_FIELDS = frozenset({"id", "status", "created_at", "updated_at"})


class _Body(BaseModel):
    """Unknown fields are ignored, as Go's JSON decoder did."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _Entity(_Body):
    id: str = ""
    name: str = ""
    status: str = ""
    created_at: str | None = None
    updated_at: str | None = None


class Image(_Body):
    """A container image of a topology (Merak: ACA in the name = vhosts, OVS = switches)."""

    id: str = ""
    name: str = ""
    registry: str = ""
    cmd: list[str] | None = None
    args: list[str] | None = None


class Nic(_Body):
    """A NIC of a custom node."""

    name: str = ""
    ip: str = ""


class VNode(_Body):
    """A node of a CUSTOM topology; `type` is vhost (default), vswitch, vrouter or vgateway."""

    name: str = ""
    type: str = ""
    nics: list[Nic] | None = None


class VLink(_Body):
    """A link of a CUSTOM topology, between two node (or NIC) names."""

    name: str = ""
    from_: str = Field("", alias="from")
    to: str = ""


class Topology(_Entity):
    """Merak's TopologyConfig; `type` is tree (default), linear, single, reversed, mesh or custom."""

    type: str = ""
    number_of_vhosts: UInt = 0
    number_of_racks: UInt = 0
    vhosts_per_rack: UInt = 0
    ports_per_vswitch: UInt = 0
    data_plane_cidr: str = ""
    number_of_control_plane_gateways: UInt = 0
    control_plane_gateway_ips: list[str] | None = None
    images: list[Image] | None = None
    vnodes: list[VNode] | None = None
    vlinks: list[VLink] | None = None
    backend: str = Field("", description="new: local (default) or kubernetes")
    dataplane: str = Field("", description="new: real (default) or fake")


class SubnetInfo(_Body):
    """A subnet of a VPC."""

    subnet_id: str = ""
    subnet_cidr: str = ""
    subnet_gateway: str = ""
    number_of_vms: UInt = 0


class VpcInfo(_Body):
    """A VPC and its subnets."""

    vpc_id: str = ""
    tenant_id: str = ""
    project_id: str = ""
    vpc_cidr: str = ""
    number_of_subnets: UInt = 0
    subnet_info: list[SubnetInfo] | None = None


class Router(_Body):
    """A router joining subnets (by their gateways)."""

    id: str = ""
    name: str = ""
    subnet_gateways: list[str] | None = None


class Gateway(_Body):
    """A gateway and its addresses."""

    id: str = ""
    name: str = ""
    ips: list[str] | None = None


class SecurityGroupRule(_Body):
    """A rule of a security group."""

    id: str = ""
    name: str = ""
    description: str = ""
    ethertype: str = ""
    direction: str = ""
    protocol: str = ""
    port_range: str = ""
    remote_group_id: str = ""
    remote_ip_prefix: str = ""


class SecurityGroup(_Body):
    """A security group with its rules."""

    id: str = ""
    name: str = ""
    tenant_id: str = ""
    project_id: str = ""
    rules: list[SecurityGroupRule] | None = None
    apply_to: list[str] | None = None


class Network(_Entity):
    """Merak's NetworkConfig."""

    number_of_vpcs: UInt = 0
    number_of_subnet_per_vpc: UInt = 0
    number_of_security_groups: UInt = 0
    vpcs: list[VpcInfo] | None = None
    routers: list[Router] | None = None
    gateways: list[Gateway] | None = None
    security_groups: list[SecurityGroup] | None = None
    plugin: str = Field("", description="new: native (default), alcor or ovn")
    ovn_nb: str = Field(
        "",
        description="new, ovn plugin: an existing OVN's NB (tcp:IP:PORT or unix:/path); empty: the stack's",
    )
    ovn_sb: str = Field("", description="new, ovn plugin: that OVN's SB; empty: the stack's")


class Compute(_Entity):
    """Merak's ComputeConfig; `vm_deploy_type` uniform (default), assign, skew or random; `scheduler`
    sequential (default), rps (Merak's "skew" too) or random."""

    number_of_compute_nodes: UInt = 0
    number_of_port_per_vm: UInt = 0
    vm_deploy_type: str = ""
    scheduler: str = ""
    number_of_vm_per_vpc: UInt = 0
    vpc_info: list[VpcInfo] | None = None
    vms_per_host: list[UInt] | None = Field(None, description="new: ASSIGN, VMs per compute node")
    seed: UInt = Field(0, description="new: seed of RANDOM, SKEW and the random schedule")
    rps: float = Field(0.0, ge=0, description="new: the RPS scheduler's rate, VMs per second")
    churn_rate: float = Field(0.0, ge=0, description="new: VMs replaced per second once they are made")
    churn_seconds: float = Field(0.0, ge=0, description="new: how long the churn lasts")


class Service(_Body):
    """A service entry: where_to_run NETWORK with cmd alcorIp names Alcor, AGENT/COMPUTE go to the agents."""

    id: str = ""
    name: str = ""
    cmd: str = ""
    url: str = ""
    parameters: list[str] | None = None
    return_code: list[UInt] | None = None
    return_string: list[str] | None = None
    when_to_run: str = ""
    where_to_run: str = ""


class ServiceConfig(_Entity):
    """Merak's ServiceConfig (it has no status)."""

    services: list[Service] | None = None


class Test(_Body):
    """A test of a test config (pingall)."""

    id: str = ""
    name: str = ""
    script: str = ""
    cmd: str = ""
    parameters: list[str] | None = None
    when_to_run: str = ""
    where_to_run: str = ""


class TestConfig(_Entity):
    """Merak's TestConfig."""

    __test__ = False  # not a pytest class
    tests: list[Test] | None = None
    # New (not Merak's): ScheduledFault objects as protobuf JSON, applied while compute deploys.
    fault_schedule: list[dict[str, Any]] | None = None


class Scenario(_Entity):
    """Merak's Scenario: the five configs it deploys."""

    project_id: str = ""
    topology_id: str = ""
    service_config_id: str = ""
    network_config_id: str = ""
    compute_config_id: str = ""
    test_config_id: str = ""


class ServiceAction(_Body):
    """Which service, and what to do: DEPLOY, CHECK, DELETE or UPDATE."""

    service_name: str = ""
    action: str = ""
    status: str = ""


class ScenarioAction(_Body):
    """The body of POST /api/scenarios/actions."""

    scenario_id: str = ""
    service: ServiceAction = Field(default_factory=ServiceAction)
    # The older shape of Merak's first Postman collection: a list, of which the first entry is taken.
    services: list[ServiceAction] | None = None

    def chosen(self) -> ServiceAction:
        """`service`, or the first of `services` when `service` is not given."""
        if not self.service.service_name and self.services:
            return self.services[0]
        return self.service


# --- free text -> enums, as Merak's scenario manager mapped them (handler/message.go) --------------


def _choose(text: str, choices: Mapping[str, int], default: int) -> int:
    return choices.get(text.strip().lower(), default)


def topology_type(text: str) -> int:
    """linear, single, reversed, mesh, custom; anything else (FATTREE, "string") is TREE."""
    choices = {
        "linear": topology_pb2.LINEAR,
        "single": topology_pb2.SINGLE,
        "reversed": topology_pb2.REVERSED,
        "mesh": topology_pb2.MESH,
        "custom": topology_pb2.CUSTOM,
    }
    return _choose(text, choices, topology_pb2.TREE)


def vnode_type(text: str) -> int:
    """vswitch, vrouter, vgateway; anything else is a VHOST."""
    choices = {
        "vswitch": topology_pb2.VSWITCH,
        "vrouter": topology_pb2.VROUTER,
        "vgateway": topology_pb2.VGATEWAY,
    }
    return _choose(text, choices, topology_pb2.VHOST)


def deploy_type(text: str) -> int:
    """assign, skew, random; anything else is UNIFORM."""
    choices = {"assign": compute_pb2.ASSIGN, "skew": compute_pb2.SKEW, "random": compute_pb2.RANDOM}
    return _choose(text, choices, compute_pb2.UNIFORM)


def scheduler(text: str) -> int:
    """sequential; rps (and Merak's "skew"); random; anything else (the Postman "SEQENTIAL") SEQUENTIAL."""
    choices = {
        "rps": compute_pb2.RPS,
        "skew": compute_pb2.RPS,
        "random": compute_pb2.RANDOM_SCHEDULE,
        "random_schedule": compute_pb2.RANDOM_SCHEDULE,
    }
    return _choose(text, choices, compute_pb2.SEQUENTIAL)


# --- body -> proto ---------------------------------------------------------------------------------


def _plain(body: BaseModel, fields: set[str] | None) -> dict[str, Any]:
    """The body as a dict of the given top-level fields (None: all), server fields left out."""
    data = body.model_dump(by_alias=True, exclude_none=True)
    keep = set(data) if fields is None else fields & set(data)
    return {k: v for k, v in data.items() if k in keep and k not in SERVER_FIELDS}


def _topology_dict(data: dict[str, Any]) -> dict[str, Any]:
    if "type" in data:
        data["type"] = topology_type(data["type"])
    for node in data.get("vnodes", []):
        node["type"] = vnode_type(node.get("type", ""))
    data["vlinks"] = [
        {"name": link.get("name", ""), "src": link.get("from", ""), "dst": link.get("to", "")}
        for link in data.get("vlinks", [])
    ]
    if not data["vlinks"]:
        del data["vlinks"]
    return data


def _compute_dict(data: dict[str, Any]) -> dict[str, Any]:
    if "vm_deploy_type" in data:
        data["vm_deploy_type"] = deploy_type(data["vm_deploy_type"])
    if "scheduler" in data:
        data["scheduler"] = scheduler(data["scheduler"])
    return data


def _identity(data: dict[str, Any]) -> dict[str, Any]:
    return data


# Each REST kind: its body model, its proto, and how its JSON becomes the proto's.
TO_PROTO: dict[type[BaseModel], tuple[type[Message], Callable[[dict[str, Any]], dict[str, Any]]]] = {
    Topology: (scenario_pb2.TopologyConfig, _topology_dict),
    Network: (scenario_pb2.NetworkConfig, _identity),
    Compute: (scenario_pb2.ComputeConfig, _compute_dict),
    ServiceConfig: (scenario_pb2.ServiceConfig, _identity),
    TestConfig: (scenario_pb2.TestConfig, _identity),
    Scenario: (scenario_pb2.Scenario, _identity),
}


def to_proto(body: BaseModel, fields: set[str] | None = None) -> tuple[Message, list[str]]:
    """The proto of a body (only `fields` of it, for an update), and the proto fields it sets.

    A string or list that is empty in the body is left out, so an update keeps the stored value (as
    Merak's PUT did); numbers present in the body are set, zero included.
    """
    message_type, adapt = TO_PROTO[type(body)]
    data = _plain(body, fields)
    data = {k: v for k, v in data.items() if not (isinstance(v, str | list) and not v)}
    data = adapt(data)
    message = message_type()
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise InvalidArgument("body", str(exc)[:300]) from None
    names = {f.name for f in message.DESCRIPTOR.fields}
    return message, sorted(k for k in data if k in names)


# --- proto -> JSON ---------------------------------------------------------------------------------


def to_json(message: Message) -> dict[str, Any]:
    """An entity as Merak's JSON: every field (zero values too), enums by name, RFC 3339 times."""
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    if isinstance(message, scenario_pb2.TopologyConfig):
        data["vlinks"] = [
            {"name": link.get("name", ""), "from": link.get("src", ""), "to": link.get("dst", "")}
            for link in data.get("vlinks", [])
        ]
    return data


def reply_json(message: Message) -> dict[str, Any]:
    """A service's gRPC reply as Merak returned it from an action: protojson (lowerCamelCase, enums
    by name, zero values left out)."""
    return json_format.MessageToDict(message)
