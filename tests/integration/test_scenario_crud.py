"""Scenario service CRUD over real gRPC and Redis: ids, timestamps, paging, update masks, references."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from google.protobuf import field_mask_pb2
from prometheus_client import CollectorRegistry

from merak.v1 import (
    compute_pb2,
    scenario_pb2,
    scenario_pb2_grpc,
    topology_pb2,
)
from services.scenario.app import build
from services.scenario.config import ScenarioSettings
from tests.integration.scenario_lab import (
    Stub,
    act,
    compute_config,
    create_scenario,
    network_config,
    pingall_config,
    service_config,
    topology_config,
)
from tests.support.plugin import ServeBuilt

# Nothing listens there: CRUD and refused actions must not need the other services.
NOWHERE = "127.0.0.1:1"


@pytest.fixture
async def scenario_service(serve_built: ServeBuilt, redis_url: str) -> tuple[str, CollectorRegistry]:
    """The scenario service alone: where it listens, and its metrics."""
    settings = ScenarioSettings(
        host="127.0.0.1", grpc_port=0, rest_port=-1, redis_url=redis_url, call_timeout=2,
        topology_address=NOWHERE, network_address=NOWHERE, compute_address=NOWHERE,
    )  # fmt: skip
    built = await build(settings)
    return await serve_built(built), built.registry


@pytest.fixture
async def stub(scenario_service: tuple[str, CollectorRegistry]) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(scenario_service[0]) as channel:
        yield scenario_pb2_grpc.MerakScenarioServiceStub(channel)


async def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


# (name of the RPC family, a valid entity)
KINDS: list[tuple[str, Any]] = [
    ("TopologyConfig", topology_config()),
    ("NetworkConfig", network_config()),
    ("ComputeConfig", compute_config()),
    ("ServiceConfig", service_config()),
    ("TestConfig", pingall_config()),
]


@pytest.mark.parametrize(("family", "entity"), KINDS, ids=[k for k, _ in KINDS])
async def test_config_round_trip(stub: Stub, family: str, entity: Any) -> None:
    create, get = getattr(stub, f"Create{family}"), getattr(stub, f"Get{family}")
    update, delete = getattr(stub, f"Update{family}"), getattr(stub, f"Delete{family}")
    given = type(entity)()
    given.CopyFrom(entity)
    if "status" in given.DESCRIPTOR.fields_by_name:
        given.status = scenario_pb2.READY  # not the caller's to set
    created = await create(given)
    assert len(created.id) == 32 and int(created.id, 16) >= 0
    assert created.created_at.seconds > 0 and created.created_at == created.updated_at
    if "status" in created.DESCRIPTOR.fields_by_name:
        assert created.status == scenario_pb2.NONE
    assert await get(scenario_pb2.GetRequest(id=created.id)) == created

    request_type = getattr(scenario_pb2, f"Update{family}Request")
    renamed = await update(
        request_type(
            config=type(entity)(id=created.id, name="renamed"),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
        )
    )
    expected = type(entity)()
    expected.CopyFrom(created)
    expected.name = "renamed"
    expected.updated_at.CopyFrom(renamed.updated_at)
    assert renamed == expected and renamed.updated_at.ToNanoseconds() >= created.updated_at.ToNanoseconds()

    assert await delete(scenario_pb2.DeleteRequest(id=created.id)) == scenario_pb2.DeleteReply(id=created.id)
    assert (await _code(get(scenario_pb2.GetRequest(id=created.id))))[0] == grpc.StatusCode.NOT_FOUND
    assert (await _code(delete(scenario_pb2.DeleteRequest(id=created.id))))[0] == grpc.StatusCode.NOT_FOUND


async def test_given_ids_are_kept_checked_and_unique(stub: Stub, redis_client: aioredis.Redis) -> None:
    config = topology_config()
    config.id = "my-topology_1.0"
    assert (await stub.CreateTopologyConfig(config)).id == "my-topology_1.0"
    code, details = await _code(stub.CreateTopologyConfig(config))
    assert code == grpc.StatusCode.ALREADY_EXISTS, details
    config.id = "bad id!"
    code, details = await _code(stub.CreateTopologyConfig(config))
    assert (code, details.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "id")
    config.id = "x" * 65
    assert (await _code(stub.CreateTopologyConfig(config)))[0] == grpc.StatusCode.INVALID_ARGUMENT
    code, details = await _code(stub.GetTopologyConfig(scenario_pb2.GetRequest(id="missing")))
    assert (code, details) == (grpc.StatusCode.NOT_FOUND, "topology config 'missing' does not exist")
    assert all(str(k).startswith("merak:scenario:") for k in await redis_client.keys("*"))


async def test_list_pages_in_id_order(stub: Stub) -> None:
    for i in range(7):
        config = scenario_pb2.TestConfig(id=f"t-{i:02d}", name=str(i))
        await stub.CreateTestConfig(config)
    seen, token, pages = [], "", 0
    while True:
        reply = await stub.ListTestConfigs(scenario_pb2.ListRequest(page_size=3, page_token=token))
        seen += [item.id for item in reply.items]
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert seen == [f"t-{i:02d}" for i in range(7)] and pages == 3
    assert [i.id for i in (await stub.ListTestConfigs(scenario_pb2.ListRequest())).items] == seen
    # A token of another list, or made up, is refused.
    first = await stub.ListTestConfigs(scenario_pb2.ListRequest(page_size=1))
    for token in (first.next_page_token, "garbage"):
        request = scenario_pb2.ListRequest(page_token=token)
        code, details = await _code(stub.ListTopologyConfigs(request))
        assert (code, details.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "page_token")
    code, details = await _code(stub.ListTestConfigs(scenario_pb2.ListRequest(page_size=1001)))
    assert (code, details.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "page_size")


async def test_default_page_is_100(stub: Stub) -> None:
    for i in range(101):
        await stub.CreateServiceConfig(scenario_pb2.ServiceConfig(id=f"s-{i:03d}"))
    reply = await stub.ListServiceConfigs(scenario_pb2.ListRequest())
    assert len(reply.items) == 100 and reply.next_page_token
    rest = await stub.ListServiceConfigs(scenario_pb2.ListRequest(page_token=reply.next_page_token))
    assert [i.id for i in rest.items] == ["s-100"] and not rest.next_page_token


async def test_update_masks(stub: Stub) -> None:
    created = await stub.CreateComputeConfig(compute_config())
    mask = field_mask_pb2.FieldMask

    # Empty mask: the non-empty fields replace, zeros and empty lists leave the rest alone (no Merak quirk).
    given = scenario_pb2.ComputeConfig(id=created.id, number_of_vm_per_vpc=100, status=scenario_pb2.READY)
    updated = await stub.UpdateComputeConfig(scenario_pb2.UpdateComputeConfigRequest(config=given))
    assert updated.number_of_vm_per_vpc == 100
    assert updated.number_of_compute_nodes == 5 and updated.name == "compute-config-1"
    assert updated.status == scenario_pb2.NONE and updated.created_at == created.created_at

    # Named paths replace, even with empty values.
    given = scenario_pb2.ComputeConfig(id=created.id, vpc_info=[scenario_pb2.VpcInfo(vpc_cidr="10.9.0.0/16")])
    updated = await stub.UpdateComputeConfig(
        scenario_pb2.UpdateComputeConfigRequest(config=given, update_mask=mask(paths=["vpc_info", "name"]))
    )
    assert [v.vpc_cidr for v in updated.vpc_info] == ["10.9.0.0/16"] and updated.name == ""

    for paths, problem in [
        (["status"], "is set by ScenarioAction"),
        (["id"], "cannot change"),
        (["created_at"], "cannot change"),
        (["no_such_field"], "is not a field of ComputeConfig"),
        (["vpc_info.vpc_cidr"], "nested paths are not supported"),
    ]:
        request = scenario_pb2.UpdateComputeConfigRequest(config=given, update_mask=mask(paths=paths))
        code, details = await _code(stub.UpdateComputeConfig(request))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("update_mask.paths[0]: "), (
            details
        )
        assert problem in details, details

    # An update that would make the config invalid changes nothing.
    request = scenario_pb2.UpdateComputeConfigRequest(
        config=scenario_pb2.ComputeConfig(id=created.id), update_mask=mask(paths=["number_of_vm_per_vpc"])
    )
    code, details = await _code(stub.UpdateComputeConfig(request))
    assert (code, details.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "config.number_of_vm_per_vpc")
    assert (await stub.GetComputeConfig(scenario_pb2.GetRequest(id=created.id))).number_of_vm_per_vpc == 100

    missing = scenario_pb2.UpdateComputeConfigRequest(config=scenario_pb2.ComputeConfig(id="nope", name="x"))
    assert (await _code(stub.UpdateComputeConfig(missing)))[0] == grpc.StatusCode.NOT_FOUND
    no_id = scenario_pb2.UpdateComputeConfigRequest(config=scenario_pb2.ComputeConfig(name="x"))
    code, details = await _code(stub.UpdateComputeConfig(no_id))
    assert (code, details.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "config.id")


async def test_scenario_references_must_exist_and_protect_their_configs(stub: Stub) -> None:
    created = await create_scenario(stub)
    scenario = created.scenario
    assert scenario.status == scenario_pb2.NONE and scenario.topology_status == scenario_pb2.NONE
    assert await stub.GetScenario(scenario_pb2.GetRequest(id=scenario.id)) == scenario

    broken = scenario_pb2.Scenario()
    broken.CopyFrom(scenario)
    broken.id = ""
    broken.topology_id = "x"
    code, details = await _code(stub.CreateScenario(broken))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "topology_id: no topology config 'x'")
    broken.topology_id = ""
    code, details = await _code(stub.CreateScenario(broken))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "topology_id: required")

    code, details = await _code(stub.DeleteTopologyConfig(scenario_pb2.DeleteRequest(id=created.topology.id)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and repr(scenario.id) in details, details
    code, details = await _code(stub.DeleteTestConfig(scenario_pb2.DeleteRequest(id=created.test.id)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and repr(scenario.id) in details, details

    # Pointing the scenario at another topology config frees the first one and protects the second.
    other = await stub.CreateTopologyConfig(topology_config(vhosts=2))
    request = scenario_pb2.UpdateScenarioRequest(
        scenario=scenario_pb2.Scenario(id=scenario.id, topology_id="missing"),
        update_mask=field_mask_pb2.FieldMask(paths=["topology_id"]),
    )
    code, details = await _code(stub.UpdateScenario(request))
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "scenario.topology_id: no topology config 'missing'",
    )
    request.scenario.topology_id = other.id
    assert (await stub.UpdateScenario(request)).topology_id == other.id
    await stub.DeleteTopologyConfig(scenario_pb2.DeleteRequest(id=created.topology.id))
    code, _ = await _code(stub.DeleteTopologyConfig(scenario_pb2.DeleteRequest(id=other.id)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION

    # A scenario with nothing deployed goes without teardown; then its configs are free.
    await stub.DeleteScenario(scenario_pb2.DeleteScenarioRequest(id=scenario.id))
    assert (await _code(stub.GetScenario(scenario_pb2.GetRequest(id=scenario.id))))[
        0
    ] == grpc.StatusCode.NOT_FOUND
    await stub.DeleteTopologyConfig(scenario_pb2.DeleteRequest(id=other.id))
    await stub.DeleteTestConfig(scenario_pb2.DeleteRequest(id=created.test.id))


def _bad(entity: Any, **changes: Any) -> Any:
    copy = type(entity)()
    copy.CopyFrom(entity)
    for name, value in changes.items():
        if isinstance(value, list):
            copy.ClearField(name)
            getattr(copy, name).extend(value)
        else:
            setattr(copy, name, value)
    return copy


def _network_with(**subnet: Any) -> scenario_pb2.NetworkConfig:
    config = network_config()
    for name, value in subnet.items():
        setattr(config.vpcs[0].subnet_info[0], name, value)
    return config


def _vpc_without_cidr() -> scenario_pb2.NetworkConfig:
    config = network_config()
    config.vpcs[0].vpc_cidr = ""
    return config


def _with_router(*subnet_gateways: str) -> scenario_pb2.NetworkConfig:
    config = network_config()
    config.routers.add(name="string", subnet_gateways=subnet_gateways)
    return config


def _with_rule(**rule: str) -> scenario_pb2.NetworkConfig:
    config = network_config()
    config.security_groups[0].rules.add(**rule)
    return config


MALFORMED: list[tuple[str, Any, str]] = [
    ("TopologyConfig", _bad(topology_config(), number_of_vhosts=0), "number_of_vhosts"),
    ("TopologyConfig", _bad(topology_config(), data_plane_cidr="10.200.0.0"), "data_plane_cidr"),
    ("TopologyConfig", _bad(topology_config(), data_plane_cidr="10.200.0.0/30"), "data_plane_cidr"),
    ("TopologyConfig", _bad(topology_config(), ports_per_vswitch=1), "ports_per_vswitch"),
    ("TopologyConfig", _bad(topology_config(), dataplane="virtual"), "dataplane"),
    ("TopologyConfig", _bad(topology_config(), type=topology_pb2.CUSTOM), "vnodes"),
    ("NetworkConfig", _bad(network_config(), vpcs=[]), "vpcs"),
    ("NetworkConfig", _network_with(subnet_cidr="10.2.0.0/24"), "vpcs[0].subnet_info[0].subnet_cidr"),
    ("NetworkConfig", _network_with(subnet_cidr="10.1.0.0/33"), "vpcs[0].subnet_info[0].subnet_cidr"),
    ("NetworkConfig", _network_with(subnet_gateway="10.3.0.1"), "vpcs[0].subnet_info[0].subnet_gateway"),
    ("NetworkConfig", _bad(network_config(), plugin="opendaylight"), "plugin"),
    # What a DEPLOY leaves out or fills in, with a warning: refused when stored over gRPC (strict).
    ("TopologyConfig", _bad(topology_config(), data_plane_cidr=""), "data_plane_cidr"),
    ("TopologyConfig", _bad(topology_config(), ports_per_vswitch=0), "ports_per_vswitch"),
    (
        "TopologyConfig",
        _bad(topology_config(), control_plane_gateway_ips=["string"]),
        "control_plane_gateway_ips[0]",
    ),
    ("NetworkConfig", _network_with(subnet_cidr="10.1.0.5/16"), "vpcs[0].subnet_info[0].subnet_cidr"),
    ("NetworkConfig", _vpc_without_cidr(), "vpcs[0].vpc_cidr"),
    ("NetworkConfig", _with_router("string"), "routers[0].subnet_gateways[0]"),
    ("NetworkConfig", _with_rule(direction="string"), "security_groups[0].rules[0].direction"),
    ("NetworkConfig", _with_rule(remote_ip_prefix="string"), "security_groups[0].rules[0].remote_ip_prefix"),
    ("ComputeConfig", _bad(compute_config(), number_of_vm_per_vpc=0), "number_of_vm_per_vpc"),
    ("ComputeConfig", _bad(compute_config(), number_of_vm_per_vpc=3), "number_of_vm_per_vpc"),
    ("ComputeConfig", _bad(compute_config(), scheduler=compute_pb2.RPS), "rps"),
    ("ComputeConfig", _bad(compute_config(), number_of_port_per_vm=2), "number_of_port_per_vm"),
    (
        "ComputeConfig",
        _bad(compute_config(), vm_deploy_type=compute_pb2.ASSIGN, vms_per_host=[1, 2]),
        "vms_per_host",
    ),
]


@pytest.mark.parametrize(("family", "entity", "field"), MALFORMED, ids=[f"{k}-{f}" for k, _, f in MALFORMED])
async def test_malformed_configs_name_the_field(
    stub: Stub, redis_client: aioredis.Redis, family: str, entity: Any, field: str
) -> None:
    code, details = await _code(getattr(stub, f"Create{family}")(entity))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(f"{field}: "), details
    assert await redis_client.keys("*") == []


def _actions(registry: CollectorRegistry, service: str, action: str, outcome: str) -> float:
    labels = {"service": service, "action": action, "outcome": outcome}
    return registry.get_sample_value("merak_scenario_actions_total", labels) or 0.0


async def test_refused_actions_touch_no_service(
    stub: Stub, scenario_service: tuple[str, CollectorRegistry]
) -> None:
    registry = scenario_service[1]
    scenario = (await create_scenario(stub)).scenario
    refused_before = _actions(registry, "compute", "DEPLOY", "failed_precondition")
    code, details = await _code(act(stub, scenario.id, scenario_pb2.COMPUTE, scenario_pb2.DEPLOY))
    assert (code, details) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "cannot DEPLOY compute: topology is NONE; DEPLOY topology first",
    )
    assert _actions(registry, "compute", "DEPLOY", "failed_precondition") == refused_before + 1
    # DELETE of what is not deployed is a success that says so; it asks nothing of the service (which
    # would be UNAVAILABLE here) and changes nothing.
    for service, name in ((scenario_pb2.COMPUTE, "compute"), (scenario_pb2.TOPOLOGY, "topology")):
        deleted = await act(stub, scenario.id, service, scenario_pb2.DELETE)
        assert deleted.return_message.endswith(f"; {name} was not deployed (NONE): nothing to delete")
        assert (deleted.service_status, deleted.scenario_status) == (scenario_pb2.NONE, scenario_pb2.NONE)
    code, details = await _code(act(stub, scenario.id, 9, scenario_pb2.DEPLOY))  # type: ignore[arg-type]  # unknown on purpose
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(
        "service.service_name: unknown service"
    )
    code, details = await _code(
        act(stub, scenario.id, scenario_pb2.SERVICE_NAME_UNSPECIFIED, scenario_pb2.DEPLOY)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("service.service_name: required")
    code, details = await _code(
        act(stub, scenario.id, scenario_pb2.TOPOLOGY, scenario_pb2.ACTION_UNSPECIFIED)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("service.action: required")
    code, _ = await _code(act(stub, "no-such-scenario", scenario_pb2.TOPOLOGY, scenario_pb2.DEPLOY))
    assert code == grpc.StatusCode.NOT_FOUND
    code, details = await _code(stub.RunTest(scenario_pb2.RunTestRequest(scenario_id=scenario.id)))
    assert (code, details) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "cannot run the test: compute is NONE; DEPLOY compute first",
    )
    progress = [
        p async for p in stub.WatchScenario(scenario_pb2.WatchScenarioRequest(scenario_id=scenario.id))
    ]
    assert len(progress) == 1 and progress[0].status == scenario_pb2.NONE
    after = await stub.GetScenario(scenario_pb2.GetRequest(id=scenario.id))
    assert after == scenario


async def test_a_dead_service_is_unavailable_and_marks_the_service_failed(stub: Stub) -> None:
    scenario = (await create_scenario(stub)).scenario
    code, details = await _code(act(stub, scenario.id, scenario_pb2.TOPOLOGY, scenario_pb2.DEPLOY))
    assert code == grpc.StatusCode.UNAVAILABLE and details.startswith(f"topology service at {NOWHERE}"), (
        details
    )
    after = await stub.GetScenario(scenario_pb2.GetRequest(id=scenario.id))
    assert (after.topology_status, after.status) == (scenario_pb2.FAILED, scenario_pb2.FAILED)
    topology = await stub.GetTopologyConfig(scenario_pb2.GetRequest(id=scenario.topology_id))
    assert topology.status == scenario_pb2.FAILED  # mirrored on the config, as Merak kept it
    # Deleting the scenario now needs teardown (the topology may be half made).
    code, details = await _code(stub.DeleteScenario(scenario_pb2.DeleteScenarioRequest(id=scenario.id)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "teardown" in details, details
