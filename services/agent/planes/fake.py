"""The fake data plane (KWOK-style): VMs and VPCs kept in memory, nothing in the kernel."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Sequence

from merak.errors import FailedPrecondition
from services.agent.models import (
    Neighbor,
    PingResult,
    RoutedPeer,
    RoutedState,
    VmInfo,
    VmResult,
    VmSpec,
    VpcSpec,
)
from services.agent.validation import (
    check_prefix,
    validate_neighbor,
    validate_routed_peer,
    validate_vm,
    validate_vpc,
)


class FakeDataplane:
    """Answers like `Dataplane` for one vhost; 100,000 VMs take a few tens of MB."""

    def __init__(self, underlay_ip: str = "") -> None:
        # The vhost's own VTEP ("" when it has none): a peer of that address is itself, as the real
        # plane has it.
        self._underlay_ip = underlay_ip
        self._vms: dict[str, VmSpec] = {}
        self._vpcs: dict[int, VpcSpec] = {}
        self._peers: dict[int, frozenset[str]] = {}
        self._neighbors: dict[int, dict[str, Neighbor]] = {}
        # Routed VPCs: the remote vhosts (VTEP -> prefixes) and this vhost's own prefixes, by VNI.
        self._routed: dict[int, tuple[dict[str, tuple[str, ...]], tuple[str, ...]]] = {}
        # VMs on OVN ports: the subnets of each VPC seen on this vhost (OVN, not us, routes between them).
        self._ovn_subnets: dict[str, set[ipaddress.IPv4Network]] = {}
        self._lock = threading.Lock()

    def ensure_vpc(self, vpc: VpcSpec) -> None:
        """Record the VPC."""
        validate_vpc(vpc)
        with self._lock:
            self._vpcs[vpc.vni] = vpc

    def create_vms(self, specs: Sequence[VmSpec]) -> list[VmResult]:
        """Record the VMs; same spec again is a success, another spec is an error."""
        results = []
        with self._lock:
            for spec in specs:
                validate_vm(spec)
                existing = self._vms.get(spec.name)
                if existing == spec:
                    results.append(VmResult(spec.name, ok=True, created=False))
                elif existing is not None:
                    results.append(
                        VmResult(spec.name, ok=False, error="already exists with a different spec")
                    )
                elif not spec.ovn_port and spec.vni not in self._vpcs:  # OVN makes a port's network
                    results.append(
                        VmResult(spec.name, ok=False, error=f"vpc with vni {spec.vni} is not set up")
                    )
                else:
                    self._vms[spec.name] = spec
                    if spec.ovn_port:
                        network = ipaddress.IPv4Network(f"{spec.ip}/{spec.prefix_len}", strict=False)
                        self._ovn_subnets.setdefault(spec.vpc_id, set()).add(network)
                    results.append(VmResult(spec.name, ok=True, created=True))
        return results

    def delete_vms(self, names: Sequence[str]) -> list[VmResult]:
        """Forget the VMs; a missing one is a success."""
        with self._lock:
            return [VmResult(name, ok=True, created=self._vms.pop(name, None) is not None) for name in names]

    def list_vms(self) -> list[str]:
        """Names of the VMs."""
        with self._lock:
            return sorted(self._vms)

    def vm_spec(self, name: str) -> VmSpec | None:
        """The spec a VM was created with."""
        return self._vms.get(name)

    def describe_vm(self, name: str) -> VmInfo | None:
        """The VM's address, MAC and VPC."""
        spec = self._vms.get(name)
        return None if spec is None else VmInfo(spec.ip, spec.mac, spec.vpc_id)

    def set_vni_peers(self, vni: int, vteps: Sequence[str]) -> None:
        """Record the flood list."""
        with self._lock:
            self._peers[vni] = frozenset(vteps)

    def push_neighbors(self, vni: int, neighbors: Sequence[Neighbor]) -> None:
        """Record remote VMs."""
        for neighbor in neighbors:
            validate_neighbor(neighbor)
        with self._lock:
            table = self._neighbors.setdefault(vni, {})
            table.update((n.ip, n) for n in neighbors)

    def remove_neighbors(self, vni: int, neighbors: Sequence[Neighbor]) -> None:
        """Forget remote VMs."""
        with self._lock:
            table = self._neighbors.get(vni, {})
            for neighbor in neighbors:
                table.pop(neighbor.ip, None)

    def set_routed_peers(
        self, vni: int, peers: Sequence[RoutedPeer], local_prefixes: Sequence[str]
    ) -> RoutedState:
        """Record a routed VNI's remote vhosts and prefixes (the last call's, whole); what the kernel
        would hold is counted."""
        for peer in peers:
            validate_routed_peer(peer)
        blocks = [check_prefix(f"local_prefixes[{i}]", p) for i, p in enumerate(local_prefixes)]
        blocks = [b for b in blocks if b.prefixlen < 32]
        with self._lock:
            vpc = self._vpcs.get(vni)
            if vpc is None:
                raise FailedPrecondition(f"vpc with vni {vni} is not set up")
            if not vpc.routed:
                raise FailedPrecondition(f"vpc with vni {vni} is not routed: ensure it with routed set")
            # Ourselves among the peers: our prefixes are on br0, not routed to a remote vhost.
            remote = {p.vtep: p.prefixes for p in peers if p.vtep != self._underlay_ip}
            self._routed[vni] = (remote, tuple(local_prefixes))
            local = {
                f"{vm.ip}/32"
                for vm in self._vms.values()
                if vm.vni == vni and not any(ipaddress.IPv4Address(vm.ip) in b for b in blocks)
            }
        # A VM that is here is routed to br0, whatever a peer says (the real plane's rule).
        routes = {str(ipaddress.IPv4Network(p)) for prefixes in remote.values() for p in prefixes} - local
        return RoutedState(peers=len(remote), routes=len(routes), local_routes=len(local))

    def routed_peers(self, vni: int) -> dict[str, tuple[str, ...]]:
        """The remote vhosts of routed VNI `vni` and their prefixes, as last set."""
        with self._lock:
            return dict(self._routed.get(vni, ({}, ()))[0])

    def ping(self, vm_name: str, dests: Sequence[str], timeout: float = 1.0, **_: object) -> list[PingResult]:
        """Reachability as the control plane set it up: a VM of the same VPC, local or a pushed neighbour."""
        with self._lock:
            source = self._vms.get(vm_name)
            if source is None:
                return [
                    PingResult(dest, ok=False, rtt_ms=None, error=f"vm {vm_name} does not exist")
                    for dest in dests
                ]
            if source.ovn_port:  # a VPC of OVN's: its subnets seen here stand for it
                local = {vm.ip for vm in self._vms.values() if vm.vpc_id == source.vpc_id}
                remote: set[str] = set()
                subnets = sorted(self._ovn_subnets.get(source.vpc_id, set()))
            else:
                local = {vm.ip for vm in self._vms.values() if vm.vni == source.vni}
                remote = set(self._neighbors.get(source.vni, {}))
                vpc = self._vpcs.get(source.vni)
                subnets = [ipaddress.IPv4Network(s.cidr) for s in vpc.subnets] if vpc else []

        def reachable(dest: str) -> bool:
            # Nothing is programmed for fake vhosts at scale, so the VPC's own address space stands in
            # for "a VM of this VPC": another VPC's addresses stay unreachable (isolation).
            if dest in local or dest in remote:
                return True
            address = ipaddress.IPv4Address(dest)
            return any(address in subnet for subnet in subnets)

        return [
            PingResult(dest, ok=True, rtt_ms=0.0)
            if reachable(dest)
            else PingResult(dest, ok=False, rtt_ms=None, error="unreachable (fake dataplane)")
            for dest in dests
        ]

    def destroy(self) -> None:
        """Forget everything."""
        with self._lock:
            self._vms.clear()
            self._vpcs.clear()
            self._peers.clear()
            self._neighbors.clear()
            self._routed.clear()
