"""Bulk neighbour/FDB entries land in the kernel, re-applying changes nothing, refusals are reported."""

from __future__ import annotations

import socket

import pytest
from pyroute2 import IPRoute

from merak import netns
from services.agent import netlink_bulk
from tests.support.plugin import MakeNetns

pytestmark = pytest.mark.root


def _bridge_and_vxlan(ns: str) -> tuple[int, int]:
    def setup() -> tuple[int, int]:
        with IPRoute() as ipr:
            ipr.link("add", ifname="br0", kind="bridge")
            ipr.link("add", ifname="vx9", kind="vxlan", vxlan_id=9, vxlan_port=4789, vxlan_learning=0)
            bridge = ipr.link_lookup(ifname="br0")[0]
            vxlan = ipr.link_lookup(ifname="vx9")[0]
            ipr.link("set", index=vxlan, master=bridge)
            for index in (bridge, vxlan):
                ipr.link("set", index=index, state="up")
            return int(bridge), int(vxlan)

    return netns.run_in(ns, setup)


def _counts(ns: str, bridge: int, vxlan: int) -> tuple[int, int]:
    def count() -> tuple[int, int]:
        with IPRoute() as ipr:
            neigh = sum(
                1
                for e in ipr.neigh("dump", family=socket.AF_INET)
                if e["ifindex"] == bridge and str(e.get_attr("NDA_DST")).startswith("10.9.")
            )
            fdb = sum(
                1
                for e in ipr.fdb("dump")
                if e["ifindex"] == vxlan and e.get("lladdr", "").startswith("02:77")
            )
            return neigh, fdb

    return netns.run_in(ns, count)


def test_bulk_entries_land_and_replace(make_netns: MakeNetns) -> None:
    ns = make_netns()
    bridge, vxlan = _bridge_and_vxlan(ns)
    entries = []
    for i in range(1500):
        mac = f"02:77:00:00:{i >> 8:02x}:{i & 255:02x}"
        ip = f"10.9.{i >> 8}.{i & 255}"
        entries += [
            netlink_bulk.neighbor(bridge, ip, mac),
            netlink_bulk.fdb_remote(vxlan, mac, "192.0.2.7"),
            netlink_bulk.fdb_static(vxlan, mac),
        ]
    with netlink_bulk.route_socket(ns) as sock:
        assert netlink_bulk.apply(sock, entries) == []
        assert netlink_bulk.apply(sock, entries) == []  # replace: the same again is fine
    neigh, fdb = _counts(ns, bridge, vxlan)
    assert neigh == 1500
    assert fdb == 3000  # per MAC: the VXLAN's remote entry and the bridge's static one


def test_refused_entries_are_reported(make_netns: MakeNetns) -> None:
    ns = make_netns()
    bridge, _vxlan = _bridge_and_vxlan(ns)
    good = netlink_bulk.neighbor(bridge, "10.9.0.1", "02:77:00:00:00:01")
    bad = netlink_bulk.neighbor(bridge + 1000, "10.9.0.2", "02:77:00:00:00:02")
    with netlink_bulk.route_socket(ns) as sock:
        failed = netlink_bulk.apply(sock, [good, bad])
    assert failed == [(bad, "ENODEV")]


def test_failures_in_every_window_are_reported_once(make_netns: MakeNetns) -> None:
    # Only a window's last message is acknowledged: a failure anywhere, that last message's own
    # included, must still come back, and a window must not end before its failures are read.
    ns = make_netns()
    bridge, vxlan = _bridge_and_vxlan(ns)
    bad_positions = {1, 3, 4, 9}
    entries = [
        netlink_bulk.neighbor(
            bridge + 1000 if i in bad_positions else bridge, f"10.9.0.{i + 1}", f"02:77:00:00:00:{i:02x}"
        )
        for i in range(10)
    ]
    with netlink_bulk.route_socket(ns) as sock:
        failed = netlink_bulk.apply(sock, entries, window=4)
        assert failed == [(entries[i], "ENODEV") for i in sorted(bad_positions)]
        assert netlink_bulk.apply(sock, entries[:1], window=4) == []  # nothing left over to misread
    neigh, _fdb = _counts(ns, bridge, vxlan)
    assert neigh == 10 - len(bad_positions)


def test_remote_vms_land_as_the_generic_entries_would(make_netns: MakeNetns) -> None:
    # The packed fast path makes the same entries as neighbor + fdb_remote + fdb_static through apply:
    # a neighbour for every VM, the two FDB entries only for VMs of another VTEP; again is a no-op.
    ns = make_netns()
    bridge, vxlan = _bridge_and_vxlan(ns)
    vms = [
        (f"10.9.{i >> 8}.{i & 255}", f"02:77:00:00:{i >> 8:02x}:{i & 255:02x}", f"192.0.2.{i % 3 + 1}")
        for i in range(1500)
    ]
    local = [vm for vm in vms if vm[2] == "192.0.2.1"]
    with netlink_bulk.route_socket(ns) as sock:
        assert netlink_bulk.push_remote_vms(sock, bridge, vxlan, vms, "192.0.2.1", window=64) == []
        assert netlink_bulk.push_remote_vms(sock, bridge, vxlan, vms, "192.0.2.1") == []
    neigh, fdb = _counts(ns, bridge, vxlan)
    assert neigh == 1500
    assert fdb == 2 * (1500 - len(local))

    def remote_of(mac: str) -> str:
        with IPRoute() as ipr:
            return next(
                str(e.get("dst"))
                for e in ipr.fdb("dump")
                if e["ifindex"] == vxlan and e.get("lladdr") == mac and e.get("dst")
            )

    assert netns.run_in(ns, lambda: remote_of(vms[2][1])) == "192.0.2.3"


