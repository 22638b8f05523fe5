"""The agent's data plane on real namespaces: vhosts on an underlay bridge, VPCs, VMs, real pings."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
from pyroute2 import IPRoute

from merak import netns
from merak.errors import FailedPrecondition, NotFound
from services.agent import kernel
from services.agent.icmp import ping_from
from services.agent.models import Neighbor, SubnetSpec, VmSpec, VpcSpec
from services.agent.netlink_bulk import NTF_MASTER, NTF_SELF, NUD_PERMANENT
from services.agent.planes.real import Dataplane
from services.agent.planes.real.vpcs import VXLAN_PORT
from services.agent.validation import ZERO_MAC, host_ifname, validate_vm, validate_vpc
from tests.support import unique_name
from tests.support.plugin import MakeNetns

pytestmark = pytest.mark.root

UNDERLAY_NET = "192.168.77"
VPC_A = VpcSpec(
    vpc_id="vpc-a",
    vni=5001,
    subnets=(SubnetSpec("10.1.0.0/24", "10.1.0.1"), SubnetSpec("10.1.1.0/24", "10.1.1.1")),
    gateway_mac="02:00:00:00:50:01",
)
# Overlaps VPC A on purpose: isolation must not depend on distinct addresses.
VPC_B = VpcSpec(
    vpc_id="vpc-b",
    vni=5002,
    subnets=(SubnetSpec("10.1.0.0/24", "10.1.0.1"),),
    gateway_mac="02:00:00:00:50:02",
)
ETH_P_ALL = 0x0003
PATIENT = {"timeout": 1.0, "retries": 15, "interval": 0.2}  # a fresh port may need ~1 s


def vm(name: str, vpc: VpcSpec, ip: str, mac: str) -> VmSpec:
    """A /24 VM in `vpc` whose gateway is the .1 of its subnet."""
    gateway = ip.rsplit(".", 1)[0] + ".1"
    return VmSpec(name, vpc.vpc_id, vpc.vni, ip, 24, mac, gateway)


# ----------------------------------------------------------------------------- the lab


@dataclass
class Vhost:
    """One emulated host: its namespace, its underlay IP, its data plane."""

    ns: str
    ip: str
    dp: Dataplane


@contextlib.contextmanager
def lab(count: int) -> Iterator[list[Vhost]]:
    """`count` vhost namespaces on one underlay bridge; everything named after this run is removed after."""
    run = unique_name("mkt", 6)
    vhosts: list[Vhost] = []
    try:
        switch = f"{run}-sw"
        netns.create(switch)
        with netns.entered(switch), IPRoute() as ipr:
            ipr.link("add", ifname="sw", kind="bridge")
            bridge = ipr.link_lookup(ifname="sw")[0]
            ipr.link("set", index=bridge, state="up")
        for i in range(count):
            ns, ip = f"{run}-v{i}", f"{UNDERLAY_NET}.{i + 1}"
            netns.create(ns)
            with netns.entered(switch), IPRoute() as ipr:
                ipr.link(
                    "add",
                    ifname=f"p{i}",
                    kind="veth",
                    master=bridge,
                    state="up",
                    peer={"ifname": "ul0", "net_ns_fd": ns},
                )
            with netns.entered(ns), IPRoute() as ipr:
                ipr.link("set", index=1, state="up")
                ul0 = ipr.link_lookup(ifname="ul0")[0]
                ipr.link("set", index=ul0, state="up")
                ipr.addr("add", index=ul0, address=ip, prefixlen=24)
            vhosts.append(Vhost(ns, ip, Dataplane(ns, f"{run}-h{i}", ip, "ul0")))
        yield vhosts
    finally:
        for vhost in vhosts:
            with contextlib.suppress(Exception):
                vhost.dp.destroy()
        for ns in netns.list_names(f"{run}-"):
            netns.remove(ns)


@dataclass
class World:
    """Two vhosts, VPC A (two subnets) and VPC B (overlapping) on both, neighbours pushed both ways."""

    h0: Vhost
    h1: Vhost
    specs: dict[str, list[VmSpec]]  # vhost ns -> the VMs created there


def world_specs(h: int) -> list[VmSpec]:
    """VPC A: three VMs in subnet 1, one in subnet 2; VPC B: one VM. b1-0 reuses a0-0's IP."""
    base = 10 * (h + 1)
    specs = [vm(f"a{h}-{j}", VPC_A, f"10.1.0.{base + j}", f"02:0a:0{h}:00:00:0{j}") for j in range(3)]
    specs.append(vm(f"a{h}-s2", VPC_A, f"10.1.1.{base}", f"02:0a:0{h}:00:01:00"))
    specs.append(vm(f"b{h}-0", VPC_B, "10.1.0.30" if h == 0 else "10.1.0.10", f"02:0b:0{h}:00:00:00"))
    return specs


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """Build the two-vhost world once for the read-only connectivity tests."""
    with lab(2) as (h0, h1):
        specs = {h0.ns: world_specs(0), h1.ns: world_specs(1)}
        for vhost in (h0, h1):
            for vpc in (VPC_A, VPC_B):
                vhost.dp.ensure_vpc(vpc)
            results = vhost.dp.create_vms(specs[vhost.ns])
            assert all(r.ok and r.created for r in results), results
        for vhost, peer in ((h0, h1), (h1, h0)):
            for vpc in (VPC_A, VPC_B):
                vhost.dp.set_vni_peers(vpc.vni, [peer.ip])
                remote = [Neighbor(s.ip, s.mac, peer.ip) for s in specs[peer.ns] if s.vni == vpc.vni]
                vhost.dp.push_neighbors(vpc.vni, remote)
        yield World(h0, h1, specs)


