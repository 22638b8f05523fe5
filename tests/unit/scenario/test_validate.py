"""Config checks: strict when stored over the scenario's gRPC API, lenient at DEPLOY (merak.skips)."""

from __future__ import annotations

from typing import Any

import pytest

from merak.errors import InvalidArgument
from merak.skips import Skips
from merak.v1 import compute_pb2, scenario_pb2, topology_pb2
from services.scenario import validate
from services.scenario.models import COMPUTE_CONFIG, NETWORK_CONFIG, TOPOLOGY_CONFIG, Kind


def topology(**fields: Any) -> scenario_pb2.TopologyConfig:
    """Merak's teste2e topology config, with `fields` overriding it."""
    values: dict[str, Any] = {
        "id": "topo-1",
        "type": topology_pb2.TREE,
        "number_of_vhosts": 5,
        "number_of_racks": 2,
        "vhosts_per_rack": 5,
        "ports_per_vswitch": 5,
        "data_plane_cidr": "10.200.0.0/16",
    }
    values.update(fields)
    return scenario_pb2.TopologyConfig(**values)


def network() -> scenario_pb2.NetworkConfig:
    """One VPC of two subnets, one security group with a rule, one router joining both subnets."""
    return scenario_pb2.NetworkConfig(
        id="net-1",
        vpcs=[
            scenario_pb2.VpcInfo(
                vpc_cidr="10.1.0.0/16",
                subnet_info=[
                    scenario_pb2.SubnetInfo(subnet_id="s0", subnet_cidr="10.1.0.0/24"),
                    scenario_pb2.SubnetInfo(subnet_cidr="10.1.1.0/24", subnet_gateway="10.1.1.1"),
                ],
            )
        ],
        security_groups=[
            scenario_pb2.SecurityGroup(
                name="sg",
                rules=[scenario_pb2.SecurityGroupRule(direction="egress", remote_ip_prefix="0.0.0.0/0")],
            )
        ],
        routers=[scenario_pb2.Router(subnet_gateways=["s0", "10.1.1.1"])],
    )


def compute(**fields: Any) -> scenario_pb2.ComputeConfig:
    values: dict[str, Any] = {"id": "cmp-1", "number_of_compute_nodes": 5, "number_of_vm_per_vpc": 10}
    values.update(fields)
    return scenario_pb2.ComputeConfig(**values)


def strict_error(kind: Kind[Any], entity: Any) -> InvalidArgument:
    """What the scenario's gRPC API answers (validate's default is strict)."""
    with pytest.raises(InvalidArgument) as caught:
        validate.validate(kind, entity)
    return caught.value


def lenient(kind: Kind[Any], entity: Any) -> list[str]:
    """The warnings of a check at DEPLOY."""
    skips = Skips()
    validate.validate(kind, entity, skips)
    return skips.warnings


def test_well_formed_configs_pass_both_ways_without_warnings() -> None:
    for kind, entity in (
        (TOPOLOGY_CONFIG, topology()),
        (NETWORK_CONFIG, network()),
        (COMPUTE_CONFIG, compute()),
    ):
        validate.validate(kind, entity)
        assert lenient(kind, entity) == []


def test_a_control_plane_gateway_ip_placeholder() -> None:
    config = topology(number_of_control_plane_gateways=1, control_plane_gateway_ips=["10.0.0.1", "string"])
    error = strict_error(TOPOLOGY_CONFIG, config)
    assert (error.field, error.problem) == ("control_plane_gateway_ips[1]", "'string' is not an IPv4 address")
    assert lenient(TOPOLOGY_CONFIG, config) == [
        "control_plane_gateway_ips[1]: 'string' is not an IPv4 address; "
        "ignored (control-plane gateways are not emulated)"
    ]


