"""The real data plane of one vhost (DESIGN §5): VPC namespaces with a bridge and VXLAN, VMs as namespaces.

Synchronous and fork-free: every call moves only the calling thread between namespaces with
`merak.netns`, so call it from worker threads, never from an event loop's thread. Netlink goes
through pyroute2; each `IPRoute` is created while the thread is inside the namespace it serves
and is used and closed by that same thread (its socket stays in that namespace).
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Sequence

from merak import netns
from merak.errors import NotFound
from merak.logs import get_logger
from services.agent.icmp import ping_from
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
from services.agent.planes.real.overlay import Overlay
from services.agent.planes.real.vms import VmNamespaces
from services.agent.planes.real.vpcs import VpcNamespaces
from services.agent.validation import (
    MAX_IFNAME,
    check_ipv4,
    check_name,
    check_prefix,
    check_vm_name,
    validate_neighbor,
    validate_routed_peer,
    validate_vm,
    validate_vpc,
)

log = get_logger(__name__)


class Dataplane:
    """VPCs and VMs of one vhost, as namespaces `<prefix>-vpc<vni>` and `<prefix>-<vm>`; thread-safe.

    Checks what it is given, serializes changes, and hands the kernel work to its VPC namespaces
    (`vpcs`), its VM namespaces (`vms`) and its forwarding entries (`overlay`).
    """

    def __init__(self, vhost_ns: str, prefix: str, underlay_ip: str, underlay_dev: str) -> None:
        """Check the names and addresses; touches no namespace."""
        netns.path_of(vhost_ns)  # validates the name
        check_name("prefix", prefix)
        check_ipv4("underlay_ip", underlay_ip)
        if not isinstance(underlay_dev, str) or not 1 <= len(underlay_dev) <= MAX_IFNAME:
            raise ValueError(f"underlay_dev: {underlay_dev!r} is not an interface name")
        self.vhost_ns = vhost_ns
        self.prefix = prefix
        self.underlay_ip = str(ipaddress.IPv4Address(underlay_ip))
        self.underlay_dev = underlay_dev
        self.vpcs = VpcNamespaces(vhost_ns, prefix, self.underlay_ip, underlay_dev)
        self.vms = VmNamespaces(vhost_ns, prefix, self.vpcs)
        self.overlay = Overlay(self.vpcs, self.underlay_ip)
        # Changes are serialized per vhost (the kernel's RTNL lock serializes most of them anyway);
        # `ping` takes no lock.
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ names

    def vpc_ns(self, vni: int) -> str:
        """The namespace of the VPC with `vni` on this vhost."""
        return self.vpcs.ns_of(vni)

    def vm_ns(self, vm_name: str) -> str:
        """The namespace of VM `vm_name`."""
        return self.vms.ns_of(vm_name)

    def list_vms(self) -> list[str]:
        """Names of the VMs present on this vhost."""
        return self.vms.names()

    def describe_vm(self, name: str) -> VmInfo | None:
        """The VM's address, MAC and VPC as its namespace holds them (None: no such VM)."""
        return self.vms.describe(name)

    def vm_spec(self, name: str) -> VmSpec | None:
        """None: the kernel holds a VM, not the spec it was made from (the agent keeps that)."""
        return None

    # ------------------------------------------------------------------ VPCs and VMs

    def ensure_vpc(self, vpc: VpcSpec) -> None:
        """Create or converge the VPC namespace: lo, br0 with the anycast gateways, forwarding, vx<vni>."""
        validate_vpc(vpc)
        with self._lock:
            created = self.vpcs.ensure(vpc)
        log.info("vpc_ensured", vhost=self.vhost_ns, vpc_id=vpc.vpc_id, vni=vpc.vni, created=created)

    def create_vms(self, specs: Sequence[VmSpec]) -> list[VmResult]:
        """Create the VMs that do not exist; one result per spec, in order."""
        for spec in specs:
            validate_vm(spec)
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"vm names repeat in one batch: {', '.join(duplicates)}")
        started = time.monotonic()
        with self._lock:
            results = self.vms.create(specs)
        ordered = [results[s.name] for s in specs]
        log.info(
            "vms_created",
            vhost=self.vhost_ns,
            requested=len(specs),
            created=sum(r.created for r in ordered),
            failed=sum(not r.ok for r in ordered),
            seconds=round(time.monotonic() - started, 3),
        )
        return ordered

    def delete_vms(self, names: Sequence[str]) -> list[VmResult]:
        """Delete the named VMs (veth pair, namespace); a missing VM is ok, `created` says it existed."""
        for name in names:
            check_vm_name(name)
        started = time.monotonic()
        with self._lock:
            errors, existed = self.vms.delete(names)
        log.info(
            "vms_deleted",
            vhost=self.vhost_ns,
            requested=len(names),
            failed=len(errors),
            seconds=round(time.monotonic() - started, 3),
        )
        return [
            VmResult(name, ok=name not in errors, error=errors.get(name, ""), created=name in existed)
            for name in names
        ]

    def destroy(self) -> None:
        """Remove every namespace with this prefix: VMs first, then VPCs with their VXLAN devices."""
        with self._lock:
            self.delete_vms(self.list_vms())
            for ns in self.vpcs.by_vni().values():
                self.vpcs.remove(ns)
            for ns in netns.list_names(f"{self.prefix}-"):
                netns.remove(ns)
        log.info("dataplane_destroyed", vhost=self.vhost_ns, prefix=self.prefix)

    # ------------------------------------------------------------------ overlay state

    def set_vni_peers(self, vni: int, vteps: Sequence[str]) -> None:
        """Make vx<vni>'s flood list (all-zero FDB entries, head-end replication) exactly `vteps`."""
        with self._lock:
            self.overlay.set_vni_peers(vni, vteps)

    def push_neighbors(self, vni: int, neighbors: Sequence[Neighbor]) -> None:
        """Install each remote VM's neighbour entry on br0 and its FDB entries on vx<vni> (replacing)."""
        for neighbor in neighbors:
            validate_neighbor(neighbor)
        with self._lock:
            self.overlay.push_neighbors(vni, neighbors)

    def remove_neighbors(self, vni: int, neighbors: Sequence[Neighbor]) -> None:
        """Remove what `push_neighbors` installed for these VMs; entries of a VM now at another VTEP stay."""
        for neighbor in neighbors:
            validate_neighbor(neighbor)
        with self._lock:
            self.overlay.remove_neighbors(vni, neighbors)

    def set_routed_peers(
        self, vni: int, peers: Sequence[RoutedPeer], local_prefixes: Sequence[str]
    ) -> RoutedState:
        """Converge routed VNI `vni` to `peers` (a next hop per remote vhost, a route per prefix) and give
        each local VM outside `local_prefixes` a /32 on br0."""
        for peer in peers:
            validate_routed_peer(peer)
        for i, prefix in enumerate(local_prefixes):
            check_prefix(f"local_prefixes[{i}]", prefix)
        with self._lock:
            return self.overlay.set_routed_peers(vni, peers, local_prefixes, self.vms.addresses_on(vni))

    # ------------------------------------------------------------------ checks

    def ping(
        self,
        vm_name: str,
        dests: Sequence[str],
        timeout: float = 1.0,
        count: int = 1,
        *,
        retries: int = 0,
        interval: float = 0.2,
        size: int = 56,
    ) -> list[PingResult]:
        """ICMP echo from inside VM `vm_name` to every dest at once; see `ping_from`."""
        check_vm_name(vm_name)
        ns = self.vm_ns(vm_name)
        if not netns.exists(ns):
            raise NotFound(f"vm {vm_name} does not exist on {self.vhost_ns}")
        return ping_from(
            ns, dests, timeout=timeout, count=count, retries=retries, interval=interval, size=size
        )
