"""A vhost's overlay state in its VPC namespaces: vx<vni>'s flood list, and remote VMs as neighbour
entries on br0 and FDB entries on vx<vni> (pushed in bulk)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence

from pyroute2.netlink.exceptions import NetlinkError

from services.agent import netlink_bulk
from services.agent.models import Neighbor
from services.agent.netlink_bulk import NTF_MASTER, NUD_NOARP
from services.agent.planes.real.vpcs import VpcNamespaces
from services.agent.validation import ZERO_MAC, check_ipv4


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
        with self._vpcs.opened(vni) as (ipr, vpc):
            have = {
                str(e.get("dst"))
                for e in ipr.fdb("dump")
                if e["ifindex"] == vpc.vxlan and str(e.get("lladdr")) == ZERO_MAC and e.get("dst")
            }
            for vtep in sorted(want - have):
                ipr.fdb("append", ifindex=vpc.vxlan, lladdr=ZERO_MAC, dst=vtep)
            for vtep in sorted(have - want):
                with contextlib.suppress(NetlinkError):
                    ipr.fdb("del", ifindex=vpc.vxlan, lladdr=ZERO_MAC, dst=vtep)

    def push_neighbors(self, vni: int, neighbors: Sequence[Neighbor]) -> None:
        """Install each remote VM's neighbour entry on br0 and its FDB entries on vx<vni> (replacing)."""
        with self._vpcs.opened(vni) as (_ipr, vpc):
            entries: list[netlink_bulk.Entry] = []
            for n in neighbors:
                mac = n.mac.lower()
                entries.append(netlink_bulk.neighbor(vpc.bridge, n.ip, mac))
                if n.vtep == self._underlay_ip:
                    continue  # a local VM: the bridge finds it on its port
                entries.append(netlink_bulk.fdb_remote(vpc.vxlan, mac, n.vtep))
                # Routed frames reach us with the anycast gateway MAC as source, so the bridge
                # never learns remote MACs; a static entry keeps it from flooding them locally.
                entries.append(netlink_bulk.fdb_static(vpc.vxlan, mac))
            # Three entries per remote VM, for every VM of the VPC: sent in bulk, not one by one.
            with netlink_bulk.route_socket(self._vpcs.ns_of(vni)) as sock:
                failed = netlink_bulk.apply(sock, entries)
            if failed:
                entry, reason = failed[0]
                raise OSError(
                    f"{len(failed)} neighbour/fdb entries refused, e.g. {entry.lladdr} {entry.dst}: {reason}"
                )

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