def test_a_missing_data_plane_cidr_and_ports_per_vswitch() -> None:
    # Strict, both are required; at DEPLOY the topology service fills them in and says so itself.
    assert strict_error(TOPOLOGY_CONFIG, topology(data_plane_cidr="")).field == "data_plane_cidr"
    assert lenient(TOPOLOGY_CONFIG, topology(data_plane_cidr="")) == []
    assert strict_error(TOPOLOGY_CONFIG, topology(ports_per_vswitch=0)).field == "ports_per_vswitch"
    assert lenient(TOPOLOGY_CONFIG, topology(ports_per_vswitch=0)) == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"ports_per_vswitch": 1}, "ports_per_vswitch"),
        ({"data_plane_cidr": "string"}, "data_plane_cidr"),
        ({"data_plane_cidr": "10.0.0.0/30"}, "data_plane_cidr"),
        ({"number_of_vhosts": 0}, "number_of_vhosts"),
        ({"vhosts_per_rack": 0}, "vhosts_per_rack"),
        ({"backend": "vmware"}, "backend"),
    ],
)
def test_topology_errors_stay_errors_when_lenient(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        lenient(TOPOLOGY_CONFIG, topology(**fields))
    assert caught.value.field == field
    assert strict_error(TOPOLOGY_CONFIG, topology(**fields)).field == field


@pytest.mark.parametrize(
    ("rule", "field", "problem"),
    [
        ({"direction": "string"}, "direction", "'string' is not ingress or egress"),
        ({"remote_ip_prefix": "string"}, "remote_ip_prefix", "'string' is not a CIDR"),
    ],
)
def test_a_security_group_rule_placeholder(rule: dict[str, str], field: str, problem: str) -> None:
    config = network()
    config.security_groups[0].rules.add(**rule)
    error = strict_error(NETWORK_CONFIG, config)
    assert (error.field, error.problem) == (f"security_groups[0].rules[1].{field}", problem)
    assert lenient(NETWORK_CONFIG, config) == [
        f"security_groups[0].rules[1].{field}: {problem}; rule skipped"
    ]


def test_a_router_entry_naming_no_subnet() -> None:
    config = network()
    config.routers.add(subnet_gateways=["string"])  # Merak's teste2e
    error = strict_error(NETWORK_CONFIG, config)
    assert error.field == "routers[1].subnet_gateways[0]"
    assert error.problem.startswith("'string' names no subnet of this config")
    assert lenient(NETWORK_CONFIG, config) == [
        "routers[1].subnet_gateways[0]: 'string' names no subnet of this config "
        "(give its id, CIDR or gateway IP); skipped"
    ]


def test_a_vpc_without_cidr_and_a_subnet_cidr_with_host_bits() -> None:
    # Merak's Postman collections: the network service derives the one and normalises the other.
    config = network()
    config.vpcs[0].vpc_cidr = ""
    assert strict_error(NETWORK_CONFIG, config).field == "vpcs[0].vpc_cidr"
    assert lenient(NETWORK_CONFIG, config) == []
    config = network()
    config.vpcs[0].subnet_info[1].subnet_cidr = "10.1.1.7/24"
    assert strict_error(NETWORK_CONFIG, config).field == "vpcs[0].subnet_info[1].subnet_cidr"
    assert lenient(NETWORK_CONFIG, config) == []


def test_network_conflicts_stay_errors_when_lenient() -> None:
    outside = network()
    outside.vpcs[0].subnet_info[1].subnet_cidr = "10.2.0.0/24"
    overlapping = network()
    overlapping.vpcs[0].subnet_info[1].subnet_cidr = "10.1.0.0/23"
    no_vpc = scenario_pb2.NetworkConfig(id="net-1")
    for config, field in (
        (outside, "vpcs[0].subnet_info[1].subnet_cidr"),
        (overlapping, "vpcs[0].subnet_info[1].subnet_cidr"),
        (no_vpc, "vpcs"),
    ):
        with pytest.raises(InvalidArgument) as caught:
            lenient(NETWORK_CONFIG, config)
        assert caught.value.field == field


def test_more_than_one_port_per_vm() -> None:
    config = compute(number_of_port_per_vm=2)
    error = strict_error(COMPUTE_CONFIG, config)
    assert error.field == "number_of_port_per_vm"
    assert lenient(COMPUTE_CONFIG, config) == [
        "number_of_port_per_vm: 2 ports per VM asked; at most 1 is made (Merak made one too); 1 port per VM"
    ]


def test_compute_errors_stay_errors_when_lenient() -> None:
    for config, field in (
        (compute(number_of_vm_per_vpc=0), "number_of_vm_per_vpc"),
        (compute(number_of_vm_per_vpc=3), "number_of_vm_per_vpc"),  # 3 over 5 nodes is 0 per node
        (compute(scheduler=compute_pb2.RPS), "rps"),
    ):
        with pytest.raises(InvalidArgument) as caught:
            lenient(COMPUTE_CONFIG, config)
        assert caught.value.field == field
