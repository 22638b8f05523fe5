"""The Alcor stand-in pushes goal states as Alcor's DPM/NCM do, over real gRPC on loopback to two hosts
serving GoalStateProvisioner with recording appliers: a bound port goes to its host with its subnet,
VPC, DHCP entry and router, and to the other hosts as a neighbour; a deleted or moved port is taken
back; changes for a host gather while a push to it is in flight; the knobs drop pushes, spoil them
(the host refuses the port) or turn pushing off; an unknown or unreachable host is recorded, never a
hang."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from alcor.schema import common_pb2
from merak_tools.alcor_standin import FakeAlcor, Push
from merak_tools.alcor_standin.__main__ import parse
from services.agent.goalstate.plan import PortWork
from services.agent.goalstate.provisioner import Outcome
from services.agent.goalstate.record import RecordingApplier
from tests.support import assert_eventually, free_port
from tests.unit.agent.test_goalstate import provisioner_server

PROJECT = "3dda2801-d675-4688-a63f-dcda8d327f50"
DATAPATH = {"node-a": "192.168.50.1", "node-b": "192.168.50.2"}
REFUSED = {common_pb2.FAILURE, common_pb2.INVALID_ARG}


@dataclass
class Lab:
    """A fake Alcor with two registered hosts (their agents on loopback), a VPC and a subnet."""

    fake: FakeAlcor
    http: aiohttp.ClientSession
    hosts: dict[str, RecordingApplier]  # by node name
    vpc: dict[str, Any]
    subnet: dict[str, Any]

    @property
    def vni(self) -> int:
        return int(self.vpc["provider:segmentation_id"])

    async def rest(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        async with self.http.request(method, path, json=body) as response:
            assert response.status == status, await response.text()
            return await response.json() if response.content_length else None

    async def port(self, name: str, subnet: dict[str, Any] | None = None) -> dict[str, Any]:
        """A port made (POST), not bound yet."""
        fixed = [{"subnet_id": (subnet or self.subnet)["id"]}]
        body = {"port": {"network_id": self.vpc["id"], "name": name, "device_id": name, "fixed_ips": fixed}}
        port: dict[str, Any] = (await self.rest("POST", f"/project/{PROJECT}/ports", body, 201))["port"]
        return port

    async def bind(self, port: dict[str, Any], host: str) -> None:
        """Merak's bind: PUT with binding:host_id (the REST answer does not wait for any push)."""
        body = {"port": {"binding:host_id": host, "device_owner": "compute:nova", "device_id": port["name"]}}
        await self.rest("PUT", f"/project/{PROJECT}/ports/{port['id']}", body)

    async def delete(self, port: dict[str, Any]) -> None:
        await self.rest("DELETE", f"/project/{PROJECT}/ports/{port['id']}")

    def pushes(self) -> list[Push]:
        with self.fake.state.lock:
            return list(self.fake.state.pushes)

    def pushes_to(self, host: str) -> list[Push]:
        return [p for p in self.pushes() if p.host == host]


@asynccontextmanager
async def lab(hosts: dict[str, RecordingApplier] | None = None, **knobs: Any) -> AsyncIterator[Lab]:
    appliers = hosts or {"node-a": RecordingApplier(), "node-b": RecordingApplier()}
    fake = FakeAlcor(**knobs)
    try:
        async with AsyncExitStack() as stack:
            ports = {
                name: await stack.enter_async_context(provisioner_server(a)) for name, a in appliers.items()
            }
            http = await stack.enter_async_context(aiohttp.ClientSession(base_url=fake.url))
            infos = [
                {
                    "node_id": f"id-{name}", "node_name": name, "local_ip": "127.0.0.1",
                    "server_port": port, "data-path-ip": DATAPATH[name],
                    "mac_address": f"02:00:00:00:00:0{n + 1}", "veth": "eth0",
                }
                for n, (name, port) in enumerate(ports.items())
            ]  # fmt: skip
            async with http.post("/nodes/bulk", json={"host_infos": infos}) as response:
                assert response.status == 200
            network = {"network": {"name": "vpc-1", "cidr": "10.0.0.0/16"}}
            async with http.post(f"/project/{PROJECT}/vpcs", json=network) as response:
                vpc = (await response.json())["network"]
            subnet_body = {"subnet": {"network_id": vpc["id"], "cidr": "10.0.1.0/24", "name": "sn-1"}}
            async with http.post(f"/project/{PROJECT}/subnets", json=subnet_body) as response:
                subnet = (await response.json())["subnet"]
            yield Lab(fake, http, appliers, vpc, subnet)
    finally:
        fake.stop()


def port_of(net: Lab, host: str) -> int:
    with net.fake.state.lock:
        return int(net.fake.state.nodes[f"id-{host}"]["server_port"])


