#!/usr/bin/env python3
"""SPIKE (issue 31, item 1): an overlay whose state grows with hosts, not with VMs x hosts.

Routed design ("blocks"): each host owns address blocks (/26) inside a subnet; per (host, VPC)
namespace the VMs sit on br0 (the distributed gateway, as today), br0 answers ARP for addresses
routed elsewhere (proxy_arp, proxy_delay 0), and vx<vni> is an L3 device (not on the bridge) that
carries, per REMOTE HOST: one IPv6 link-local neighbour (fe80::<vtep> -> 02:00:<vtep>), one FDB
entry (02:00:<vtep> -> vtep) and one route per remote block (`<block> via inet6 fe80::<vtep> dev
vx<vni> onlink`). Addresses borrowed outside the host's own blocks get a /32 route.

Today's design ("bridged"), for comparison: vx<vni> on br0 with neigh_suppress, a flood list
(all-zero FDB per remote VTEP), and per REMOTE VM a neighbour on br0 plus two FDB entries.

Everything is built with `ip -batch` / `bridge -batch` in namespaces named <prefix>-... (prefix
spk-<pid>) and deleted at the end. Subcommands:
  functional          3 hosts, two VPCs with overlapping CIDRs, pings and isolation checks
  memory H P          H hosts x P VMs, one VPC with two subnets: memory of the lab, of the routed
                      overlay and of today's overlay, plus a ping sample for each
  overlay400 [K]      per-host overlay state at 400 hosts x 100 VMs, both designs, K namespaces each
  cleanup PREFIX      delete namespaces whose name starts with PREFIX- (must start with spk-)
"""

from __future__ import annotations

import concurrent.futures as cf
import ipaddress
import json
import os
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field

NETNS = "/run/netns"
BLOCK_PREFIX = 26  # a host's block: 64 addresses
MTU = 1450  # VXLAN over a 1500-byte underlay
UNDERLAY = ipaddress.IPv4Network("192.168.77.0/24")


# ----------------------------------------------------------------------------- helpers


def sh(cmd: list[str], stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, input=stdin, text=True, capture_output=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()[:2000]}")
    return p


def _checked(cmd: list[str], stdin: str | None) -> subprocess.CompletedProcess:
    return sh(cmd, stdin, check=True)


def batch(lines: list[str], ns: str | None = None, tool: str = "ip", force: bool = False) -> None:
    """`<tool> -batch -` in namespace `ns` (nsenter joins only the network namespace: cheap)."""
    if not lines:
        return
    enter = ["nsenter", f"--net={NETNS}/{ns}"] if ns else []
    _checked([*enter, tool, *(["-force"] if force else []), "-batch", "-"], "\n".join(lines) + "\n")


def write_sysctls(ns: str, values: dict[str, str]) -> None:
    """Per-namespace sysctls: written from inside the namespace, never the machine's."""
    script = "; ".join(f"echo {v} > /proc/sys/{k}" for k, v in values.items())
    _checked(["nsenter", f"--net={NETNS}/{ns}", "sh", "-c", script], None)


def vx_mac(vtep: str) -> str:
    """The MAC of a host's vx device, derived from its VTEP: every host computes every other's."""
    return "02:00:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(vtep).packed)


def vx_nexthop(vtep: str) -> str:
    """An IPv6 link-local nexthop derived from the VTEP: it can never collide with a VPC address."""
    n = int(ipaddress.IPv4Address(vtep))
    return f"fe80::{n >> 16:x}:{n & 0xFFFF:x}"


def namespaces(prefix: str) -> list[str]:
    out = sh(["ip", "netns", "list"]).stdout.split("\n")
    return [line.split()[0] for line in out if line.startswith(prefix + "-")]


def delete_namespaces(prefix: str) -> int:
    assert prefix.startswith("spk-"), prefix
    names = namespaces(prefix)
    for i in range(0, len(names), 500):
        batch([f"netns del {n}" for n in names[i : i + 500]])
    return len(names)


def meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    for line in open("/proc/meminfo"):
        k, v = line.split(":", 1)
        out[k] = int(v.split()[0])  # kB
    return out


def slabinfo() -> dict[str, int]:
    """Bytes held by active objects, per cache."""
    out: dict[str, int] = {}
    for line in open("/proc/slabinfo").readlines()[2:]:
        f = line.split()
        out[f[0]] = int(f[1]) * int(f[3])
    return out


@dataclass
class Snapshot:
    label: str
    mem: dict[str, int]
    slab: dict[str, int]
    netns_total: int
    at: float = field(default_factory=time.time)


