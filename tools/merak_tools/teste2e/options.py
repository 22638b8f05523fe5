"""What teste2e builds and where (its options), and Merak's e2e configs built from them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from merak.v1 import compute_pb2, scenario_pb2, topology_pb2
from merak_tools.teste2e.report import E2EError


@dataclass
class Options:
    """What to build and where."""

    scenario_address: str = "localhost:40050"
    topology_address: str = "localhost:40052"
    # Where compute answers: the teardown's progress (the VMs deleted) comes from there.
    compute_address: str = "localhost:40051"
    hosts: int = 5
    vms_per_host: int = 10
    vpcs: int = 1
    subnets: int = 1
    vhosts_per_rack: int = 5
    racks: int = 0
    ports_per_switch: int = 5
    backend: str = "local"
    dataplane: str = "real"
    plugin: str = "native"
    alcor_ip: str = ""
    # With alcor: our own overlay push too (an Alcor that cannot reach the hosts' goal-state servers).
    alcor_own_overlay: bool = False
    # Per-host address blocks of this prefix length (native plugin), so the overlay is routed: 0 = off.
    block_prefix: int = 0
    max_pairs: int = 0
    # VMs per second to start (Merak's RPS scheduler and `rps`); 0: as fast as the lab goes.
    rps: float = 0.0
    keep: bool = False
    report: Path = Path("teste2e-report.json")
    timeout: float = 1800.0
    name: str = ""
    # Merak's REST API (http://host:3000): configs and actions go there, as Merak's teste2e sent them.
    rest: str = ""
    # One self-contained HTML page with the results and their plots.
    html: Path | None = None
    # The test config's fault schedule: applied while compute creates the VMs.
    faults: list[scenario_pb2.ScheduledFault] = field(default_factory=list)
    # Churn once the VMs are made: VMs replaced per second, for how long.
    churn_rate: float = 0.0
    churn_seconds: float = 0.0


def vpc_block(vpc: int, vms: int) -> tuple[int, int]:
    """(base address, prefix) of VPC `vpc`: 10.<vpc+1>.0.0/16, or <vpc+20>.0.0.0/8 when a /16 is too small."""
    if vms <= 60_000:
        return (10 << 24) | ((vpc + 1) << 16), 16
    return (vpc + 20) << 24, 8  # VPC address space is private to its namespaces: any block will do


def _dotted(address: int) -> str:
    return ".".join(str(address >> shift & 255) for shift in (24, 16, 8, 0))


def subnet_plan(vpc: int, subnets: int, vms_per_subnet: int) -> list[tuple[str, str]]:
    """(cidr, gateway) of each subnet of VPC `vpc`: its block cut in equal parts."""
    base, vpc_prefix = vpc_block(vpc, vms_per_subnet * subnets)
    prefix = vpc_prefix + (math.ceil(math.log2(subnets)) if subnets > 1 else 0)
    capacity = 2 ** (32 - prefix) - 3  # network, broadcast and gateway
    if vms_per_subnet > capacity:
        raise E2EError(f"{vms_per_subnet} VMs per subnet do not fit a /{prefix}; use fewer subnets or VPCs")
    step = 2 ** (32 - prefix)
    return [(f"{_dotted(base + j * step)}/{prefix}", _dotted(base + j * step + 1)) for j in range(subnets)]


def build_configs(opts: Options, tag: str) -> dict[str, Any]:
    """Merak's teste2e configs (merak-reference §7), sized by the options."""
    racks = opts.racks or math.ceil(opts.hosts / opts.vhosts_per_rack)
    cidr = "10.200.0.0/16" if opts.hosts < 60_000 else "10.0.0.0/8"
    topology = scenario_pb2.TopologyConfig(
        name=f"Top-{tag}", type=topology_pb2.TREE, number_of_vhosts=opts.hosts, number_of_racks=racks,
        vhosts_per_rack=opts.vhosts_per_rack, ports_per_vswitch=opts.ports_per_switch, data_plane_cidr=cidr,
        backend=opts.backend, dataplane=opts.dataplane,
    )  # fmt: skip
    topology.images.add(id="image-1", name="ACA", registry="meraksim/merak-agent:dev")
    topology.images.add(id="image-2", name="OVS", registry="yanmo96/ovs_only:latest")
    total = opts.hosts * opts.vms_per_host
    per_vpc = total // opts.vpcs
    network = scenario_pb2.NetworkConfig(
        name=f"network-{tag}", number_of_vpcs=opts.vpcs, number_of_subnet_per_vpc=opts.subnets,
        number_of_security_groups=1, plugin=opts.plugin, alcor_own_overlay=opts.alcor_own_overlay,
        block_prefix=opts.block_prefix,
    )  # fmt: skip
    vpc_infos = []
    for v in range(opts.vpcs):
        base, prefix = vpc_block(v, per_vpc)
        vpc = scenario_pb2.VpcInfo(
            tenant_id="123456789",
            project_id="123456789",
            vpc_cidr=f"{_dotted(base)}/{prefix}",
            number_of_subnets=opts.subnets,
        )
        for cidr_s, gateway in subnet_plan(v, opts.subnets, per_vpc // opts.subnets):
            vpc.subnet_info.add(
                subnet_cidr=cidr_s, subnet_gateway=gateway, number_of_vms=per_vpc // opts.subnets
            )
        network.vpcs.append(vpc)
        vpc_infos.append(vpc)
    group = network.security_groups.add(name="sg-1", tenant_id="123456789", project_id="123456789")
    if opts.plugin == "ovn":
        # OVN enforces security groups (stateful ACLs) and a group without rules drops everything, as
        # Neutron's would: the group lets IPv4 in and out, as OpenStack's default group does.
        for direction in ("ingress", "egress"):
            group.rules.add(name=f"allow-{direction}", ethertype="IPv4", direction=direction)
    service = scenario_pb2.ServiceConfig(name=f"service-{tag}")
    if opts.alcor_ip:
        service.services.add(name="alcorIp", cmd="alcorIp", url=opts.alcor_ip, where_to_run="NETWORK")
    compute = scenario_pb2.ComputeConfig(
        name=f"compute-{tag}", number_of_compute_nodes=opts.hosts, number_of_port_per_vm=1,
        vm_deploy_type=compute_pb2.UNIFORM, number_of_vm_per_vpc=per_vpc,
        scheduler=compute_pb2.RPS if opts.rps > 0 else compute_pb2.SEQUENTIAL, rps=opts.rps,
        churn_rate=opts.churn_rate, churn_seconds=opts.churn_seconds,
    )  # fmt: skip
    compute.vpc_info.extend(vpc_infos)
    test = scenario_pb2.TestConfig(name=f"test-{tag}")
    test.tests.add(
        id="test-1", name="pingall", cmd="ping", when_to_run="after:VM_CREATED", where_to_run="AGENT"
    )
    test.fault_schedule.extend(opts.faults)
    return {"topology": topology, "network": network, "service": service, "compute": compute, "test": test}
