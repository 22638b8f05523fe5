"""A vhost's overlay state in its VPC namespaces: vx<vni>'s flood list, and remote VMs as neighbour
entries on br0 and FDB entries on vx<vni> (pushed in bulk); for a routed VPC, one next hop per remote
vhost and a route per prefix it holds (`set_routed_peers`, converged in bulk)."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
from collections.abc import Sequence
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from merak.errors import FailedPrecondition
from services.agent import netlink_bulk
from services.agent.models import Neighbor, RoutedPeer, RoutedState
from services.agent.netlink_bulk import (
    AF_BRIDGE,
    NTF_MASTER,
    NTF_SELF,
    NUD_NOARP,
    NUD_PERMANENT,
    RTPROT_STATIC,
)
from services.agent.planes.real.vpcs import VpcNamespaces, VpcState, vtep_link_local, vtep_mac
from services.agent.validation import ZERO_MAC, check_ipv4

MAIN_TABLE = 254


class Overlay:
    """The forwarding entries of one vhost's VPCs; the caller checks the neighbours and serializes
    changes."""

    def __init__(self, vpcs: VpcNamespaces, underlay_ip: str) -> None:
        self._vpcs = vpcs
        self._underlay_ip = underlay_ip

    def set_vni_peers(self, vni: int, vteps: Sequence[str]) -> None:
        """Make vx<vni>'s flood list (all-zero FDB entries, head-end replication) exactly `vteps`."""
        # Our own VTEP never belongs in the list: it would loop floods back to us.
        want = {str(check_ipv4("vtep", v)) for v in vteps} - {self._underlay_ip}
        with (
            self._vpcs.opened(vni, every_link=False) as (_ipr, vpc),
            netlink_bulk.route_socket(self._vpcs.ns_of(vni)) as sock,
        ):
            have = netlink_bulk.flood_list(sock, vpc.vxlan)
            changes: list[netlink_bulk.Entry | netlink_bulk.Route] = [
                netlink_bulk.flood(vpc.vxlan, vtep) for vtep in sorted(want - have)
            ]
            changes += [netlink_bulk.deleted(netlink_bulk.flood(vpc.vxlan, v)) for v in sorted(have - want)]
            # A VTEP already gone from the list is where it should be.
            failed = [(e, why) for e, why in netlink_bulk.apply(sock, changes) if why not in _ALREADY_GONE]
        if failed:
            entry, reason = failed[0]
            raise OSError(f"{len(failed)} flood list entries refused, e.g. {entry.dst}: {reason}")

    def push_neighbors(self, vni: int, neighbors: Sequence[Neighbor]) -> None:
        """Install each remote VM's neighbour entry on br0 and its FDB entries on vx<vni> (replacing)."""
        with self._vpcs.opened(vni, every_link=False) as (_ipr, vpc):
            # Three entries per remote VM, for every VM of the VPC: sent in bulk, not one by one.
            # Routed frames reach us with the anycast gateway MAC as source, so the bridge never
            # learns remote MACs; the static FDB entry keeps it from flooding them locally.
            vms = [(n.ip, n.mac.lower(), n.vtep) for n in neighbors]
            with netlink_bulk.route_socket(self._vpcs.ns_of(vni)) as sock:
                failed = netlink_bulk.push_remote_vms(sock, vpc.bridge, vpc.vxlan, vms, self._underlay_ip)
            if failed:
                entry, reason = failed[0]
                raise OSError(f"{len(failed)} neighbour/fdb entries refused, e.g. {entry}: {reason}")

    def remove_neighbors(self, vni: int, neighbors: Sequence[Neighbor]) -> None:
        """Remove what `push_neighbors` installed for these VMs; entries of a VM now at another VTEP stay."""
        with self._vpcs.opened(vni) as (ipr, vpc):
            arp = {
                (str(e.get("dst")), str(e.get("lladdr")).lower())
                for e in ipr.neigh("dump", family=socket.AF_INET)
                if e["ifindex"] == vpc.bridge
            }
            remote: dict[str, str] = {}
            static: set[str] = set()
            for e in ipr.fdb("dump"):
                if e["ifindex"] != vpc.vxlan:
                    continue
                mac = str(e.get("lladdr")).lower()
                if e.get("master"):  # the bridge's entry for this port (NDA_MASTER), not vxlan's own
                    static.add(mac)
                elif e.get("dst") and mac != ZERO_MAC:
                    remote[mac] = str(e.get("dst"))
            for n in neighbors:
                mac = n.mac.lower()
                if n.vtep != self._underlay_ip and remote.get(mac, n.vtep) != n.vtep:
                    continue  # pushed again since, at its new VTEP
                if (n.ip, mac) in arp:
                    with contextlib.suppress(NetlinkError):
                        ipr.neigh("del", ifindex=vpc.bridge, dst=n.ip, lladdr=mac)
                if mac in remote:
                    with contextlib.suppress(NetlinkError):
                        ipr.fdb("del", ifindex=vpc.vxlan, lladdr=mac, dst=n.vtep)
                if mac in static:
                    with contextlib.suppress(NetlinkError):
                        ipr.fdb("del", ifindex=vpc.vxlan, lladdr=mac, state=NUD_NOARP, flags=NTF_MASTER)

    def set_routed_peers(
        self, vni: int, peers: Sequence[RoutedPeer], local_prefixes: Sequence[str], local_ips: Sequence[str]
    ) -> RoutedState:
        """Converge a routed VNI to `peers`: per remote vhost an IPv6 link-local neighbour on vx<vni> and
        its FDB entry, a route per prefix through it; a /32 on br0 for each local VM (`local_ips`) outside
        `local_prefixes`. What is there is read first; only the difference is sent, in bulk."""
        with self._vpcs.opened(vni) as (ipr, vpc):
            if not vpc.routed:
                raise FailedPrecondition(
                    f"vpc with vni {vni} is not routed on {self._vpcs.vhost_ns}: ensure it with routed set"
                )
            neighbors, fdb, routes, on_bridge, arp = _read_routed(ipr, vpc)
        want_neighbors: dict[str, str] = {}
        want_fdb: dict[str, str] = {}
        want_routes: dict[str, str] = {}
        for peer in peers:
            if peer.vtep == self._underlay_ip:
                continue  # ourselves: our prefixes are on br0
            hop, mac = vtep_link_local(peer.vtep), vtep_mac(peer.vtep)
            want_neighbors[hop] = mac
            want_fdb[mac] = peer.vtep
            for prefix in peer.prefixes:
                want_routes[str(ipaddress.IPv4Network(prefix))] = hop
        blocks = [ipaddress.IPv4Network(p) for p in local_prefixes]
        blocks = [b for b in blocks if b.prefixlen < 32]
        want_local = {
            f"{ip}/32" for ip in local_ips if not any(ipaddress.IPv4Address(ip) in b for b in blocks)
        }
        for dst in want_local:
            want_routes.pop(dst, None)  # the VM is here, whatever a peer says
        vx, br = vpc.vxlan, vpc.bridge
        removals: list[netlink_bulk.Entry | netlink_bulk.Route] = []
        removals += [
            netlink_bulk.deleted(netlink_bulk.route_via6(dst, vx, hop))
            for dst, hop in routes.items()
            if want_routes.get(dst) != hop
        ]
        removals += [netlink_bulk.deleted(netlink_bulk.route_on_link(d, br)) for d in on_bridge - want_local]
        removals += [
            netlink_bulk.deleted(netlink_bulk.neighbor6(vx, hop, mac))
            for hop, mac in neighbors.items()
            if want_neighbors.get(hop) != mac
        ]
        removals += [
            netlink_bulk.Entry(AF_BRIDGE, vx, 0, NTF_SELF, mac, dst, delete=True)
            for mac, dst in fdb
            if want_fdb.get(mac) != dst
        ]
        # A bridged VPC's remote VMs (it was converged to routed): br0 would send their frames nowhere.
        removals += [netlink_bulk.Entry(socket.AF_INET, br, 0, 0, "", ip, delete=True) for ip in arp]
        additions: list[netlink_bulk.Entry | netlink_bulk.Route] = []
        additions += [
            netlink_bulk.fdb_remote(vx, mac, vtep) for mac, vtep in want_fdb.items() if (mac, vtep) not in fdb
        ]
        additions += [
            netlink_bulk.neighbor6(vx, hop, mac)
            for hop, mac in want_neighbors.items()
            if neighbors.get(hop) != mac
        ]
        additions += [
            netlink_bulk.route_via6(dst, vx, hop)
            for dst, hop in want_routes.items()
            if routes.get(dst) != hop
        ]
        additions += [netlink_bulk.route_on_link(dst, br) for dst in want_local - on_bridge]
        with netlink_bulk.route_socket(self._vpcs.ns_of(vni)) as sock:
            # Removals first: a MAC moving to another VTEP is deleted at the old one, then added anew.
            gone = [(e, why) for e, why in netlink_bulk.apply(sock, removals) if why not in _ALREADY_GONE]
            failed = gone + netlink_bulk.apply(sock, additions)
        if failed:
            entry, reason = failed[0]
            raise OSError(
                f"{len(failed)} routed overlay entries refused, e.g. {entry.dst} {entry.lladdr}: {reason}"
            )
        return RoutedState(peers=len(want_fdb), routes=len(want_routes), local_routes=len(want_local))