def snapshot(label: str, settle: float = 3.0) -> Snapshot:
    time.sleep(settle)
    n = len(sh(["ip", "netns", "list"]).stdout.splitlines())
    return Snapshot(label, meminfo(), slabinfo(), n)


def delta(a: Snapshot, b: Snapshot) -> dict[str, float]:
    """KiB deltas b - a (MemAvailable as memory *used*, i.e. a.avail - b.avail)."""
    d = {
        "used_by_MemAvailable": a.mem["MemAvailable"] - b.mem["MemAvailable"],
        "used_by_MemFree": a.mem["MemFree"] - b.mem["MemFree"],
        "Slab": b.mem["Slab"] - a.mem["Slab"],
        "SUnreclaim": b.mem["SUnreclaim"] - a.mem["SUnreclaim"],
        "SReclaimable": b.mem["SReclaimable"] - a.mem["SReclaimable"],
        "Percpu": b.mem.get("Percpu", 0) - a.mem.get("Percpu", 0),
        "KernelStack": b.mem["KernelStack"] - a.mem["KernelStack"],
        "PageTables": b.mem["PageTables"] - a.mem["PageTables"],
        "slab_objects": (sum(b.slab.values()) - sum(a.slab.values())) / 1024,
    }
    d["kernel(SUnreclaim+Percpu)"] = d["SUnreclaim"] + d["Percpu"]
    return d


def top_slabs(a: Snapshot, b: Snapshot, n: int = 8) -> list[tuple[str, float]]:
    keys = set(a.slab) | set(b.slab)
    diffs = [(k, (b.slab.get(k, 0) - a.slab.get(k, 0)) / 1024) for k in keys]
    return sorted(diffs, key=lambda x: -abs(x[1]))[:n]


def cpu_idle(seconds: float = 2.0) -> float:
    def sample() -> tuple[int, int]:
        f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return f[3] + f[4], sum(f)
    i0, t0 = sample()
    time.sleep(seconds)
    i1, t1 = sample()
    return (i1 - i0) / max(1, t1 - t0)


def wait_quiet(limit: float = 300.0, idle: float = 0.85) -> float:
    """The kernel frees deleted namespaces in the background for minutes: a snapshot taken before
    that ends counts their memory as freed by us."""
    start = time.monotonic()
    while time.monotonic() - start < limit and cpu_idle() < idle:
        pass
    return time.monotonic() - start


def wait_no_bench(poll: float = 30.0) -> None:
    """The machine is shared: heavy work only when no `python -m bench` runs."""
    while subprocess.run(["pgrep", "-f", "python -m bench"], capture_output=True).returncode == 0:
        print("  (a bench is running; waiting)", flush=True)
        time.sleep(poll)


# ----------------------------------------------------------------------------- the lab model


@dataclass(frozen=True)
class Subnet:
    cidr: str
    gateway: str

    @property
    def net(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.cidr)


@dataclass(frozen=True)
class Vpc:
    vni: int
    gateway_mac: str
    subnets: tuple[Subnet, ...]


@dataclass(frozen=True)
class Vm:
    name: str
    host: int
    vni: int
    ip: str
    mac: str

    def key(self) -> str:
        return f"{self.name}@h{self.host}"


@dataclass
class Lab:
    prefix: str
    hosts: int
    vpcs: dict[int, Vpc]
    vms: list[Vm]

    # names
    def sw(self) -> str:
        return f"{self.prefix}-sw"

    def vh(self, h: int) -> str:
        return f"{self.prefix}-h{h}"

    def vpc_ns(self, h: int, vni: int) -> str:
        return f"{self.prefix}-h{h}-v{vni}"

    def vm_ns(self, vm: Vm) -> str:
        return f"{self.prefix}-h{vm.host}-{vm.name}"

    def vtep(self, h: int) -> str:
        return str(UNDERLAY.network_address + h + 1)

    def subnet_of(self, vm: Vm) -> Subnet:
        for s in self.vpcs[vm.vni].subnets:
            if ipaddress.IPv4Address(vm.ip) in s.net:
                return s
        raise ValueError(vm)

    def hosts_of(self, vni: int) -> list[int]:
        cache = self.__dict__.setdefault("_hosts_of", {})
        if vni not in cache:
            cache[vni] = sorted({vm.host for vm in self.vms if vm.vni == vni})
        return cache[vni]

    # the IPAM the spike assumes: block k of every subnet belongs to host k (what the network
    # service would record per (subnet, host) when it hands blocks out)
    def block_owner(self, vni: int, ip: str) -> tuple[str, int]:
        s = next(s for s in self.vpcs[vni].subnets if ipaddress.IPv4Address(ip) in s.net)
        blk = ipaddress.IPv4Network(f"{ip}/{BLOCK_PREFIX}", strict=False)
        index = (int(blk.network_address) - int(s.net.network_address)) >> (32 - BLOCK_PREFIX)
        return str(blk), index

    def routes_of(self, vni: int, host: int) -> tuple[list[str], list[str]]:
        """What host `host` advertises for VPC `vni`: its blocks, and /32s of VMs it holds in others'."""
        cache = self.__dict__.setdefault("_routes_of", {})
        if (vni, host) in cache:
            return cache[vni, host]
        if not cache:  # index the VMs by (vni, host) once
            self.__dict__["_by_vni_host"] = by = {}
            for vm in self.vms:
                by.setdefault((vm.vni, vm.host), []).append(vm)
        blocks: set[str] = set()
        borrowed: list[str] = []
        for vm in self.__dict__["_by_vni_host"].get((vni, host), []):
            blk, owner = self.block_owner(vni, vm.ip)
            if owner == host:
                blocks.add(blk)
            else:
                borrowed.append(f"{vm.ip}/32")
        cache[vni, host] = (sorted(blocks), borrowed)
        return cache[vni, host]