async def test_a_bound_port_goes_to_its_host_and_to_the_others_as_a_neighbour() -> None:
    async with lab() as net:
        a, b = net.hosts["node-a"], net.hosts["node-b"]
        router = (await net.rest("POST", f"/project/{PROJECT}/routers", {"router": {"name": "r1"}}))["router"]
        attach = {"subnet_id": net.subnet["id"]}
        await net.rest("PUT", f"/project/{PROJECT}/routers/{router['id']}/add_router_interface", attach)
        other = (
            await net.rest(
                "POST",
                f"/project/{PROJECT}/subnets",
                {"subnet": {"network_id": net.vpc["id"], "cidr": "10.0.2.0/24"}},
                201,
            )
        )["subnet"]
        p1, p2, p3 = await net.port("vm1"), await net.port("vm2"), await net.port("vm3", other)
        ip = {p["id"]: p["fixed_ips"][0]["ip_address"] for p in (p1, p2, p3)}
        await net.bind(p1, "node-a")  # by node_name
        await net.bind(p2, "id-node-b")  # by node_id
        await net.bind(p3, "node-b")

        def each_sees_its_port_and_the_others() -> bool:
            return (
                set(a.ports) == {p1["id"]}
                and set(b.ports) == {p2["id"], p3["id"]}
                and (
                    set(a.neighbors) == {(net.vni, ip[p2["id"]]), (net.vni, ip[p3["id"]])}
                    and set(b.neighbors) == {(net.vni, ip[p1["id"]])}
                )
            )

        await assert_eventually(each_sees_its_port_and_the_others, message="ports and neighbours pushed")
        port = a.ports[p1["id"]]
        assert (port.vni, port.ip, port.prefix_len, port.mac, port.vpc_id, port.gateway_ip) == (
            net.vni, ip[p1["id"]], 24, p1["mac_address"], net.vpc["id"], net.subnet["gateway_ip"],
        )  # fmt: skip
        assert net.vni == net.vpc["provider:segmentation_id"] >= 1
        # The neighbours carry their host's data-path IP and MAC; same subnet L2, another subnet L3.
        seen_by_a = a.neighbors[(net.vni, ip[p2["id"]])]
        assert (seen_by_a.id, seen_by_a.mac, seen_by_a.host_ip, seen_by_a.l3) == (
            p2["id"], p2["mac_address"], DATAPATH["node-b"], False,
        )  # fmt: skip
        assert a.neighbors[(net.vni, ip[p3["id"]])].l3 is True
        assert b.neighbors[(net.vni, ip[p1["id"]])].host_ip == DATAPATH["node-a"]
        # Its DHCP entry, and the router of its subnet with the subnet's gateway.
        assert a.dhcp_entries[p1["mac_address"]].ip == ip[p1["id"]]
        gateway = (net.vni, net.subnet["gateway_ip"], net.subnet["gateway_port_detail"]["gateway_macAddress"])
        assert gateway in a.routers[router["id"]].gateways
        # Recorded: every push answered, each port's times in order.
        pushes = net.pushes()
        assert pushes and all(p.outcome == "ok" for p in pushes), pushes
        to_a = [p for p in pushes if p1["id"] in p.port_ids]
        assert [p.target for p in to_a] == [f"127.0.0.1:{port_of(net, 'node-a')}"]
        assert (common_pb2.PORT, p1["id"], common_pb2.SUCCESS) in to_a[0].statuses
        with net.fake.state.lock:
            times = dict(net.fake.state.port_times[p1["id"]])
        assert times["posted"] <= times["bound"] <= times["applied"]

        # Deleted: the other host gets a neighbour DELETE, its own host a port DELETE.
        await net.delete(p2)
        await assert_eventually(
            lambda: set(a.neighbors) == {(net.vni, ip[p3["id"]])} and set(b.ports) == {p3["id"]},
            message="the deleted port taken back",
        )
        assert b.dhcp_entries.keys() == {p3["mac_address"]}


async def test_a_moved_port_leaves_its_old_host_and_is_no_neighbour_on_its_new_one() -> None:
    async with lab() as net:
        a, b = net.hosts["node-a"], net.hosts["node-b"]
        p1, p2 = await net.port("vm1"), await net.port("vm2")
        await net.bind(p1, "node-a")
        await net.bind(p2, "node-b")
        await assert_eventually(lambda: len(b.neighbors) == 1 and len(a.neighbors) == 1)
        await net.bind(p1, "node-b")
        await assert_eventually(
            lambda: a.ports == {} and set(b.ports) == {p1["id"], p2["id"]} and b.neighbors == {},
            message="p1 moved to node-b",
        )