# A removal that finds nothing to remove: another writer got there first; the state is what we want.
_ALREADY_GONE = {errno.errorcode[errno.ENOENT], errno.errorcode[errno.ESRCH], errno.errorcode[errno.ENODEV]}


def _read_routed(
    ipr: Any, vpc: VpcState
) -> tuple[dict[str, str], set[tuple[str, str]], dict[str, str], set[str], list[str]]:
    """What a routed VNI holds: vx<vni>'s IPv6 neighbours (next hop -> MAC) and FDB entries (MAC, VTEP),
    our routes through vx<vni> (prefix -> next hop) and on br0 (/32s), and br0's permanent IPv4
    neighbours (a bridged shape's leftovers)."""
    neighbors = {
        str(e.get("dst")): str(e.get("lladdr")).lower()
        for e in ipr.neigh("dump", family=socket.AF_INET6)
        if e["ifindex"] == vpc.vxlan and e["state"] & NUD_PERMANENT and e.get("lladdr")
    }
    fdb = {
        (str(e.get("lladdr")).lower(), str(e.get("dst")))
        for e in ipr.fdb("dump")
        if e["ifindex"] == vpc.vxlan and not e.get("master") and e.get("dst")
    }
    routes: dict[str, str] = {}
    on_bridge: set[str] = set()
    for r in ipr.route("dump", family=socket.AF_INET):
        if r.get("table") != MAIN_TABLE or r["proto"] != RTPROT_STATIC:
            continue
        dst = f"{r.get('dst')}/{r['dst_len']}"
        if r.get("oif") == vpc.vxlan:
            via = r.get("via") or {}
            routes[dst] = str(via.get("addr", "")) if isinstance(via, dict) else ""
        elif r.get("oif") == vpc.bridge and r["dst_len"] == 32:
            on_bridge.add(dst)
    arp = [
        str(e.get("dst"))
        for e in ipr.neigh("dump", family=socket.AF_INET)
        if e["ifindex"] == vpc.bridge and e["state"] & NUD_PERMANENT
    ]
    return neighbors, fdb, routes, on_bridge, arp