# ----------------------------------------------------------------------------- building


def build(lab: Lab) -> dict[str, float]:
    """Underlay, vhosts, VPC namespaces (br0 + L3 vx) and VMs; no overlay entries yet."""
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    # 1. namespaces and veth pairs, from the root namespace but created in place (IFLA_NET_NS_FD)
    root = [f"netns add {lab.sw()}"]
    batch(root)
    for h in range(lab.hosts):
        lines = [f"netns add {lab.vh(h)}"]
        lines += [f"netns add {lab.vpc_ns(h, vni)}" for vni in lab.vpcs if h in lab.hosts_of(vni)]
        mine = [vm for vm in lab.vms if vm.host == h]  # O(VMs) per host: fine up to ~10^4
        lines += [f"netns add {lab.vm_ns(vm)}" for vm in mine]
        lines.append(f"link add u{h} netns {lab.sw()} type veth peer name ul netns {lab.vh(h)}")
        lines += [
            f"link add t-{vm.name} netns {lab.vpc_ns(h, vm.vni)} mtu {MTU} type veth "
            f"peer name eth0 address {vm.mac} netns {lab.vm_ns(vm)}"
            for vm in mine
        ]
        batch(lines)  # one batch per host: `ip` keeps a descriptor per namespace it names
    # 2. the underlay switch (NB: a bridge named "br" is parsed as `broadcast`)
    batch(["link set lo up", "link add sw0 type bridge", "link set sw0 up"]
          + [f"link set u{h} master sw0 up" for h in range(lab.hosts)], lab.sw())
    times["namespaces+veths"] = time.perf_counter() - t0
    # 3. vhosts: underlay address, one vx per VPC created here (its UDP socket stays here) and put
    #    straight into the VPC namespace, with the MAC derived from the VTEP
    for h in range(lab.hosts):
        vtep = lab.vtep(h)
        lines = ["link set lo up", f"addr add {vtep}/{UNDERLAY.prefixlen} dev ul", "link set ul up"]
        lines += [
            f"link add vx{vni} address {vx_mac(vtep)} netns {lab.vpc_ns(h, vni)} type vxlan id {vni} "
            f"local {vtep} dev ul dstport 4789 nolearning"
            for vni in lab.vpcs
            if h in lab.hosts_of(vni)
        ]
        batch(lines, lab.vh(h))
    # 4. VPC namespaces: br0 = distributed gateway; vx L3 (IPv6 on for the link-local nexthops,
    #    but no address: addrgenmode none); proxy ARP on br0 without its random delay
    for h in range(lab.hosts):
        for vni, vpc in lab.vpcs.items():
            if h not in lab.hosts_of(vni):
                continue
            ns = lab.vpc_ns(h, vni)
            write_sysctls(ns, {
                "net/ipv4/ip_forward": "1",
                "net/ipv6/conf/all/disable_ipv6": "1",
                "net/ipv6/conf/default/disable_ipv6": "1",
            })
            lines = ["link set lo up", f"link add br0 address {vpc.gateway_mac} type bridge"]
            lines += [f"addr add {s.gateway}/{s.net.prefixlen} dev br0" for s in vpc.subnets]
            lines += ["link set br0 up", f"link set vx{vni} addrgenmode none"]
            lines += [f"link set t-{vm.name} master br0 up" for vm in lab.vms if vm.host == h and vm.vni == vni]
            batch(lines, ns)
            write_sysctls(ns, {
                f"net/ipv6/conf/vx{vni}/disable_ipv6": "0",
                "net/ipv4/conf/br0/proxy_arp": "1",
                "net/ipv4/neigh/br0/proxy_delay": "0",
            })
            batch([f"link set vx{vni} up"], ns)
    times["vhosts+vpcs"] = time.perf_counter() - t0 - times["namespaces+veths"]
    # 5. VMs: lo, eth0 (no IPv6 address), address, default route via the subnet's gateway
    t1 = time.perf_counter()

    def one(vm: Vm) -> None:
        s = lab.subnet_of(vm)
        batch([
            "link set lo up",
            "link set eth0 addrgenmode none",
            f"addr add {vm.ip}/{s.net.prefixlen} dev eth0",
            "link set eth0 up",
            f"route add default via {s.gateway}",
        ], lab.vm_ns(vm))

    with cf.ThreadPoolExecutor(4) as pool:
        list(pool.map(one, lab.vms))
    times["vms"] = time.perf_counter() - t1
    return times


