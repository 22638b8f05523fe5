"""Which VMs go on which host: the deploy types (UNIFORM, ASSIGN, SKEW, RANDOM), pure and seeded."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from merak import capacity
from merak.errors import InvalidArgument, ResourceExhausted
from merak.v1 import common_pb2, compute_pb2

MAX_VMS = 10_000_000
# A Linux bridge holds 1,023 ports (BR_MAX_PORTS is 1,024, port 0 unused); a VPC's bridge on a real vhost
# has its VXLAN device on one, and a VM's veth on each of the others.
MAX_REAL_VMS_PER_VPC_AND_VHOST = 1022
# The data plane of a vhost that keeps nothing in the kernel (common.proto: InternalComputeInfo.dataplane).
FAKE_DATAPLANE = "fake"


@dataclass(frozen=True, slots=True)
class Host:
    """An emulated host (a topology compute node) as compute needs it."""

    name: str
    index: int
    agent_endpoint: str
    datapath_ip: str
    fake: bool = False  # its data plane is fake (has_fake_dataplane)

    @property
    def on_this_machine(self) -> bool:
        """Its agent listens on a unix socket: the vhost is a namespace of this machine (local backend)."""
        return self.agent_endpoint.startswith("unix:")


def has_fake_dataplane(pod: common_pb2.InternalComputeInfo) -> bool:
    """The vhost keeps nothing in the kernel: no overlay to program, no bridge or memory to run out of."""
    return pod.dataplane == FAKE_DATAPLANE


@dataclass(frozen=True, slots=True)
class SubnetRef:
    """A subnet VMs are put in."""

    vpc_index: int
    subnet_index: int
    vpc_id: str
    subnet_id: str
    project_id: str
    tenant_id: str
    cidr: str
    gateway: str


@dataclass(frozen=True, slots=True)
class PlannedVm:
    """One VM to be: its name (unique in its host), id (unique in the config), subnet."""

    name: str
    vm_id: str
    host: str
    subnet: SubnetRef


# VMs per host and subnet: a deployment before any VM is built (host name -> subnet -> how many).
Counts = dict[str, dict[SubnetRef, int]]


def hosts_from_pods(pods: Sequence[common_pb2.InternalComputeInfo]) -> list[Host]:
    """The hosts of a compute config; each needs a name and a way to reach its agent."""
    if not pods:
        raise InvalidArgument("config.pods", "at least one compute node (the topology's vhosts) is required")
    hosts, seen = [], set()
    for i, pod in enumerate(pods):
        if not pod.name:
            raise InvalidArgument(f"config.pods[{i}].name", "required")
        if pod.name in seen:
            raise InvalidArgument(f"config.pods[{i}].name", f"duplicate compute node {pod.name!r}")
        seen.add(pod.name)
        endpoint = pod.agent_endpoint or (f"{pod.container_ip}:40054" if pod.container_ip else "")
        if not endpoint:
            raise InvalidArgument(f"config.pods[{i}].agent_endpoint", "required (or container_ip, as Merak)")
        hosts.append(Host(pod.name, i, endpoint, pod.datapath_ip, fake=has_fake_dataplane(pod)))
    return hosts


def subnets_of(deploy: compute_pb2.InternalVMDeployInfo) -> list[tuple[SubnetRef, int]]:
    """Every subnet of the request with its per-host VM count (Merak's number_vms)."""
    if not deploy.vpcs:
        raise InvalidArgument("config.vm_deploy.vpcs", "at least one VPC is required")
    found = []
    for v, vpc in enumerate(deploy.vpcs):
        if not vpc.vpc_id:
            raise InvalidArgument(f"config.vm_deploy.vpcs[{v}].vpc_id", "required")
        if not vpc.subnets:
            raise InvalidArgument(f"config.vm_deploy.vpcs[{v}].subnets", "at least one subnet is required")
        for s, subnet in enumerate(vpc.subnets):
            if not subnet.subnet_id:
                raise InvalidArgument(f"config.vm_deploy.vpcs[{v}].subnets[{s}].subnet_id", "required")
            ref = SubnetRef(
                v,
                s,
                vpc.vpc_id,
                subnet.subnet_id,
                vpc.project_id,
                vpc.tenant_id,
                subnet.subnet_cidr,
                subnet.subnet_gw,
            )
            found.append((ref, int(subnet.number_vms)))
    return found


def _check_real_capacity(hosts: Sequence[Host], counts: Counts) -> None:
    """Refuse, before anything is made, VMs that a real vhost cannot hold (a VPC's bridge ports)."""
    for host in hosts:
        if host.fake:
            continue
        per_vpc: dict[str, int] = {}
        for ref, n in counts[host.name].items():
            per_vpc[ref.vpc_id] = per_vpc.get(ref.vpc_id, 0) + n
        for vpc_id, n in per_vpc.items():
            if n > MAX_REAL_VMS_PER_VPC_AND_VHOST:
                raise ResourceExhausted(
                    f"config.vm_deploy: {n} VMs of VPC {vpc_id} on real vhost {host.name}; at most "
                    f"{MAX_REAL_VMS_PER_VPC_AND_VHOST} fit (a Linux bridge holds 1,023 ports, one is the "
                    "VPC's VXLAN device): use more vhosts, more VPCs, or the fake dataplane"
                )


def check_machine_room(
    hosts: Sequence[Host],
    counts: Counts,
    room: capacity.MachineRoom | None,
    *,
    chassis: bool = False,
    routed: bool = False,
) -> None:
    """Refuse, before anything is made, real VMs this machine cannot hold (memory, namespaces), and
    with `chassis` (OVN), the chassis every host of this machine that gets VMs becomes, fake or real."""
    if chassis and room is not None:
        _check_chassis_room(hosts, counts, room)
    vms_per_vpc: dict[str, int] = {}
    vhosts_per_vpc: dict[str, int] = {}
    for host in hosts:
        if host.fake or not host.on_this_machine:
            continue
        here: dict[str, int] = {}
        for ref, n in counts.get(host.name, {}).items():
            if n:
                here[ref.vpc_id] = here.get(ref.vpc_id, 0) + n
        for vpc_id, n in here.items():
            vms_per_vpc[vpc_id] = vms_per_vpc.get(vpc_id, 0) + n
            vhosts_per_vpc[vpc_id] = vhosts_per_vpc.get(vpc_id, 0) + 1
    vms = sum(vms_per_vpc.values())
    if room is None or not vms:
        return
    need = sum(
        capacity.real_vms_bytes(n, vhosts_per_vpc[vpc], routed=routed) for vpc, n in vms_per_vpc.items()
    )
    if need > room.memory_bytes:
        fit = vms * room.memory_bytes // need
        raise ResourceExhausted(
            f"config.vm_deploy: {vms:,} real VMs on this machine need ~{need / capacity.GIB:.1f} GiB of "
            f"kernel memory (~{need // vms >> 10} KiB each, their overlay entries on the other vhosts "
            f"included) and {room.memory_bytes / capacity.GIB:.1f} GiB is available beyond the reserve: "
            f"about {fit:,} fit. Use fewer VMs, or the fake dataplane"
        )
    namespaces = vms + sum(vhosts_per_vpc.values())  # a namespace per VM, and per VPC on each vhost
    if namespaces > room.namespaces:
        raise ResourceExhausted(
            f"config.vm_deploy: {vms:,} real VMs need {namespaces:,} network namespaces and this machine "
            f"allows {room.namespaces:,} more (user.max_net_namespaces): use fewer VMs, or the fake dataplane"
        )


def _check_chassis_room(hosts: Sequence[Host], counts: Counts, room: capacity.MachineRoom) -> None:
    on_machine = {h.name: sum(counts.get(h.name, {}).values()) for h in hosts if h.on_this_machine}
    here = [name for name, n in on_machine.items() if n]
    ports = sum(on_machine[name] for name in here)
    need = capacity.chassis_bytes(len(here), ports)
    if need > room.memory_bytes:
        fit = len(here) * room.memory_bytes // need
        per_chassis, per_port = capacity.CHASSIS_BYTES >> 20, capacity.CHASSIS_PORT_BYTES >> 10
        raise ResourceExhausted(
            f"config.vm_deploy: {len(here):,} hosts become OVN chassis (ovsdb-server, ovs-vswitchd and "
            f"ovn-controller each, ~{per_chassis} MiB, and ~{per_port} KiB per port) and need "
            f"~{need / capacity.GIB:.1f} GiB; {room.memory_bytes / capacity.GIB:.1f} GiB is available "
            f"beyond the reserve: about {fit:,} chassis fit. Use fewer hosts"
        )


def count(config: compute_pb2.InternalComputeConfiguration, hosts: Sequence[Host]) -> Counts:
    """How many VMs each host gets in each subnet, by the deploy type; deterministic for the same
    config (and seed). The deployment's size and what a real vhost holds are checked here, so that
    every other check (subnet room, the machine's room) can run on counts before a VM is built."""
    deploy = config.vm_deploy
    subnets = subnets_of(deploy)
    kind = deploy.deploy_type
    if kind != compute_pb2.ASSIGN:  # the size is known before any VM is placed: check it first
        requested = sum(per_host for _, per_host in subnets) * len(hosts)
        if requested > MAX_VMS:
            raise ResourceExhausted(
                f"config.vm_deploy: {requested:,} VMs; at most {MAX_VMS:,} per deployment"
            )
    counts: Counts = {h.name: {} for h in hosts}
    if kind == compute_pb2.ASSIGN:
        _assign(deploy, hosts, subnets, counts)
    else:
        for ref, per_host in subnets:
            if kind == compute_pb2.UNIFORM:
                for host in hosts:
                    counts[host.name][ref] = per_host
            elif kind == compute_pb2.SKEW:
                _skew(ref, per_host * len(hosts), hosts, counts, config.seed)
            elif kind == compute_pb2.RANDOM:
                rng = random.Random(f"{config.seed}:{ref.vpc_id}:{ref.subnet_id}")
                for _ in range(per_host * len(hosts)):
                    host = hosts[rng.randrange(len(hosts))]
                    counts[host.name][ref] = counts[host.name].get(ref, 0) + 1
            else:
                raise InvalidArgument("config.vm_deploy.deploy_type", f"unknown deploy type {int(kind)}")
    total = sum(n for per in counts.values() for n in per.values())
    if total == 0:
        raise InvalidArgument(
            "config.vm_deploy.vpcs", "no VM to create: every subnet's number_vms is 0 (or no host got any)"
        )
    if total > MAX_VMS:
        raise ResourceExhausted(f"config.vm_deploy: {total:,} VMs; at most {MAX_VMS:,} per deployment")
    _check_real_capacity(hosts, counts)
    return counts


def place(hosts: Sequence[Host], counts: Counts) -> dict[str, list[PlannedVm]]:
    """The VMs of `counts`, named per host: one object per VM, so O(VMs) (run it off the event loop)."""
    return {host.name: place_host(host.name, counts[host.name]) for host in hosts}


def place_host(host: str, counts: dict[SubnetRef, int]) -> list[PlannedVm]:
    """The VMs of one host's counts, named by subnet and position."""
    vms = []
    for ref, n in sorted(counts.items(), key=lambda item: (item[0].vpc_index, item[0].subnet_index)):
        for k in range(n):
            name = f"v{ref.vpc_index}-{ref.subnet_index}-{k}"
            vms.append(PlannedVm(name, f"{host}.{name}", host, ref))
    return vms


def plan(
    config: compute_pb2.InternalComputeConfiguration, hosts: Sequence[Host]
) -> dict[str, list[PlannedVm]]:
    """VMs per host, by the deploy type (`count`, then `place`)."""
    return place(hosts, count(config, hosts))


def counted(planned: dict[str, list[PlannedVm]]) -> Counts:
    """The counts of planned VMs (an UPDATE's new ones, say), for the checks that take counts."""
    counts: Counts = {}
    for host, vms in planned.items():
        per: dict[SubnetRef, int] = counts.setdefault(host, {})
        for vm in vms:
            per[vm.subnet] = per.get(vm.subnet, 0) + 1
    return counts


def _assign(
    deploy: compute_pb2.InternalVMDeployInfo,
    hosts: Sequence[Host],
    subnets: Sequence[tuple[SubnetRef, int]],
    counts: Counts,
) -> None:
    methods = deploy.deploy_method
    if len(methods) != len(hosts):
        raise InvalidArgument(
            "config.vm_deploy.deploy_method",
            f"ASSIGN needs one entry per host: {len(methods)} for {len(hosts)} hosts",
        )
    requested = 0
    for i, method in enumerate(methods):  # the size first: nothing loops over VMs before it is known
        requested += method.num_of_vm
        if requested > MAX_VMS:
            raise ResourceExhausted(
                f"config.vm_deploy.deploy_method[{i}].num_of_vm: {requested:,} VMs by this entry; at most "
                f"{MAX_VMS:,} per deployment"
            )
    by_key = {key: h for h in hosts for key in (h.name, h.datapath_ip) if key}
    refs = {key: ref for ref, _ in subnets for key in (ref.subnet_id, ref.cidr) if key}
    used: set[str] = set()
    for i, method in enumerate(methods):
        where = f"config.vm_deploy.deploy_method[{i}]"
        # Merak's InternalVMPod names its host by pod_ip; ours also takes the vhost name there.
        host = by_key.get(method.pod_ip) if method.pod_ip else hosts[i]
        if host is None:
            raise InvalidArgument(f"{where}.pod_ip", f"no compute node named or addressed {method.pod_ip!r}")
        if host.name in used:
            raise InvalidArgument(f"{where}.pod_ip", f"host {host.name!r} is assigned twice")
        used.add(host.name)
        chosen = []
        for s, key in enumerate(method.subnets):
            if key not in refs:
                raise InvalidArgument(f"{where}.subnets[{s}]", f"unknown subnet {key!r}")
            chosen.append(refs[key])
        chosen = chosen or [ref for ref, _ in subnets]
        # Round-robin over the chosen subnets: each gets its share, the first ones one more.
        share, extra = divmod(method.num_of_vm, len(chosen))
        for k, ref in enumerate(chosen):
            n = share + (1 if k < extra else 0)
            if n:
                counts[host.name][ref] = counts[host.name].get(ref, 0) + n


def _skew(ref: SubnetRef, total: int, hosts: Sequence[Host], counts: Counts, seed: int) -> None:
    """Zipf-like: the host of rank r gets a share 1/(r+1); ranks are a seeded shuffle of the hosts."""
    order = list(hosts)
    random.Random(f"{seed}:skew:{ref.vpc_id}:{ref.subnet_id}").shuffle(order)
    weights = [1 / (rank + 1) for rank in range(len(order))]
    scale = total / sum(weights)
    shares = [w * scale for w in weights]
    given = [int(share) for share in shares]
    # Largest remainders get the VMs rounding left over, so the total is exact.
    leftovers = sorted(range(len(order)), key=lambda i: shares[i] - given[i], reverse=True)
    for i in leftovers[: total - sum(given)]:
        given[i] += 1
    for host, n in zip(order, given, strict=True):
        if n:
            counts[host.name][ref] = counts[host.name].get(ref, 0) + n