@pytest.fixture
def one() -> Iterator[Vhost]:
    """A single vhost of its own, for tests that change state."""
    with lab(1) as (vhost,):
        yield vhost


# ----------------------------------------------------------------------------- probes


def assert_pings(vhost: Vhost, vm_name: str, dests: Sequence[str], **kwargs: Any) -> None:
    """Every dest answers `vm_name`."""
    options = {**PATIENT, **kwargs}
    results = vhost.dp.ping(vm_name, dests, **options)
    failed = [r for r in results if not r.ok]
    assert not failed, f"{vm_name} cannot reach: {failed}"


def assert_no_pings(vhost: Vhost, vm_name: str, dests: Sequence[str]) -> None:
    """No dest answers `vm_name` (given time for a fresh port)."""
    results = vhost.dp.ping(vm_name, dests, timeout=1.0, retries=5, interval=0.2)
    answered = [r for r in results if r.ok]
    assert not answered, f"{vm_name} reached what it must not: {answered}"


def in_ns(ns: str, func: Any) -> Any:
    """Call func(ipr) with an IPRoute opened inside namespace `ns`."""
    with netns.entered(ns), IPRoute() as ipr:
        return func(ipr)


def link_names(ns: str) -> set[str]:
    """Names of the links in namespace `ns`."""
    return set(in_ns(ns, lambda ipr: [link.get("ifname") for link in ipr.link("dump")]))


def eth0(ns: str) -> Any:
    """The eth0 link message of a VM namespace."""
    return in_ns(ns, lambda ipr: ipr.link("get", ifname="eth0")[0])


@contextlib.contextmanager
def sniff(vhost: Vhost, vm_name: str) -> Iterator[list[str]]:
    """Collect the source MAC of every frame eth0 of a VM receives during the block."""
    with netns.entered(vhost.dp.vm_ns(vm_name)):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sources: list[str] = []
    with sock:
        sock.bind(("eth0", 0))
        sock.setblocking(False)
        yield sources
        with contextlib.suppress(BlockingIOError):
            while True:
                frame, address = sock.recvfrom(65535)
                if address[2] != socket.PACKET_OUTGOING:
                    sources.append(frame[6:12].hex(":"))


def neighbour_mac(ns: str, ip: str) -> str:
    """The MAC the namespace resolved `ip` to ("" when none)."""
    entries = in_ns(ns, lambda ipr: [(e.get("dst"), e.get("lladdr")) for e in ipr.neigh("dump", family=2)])
    return next((str(mac) for dst, mac in entries if dst == ip and mac), "")


