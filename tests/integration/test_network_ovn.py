"""The ovn network plugin against a real OVN northbound database (no mock of OVN): a network config's
routers, switches, router ports, port groups and ACLs, read back with ovn-nbctl; UPDATE, DELETE (nothing
of the config left, another config untouched); remotes that are wrong, absent or unreachable."""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

import grpc

from merak import ovs
from merak.v1 import common_pb2
from merak_tools.ovncentral import RunningCentral
from services.network.plugins.ovn import names
from services.network.plugins.ovn.acls import ALLOW_PRIORITY, DROP_PRIORITY
from tests.integration.ovn_net import (
    allocate,
    as_list,
    by_name,
    config,
    failure,
    ident,
    op,
    port,
    rows,
    serve,
    snapshot,
)
from tests.support import assert_eventually, free_port
from tests.support.plugin import ServeBuilt


async def test_create_update_delete_in_nb(
    serve_built: ServeBuilt, redis_url: str, ovn_nb: RunningCentral
) -> None:
    net = await serve(serve_built, redis_url, ovn=ovn_nb)
    # Another config in the same NB, with ports: DELETE of the first must leave it exactly as it is.
    other = config("nc-other", 1, 1, nb=ovn_nb.nb, base=50)
    await net.stub.NetConfigHandler(op(common_pb2.CREATE, other))
    await net.stub.AllocatePorts(allocate("nc-other", port("vm-0", 0, 0, "sg-web"), port("vm-1", 0, 0)))
    before = snapshot(ovn_nb)

    created = await net.stub.NetConfigHandler(op(common_pb2.CREATE, config("nc-a", nb=ovn_nb.nb)))
    assert created.plugin == "ovn" and created.ovn_sb == ""
    assert [v.vni for v in created.vpcs] == [0, 0]

    routers = by_name(rows(ovn_nb, "Logical_Router", "nc-a"))
    assert set(routers) == {names.router("nc-a", f"vpc-{v}") for v in range(2)}
    switches = by_name(rows(ovn_nb, "Logical_Switch", "nc-a"))
    router_ports = by_name(rows(ovn_nb, "Logical_Router_Port", "nc-a"))
    switch_ports = by_name(rows(ovn_nb, "Logical_Switch_Port", "nc-a"))
    macs = set()
    for v in range(2):
        router = routers[names.router("nc-a", f"vpc-{v}")]
        assert router["external_ids"] == {"merak-netconfig": "nc-a", "merak-vpc": f"vpc-{v}"}
        for s in range(2):
            subnet = f"sn-{v}-{s}"
            switch = switches[names.switch("nc-a", subnet)]
            lrp = router_ports[names.router_port("nc-a", subnet)]
            rtr = switch_ports[names.switch_router_port("nc-a", subnet)]
            # Every subnet of a VPC on the VPC's router, with its gateway and a MAC of its own.
            assert lrp["_uuid"] in as_list(router["ports"])
            assert as_list(lrp["networks"]) == [f"10.{10 + v}.{s}.1/24"]
            mac = str(lrp["mac"])
            assert int(mac[:2], 16) & 0b11 == 0b10  # locally administered, unicast
            macs.add(mac)
            assert as_list(switch["ports"]) == [rtr["_uuid"]]
            assert (rtr["type"], as_list(rtr["addresses"]), rtr["options"]) == (
                "router", ["router"], {"router-port": names.router_port("nc-a", subnet)}
            )  # fmt: skip
            assert switch["external_ids"] == {
                "merak-netconfig": "nc-a", "merak-vpc": f"vpc-{v}", "merak-subnet": subnet
            }  # fmt: skip
    assert len(macs) == 4
    # INFO's subnets and the router ports agree; the router ports are the ports' gateway MACs (below).
    assert len(rows(ovn_nb, "Logical_Router", "")) == 3  # and nc-other's

    groups = by_name(rows(ovn_nb, "Port_Group", "nc-a"))
    web, db, drop = (
        names.port_group("nc-a", "sg-web"),
        names.port_group("nc-a", "sg-db"),
        names.drop_group("nc-a"),
    )
    assert set(groups) == {web, db, drop}
    acls = {(a["direction"], a["priority"], a["match"], a["action"]) for a in rows(ovn_nb, "ACL", "nc-a")}
    allow, members = "allow-related", f"${web}_ip4"
    assert acls == {
        ("to-lport", ALLOW_PRIORITY,
         f"outport == @{web} && ip4 && ip4.src == 0.0.0.0/0 && tcp && tcp.dst == 80", allow),
        ("to-lport", ALLOW_PRIORITY, f"outport == @{web} && ip4 && ip4.src == {members} && icmp4", allow),
        ("from-lport", ALLOW_PRIORITY, f"inport == @{web} && ip4", allow),
        ("to-lport", ALLOW_PRIORITY,
         f"outport == @{db} && ip4 && ip4.src == {members} && tcp && tcp.dst == 5432", allow),
        ("from-lport", DROP_PRIORITY, f"inport == @{drop} && ip", "drop"),
        ("to-lport", DROP_PRIORITY, f"outport == @{drop} && ip", "drop"),
    }  # fmt: skip
    # Each ACL sits on the port group its match names.
    matches = {a["_uuid"]: a["match"] for a in rows(ovn_nb, "ACL", "nc-a")}
    on_group = {uuid: name for name, group in groups.items() for uuid in as_list(group["acls"])}
    assert set(on_group) == set(matches)
    assert all(f"port == @{on_group[uuid]} " in match for uuid, match in matches.items())

    # UPDATE: a subnet more in vpc-0, a third VPC, a third group.
    grown = config("nc-a", nb=ovn_nb.nb)
    grown.network.vpcs[0].subnets.add(subnet_id="sn-0-2", subnet_cidr="10.10.2.0/24")
    vpc = grown.network.vpcs.add(vpc_id="vpc-2", tenant_id="p-1", project_id="p-1", vpc_cidr="10.12.0.0/16")
    vpc.subnets.add(subnet_id="sn-2-0", subnet_cidr="10.12.0.0/24")
    grown.network.security_groups.add(id="sg-new").rules.add(
        direction="ingress", protocol="udp", port_range="53-54"
    )
    await net.stub.NetConfigHandler(op(common_pb2.UPDATE, grown))
    routers = by_name(rows(ovn_nb, "Logical_Router", "nc-a"))
    assert len(routers) == 3 and len(rows(ovn_nb, "Logical_Switch", "nc-a")) == 6
    router_ports = by_name(rows(ovn_nb, "Logical_Router_Port", "nc-a"))
    assert router_ports[names.router_port("nc-a", "sn-0-2")]["_uuid"] in as_list(
        routers[names.router("nc-a", "vpc-0")]["ports"]
    )
    assert len(as_list(routers[names.router("nc-a", "vpc-0")]["ports"])) == 3
    new = names.port_group("nc-a", "sg-new")
    assert {a["match"] for a in rows(ovn_nb, "ACL", "nc-a")} >= {
        f"outport == @{new} && ip4 && udp && udp.dst >= 53 && udp.dst <= 54"
    }

    # Ports, then DELETE: nothing of nc-a is left, nc-other is as it was.
    await net.stub.AllocatePorts(
        allocate("nc-a", port("a-0", 0, 0, "sg-web"), port("a-1", 1, 1, "sg-db", "sg-web"))
    )
    assert len(rows(ovn_nb, "Logical_Switch_Port", "nc-a")) == 6 + 2
    deleted = await net.stub.NetConfigHandler(op(common_pb2.DELETE, ident("nc-a")))
    assert deleted.return_code == common_pb2.OK
    assert snapshot(ovn_nb) == before
    assert "nc-a" not in ovn_nb.nbctl("show") + ovn_nb.nbctl("list", "ACL") + ovn_nb.nbctl(
        "list", "Port_Group"
    )