def routed_overlay_lines(lab: Lab, h: int, vni: int) -> tuple[list[str], list[str]]:
    """(ip lines, bridge lines) of the routed overlay for VPC `vni` on host `h`."""
    ip_lines: list[str] = []
    fdb_lines: list[str] = []
    for r in lab.hosts_of(vni):
        blocks, borrowed = lab.routes_of(vni, r)
        if r == h:
            # our own VMs outside our blocks: a /32 on br0 beats the owner's block route
            ip_lines += [f"route replace {c} dev br0 scope link" for c in borrowed]
            continue
        vtep = lab.vtep(r)
        ip_lines.append(f"neigh replace {vx_nexthop(vtep)} lladdr {vx_mac(vtep)} dev vx{vni} nud permanent")
        ip_lines += [f"route replace {c} via inet6 {vx_nexthop(vtep)} dev vx{vni} onlink" for c in blocks + borrowed]
        fdb_lines.append(f"fdb replace {vx_mac(vtep)} dev vx{vni} dst {vtep} self permanent")
    return ip_lines, fdb_lines


def program_routed(lab: Lab) -> tuple[float, int]:
    t0 = time.perf_counter()
    entries = 0
    for h in range(lab.hosts):
        for vni in lab.vpcs:
            if h not in lab.hosts_of(vni):
                continue
            ip_lines, fdb_lines = routed_overlay_lines(lab, h, vni)
            batch(ip_lines, lab.vpc_ns(h, vni))
            batch(fdb_lines, lab.vpc_ns(h, vni), tool="bridge")
            entries += len(ip_lines) + len(fdb_lines)
    return time.perf_counter() - t0, entries


def unprogram_routed(lab: Lab) -> None:
    """Remove the routed entries and turn the VPC namespaces into today's shape (vx on br0)."""
    for h in range(lab.hosts):
        for vni in lab.vpcs:
            if h not in lab.hosts_of(vni):
                continue
            ns = lab.vpc_ns(h, vni)
            ip_lines, fdb_lines = routed_overlay_lines(lab, h, vni)
            batch([line.replace(" replace ", " del ", 1) for line in ip_lines], ns)
            batch([line.replace("fdb replace", "fdb del", 1) for line in fdb_lines], ns, tool="bridge")
            write_sysctls(ns, {"net/ipv4/conf/br0/proxy_arp": "0"})
            batch([f"link set vx{vni} master br0 up",
                   f"link set dev vx{vni} type bridge_slave neigh_suppress on"], ns)


def program_bridged(lab: Lab) -> tuple[float, int]:
    """Today's overlay: flood list + per remote VM a neighbour on br0 and two FDB entries on vx."""
    t0 = time.perf_counter()
    entries = 0
    for h in range(lab.hosts):
        for vni in lab.vpcs:
            if h not in lab.hosts_of(vni):
                continue
            ns = lab.vpc_ns(h, vni)
            remote = [vm for vm in lab.vms if vm.vni == vni and vm.host != h]
            ip_lines = [f"neigh replace {vm.ip} lladdr {vm.mac} dev br0 nud permanent" for vm in remote]
            fdb = [f"fdb append 00:00:00:00:00:00 dev vx{vni} dst {lab.vtep(r)} self permanent"
                   for r in lab.hosts_of(vni) if r != h]
            for vm in remote:
                fdb.append(f"fdb replace {vm.mac} dev vx{vni} dst {lab.vtep(vm.host)} self permanent")
                fdb.append(f"fdb replace {vm.mac} dev vx{vni} master static")
            batch(ip_lines, ns)
            batch(fdb, ns, tool="bridge")
            entries += len(ip_lines) + len(fdb)
    return time.perf_counter() - t0, entries