def udp_ports(ns: str) -> set[int]:
    """Local UDP ports with a socket in namespace `ns` (/proc/thread-self/net is per thread)."""
    with netns.entered(ns), open("/proc/thread-self/net/udp") as f:
        lines = f.read().splitlines()[1:]
    return {int(line.split()[1].split(":")[1], 16) for line in lines}


def fdb(ns: str, dev: str) -> set[tuple[str, str, int, int]]:
    """(mac, dst, state, flags) of every FDB entry on `dev`; the bridge's entries get NTF_MASTER, dst ""."""

    def master(entry: Any) -> int:
        return NTF_MASTER if entry.get("master") else 0  # the kernel marks them by NDA_MASTER only

    def read(ipr: Any) -> set[tuple[str, str, int, int]]:
        index = ipr.link_lookup(ifname=dev)[0]
        return {
            (str(e.get("lladdr")), str(e.get("dst") or ""), int(e["state"]), int(e["flags"]) | master(e))
            for e in ipr.fdb("dump")
            if e["ifindex"] == index
        }

    return set(in_ns(ns, read))


def permanent_neighbours(ns: str) -> set[tuple[str, str]]:
    """(ip, mac) of the permanent IPv4 neighbour entries on br0."""

    def read(ipr: Any) -> set[tuple[str, str]]:
        index = ipr.link_lookup(ifname="br0")[0]
        return {
            (str(e.get("dst")), str(e.get("lladdr")))
            for e in ipr.neigh("dump", family=2)
            if e["ifindex"] == index and e["state"] & NUD_PERMANENT
        }

    return set(in_ns(ns, read))


def flood_list(vhost: Vhost, vni: int) -> set[str]:
    """The VTEPs vx<vni> replicates BUM traffic to."""
    return {dst for mac, dst, _, _ in fdb(vhost.dp.vpc_ns(vni), f"vx{vni}") if mac == ZERO_MAC}