async def test_remotes_are_checked_before_anything_is_made(
    serve_built: ServeBuilt, redis_url: str, ovn_nb: RunningCentral
) -> None:
    # A network service with no OVN of its own; a config may name the test's NB and two that are down.
    down = (f"unix:/tmp/mk-no-nb-{os.getpid()}.sock", f"tcp:127.0.0.1:{free_port()}")
    net = await serve(serve_built, redis_url, ovn=ovn_nb, allow=f"{down[0]},{down[1].removeprefix('tcp:')}")
    bad = [
        ("config.ovn_nb", config("nc-x", nb="localhost:6641"), "not an OVSDB remote"),
        ("config.ovn_nb", config("nc-x", nb="tcp:127.0.0.1:70000"), "out of range"),
        ("config.ovn_nb", config("nc-x", nb="unix:relative.sock"), "not an OVSDB remote"),
        ("config.ovn_sb", config("nc-x", nb=ovn_nb.nb, sb="ssl:sb.example:6642"), "not an OVSDB remote"),
    ]
    native = config("nc-x", nb=ovn_nb.nb, groups=False)
    native.plugin = "native"
    bad.append(("config.ovn_nb", native, "only the ovn plugin"))
    for field, cfg, problem in bad:
        code, details = await failure(net.stub.NetConfigHandler(op(common_pb2.CREATE, cfg)))
        assert (code, field in details, problem in details) == (grpc.StatusCode.INVALID_ARGUMENT, True, True)

    code, details = await failure(net.stub.NetConfigHandler(op(common_pb2.CREATE, config("nc-x"))))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "OVN is not running in this stack" in details

    for remote in down:
        code, details = await failure(
            net.stub.NetConfigHandler(op(common_pb2.CREATE, config("nc-x", nb=remote)))
        )
        assert code == grpc.StatusCode.UNAVAILABLE and remote in details
    code, _ = await failure(net.stub.NetConfigHandler(op(common_pb2.INFO, ident("nc-x"))))
    assert code == grpc.StatusCode.NOT_FOUND
    assert rows(ovn_nb, "Logical_Switch") == [] and rows(ovn_nb, "Port_Group") == []