# ----------------------------------------------------------------------------- pings


def icmp_in_echos(ns: str) -> int:
    text = sh(["nsenter", f"--net={NETNS}/{ns}", "cat", "/proc/net/snmp"]).stdout
    lines = [line.split() for line in text.splitlines() if line.startswith("Icmp:")]
    return int(lines[1][lines[0].index("InEchos")])


def ping(lab: Lab, src: Vm, dst_ip: str, count: int = 3) -> int:
    p = sh(["nsenter", f"--net={NETNS}/{lab.vm_ns(src)}", "ping", "-n", "-q", "-c", str(count),
            "-i", "0.2", "-W", "1", dst_ip], check=False)
    m = re.search(r"(\d+) received", p.stdout)
    return int(m.group(1)) if m else 0


def ping_sample(lab: Lab, pairs: list[tuple[Vm, Vm]], workers: int = 8) -> tuple[int, list[str]]:
    def one(pair: tuple[Vm, Vm]) -> tuple[bool, str]:
        src, dst = pair
        got = ping(lab, src, dst.ip)
        if got == 0:  # a fresh port can need a moment: one retry, as the product's test does
            got = ping(lab, src, dst.ip)
        return got > 0, f"{src.key()}({src.ip}) -> {dst.key()}({dst.ip})"

    with cf.ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(one, pairs))
    return sum(ok for ok, _ in results), [text for ok, text in results if not ok]


# ----------------------------------------------------------------------------- functional test


