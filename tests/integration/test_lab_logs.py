"""A lab's logs survive its DELETE: the local backend's agents' logs and its OVN chassis' daemon logs are
found in the deleted labs' log directory, after the run directory has gone."""

from __future__ import annotations

import json

import grpc
import pytest

from merak.naming import topology_short_id
from merak.v1 import agent_pb2, agent_pb2_grpc, common_pb2, topology_pb2, topology_pb2_grpc
from merak_tools.ovncentral import RunningCentral
from tests.stack import ServiceStack
from tests.support import assert_eventually, unique_name

pytestmark = pytest.mark.root


async def test_a_deleted_labs_agent_and_chassis_logs_are_kept(
    services: ServiceStack, ovn_central: RunningCentral
) -> None:
    lab_logs = services.run_dir / "kept-logs"
    # Its agents may make their vhosts chassis of this central (the allow-list it passes on to them).
    await services.topology(lab_log_dir=lab_logs, lab_logs_kept=3, control_plane_allow=ovn_central.sb)
    config = topology_pb2.InternalTopologyConfiguration(
        topology_id=unique_name("logs-"), topology_type=topology_pb2.TREE, number_of_vhosts=2,
        vhost_per_rack=2, ports_per_vswitch=3, data_plane_cidr="10.226.0.0/24",
    )  # fmt: skip
    short_id = topology_short_id(config.topology_id)
    async with grpc.aio.insecure_channel(services.addresses["topology"]) as channel:
        stub = topology_pb2_grpc.MerakTopologyServiceStub(channel)
        await stub.TopologyHandler(
            topology_pb2.InternalTopologyInfo(operation_type=common_pb2.CREATE, config=config)
        )
        info = topology_pb2.InternalTopologyInfo(operation_type=common_pb2.INFO, config=config)

        async def ready() -> topology_pb2.ReturnTopologyMessage | None:
            reply = await stub.TopologyHandler(info)
            return reply if all(n.status == common_pb2.READY for n in reply.compute_nodes) else None

        nodes: topology_pb2.ReturnTopologyMessage = await assert_eventually(
            ready, timeout=60, message="lab ready"
        )
        vhost = next(n for n in nodes.compute_nodes if n.name == "vhost-1")
        async with grpc.aio.insecure_channel(vhost.agent_endpoint) as agent_channel:
            agent = agent_pb2_grpc.MerakAgentServiceStub(agent_channel)
            await agent.EnsureChassis(
                agent_pb2.EnsureChassisRequest(vhost="vhost-1", sb_remote=ovn_central.sb)
            )
        run_dir = services.run_dir / short_id
        assert (run_dir / "ovn" / "1" / "ovn-controller.log").exists()
        assert not lab_logs.exists()  # nothing is kept while the lab runs

        reply = await stub.TopologyHandler(
            topology_pb2.InternalTopologyInfo(operation_type=common_pb2.DELETE, config=config)
        )
        assert reply.return_code == common_pb2.OK, reply.return_message
        deleted = reply.return_message

    assert not run_dir.exists()
    [kept] = list(lab_logs.iterdir())
    assert kept.name.endswith(f"Z-{short_id}"), kept.name
    assert deleted.endswith(f"; logs kept in {kept}"), deleted  # the DELETE says where
    files = sorted(str(p.relative_to(kept)) for p in kept.rglob("*") if p.is_file())
    assert files == [
        "agent-0.log",
        "agent-1.log",
        "ovn/1/ovn-controller.log",
        "ovn/1/ovs-vswitchd.log",
        "ovn/1/ovsdb-server.log",
    ]
    # The agents' own lines (JSON), the vhosts each served among them.
    for k in (0, 1):
        lines = (kept / f"agent-{k}.log").read_text().splitlines()
        events = [json.loads(line).get("event") for line in lines if line.startswith("{")]
        assert "agent_vhosts" in events, lines[-5:]
    # The chassis' logs were held before the agent, stopping its chassis, removed them.
    for daemon in ("ovn-controller", "ovs-vswitchd", "ovsdb-server"):
        assert (kept / "ovn" / "1" / f"{daemon}.log").stat().st_size > 0, daemon