async def test_the_stacks_ovn_and_a_configs_own(
    serve_built: ServeBuilt, redis_url: str, ovn_nb: RunningCentral
) -> None:
    stack_sb = "unix:/tmp/the-stacks-sb.sock"  # only handed on to compute: nothing connects to it here
    net = await serve(serve_built, redis_url, ovn=ovn_nb, ovn_nb=ovn_nb.nb, ovn_sb=stack_sb)
    created = await net.stub.NetConfigHandler(op(common_pb2.CREATE, config("nc-stack", 1, 1)))
    assert created.ovn_sb == stack_sb
    assert len(rows(ovn_nb, "Logical_Switch", "nc-stack")) == 1
    # A config naming its own NB gets its own SB (none here), never the stack's.
    own = await net.stub.NetConfigHandler(
        op(common_pb2.CREATE, config("nc-own", 1, 1, nb=ovn_nb.nb, base=40))
    )
    assert own.ovn_sb == ""
    info = await net.stub.NetConfigHandler(op(common_pb2.INFO, ident("nc-stack")))
    assert info.ovn_sb == stack_sb
    moved = config("nc-stack", 1, 1, nb=ovn_nb.nb)
    code, details = await failure(net.stub.NetConfigHandler(op(common_pb2.UPDATE, moved)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "config.ovn_nb" in details


async def test_an_update_undone_removes_what_it_added(
    serve_built: ServeBuilt, redis_url: str, ovn_nb: RunningCentral
) -> None:
    net = await serve(serve_built, redis_url, ovn=ovn_nb)
    await net.stub.NetConfigHandler(op(common_pb2.CREATE, config("nc-u", nb=ovn_nb.nb)))
    await net.stub.AllocatePorts(allocate("nc-u", port("vm-0", 0, 0, "sg-web")))
    created = snapshot(ovn_nb)
    before = await net.manager.store.state("nc-u")
    grown = config("nc-u", nb=ovn_nb.nb)
    grown.network.vpcs[1].subnets.add(subnet_id="sn-1-2", subnet_cidr="10.11.2.0/24")
    grown.network.vpcs.add(vpc_id="vpc-2", vpc_cidr="10.12.0.0/16").subnets.add(
        subnet_id="sn-2-0", subnet_cidr="10.12.0.0/24"
    )
    grown.network.security_groups.add(id="sg-3").rules.add(direction="egress", remote_group_id="sg-web")
    await net.stub.NetConfigHandler(op(common_pb2.UPDATE, grown))
    after = await net.manager.store.state("nc-u")
    assert before is not None and after is not None and snapshot(ovn_nb) != created
    # What the manager does when storing an UPDATE fails: the plugin removes what it added.
    await net.manager.plugins.get("ovn").remove(after, before, best_effort=True)
    assert snapshot(ovn_nb) == created


async def test_an_nb_that_goes_away(serve_built: ServeBuilt, redis_url: str, ovn_nb: RunningCentral) -> None:
    net = await serve(serve_built, redis_url, ovn=ovn_nb, ovn_timeout=1.0)
    await net.stub.NetConfigHandler(op(common_pb2.CREATE, config("nc-g", 1, 1, nb=ovn_nb.nb)))
    ovn_nb.stop()
    code, details = await failure(net.stub.AllocatePorts(allocate("nc-g", port("vm-0", 0, 0))))
    assert code == grpc.StatusCode.UNAVAILABLE and ovn_nb.nb in details
    # The addresses of the failed call went back.
    info = await net.stub.NetConfigHandler(op(common_pb2.INFO, ident("nc-g")))
    assert info.vpcs[0].subnets[0].allocated == 0
    code, _ = await failure(net.stub.NetConfigHandler(op(common_pb2.DELETE, ident("nc-g"))))
    assert code == grpc.StatusCode.UNAVAILABLE
    # Back again (same database): the connection heals (after the IDL's reconnect backoff) and DELETE
    # goes through.
    ovn_nb.start()

    async def deleted() -> bool:
        try:
            await net.stub.NetConfigHandler(op(common_pb2.DELETE, ident("nc-g")))
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
            return False
        return True

    done: bool = await assert_eventually(deleted, timeout=20, interval=0.2)
    assert done
    assert rows(ovn_nb, "Logical_Switch") == [] and rows(ovn_nb, "Logical_Router") == []


def _trace(central: RunningCentral, netconfig_id: str, src: Any, dst: Any, protocol: str) -> str:
    """ovn-trace of a new connection from one VM port to another (OVN's own logical flows, as northd
    compiled them into SB; no chassis needed): the port it reaches, or "" when it is dropped."""
    next_hop = dst.mac if src.subnet_id == dst.subnet_id else src.gateway_mac
    flow = (
        f'inport == "{src.port_name}" && eth.src == {src.mac} && eth.dst == {next_hop} && '
        f"ip4.src == {src.ip} && ip4.dst == {dst.ip} && ip.ttl == 64 && {protocol}"
    )
    argv = [ovs.program("ovn-trace"), f"--db={central.sb}", "--minimal", *["--ct=new,trk"] * 4]
    done = subprocess.run(
        [*argv, names.switch(netconfig_id, src.subnet_id), flow],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    reached = re.findall(r'output\("([^"]+)"\)', done.stdout)
    return reached[-1] if reached else ""


async def test_traffic_as_ovn_computes_it(
    serve_built: ServeBuilt, redis_url: str, ovn_central: RunningCentral
) -> None:
    net = await serve(serve_built, redis_url, ovn=ovn_central)
    await net.stub.NetConfigHandler(
        op(common_pb2.CREATE, config("nc-t", nb=ovn_central.nb, sb=ovn_central.sb))
    )
    reply = await net.stub.AllocatePorts(
        allocate(
            "nc-t",
            port("a", 0, 0, "sg-web"),
            port("b", 0, 1, "sg-web"),
            port("c", 1, 0, "sg-web"),
            port("d", 0, 0, "sg-db"),
            port("e", 0, 1),
        )
    )
    vm = {p.vm_id: p for p in reply.ports}
    ovn_central.nbctl("--wait=sb", "sync")

    def reaches(src: str, dst: str, protocol: str = "icmp4 && icmp4.type == 8") -> bool:
        return _trace(ovn_central, "nc-t", vm[src], vm[dst], protocol) == vm[dst].port_name

    assert reaches("a", "b")  # another subnet of the VPC, through its router; ICMP among sg-web's members
    assert not reaches("a", "c")  # another VPC: no route
    assert not reaches("a", "d")  # sg-db has no ICMP rule: dropped
    assert reaches("a", "d", "tcp && tcp.dst == 5432")  # sg-db lets sg-web's members in on 5432
    assert not reaches("a", "d", "tcp && tcp.dst == 5433")
    assert not reaches("d", "a", "tcp && tcp.dst == 80")  # sg-db has no egress rule
    assert reaches("e", "a", "tcp && tcp.dst == 80")  # from a port in no group, to sg-web's http
    assert not reaches("e", "a")  # ICMP into sg-web only from its members
    assert reaches("a", "e", "udp && udp.dst == 53")  # a port in no group takes anything