def functional(prefix: str) -> bool:
    A = Vpc(100, "02:aa:00:00:00:64", (Subnet("10.1.0.0/24", "10.1.0.1"), Subnet("10.1.1.0/24", "10.1.1.1")))
    # B overlaps A (10.1.0.0/24) and the underlay (192.168.77.0/24, gateway = host 0's VTEP address)
    B = Vpc(200, "02:aa:00:00:00:c8", (Subnet("10.1.0.0/24", "10.1.0.1"), Subnet("192.168.77.0/24", "192.168.77.1")))

    def mac(i: int) -> str:
        return f"02:bf:00:00:00:{i:02x}"

    vms = [
        Vm("a0", 0, 100, "10.1.0.10", mac(1)),
        Vm("a1", 1, 100, "10.1.0.70", mac(2)),
        Vm("a2", 2, 100, "10.1.1.140", mac(3)),
        Vm("a3", 0, 100, "10.1.1.20", mac(4)),
        Vm("a4", 2, 100, "10.1.0.30", mac(5)),  # borrowed: inside host 0's block, lives on host 2
        Vm("a5", 1, 100, "10.1.0.71", mac(6)),
        Vm("b0", 0, 200, "10.1.0.10", mac(1)),  # same IP (and MAC) as a0
        Vm("b1", 1, 200, "10.1.0.70", mac(2)),  # same IP as a1
        Vm("b2", 1, 200, "10.1.0.75", mac(7)),  # only in B
        Vm("b3", 0, 200, "192.168.77.2", mac(8)),  # = host 1's VTEP address
        Vm("b4", 2, 200, "192.168.77.130", mac(9)),
    ]
    lab = Lab(prefix, 3, {100: A, 200: B}, vms)
    by = {vm.name: vm for vm in vms}
    build(lab)
    took, entries = program_routed(lab)
    print(f"routed overlay programmed: {entries} entries in {took:.2f}s")
    for h in range(lab.hosts):
        for vni in lab.vpcs:
            ns = lab.vpc_ns(h, vni)
            print(f"--- {ns}: routes / vx neighbours / vx fdb")
            print(sh(["nsenter", f"--net={NETNS}/{ns}", "ip", "route"]).stdout.rstrip())
            print(sh(["nsenter", f"--net={NETNS}/{ns}", "ip", "neigh", "show", "dev", f"vx{vni}", "nud", "permanent"]).stdout.rstrip())
            print(sh(["nsenter", f"--net={NETNS}/{ns}", "bridge", "fdb", "show", "dev", f"vx{vni}"]).stdout.rstrip())
    time.sleep(1)
    ok = True

    def check(label: str, src: str, dst_ip: str, expect: bool, receivers: tuple[str, ...] = (), silent: tuple[str, ...] = ()) -> None:
        nonlocal ok
        before = {n: icmp_in_echos(lab.vm_ns(by[n])) for n in receivers + silent}
        got = ping(lab, by[src], dst_ip)
        if expect and got == 0:
            got = ping(lab, by[src], dst_ip)
        after = {n: icmp_in_echos(lab.vm_ns(by[n])) for n in receivers + silent}
        passed = (got > 0) == expect
        passed &= all(after[n] > before[n] for n in receivers)
        passed &= all(after[n] == before[n] for n in silent)
        ok &= passed
        counters = ", ".join(f"{n} InEchos +{after[n] - before[n]}" for n in receivers + silent)
        print(f"{'PASS' if passed else 'FAIL'}  {label}: {src}({by[src].ip}) -> {dst_ip}: "
              f"{got}/3 replies (want {'>0' if expect else '0'}){'; ' + counters if counters else ''}")

    check("same subnet, across hosts (h0->h1)", "a0", "10.1.0.70", True, ("a1",), ("b1",))
    check("same subnet, across hosts (h1->h0)", "a1", "10.1.0.10", True, ("a0",), ("b0",))
    check("same subnet, across hosts (h0->h1, 2nd VM)", "a0", "10.1.0.71", True, ("a5",))
    check("cross subnet, across hosts (h0->h2)", "a0", "10.1.1.140", True, ("a2",))
    check("cross subnet, across hosts (h2->h1)", "a2", "10.1.0.70", True, ("a1",), ("b1",))
    check("cross subnet, same host (h0)", "a0", "10.1.1.20", True, ("a3",))
    check("borrowed /32: block owner h0 -> h2", "a0", "10.1.0.30", True, ("a4",))
    check("borrowed /32: h1 -> h2", "a1", "10.1.0.30", True, ("a4",))
    check("borrowed /32: h2 -> h0's block", "a4", "10.1.0.10", True, ("a0",), ("b0",))
    check("gateway", "a1", "10.1.0.1", True)
    check("isolation: A -> address only B has (10.1.0.75)", "a0", "10.1.0.75", False, (), ("b2",))
    check("isolation: A -> B's other subnet (192.168.77.130)", "a0", "192.168.77.130", False, (), ("b4",))
    check("isolation: A -> B's VM at a VTEP address", "a1", "192.168.77.2", False, (), ("b3",))
    check("VPC B same subnet across hosts (overlapping A)", "b0", "10.1.0.70", True, ("b1",), ("a1",))
    check("VPC B cross subnet across hosts", "b0", "192.168.77.130", True, ("b4",))
    check("VPC B subnet = underlay range, across hosts", "b3", "192.168.77.130", True, ("b4",))
    check("VPC B h1 -> 192.168.77.2 (h0, = h1's own VTEP)", "b1", "192.168.77.2", True, ("b3",))
    # what the VMs' ARP caches hold: remote same-subnet peers answered by br0 (the gateway MAC)
    print("--- a0's neighbours:", sh(["nsenter", f"--net={NETNS}/{lab.vm_ns(by['a0'])}", "ip", "neigh"]).stdout.strip().replace("\n", " | "))
    # no frame left any vx device for a VTEP it was not routed to: BUM is never flooded
    for h in range(lab.hosts):
        ns = lab.vpc_ns(h, 100)
        st = json.loads(sh(["nsenter", f"--net={NETNS}/{ns}", "ip", "-s", "-j", "link", "show", "dev", "vx100"]).stdout)[0]["stats64"]
        print(f"--- {ns} vx100: tx {st['tx']['packets']} packets ({st['tx']['dropped']} dropped), rx {st['rx']['packets']}")
    # the IPv4 alternative nexthop (the remote VTEP itself) fails as soon as a VPC holds that address
    ns = lab.vpc_ns(1, 200)
    p = sh(["nsenter", f"--net={NETNS}/{ns}", "ip", "route", "add", "10.9.0.0/26", "via", lab.vtep(0),
            "dev", "vx200", "onlink"], check=False)
    print(f"pitfall: `ip route add 10.9.0.0/26 via {lab.vtep(0)} dev vx200 onlink` in VPC B on h1 "
          f"(where {lab.vtep(0)} is B's gateway): rc={p.returncode} {p.stderr.strip()}")
    print("FUNCTIONAL:", "ALL PASS" if ok else "SOME FAILED")
    return ok


# ----------------------------------------------------------------------------- memory at 20 x 100