def test_remote_vms_refused_are_reported_in_every_window(make_netns: MakeNetns) -> None:
    ns = make_netns()
    bridge, vxlan = _bridge_and_vxlan(ns)
    vms = [(f"10.9.0.{i + 1}", f"02:77:00:00:00:{i:02x}", "192.0.2.7") for i in range(5)]
    with netlink_bulk.route_socket(ns) as sock:
        # The VXLAN device is not one: both FDB entries of every VM are refused, the neighbours land.
        failed = netlink_bulk.push_remote_vms(sock, bridge, vxlan + 1000, vms, "192.0.2.1", window=4)
        assert [entry for entry, _why in failed] == [
            entry for ip, mac, vtep in vms for entry in (f"{vtep} {mac}", mac)
        ]
        assert {why for _entry, why in failed} == {"ENODEV"}
        assert netlink_bulk.push_remote_vms(sock, bridge, vxlan, vms[:1], "192.0.2.1") == []
    neigh, _fdb = _counts(ns, bridge, vxlan)
    assert neigh == 5


def _routed_state(ns: str, vxlan: int) -> tuple[dict[str, str], dict[str, tuple[int, str]]]:
    """vx9's permanent IPv6 neighbours (address -> MAC), and static routes (prefix -> (oif, next hop))."""

    def read() -> tuple[dict[str, str], dict[str, tuple[int, str]]]:
        with IPRoute() as ipr:
            neighbours = {
                str(e.get("dst")): str(e.get("lladdr"))
                for e in ipr.neigh("dump", family=socket.AF_INET6)
                if e["ifindex"] == vxlan and e["state"] & netlink_bulk.NUD_PERMANENT
            }
            routes = {
                f"{r.get('dst')}/{r['dst_len']}": (
                    int(r.get("oif")),
                    str((r.get("via") or {}).get("addr", "")),
                )
                for r in ipr.route("dump", family=socket.AF_INET)
                if r["proto"] == netlink_bulk.RTPROT_STATIC
            }
            return neighbours, routes

    return netns.run_in(ns, read)


def test_routed_entries_land_replace_and_go(make_netns: MakeNetns) -> None:
    ns = make_netns()
    bridge, vxlan = _bridge_and_vxlan(ns)

    def l3() -> None:  # the routed shape: vx9 off the bridge, IPv6 on it
        with IPRoute() as ipr:
            ipr.link("set", index=vxlan, master=0)
        with open("/proc/sys/net/ipv6/conf/vx9/disable_ipv6", "w") as f:
            f.write("0")

    netns.run_in(ns, l3)
    hop, other = "fe80::c000:207", "fe80::c000:208"
    entries: list[netlink_bulk.Entry | netlink_bulk.Route] = [
        netlink_bulk.fdb_remote(vxlan, "02:00:c0:00:02:07", "192.0.2.7"),
        netlink_bulk.neighbor6(vxlan, hop, "02:00:c0:00:02:07"),
        *(netlink_bulk.route_via6(f"10.{i}.0.0/26", vxlan, hop) for i in range(250)),
        netlink_bulk.route_on_link("10.0.0.30/32", bridge),
    ]
    with netlink_bulk.route_socket(ns) as sock:
        assert netlink_bulk.apply(sock, entries) == []
        assert netlink_bulk.apply(sock, entries) == []  # replace: the same again is fine
        neighbours, routes = _routed_state(ns, vxlan)
        assert neighbours == {hop: "02:00:c0:00:02:07"}
        assert len(routes) == 251 and routes["10.7.0.0/26"] == (vxlan, hop)
        assert routes["10.0.0.30/32"] == (bridge, "")
        # A route replaced through another next hop, then everything removed.
        assert netlink_bulk.apply(sock, [netlink_bulk.route_via6("10.7.0.0/26", vxlan, other)]) == []
        assert _routed_state(ns, vxlan)[1]["10.7.0.0/26"] == (vxlan, other)
        gone = [netlink_bulk.deleted(e) for e in entries[1:]]
        failed = netlink_bulk.apply(sock, gone)
        assert [(e.dst, why) for e, why in failed] == [("10.7.0.0/26", "ESRCH")]  # not through `hop` any more
        assert (
            netlink_bulk.apply(
                sock, [netlink_bulk.deleted(netlink_bulk.route_via6("10.7.0.0/26", vxlan, other))]
            )
            == []
        )
    assert _routed_state(ns, vxlan) == ({}, {})