def read_proc_elsewhere(ns: str, path: str) -> str:
    """/proc/<path> as another process inside namespace `ns` sees it."""
    done = subprocess.run(
        ["ip", "netns", "exec", ns, "cat", f"/proc/{path}"], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def read_sysctl_elsewhere(ns: str, path: str) -> str:
    """/proc/sys/<path> as another process inside namespace `ns` sees it."""
    return read_proc_elsewhere(ns, f"sys/{path}")


# ----------------------------------------------------------------------------- connectivity


def test_same_subnet_across_vhosts(world: World) -> None:
    assert_pings(world.h0, "a0-0", ["10.1.0.20", "10.1.0.21", "10.1.0.22"])
    assert_pings(world.h1, "a1-2", ["10.1.0.10", "10.1.0.11", "10.1.0.12"])


def test_same_subnet_on_one_vhost_and_the_gateway(world: World) -> None:
    assert_pings(world.h0, "a0-0", ["10.1.0.11", "10.1.0.12", "10.1.0.1", "10.1.1.1", "10.1.0.10"])


def test_routed_across_vhosts(world: World) -> None:
    assert_pings(world.h0, "a0-1", ["10.1.1.20"])  # subnet 1 on h0 -> subnet 2 on h1
    assert_pings(world.h1, "a1-s2", ["10.1.0.10", "10.1.0.11"])  # subnet 2 on h1 -> subnet 1 on h0
    assert_pings(world.h0, "a0-s2", ["10.1.0.21", "10.1.0.12"])  # across and local


def test_full_size_packets_cross_vhosts(world: World) -> None:
    # A 1500-byte packet only crosses if the VM's MTU leaves room for the VXLAN header.
    assert int(eth0(world.h0.dp.vm_ns("a0-0")).get("mtu")) == 1450
    assert_pings(world.h0, "a0-0", ["10.1.0.20", "10.1.1.20"], size=1472)


def test_vms_send_no_ipv6(world: World) -> None:
    # A VM's IPv6 chatter (router and neighbour solicitations, MLD reports) would be flooded to
    # every VTEP of its VPC: its eth0 gets no IPv6 address and sends nothing.
    for vhost, name in ((world.h0, "a0-0"), (world.h1, "a1-2")):
        ns = vhost.dp.vm_ns(name)
        index = eth0(ns)["index"]
        addresses = in_ns(ns, lambda ipr: list(ipr.addr("dump", family=socket.AF_INET6)))
        assert not [a for a in addresses if a["index"] == index]
        counters = read_proc_elsewhere(ns, "net/dev_snmp6/eth0")
        sent = {line.split()[0]: int(line.split()[1]) for line in counters.splitlines()}
        assert sent["Ip6OutRequests"] == 0 and sent["Icmp6OutMsgs"] == 0


def test_vpcs_with_overlapping_cidrs_are_isolated(world: World) -> None:
    h0, h1 = world.h0, world.h1
    a_macs = {s.mac for specs in world.specs.values() for s in specs if s.vni == VPC_A.vni}
    b_macs = {s.mac for specs in world.specs.values() for s in specs if s.vni == VPC_B.vni}
    assert_pings(h0, "b0-0", ["10.1.0.10"])  # VPC B works on its own: b0-0 (h0) -> b1-0 (h1)
    assert neighbour_mac(h0.dp.vm_ns("b0-0"), "10.1.0.10") == "02:0b:01:00:00:00"
    with sniff(h0, "b0-0") as seen_b0, sniff(h1, "b1-0") as seen_b1:
        # 10.1.0.30 exists only in VPC B (on h0); 10.1.0.10 exists in both, and A's must answer.
        assert_no_pings(h0, "a0-1", ["10.1.0.30"])
        assert_no_pings(h1, "a1-0", ["10.1.0.30"])
        assert_pings(h1, "a1-0", ["10.1.0.10"])
    assert neighbour_mac(h1.dp.vm_ns("a1-0"), "10.1.0.10") == "02:0a:00:00:00:00"
    # Not one frame of VPC A (its VMs' or its gateway's, ARP broadcasts included) reached VPC B.
    assert not (set(seen_b0) | set(seen_b1)) & (a_macs | {VPC_A.gateway_mac})
    with sniff(h1, "a1-1") as seen_a1:
        assert_no_pings(h1, "b1-0", ["10.1.0.20", "10.1.0.21"])  # A's VMs on the same vhost
        assert_no_pings(h0, "b0-0", ["10.1.0.11", "10.1.1.20"])
    assert not set(seen_a1) & (b_macs | {VPC_B.gateway_mac})


def test_vxlan_socket_stays_in_the_vhost_namespace(world: World) -> None:
    h0 = world.h0
    vpc_ns = h0.dp.vpc_ns(VPC_A.vni)
    assert VXLAN_PORT in udp_ports(h0.ns)
    assert VXLAN_PORT not in udp_ports(vpc_ns)
    assert "vx5001" not in link_names(h0.ns)
    vx = in_ns(vpc_ns, lambda ipr: ipr.link("get", ifname="vx5001")[0])
    assert vx.get("IFLA_LINK_NETNSID") is not None  # its underlay link is in another namespace
    # The VPC namespace cannot reach the other VTEP itself, so the tunnel must leave via the vhost.
    routes = in_ns(vpc_ns, lambda ipr: [r.get("dst") for r in ipr.route("dump", family=2)])
    assert not any(str(dst).startswith(UNDERLAY_NET) for dst in routes)
    assert_pings(h0, "a0-2", ["10.1.0.22"])


def test_vpc_namespace_forwards_and_nothing_lands_in_the_root_namespace(world: World) -> None:
    assert read_sysctl_elsewhere(world.h0.dp.vpc_ns(VPC_A.vni), "net/ipv4/ip_forward") == "1"
    ours = {host_ifname(s.name) for specs in world.specs.values() for s in specs} | {"vx5001", "vx5002"}
    with IPRoute() as ipr:
        root = {str(link.get("ifname")) for link in ipr.link("dump")}
    assert not ours & root


def test_resending_a_batch_changes_nothing(world: World) -> None:
    h0 = world.h0
    before = (netns.list_names(h0.dp.prefix), link_names(h0.dp.vpc_ns(VPC_A.vni)))
    results = h0.dp.create_vms(world.specs[h0.ns])
    assert [(r.ok, r.created, r.error) for r in results] == [(True, False, "")] * len(results)
    assert (netns.list_names(h0.dp.prefix), link_names(h0.dp.vpc_ns(VPC_A.vni))) == before
    h0.dp.ensure_vpc(VPC_A)
    assert link_names(h0.dp.vpc_ns(VPC_A.vni)) == before[1]


@pytest.mark.parametrize(
    ("change", "word"),
    [
        ({"ip": "10.1.0.99"}, "ip"),
        ({"mac": "02:0a:00:00:00:99"}, "mac"),
        ({"gateway": "10.1.0.2"}, "gateway"),
        ({"vpc_id": VPC_B.vpc_id, "vni": VPC_B.vni}, "vpc"),
    ],
)
def test_a_different_spec_is_refused(world: World, change: dict[str, Any], word: str) -> None:
    original = world.specs[world.h0.ns][1]
    (result,) = world.h0.dp.create_vms([replace(original, **change)])
    assert not result.ok
    assert result.error.startswith("already exists with a different spec"), result.error
    assert word in result.error.split(":", 1)[1]
    (again,) = world.h0.dp.create_vms([original])
    assert (again.ok, again.created) == (True, False)


# ----------------------------------------------------------------------------- lifecycle


def test_delete_then_destroy_leaves_nothing(one: Vhost) -> None:
    dp = one.dp
    vhost_links = link_names(one.ns)
    dp.ensure_vpc(VPC_A)
    specs = [vm(f"vm-{j}", VPC_A, f"10.1.0.{10 + j}", f"02:0c:00:00:00:0{j}") for j in range(3)]
    assert all(r.ok for r in dp.create_vms(specs))
    dp.set_vni_peers(VPC_A.vni, [f"{UNDERLAY_NET}.9"])
    dp.push_neighbors(VPC_A.vni, [Neighbor("10.1.0.99", "02:0c:00:00:09:09", f"{UNDERLAY_NET}.9")])
    assert sorted(dp.list_vms()) == ["vm-0", "vm-1", "vm-2"]

    names = [s.name for s in specs]
    assert [(r.ok, r.created) for r in dp.delete_vms(names)] == [(True, True)] * 3
    assert dp.list_vms() == []
    assert netns.list_names(dp.prefix) == [dp.vpc_ns(VPC_A.vni)]
    assert link_names(dp.vpc_ns(VPC_A.vni)) == {"lo", "br0", "vx5001"}  # no veth left behind
    assert [(r.ok, r.error, r.created) for r in dp.delete_vms([*names, "never-was"])] == [
        (True, "", False)
    ] * 4

    dp.destroy()
    assert netns.list_names(dp.prefix) == []
    assert VXLAN_PORT not in udp_ports(one.ns)  # vx5001 (and its FDB) is gone, not merely unreachable
    assert link_names(one.ns) == vhost_links
    dp.ensure_vpc(VPC_A)  # the same VNI again at once: the old device released it
    fresh = fdb(dp.vpc_ns(VPC_A.vni), "vx5001")
    assert {(mac, dst) for mac, dst, _, _ in fresh if dst} == set()  # no flood list, no remote MACs
    assert "02:0c:00:00:09:09" not in {mac for mac, _, _, _ in fresh}
    assert permanent_neighbours(dp.vpc_ns(VPC_A.vni)) == set()
    dp.destroy()
    dp.destroy()
    assert netns.list_names(dp.prefix) == []


def test_a_failure_half_way_leaves_nothing_of_that_vm(one: Vhost, monkeypatch: pytest.MonkeyPatch) -> None:
    dp = one.dp
    dp.ensure_vpc(VPC_A)
    vpc_ns = dp.vpc_ns(VPC_A.vni)
    before = link_names(vpc_ns)

    def broken(ns: str, spec: VmSpec) -> None:
        raise OSError(5, "injected after the veth was made")

    monkeypatch.setattr(dp.vms, "_configure", broken)
    (result,) = dp.create_vms([vm("doomed", VPC_A, "10.1.0.10", "02:0d:00:00:00:01")])
    monkeypatch.undo()
    assert not result.ok and "injected" in result.error
    assert not netns.exists(dp.vm_ns("doomed"))
    assert link_names(vpc_ns) == before

    # A real kernel refusal (the port name is taken) fails that VM only and spares the other link.
    in_ns(vpc_ns, lambda ipr: ipr.link("add", ifname=host_ifname("taken"), kind="bridge"))
    results = dp.create_vms(
        [
            vm("taken", VPC_A, "10.1.0.11", "02:0d:00:00:00:02"),
            vm("fine", VPC_A, "10.1.0.12", "02:0d:00:00:00:03"),
        ]
    )
    assert [r.ok for r in results] == [False, True]
    assert "create veth" in results[0].error and "exists" in results[0].error
    assert not netns.exists(dp.vm_ns("taken"))
    assert host_ifname("taken") in link_names(vpc_ns)
    assert dp.list_vms() == ["fine"]


def test_vms_need_their_vpc(one: Vhost) -> None:
    dp = one.dp
    dp.ensure_vpc(VPC_A)
    results = dp.create_vms(
        [
            vm("orphan", VPC_B, "10.1.0.10", "02:0e:00:00:00:01"),
            replace(vm("stray", VPC_A, "10.1.0.11", "02:0e:00:00:00:02"), vpc_id="vpc-x"),
        ]
    )
    assert not results[0].ok and "not ensured" in results[0].error
    assert not results[1].ok and "belongs to vpc vpc-a" in results[1].error
    assert dp.list_vms() == []
    with pytest.raises(FailedPrecondition):
        dp.set_vni_peers(VPC_B.vni, [])


def test_a_leftover_namespace_without_eth0_is_rebuilt(one: Vhost) -> None:
    dp = one.dp
    dp.ensure_vpc(VPC_A)
    netns.create(dp.vm_ns("left"))
    (result,) = dp.create_vms([vm("left", VPC_A, "10.1.0.10", "02:0f:00:00:00:01")])
    assert (result.ok, result.created) == (True, True)
    assert str(eth0(dp.vm_ns("left")).get("address")) == "02:0f:00:00:00:01"


def test_a_namespace_file_without_its_mount_is_rebuilt(one: Vhost) -> None:
    # A create killed between making /run/netns/<name> and bind-mounting the namespace on it leaves
    # a plain file: setns on it says EINVAL.
    dp = one.dp
    dp.ensure_vpc(VPC_A)
    netns.path_of(dp.vm_ns("bare")).touch()
    (result,) = dp.create_vms([vm("bare", VPC_A, "10.1.0.11", "02:0f:00:00:00:03")])
    assert (result.ok, result.created) == (True, True), result.error
    assert_pings(one, "bare", ["10.1.0.1"])


@pytest.mark.parametrize("made", ["veth", "address"])
def test_a_create_killed_half_way_is_rebuilt(one: Vhost, made: str) -> None:
    # An agent killed while it created a VM leaves eth0 without its address or its default route;
    # the retried create (by the restarted agent) rebuilds it instead of calling it a different VM.
    dp = one.dp
    dp.ensure_vpc(VPC_A)
    spec = vm("half", VPC_A, "10.1.0.10", "02:0f:00:00:00:02")
    assert dp.create_vms([spec])[0].created
    ns = dp.vm_ns("half")

    def undo(ipr: Any) -> None:
        index = ipr.link("get", ifname="eth0")[0]["index"]
        ipr.route("del", dst="0.0.0.0/0", gateway="10.1.0.1", oif=index)
        if made == "veth":
            ipr.addr("del", index=index, address="10.1.0.10", prefixlen=24)

    in_ns(ns, undo)
    (result,) = dp.create_vms([spec])
    assert (result.ok, result.created) == (True, True), result.error
    assert_pings(one, "half", ["10.1.0.1"])
    info = dp.describe_vm("half")
    assert info is not None and (info.ip, info.mac, info.vpc_id) == ("10.1.0.10", spec.mac, VPC_A.vpc_id)


def test_ensure_vpc_converges_and_guards_its_vni(one: Vhost) -> None:
    dp = one.dp
    dp.ensure_vpc(VPC_A)
    smaller = replace(VPC_A, subnets=VPC_A.subnets[1:], gateway_mac="02:00:00:00:50:99")
    dp.ensure_vpc(smaller)

    def bridge_state(ipr: Any) -> tuple[str, set[str]]:
        br = ipr.link("get", ifname="br0")[0]
        addresses = {str(a.get("address")) for a in ipr.addr("dump", family=2) if a["index"] == br["index"]}
        return str(br.get("address")), addresses

    assert in_ns(dp.vpc_ns(VPC_A.vni), bridge_state) == ("02:00:00:00:50:99", {"10.1.1.1"})
    with pytest.raises(Exception, match="already used by vpc vpc-a"):
        dp.ensure_vpc(replace(VPC_A, vpc_id="vpc-other"))


def test_set_vni_peers_makes_the_flood_list_exact(one: Vhost) -> None:
    dp = one.dp
    dp.ensure_vpc(VPC_A)
    u = UNDERLAY_NET
    dp.set_vni_peers(VPC_A.vni, [f"{u}.2", f"{u}.3"])
    assert flood_list(one, VPC_A.vni) == {f"{u}.2", f"{u}.3"}
    dp.set_vni_peers(VPC_A.vni, [f"{u}.3", f"{u}.4", one.ip, f"{u}.4"])  # own VTEP and repeats ignored
    assert flood_list(one, VPC_A.vni) == {f"{u}.3", f"{u}.4"}
    dp.set_vni_peers(VPC_A.vni, [])
    assert flood_list(one, VPC_A.vni) == set()


def test_push_and_remove_neighbors(one: Vhost) -> None:
    dp = one.dp
    dp.ensure_vpc(VPC_A)
    vpc_ns, u = dp.vpc_ns(VPC_A.vni), UNDERLAY_NET
    first = Neighbor("10.1.0.50", "02:10:00:00:00:01", f"{u}.2")
    second = Neighbor("10.1.1.50", "02:10:00:00:00:02", f"{u}.3")
    dp.push_neighbors(VPC_A.vni, [first, second])
    dp.push_neighbors(VPC_A.vni, [first, second])
    assert permanent_neighbours(vpc_ns) == {(first.ip, first.mac), (second.ip, second.mac)}
    entries = fdb(vpc_ns, "vx5001")
    remote = {(mac, dst) for mac, dst, state, flags in entries if flags & NTF_SELF and state & NUD_PERMANENT}
    assert remote == {(first.mac, first.vtep), (second.mac, second.vtep)}
    assert {mac for mac, dst, _, flags in entries if flags & NTF_MASTER and not dst} >= {
        first.mac,
        second.mac,
    }

    moved = replace(second, vtep=f"{u}.4")
    dp.push_neighbors(VPC_A.vni, [moved])
    dp.remove_neighbors(VPC_A.vni, [second])  # stale: the VM is at .4 now, its entries stay
    assert (second.mac, moved.vtep) in {(mac, dst) for mac, dst, _, _ in fdb(vpc_ns, "vx5001")}
    assert (second.ip, second.mac) in permanent_neighbours(vpc_ns)

    dp.remove_neighbors(VPC_A.vni, [first, moved])
    assert permanent_neighbours(vpc_ns) == set()
    assert not {mac for mac, _, _, _ in fdb(vpc_ns, "vx5001")} & {first.mac, second.mac}


# ----------------------------------------------------------------------------- sysctl, ping, input


def test_proc_sys_net_follows_the_threads_namespace(make_netns: MakeNetns) -> None:
    first, second = make_netns(), make_netns()
    for one, other in ((first, second), (second, first)):
        with netns.entered(one):
            kernel.set_sysctl("net/ipv4/ip_forward", "1")
        with netns.entered(other):
            kernel.set_sysctl("net/ipv4/ip_forward", "0")
        assert (
            read_sysctl_elsewhere(one, "net/ipv4/ip_forward"),
            read_sysctl_elsewhere(other, "net/ipv4/ip_forward"),
        ) == (
            "1",
            "0",
        )


def test_proc_sys_net_per_namespace_from_two_threads_at_once(make_netns: MakeNetns) -> None:
    spaces = [make_netns(), make_netns()]
    barrier = threading.Barrier(2)

    def write(ns: str, value: str) -> None:
        for _ in range(50):
            barrier.wait()
            with netns.entered(ns):
                kernel.set_sysctl("net/ipv4/ip_forward", value)

    threads = [
        threading.Thread(target=write, args=(ns, value)) for ns, value in zip(spaces, "10", strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [read_sysctl_elsewhere(ns, "net/ipv4/ip_forward") for ns in spaces] == ["1", "0"]


def test_ping_helper_on_namespace_local_addresses(make_netns: MakeNetns) -> None:
    ns = make_netns()
    in_ns(ns, lambda ipr: ipr.link("set", index=1, state="up"))
    ok, unroutable = ping_from(ns, ["127.0.0.1", "10.255.255.1"], timeout=0.5, count=3, interval=0.05)
    assert ok.ok and ok.rtt_ms is not None and ok.rtt_ms > 0, ok
    assert not unroutable.ok and "unreachable" in unroutable.error.lower(), unroutable

    with netns.entered(ns):
        kernel.set_sysctl("net/ipv4/icmp_echo_ignore_all", "1")
    started = time.monotonic()
    (silent,) = ping_from(ns, ["127.0.0.1"], timeout=0.3, retries=2, interval=0.1)
    elapsed = time.monotonic() - started
    # Every request went out, then the last one had its timeout: it gave up, it did not hang. (At
    # least two intervals and the timeout passed; how much more depends on the machine.)
    assert not silent.ok and "no reply within 0.3s of the last of 3 requests" in silent.error, silent
    assert elapsed >= 0.45, elapsed


def test_ping_of_a_missing_vm_is_not_found(one: Vhost) -> None:
    with pytest.raises(NotFound):
        one.dp.ping("nope", ["10.1.0.1"])


def test_inputs_are_validated() -> None:
    good = vm("vm-1", VPC_A, "10.1.0.10", "02:00:00:00:00:01")
    for bad, field in [
        (replace(good, name="Bad_Name"), "vm name"),
        (replace(good, name="vpc12"), "reserved"),
        (replace(good, name="x" * 33), "vm name"),
        (replace(good, ip="10.1.0.300"), "ip"),
        (replace(good, ip="10.1.0.0"), "ip"),
        (replace(good, mac="02:00:00:00:00"), "mac"),
        (replace(good, mac="01:00:5e:00:00:01"), "unicast"),
        (replace(good, gateway="10.1.1.1"), "gateway"),
        (replace(good, gateway="10.1.0.10"), "gateway"),
        (replace(good, vni=0), "vni"),
        (replace(good, prefix_len=32), "prefix_len"),
        (replace(good, vpc_id=""), "vpc_id"),
    ]:
        with pytest.raises(ValueError, match=field):
            validate_vm(bad)
    with pytest.raises(ValueError, match="gateway"):
        validate_vpc(replace(VPC_A, subnets=(SubnetSpec("10.1.0.0/24", "10.2.0.1"),)))
    with pytest.raises(ValueError, match="overlaps"):
        validate_vpc(replace(VPC_A, subnets=(*VPC_A.subnets, SubnetSpec("10.1.0.0/16", "10.1.2.1"))))
    with pytest.raises(ValueError, match="prefix"):
        Dataplane("vh", "Bad", "192.168.77.1", "ul0")
    with pytest.raises(ValueError, match="repeat"):
        Dataplane("vh", "mk", "192.168.77.1", "ul0").create_vms([good, good])
    with pytest.raises(ValueError, match="dest"):
        ping_from("vh", ["not-an-ip"])


def test_host_side_names_fit_and_differ() -> None:
    names = ["a", "x" * 14, "x" * 15, "x" * 32, "x" * 31 + "y"]
    ifnames = [host_ifname(n) for n in names]
    assert all(len(i) <= 15 for i in ifnames)
    assert len(set(ifnames)) == len(ifnames)
    assert ifnames[:2] == ["ta", "t" + "x" * 14]
    assert host_ifname("x" * 32) == ifnames[3]