class GatedApplier(RecordingApplier):
    """Holds every port until `gate` opens; counts the ports that came."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.arrived = 0

    async def port(self, work: PortWork) -> Outcome:
        self.arrived += 1
        await self.gate.wait()
        return await super().port(work)


async def test_changes_for_a_host_gather_while_a_push_to_it_is_in_flight() -> None:
    gated = GatedApplier()
    async with lab({"node-a": gated, "node-b": RecordingApplier()}) as net:
        first, *rest = [await net.port(f"vm{i}") for i in range(4)]
        await net.bind(first, "node-a")
        await assert_eventually(lambda: gated.arrived == 1, message="the first push in flight")
        for port in rest:  # answered at once though the host's push has not come back
            await net.bind(port, "node-a")
        assert net.pushes_to("node-a") == []
        gated.gate.set()
        everything = {p["id"] for p in (first, *rest)}
        await assert_eventually(lambda: set(gated.ports) == everything, message="all four applied")
        pushes = net.pushes_to("node-a")
        assert [set(p.port_ids) for p in pushes] == [{first["id"]}, {p["id"] for p in rest}]
        assert all(p.outcome == "ok" for p in pushes)


async def test_push_drop_sends_nothing_and_records_the_drops() -> None:
    async with lab() as net:
        a, b = net.hosts["node-a"], net.hosts["node-b"]
        net.fake.push_drop = 1.0
        p1, p2 = await net.port("vm1"), await net.port("vm2")
        await net.bind(p1, "node-a")
        await net.bind(p2, "node-b")

        def dropped_both() -> bool:
            ported = {i for p in net.pushes() for i in p.port_ids}
            return ported == {p1["id"], p2["id"]}

        await assert_eventually(dropped_both, message="both pushes recorded")
        assert {p.outcome for p in net.pushes()} == {"dropped"}
        assert (a.ports, a.neighbors, b.ports, b.neighbors) == ({}, {}, {}, {})
        with net.fake.state.lock:
            assert "applied" not in net.fake.state.port_times[p1["id"]]
            assert net.fake.state.push_counts()["dropped"] == len(net.fake.state.pushes)


async def test_push_error_leaves_the_subnet_out_and_the_host_refuses_the_port() -> None:
    async with lab(push_error=1.0) as net:
        assert net.fake.push_error == 1.0
        p1 = await net.port("vm1")
        await net.bind(p1, "node-a")
        (push,) = await assert_eventually(lambda: net.pushes_to("node-a"), message="the push answered")
        refused = [s for s in push.statuses if s[:2] == (common_pb2.PORT, p1["id"])]
        assert len(refused) == 1 and refused[0][2] in REFUSED, push.statuses
        assert push.outcome.startswith(f"error: PORT {p1['id']} "), push.outcome
        assert net.hosts["node-a"].ports == {}
        with net.fake.state.lock:
            assert "applied" not in net.fake.state.port_times[p1["id"]]


async def test_an_unknown_host_is_an_error_and_an_unreachable_one_a_failure() -> None:
    async with lab() as net:
        p1, p2 = await net.port("vm1"), await net.port("vm2")
        await net.bind(p1, "nowhere")
        (unknown,) = net.pushes()  # recorded as the PUT was answered, nothing sent
        assert (unknown.host, unknown.target, unknown.port_ids) == ("nowhere", "", (p1["id"],))
        assert unknown.outcome == "error: no node 'nowhere' is registered"
        dead = {
            "node_id": "id-node-c", "node_name": "node-c", "local_ip": "127.0.0.1",
            "server_port": free_port(), "data-path-ip": "192.168.50.3", "mac_address": "02:00:00:00:00:03",
        }  # fmt: skip
        await net.rest("POST", "/nodes/bulk", {"host_infos": [dead]})
        await net.bind(p2, "node-c")
        (failed,) = await assert_eventually(lambda: net.pushes_to("node-c"), message="the push given up")
        assert failed.outcome.startswith("failed: UNAVAILABLE"), failed.outcome
        assert failed.attempts == net.fake.southbound.push_retries + 1


async def test_pushing_off_sends_nothing_and_on_again_sends_the_changes_from_then() -> None:
    async with lab(southbound=False) as net:
        a, b = net.hosts["node-a"], net.hosts["node-b"]
        assert net.fake.pushing is False
        p1, p2 = await net.port("vm1"), await net.port("vm2")
        await net.bind(p1, "node-a")  # not pushed; Alcor still knows where it is bound
        net.fake.pushing = True
        await net.bind(p2, "node-b")
        await assert_eventually(
            lambda: set(b.ports) == {p2["id"]} and len(b.neighbors) == 1 and len(a.neighbors) == 1,
            message="p2 pushed, p1 its neighbour",
        )
        assert a.ports == {} and all(p1["id"] not in p.port_ids for p in net.pushes())


def test_the_command_line_sets_the_knobs() -> None:
    args = parse(["--no-southbound", "--push-delay", "0.2", "--push-drop", "1", "--push-error", "0.5"])
    assert (args.southbound, args.push_delay, args.push_drop, args.push_error) == (False, 0.2, 1.0, 0.5)
    assert parse([]).southbound is True
    with pytest.raises(SystemExit):
        parse(["--push-drop", "1.5"])