def memory_lab(prefix: str, hosts: int, per_host: int) -> dict:
    vni = 300
    s0, s1 = Subnet("10.0.0.0/17", "10.0.0.1"), Subnet("10.0.128.0/17", "10.0.128.1")  # 512 blocks each
    vpc = Vpc(vni, "02:aa:00:00:01:2c", (s0, s1))
    vms: list[Vm] = []
    for h in range(hosts):
        for v in range(per_host):
            s = (s0, s1)[v % 2]
            ip = s.net.network_address + (h << (32 - BLOCK_PREFIX)) + 2 + v // 2
            vms.append(Vm(f"m{v}", h, vni, str(ip),
                          f"02:bf:{h >> 8 & 255:02x}:{h & 255:02x}:{v >> 8 & 255:02x}:{v & 255:02x}"))
    lab = Lab(prefix, hosts, {vni: vpc}, vms)
    n = len(vms)
    rng = random.Random(31)
    pairs = []
    while len(pairs) < 60:
        a, b = rng.sample(vms, 2)
        if a.host != b.host:
            pairs.append((a, b))
    report: dict = {"hosts": hosts, "per_host": per_host, "vms": n}
    wait_no_bench()
    report["waited_for_quiet_s"] = round(wait_quiet(), 1)
    m0 = snapshot("start")
    times = build(lab)
    m1 = snapshot("lab built, no overlay", settle=10)
    report["build_seconds"] = times
    report["lab_per_vm_kib"] = {k: round(v / n, 1) for k, v in delta(m0, m1).items()}
    print(f"lab: {n} VMs built {times}; per VM (KiB): {report['lab_per_vm_kib']}", flush=True)

    took, entries = program_routed(lab)
    m2 = snapshot("routed overlay")
    ok, failed = ping_sample(lab, pairs)
    report["routed"] = {"seconds": round(took, 2), "entries": entries,
                        "kib_total": delta(m1, m2), "pings": f"{ok}/{len(pairs)}", "failed": failed[:5],
                        "top_slabs_kib": top_slabs(m1, m2)}
    print(f"routed overlay: {entries} entries in {took:.2f}s; total KiB {delta(m1, m2)}; pings {ok}/{len(pairs)}", flush=True)

    unprogram_routed(lab)
    m3 = snapshot("routed removed, vx on br0")
    took, entries = program_bridged(lab)
    m4 = snapshot("today's overlay", settle=5)
    ok, failed = ping_sample(lab, pairs)
    report["bridged"] = {"seconds": round(took, 2), "entries": entries,
                         "kib_total": delta(m3, m4), "pings": f"{ok}/{len(pairs)}", "failed": failed[:5],
                         "top_slabs_kib": top_slabs(m3, m4)}
    print(f"today's overlay: {entries} entries in {took:.2f}s; total KiB {delta(m3, m4)}; pings {ok}/{len(pairs)}", flush=True)
    report["netns_counts"] = [m0.netns_total, m1.netns_total, m2.netns_total, m3.netns_total, m4.netns_total]
    return report


# ----------------------------------------------------------------------------- per-host state at 400 hosts


