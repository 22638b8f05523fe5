"""Raw rtnetlink requests make what `ip` would (read back with pyroute2), and a refusal names its step."""

from __future__ import annotations

import socket

import pytest
from pyroute2 import IPRoute

from merak import netns, rtnl
from services.agent import kernel
from tests.support.plugin import MakeNetns

pytestmark = pytest.mark.root


def _veth(outer: str, inner: str, name: str, *, mtu: int, master: int | None, mac: str) -> None:
    """A veth `name` in `outer` whose peer eth0 (with `mac`) is born in `inner`, made with rtnl."""
    with rtnl.socket_in(outer) as sock, kernel.ns_fd(inner) as fd:
        made = rtnl.veth(name, mtu=mtu, master=master, peer="eth0", peer_netns_fd=fd, peer_mac=mac)
        rtnl.check(sock, [made])


def test_veth_into_a_namespace_then_configured_there(make_netns: MakeNetns) -> None:
    outer, inner = make_netns(), make_netns()
    _veth(outer, inner, "hx1", mtu=1400, master=None, mac="02:aa:00:00:00:07")

    def configure() -> None:
        with rtnl.route_socket() as sock:
            eth = socket.if_nametoindex("eth0")
            rtnl.check(
                sock,
                [
                    rtnl.link_set(1, "set lo up"),
                    rtnl.link_set(eth, "set eth0 alias", up=False, alias="vpc-9", no_ipv6_addresses=True),
                    rtnl.link_set(eth, "set eth0 up"),
                    rtnl.address(eth, "10.9.0.5", 24),
                    rtnl.default_route("10.9.0.1", eth),
                ],
            )

    netns.run_in(inner, configure)

    def read_inner() -> tuple[str, int, str, str, list[tuple[str, int]], list[str], bool]:
        with IPRoute() as ipr:
            eth = ipr.link("get", ifname="eth0")[0]
            lo = ipr.link("get", index=1)[0]
            addrs = [
                (str(a.get("address")), int(a["prefixlen"])) for a in ipr.addr("dump", family=socket.AF_INET)
            ]
            gateways = [
                str(r.get("gateway")) for r in ipr.route("dump", family=socket.AF_INET) if r["dst_len"] == 0
            ]
            v6 = [a for a in ipr.addr("dump", family=socket.AF_INET6) if a["index"] == eth["index"]]
            return (
                str(eth.get("address")),
                int(eth.get("mtu")),
                str(eth.get("ifalias")),
                str(eth.get("operstate")),
                [a for a in addrs if a[0] != "127.0.0.1"],
                gateways,
                bool(lo["flags"] & 1) and not v6,
            )

    mac, mtu, alias, _state, addrs, gateways, lo_up_no_v6 = netns.run_in(inner, read_inner)
    assert (mac, mtu, alias) == ("02:aa:00:00:00:07", 1400, "vpc-9")
    assert addrs == [("10.9.0.5", 24)]
    assert gateways == ["10.9.0.1"]
    assert lo_up_no_v6

    def read_outer() -> tuple[int, bool]:
        with IPRoute() as ipr:
            link = ipr.link("get", ifname="hx1")[0]
            return int(link.get("mtu")), bool(link["flags"] & 1)

    assert netns.run_in(outer, read_outer) == (1400, True)


def test_a_refusal_names_its_step_and_the_others_still_run(make_netns: MakeNetns) -> None:
    ns = make_netns()

    def twice() -> tuple[list[int], str]:
        with rtnl.route_socket() as sock:
            first = [rtnl.link_set(1, "set lo up"), rtnl.address(1, "10.8.0.1", 8)]
            rtnl.check(sock, first)
            codes = rtnl.call(sock, [rtnl.address(1, "10.8.0.1", 8), rtnl.address(1, "10.8.0.2", 8)])
            try:
                rtnl.check(sock, [rtnl.address(1, "10.8.0.1", 8)])
            except rtnl.RtnlError as exc:
                return codes, str(exc)
            return codes, ""

    codes, error = netns.run_in(ns, twice)
    assert codes[0] != 0 and codes[1] == 0
    assert error.startswith("add address 10.8.0.1/8:") and "exists" in error


def test_a_bridge_port_born_on_its_bridge(make_netns: MakeNetns) -> None:
    outer, inner = make_netns(), make_netns()

    def bridge() -> int:
        with IPRoute() as ipr:
            ipr.link("add", ifname="br0", kind="bridge")
            return int(ipr.link_lookup(ifname="br0")[0])

    index = netns.run_in(outer, bridge)
    _veth(outer, inner, "hx2", mtu=1450, master=index, mac="02:aa:00:00:00:08")

    def master() -> int:
        with IPRoute() as ipr:
            return int(ipr.link("get", ifname="hx2")[0].get("master"))

    assert netns.run_in(outer, master) == index