def overlay400(prefix: str, copies: int, hosts: int = 400, per_host: int = 100, blocks_per_host: int = 2) -> dict:
    """One VPC namespace = one host's view of a 400-host VPC; `copies` of each design, memory per copy."""
    remote = hosts - 1
    report: dict = {"hosts": hosts, "per_host": per_host, "copies": copies, "blocks_per_remote_host": blocks_per_host}

    def vtep(r: int) -> str:
        return f"10.200.{(r + 2) >> 8 & 255}.{(r + 2) & 255}"

    def make(ns: str, bridged: bool) -> None:
        batch([f"netns add {ns}"])
        write_sysctls(ns, {"net/ipv4/ip_forward": "1", "net/ipv6/conf/all/disable_ipv6": "1",
                           "net/ipv6/conf/default/disable_ipv6": "1"})
        batch(["link set lo up", "link add br0 address 02:aa:00:00:01:2c type bridge",
               "addr add 10.0.0.1/16 dev br0", "link set br0 up",
               f"link add vx1 address {vx_mac('10.200.0.1')} type vxlan id 1 local 10.200.0.1 dstport 4789 nolearning",
               "link set vx1 addrgenmode none"], ns)
        if bridged:
            batch(["link set vx1 master br0 up", "link set dev vx1 type bridge_slave neigh_suppress on"], ns)
        else:
            write_sysctls(ns, {"net/ipv6/conf/vx1/disable_ipv6": "0", "net/ipv4/conf/br0/proxy_arp": "1",
                               "net/ipv4/neigh/br0/proxy_delay": "0"})
            batch(["link set vx1 up"], ns)

    def fill(ns: str, bridged: bool) -> int:
        ip_lines: list[str] = []
        fdb: list[str] = []
        for r in range(remote):
            v = vtep(r)
            if bridged:
                fdb.append(f"fdb append 00:00:00:00:00:00 dev vx1 dst {v} self permanent")
                for k in range(per_host):
                    mac = f"02:bf:{r >> 8 & 255:02x}:{r & 255:02x}:00:{k:02x}"
                    ip = ipaddress.IPv4Address("10.0.0.0") + ((r + 1) << 7) + k + 2
                    ip_lines.append(f"neigh replace {ip} lladdr {mac} dev br0 nud permanent")
                    fdb.append(f"fdb replace {mac} dev vx1 dst {v} self permanent")
                    fdb.append(f"fdb replace {mac} dev vx1 master static")
            else:
                ip_lines.append(f"neigh replace {vx_nexthop(v)} lladdr {vx_mac(v)} dev vx1 nud permanent")
                for b in range(blocks_per_host):
                    blk = ipaddress.IPv4Address("10.0.0.0") + ((r + 1) << 7) + (b << 6)
                    ip_lines.append(f"route replace {blk}/26 via inet6 {vx_nexthop(v)} dev vx1 onlink")
                fdb.append(f"fdb replace {vx_mac(v)} dev vx1 dst {v} self permanent")
        batch(ip_lines, ns)
        batch(fdb, ns, tool="bridge")
        return len(ip_lines) + len(fdb)

    for design, bridged in (("routed", False), ("bridged", True)):
        wait_no_bench()
        wait_quiet()
        n_copies = copies * 10 if design == "routed" else copies  # routed state is small: more copies
        names = [f"{prefix}-o{design[0]}{i}" for i in range(n_copies)]
        for ns in names:
            make(ns, bridged)
        a = snapshot(f"{design}: namespaces, no entries", settle=5)
        t0 = time.perf_counter()
        entries = sum(fill(ns, bridged) for ns in names)
        took = time.perf_counter() - t0
        b = snapshot(f"{design}: filled", settle=5)
        d = delta(a, b)
        report[design] = {
            "copies": n_copies,
            "entries_per_host": entries // n_copies,
            "seconds_per_host": round(took / n_copies, 3),
            "kib_per_host": {k: round(v / n_copies, 1) for k, v in d.items()},
            "kib_per_vm_at_400x100": {k: round(v / n_copies / per_host, 2) for k, v in d.items()},
            "top_slabs_kib_per_host": [(k, round(v / n_copies, 1)) for k, v in top_slabs(a, b)],
        }
        print(design, json.dumps(report[design]), flush=True)
        batch([f"netns del {ns}" for ns in names])
        time.sleep(5)
    # borrowed addresses: what one /32 route costs (40,000 in one namespace, 400 nexthops)
    ns = f"{prefix}-or32"
    wait_quiet()
    make(ns, False)
    batch([f"neigh replace {vx_nexthop(vtep(r))} lladdr {vx_mac(vtep(r))} dev vx1 nud permanent" for r in range(remote)], ns)
    a = snapshot("r32 before", settle=5)
    lines = [f"route replace {ipaddress.IPv4Address('10.1.0.0') + i}/32 via inet6 {vx_nexthop(vtep(i % remote))} dev vx1 onlink"
             for i in range(40_000)]
    batch(lines, ns)
    b = snapshot("r32 after", settle=5)
    report["route_32"] = {k: round(v * 1024 / 40_000, 1) for k, v in delta(a, b).items()}  # bytes per route
    print("bytes per /32 route:", report["route_32"], flush=True)
    batch([f"netns del {ns}"])
    return report


# ----------------------------------------------------------------------------- main


def main() -> int:
    args = sys.argv[1:]
    if not args:
        print(__doc__)
        return 2
    if args[0] == "cleanup":
        print("deleted", delete_namespaces(args[1]))
        return 0
    prefix = f"spk-{os.getpid() % 100000}"
    assert not namespaces(prefix), f"namespaces {prefix}-* exist already"
    out = None
    try:
        if args[0] == "functional":
            return 0 if functional(prefix) else 1
        if args[0] == "memory":
            out = memory_lab(prefix, int(args[1]), int(args[2]))
        elif args[0] == "overlay400":
            out = overlay400(prefix, int(args[1]) if len(args) > 1 else 3)
        else:
            print(__doc__)
            return 2
        path = f"/tmp/spike/result-{args[0]}-{prefix}.json"
        with open(path, "w") as fh:
            json.dump(out, fh, indent=1, default=str)
        print("written", path)
        return 0
    finally:
        t0 = time.perf_counter()
        gone = delete_namespaces(prefix)
        print(f"cleanup: deleted {gone} namespaces with prefix {prefix} in {time.perf_counter() - t0:.1f}s; "
              f"left: {len(namespaces(prefix))}")


if __name__ == "__main__":
    sys.exit(main())
