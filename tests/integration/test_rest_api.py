"""Merak's REST API on the scenario service: the calls of Merak's Postman collections and teste2e.

The bodies below are written the way Merak's clients send them (its field names, its free-text enums,
its typos); the ids are the ones our POSTs return.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from prometheus_client import CollectorRegistry

from merak.v1 import scenario_pb2, scenario_pb2_grpc
from merak_tools import teste2e
from services.scenario.app import build
from services.scenario.config import ScenarioSettings
from tests.integration.scenario_lab import Stub
from tests.stack import ServiceStack
from tests.support.plugin import ServeBuilt

NOWHERE = "127.0.0.1:1"
HEX32 = re.compile(r"^[0-9a-f]{32}$")

TOPOLOGY = {
    "name": "Top1", "number_of_control_plane_gateways": 0, "number_of_vhosts": 5, "number_of_racks": 2,
    "type": "FATTREE", "vhosts_per_rack": 5, "ports_per_vswitch": 5, "data_plane_cidr": "10.200.0.0/16",
    "control_plane_gateway_ips": None, "vlinks": None, "vnodes": None,
    "images": [
        {"id": "1", "name": "ACA", "registry": "meraksim/merak-agent:dev", "cmd": ["/bin/sh"], "args": []}
    ],
    "id": "", "status": "", "created_at": "0001-01-01T00:00:00Z", "updated_at": "0001-01-01T00:00:00Z",
}  # fmt: skip
NETWORK = {
    "name": "network-config-1", "number_of_vpcs": 1, "number_of_subnet_per_vpc": 1,
    "number_of_security_groups": 1, "gateways": [], "routers": [],
    "vpcs": [{
        "vpc_id": "", "tenant_id": "123456789", "project_id": "123456789", "vpc_cidr": "10.1.0.0/16",
        "number_of_subnets": 1,
        "subnet_info": [
            {"subnet_id": "", "subnet_cidr": "10.1.0.0/16", "subnet_gateway": "10.1.0.1", "number_of_vms": 50}
        ],
    }],
    "security_groups": [{"id": "", "name": "sg-1", "tenant_id": "123456789", "project_id": "123456789",
                         "rules": [], "apply_to": []}],
}  # fmt: skip
SERVICE = {
    "name": "service-config-1",
    "services": [
        {"name": "alcor-createDefaultTable", "cmd": "curl", "url": "", "parameters": [], "return_code": [],
         "return_string": [], "when_to_run": "INIT", "where_to_run": "INIT"},
        {"name": "aca-cmd", "cmd": "/aca", "parameters": ["-d"], "when_to_run": "INIT",
         "where_to_run": "AGENT"},
    ],
}  # fmt: skip
COMPUTE = {
    "name": "compute-config-1", "number_of_compute_nodes": 5, "number_of_port_per_vm": 1,
    "number_of_vm_per_vpc": 50, "scheduler": "SEQENTIAL", "vm_deploy_type": "UNIFORM",
    "vpc_info": [{
        "vpc_id": "", "tenant_id": "123456789", "project_id": "123456789", "vpc_cidr": "10.1.0.0/16",
        "number_of_subnets": 1,
        "subnet_info": [{"subnet_cidr": "10.1.0.0/16", "subnet_gateway": "10.1.0.1", "number_of_vms": 50}],
    }],
}  # fmt: skip
TEST = {
    "name": "test-config-1",
    "tests": [{"id": "", "name": "pingall", "script": "", "cmd": "ping", "parameters": [],
               "when_to_run": "after:VM_CREATED", "where_to_run": "AGENT"}],
}  # fmt: skip
PATHS: dict[str, tuple[str, Any, str]] = {
    "topology": ("/api/topologies", TOPOLOGY, "Topology Has been created successfully."),
    "network": ("/api/network-config", NETWORK, "Network config has been created successfully."),
    "service": ("/api/service-config", SERVICE, "Service config has been created successfully."),
    "compute": ("/api/compute-config", COMPUTE, "Compute config has been created successfully."),
    "test": ("/api/test-config", TEST, "Test config has been created successfully."),
}


@pytest.fixture
async def rest(serve_built: ServeBuilt, redis_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """The scenario service alone (the other services unreachable): its REST client and gRPC address."""
    settings = ScenarioSettings(
        host="127.0.0.1", grpc_port=0, rest_port=0, redis_url=redis_url, call_timeout=2,
        topology_address=NOWHERE, network_address=NOWHERE, compute_address=NOWHERE,
    )  # fmt: skip
    built = await build(settings)
    grpc_address = await serve_built(built)
    async with httpx.AsyncClient(base_url=f"http://{built.listeners['rest']}") as client:
        yield client, grpc_address


async def create_all(client: httpx.AsyncClient) -> dict[str, str]:
    """POST every config and the scenario as Merak's clients do; their ids."""
    ids: dict[str, str] = {}
    for kind, (path, body, message) in PATHS.items():
        reply = await client.post(path, json=body)
        envelope = reply.json()
        assert (reply.status_code, envelope["status"], envelope["message"]) == (200, "OK", message)
        assert HEX32.match(envelope["data"]["id"]) and envelope["data"]["name"] == body["name"]
        ids[kind] = envelope["data"]["id"]
    scenario = {
        "name": "scenario-1", "project_id": "123456789", "topology_id": ids["topology"],
        "service_config_id": ids["service"], "network_config_id": ids["network"],
        "compute_config_id": ids["compute"], "test_config_id": ids["test"],
    }  # fmt: skip
    reply = await client.post("/api/scenarios", json=scenario)
    assert reply.status_code == 200 and reply.json()["message"] == "Scenario Has been created successfully."
    assert reply.json()["data"]["status"] == "NONE"
    ids["scenario"] = reply.json()["data"]["id"]
    return ids


async def test_crud_as_merak_clients_call_it(rest: tuple[httpx.AsyncClient, str]) -> None:
    client, grpc_address = rest
    ids = await create_all(client)
    topology = (await client.get(f"/api/topologies/{ids['topology']}")).json()
    assert topology["status"] == "OK" and topology["data"]["type"] == "TREE"  # "FATTREE" is a tree
    assert topology["data"]["status"] == "NONE" and topology["data"]["created_at"].endswith("Z")
    compute = (await client.get(f"/api/compute-config/{ids['compute']}")).json()["data"]
    assert (compute["scheduler"], compute["vm_deploy_type"]) == ("SEQUENTIAL", "UNIFORM")  # Postman's typo
    listed = (await client.get("/api/scenarios/")).json()  # a trailing slash matches, as in Fiber
    assert listed["message"] == "OK" and [s["id"] for s in listed["data"]] == [ids["scenario"]]

    # PUT replaces what the body names: a number given replaces, one not given stays; status is
    # the actions' (the Postman PUTs send it): ignored.
    put = await client.put(
        f"/api/topologies/{ids['topology']}",
        json={"number_of_vhosts": 6, "number_of_racks": 2, "vhosts_per_rack": 5, "status": "NONE"},
    )
    assert put.status_code == 200 and put.json()["data"]["number_of_vhosts"] == 6
    assert put.json()["data"]["ports_per_vswitch"] == 5 and put.json()["data"]["status"] == "NONE"
    put = await client.put(f"/api/scenarios/{ids['scenario']}", json={"status": "DONE"})
    assert put.status_code == 200 and put.json()["data"]["status"] == "NONE"

    # Made over REST, seen over gRPC (the same store).
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = scenario_pb2_grpc.MerakScenarioServiceStub(channel)
        seen = await stub.GetTopologyConfig(scenario_pb2.GetRequest(id=ids["topology"]))
        assert seen.number_of_vhosts == 6 and seen.images[0].name == "ACA"

    for path, message in (("/api/topologies/nope", "Topology not found!"),
                          ("/api/network-config/nope", "Network config not found!"),
                          ("/api/service-config/nope", "Service config not found!"),
                          ("/api/compute-config/nope", "Compute config not found!"),
                          ("/api/test-config/nope", "Test config not found!"),
                          ("/api/scenarios/nope", "Scenario not found!")):  # fmt: skip
        reply = await client.get(path)
        assert (reply.status_code, reply.json()) == (
            404,
            {"data": None, "message": message, "status": "FAILED"},
        )

    # A config a scenario uses cannot go; the scenario first, then the configs.
    reply = await client.delete(f"/api/topologies/{ids['topology']}")
    assert reply.status_code == 409 and reply.json()["status"] == "FAILED" and reply.json()["message"]
    reply = await client.delete(f"/api/scenarios/{ids['scenario']}")
    assert reply.json() == {"data": None, "message": "Scenario has been deleted!", "status": "OK"}
    reply = await client.delete(f"/api/topologies/{ids['topology']}")
    assert reply.json()["message"] == "Topology has been deleted!"


async def test_bad_input_is_a_failed_envelope(rest: tuple[httpx.AsyncClient, str]) -> None:
    client, _ = rest
    reply = await client.post("/api/topologies", json={"number_of_vhosts": -1})
    assert reply.status_code == 400 and reply.json()["status"] == "FAILED"
    assert "number_of_vhosts" in reply.json()["message"]
    reply = await client.post("/api/scenarios", json={"name": "s", "topology_id": "missing"})
    assert (reply.status_code, reply.json()["message"]) == (404, "topology not found")
    reply = await client.post(
        "/api/topologies", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert reply.status_code == 400 and reply.json()["status"] == "FAILED"
    # A fault schedule travels as the proto's JSON; one that is not is the body's fault.
    schedule = [{"name": "crash", "at_seconds": 1, "duration_seconds": 3,
                 "host": {"vhost": "vhost-1", "state": "HOST_CRASHED"}}]  # fmt: skip
    reply = await client.post("/api/test-config", json={"name": "t", "fault_schedule": schedule})
    assert reply.status_code == 200, reply.text
    stored = (await client.get(f"/api/test-config/{reply.json()['data']['id']}")).json()["data"]
    assert stored["fault_schedule"][0]["host"] == {"vhost": "vhost-1", "state": "HOST_CRASHED"}
    reply = await client.post("/api/test-config", json={"fault_schedule": [{"at_seconds": "soon"}]})
    assert reply.status_code == 400 and reply.json()["message"].startswith("body: ")
    reply = await client.put("/api/topologies/x", content=b'{"number_of_vhosts": 8}')  # no content type
    assert reply.status_code == 400 and "Content-Type: application/json" in reply.json()["message"]
    assert (await client.get("/")).text == "OK"
    assert (await client.get("/api")).text == "Welcome to Merak - Cloud Emulator"
    spec = (await client.get("/openapi.json")).json()
    assert "/api/scenarios/actions" in spec["paths"] and "/api/topologies/{entity_id}" in spec["paths"]
    assert (await client.get("/swagger/")).status_code == 200


async def test_actions_refuse_clearly_and_leave_nothing_stuck(rest: tuple[httpx.AsyncClient, str]) -> None:
    client, _ = rest
    ids = await create_all(client)

    async def act(service: str, action: str) -> httpx.Response:
        body = {"scenario_id": ids["scenario"], "service": {"service_name": service, "action": action}}
        return await client.post("/api/scenarios/actions", json=body)

    # Merak left the scenario DEPLOYING after an unknown service name; here nothing changes.
    reply = await act("storage", "DEPLOY")
    assert reply.status_code == 400 and reply.json()["message"].startswith("Scenario Action Failed. ")
    assert "unknown service_name 'storage'" in reply.json()["message"]
    assert reply.json()["data"]["service"] == {"service_name": "storage", "action": "DEPLOY", "status": ""}
    reply = await act("compute", "deploy")  # actions are upper case, as in Merak
    assert reply.status_code == 400 and "unknown action 'deploy'" in reply.json()["message"]
    # Out of order: the reason is in the reply (Merak only logged it), refused as a conflict with the
    # scenario's state (FAILED_PRECONDITION), not as a fault of the product.
    reply = await act("Compute", "DEPLOY")
    assert reply.status_code == 409
    assert reply.json()["message"] == (
        "Scenario Action Failed. cannot DEPLOY compute: topology is NONE; DEPLOY topology first"
    )
    scenario = (await client.get(f"/api/scenarios/{ids['scenario']}")).json()["data"]
    assert scenario["status"] == "NONE"
    reply = await client.post(
        "/api/scenarios/actions", json={"scenario_id": "missing", "service": {"service_name": "compute"}}
    )
    assert reply.status_code == 400  # an empty action
    reply = await client.post(
        "/api/scenarios/actions",
        json={"scenario_id": "missing", "service": {"service_name": "compute", "action": "CHECK"}},
    )
    assert (reply.status_code, reply.json()["message"]) == (404, "Scenario not found!")


@pytest.mark.root
@pytest.mark.slow
async def test_teste2e_over_rest_deploys_pings_and_leaves_nothing(temporal_services: ServiceStack) -> None:
    services = temporal_services
    await services.everything(teardown_timeout=60, watch_interval=0.2, test_retry=5)
    opts = teste2e.parse(
        [
            "--rest", f"http://{services.addresses['rest']}",
            "--scenario-address", services.addresses["scenario"],
            "--topology-address", services.addresses["topology"],
            "--report", str(services.run_dir / "report.json"),
        ]
    )  # fmt: skip
    report = await teste2e.main_async(opts)
    assert report.ok, report.errors
    assert (report.vms, report.vms_done) == (50, 50)
    assert report.test["pairs_tried"] == 2450 and report.test["passed"] == 2450
    assert report.test["cross_host_pairs"] == 2000
    assert not any(report.teardown.values())
    registry: CollectorRegistry = services.registry("scenario")
    posts = registry.get_sample_value(
        "merak_http_requests_total", {"method": "POST", "route": "/api/scenarios/actions", "code": "200"}
    )
    assert posts is not None and posts >= 6  # deploy x3, checks, deletes


async def test_delete_of_what_was_never_deployed_succeeds_and_says_so(
    rest: tuple[httpx.AsyncClient, str],
) -> None:
    # A client cleaning up after a failed step deletes compute, network and topology in turn, whatever
    # got deployed: nothing is asked of the services (none is reachable here) and nothing changes.
    client, grpc_address = rest
    ids = await create_all(client)
    for service, title in (("compute", "Compute"), ("network", "Network"), ("topology", "Topology")):
        body = {"scenario_id": ids["scenario"], "service": {"service_name": service, "action": "DELETE"}}
        reply = await client.post("/api/scenarios/actions", json=body)
        assert (reply.status_code, reply.json()["status"]) == (200, "OK"), reply.text
        message = reply.json()["message"]
        assert message.startswith(f"Action successfully - DELETE on {title}"), message
        assert message.endswith(f"; {service} was not deployed (NONE): nothing to delete")
    scenario = (await client.get(f"/api/scenarios/{ids['scenario']}")).json()["data"]
    assert (scenario["status"], scenario["topology_status"], scenario["compute_status"]) == ("NONE",) * 3
    # The same over gRPC.
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = scenario_pb2_grpc.MerakScenarioServiceStub(channel)
        deleted = await stub.ScenarioAction(
            scenario_pb2.ScenarioActionRequest(
                scenario_id=ids["scenario"],
                service=scenario_pb2.ServiceAction(
                    service_name=scenario_pb2.NETWORK, action=scenario_pb2.DELETE
                ),
            )
        )
    assert deleted.return_message.endswith("; network was not deployed (NONE): nothing to delete")
    assert deleted.service_status == scenario_pb2.NONE and not deleted.warnings


@pytest.fixture
async def lab(
    services: ServiceStack, serve_built: ServeBuilt, redis_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Stub]]:
    """The real topology and network services behind the scenario service (compute unreachable: no
    Temporal): its REST client and gRPC stub."""
    await services.topology()
    await services.network()
    settings = ScenarioSettings(
        host="127.0.0.1", grpc_port=0, rest_port=0, redis_url=redis_url, call_timeout=10,
        topology_address=services.addresses["topology"], network_address=services.addresses["network"],
        compute_address=NOWHERE,
    )  # fmt: skip
    built = await build(settings)
    grpc_address = await serve_built(built)
    async with (
        httpx.AsyncClient(base_url=f"http://{built.listeners['rest']}") as client,
        grpc.aio.insecure_channel(grpc_address) as channel,
    ):
        yield client, scenario_pb2_grpc.MerakScenarioServiceStub(channel)


async def test_placeholders_are_stored_and_left_out_with_a_warning_at_deploy(
    lab: tuple[httpx.AsyncClient, Stub],
) -> None:
    client, stub = lab
    ids = await create_all(client)
    # Merak's Postman bodies carry placeholders: stored as given, as Merak did ...
    put = await client.put(
        f"/api/topologies/{ids['topology']}",
        json={
            "control_plane_gateway_ips": ["string"],
            "dataplane": "fake",
            "data_plane_cidr": "10.241.0.0/24",
        },
    )
    assert put.status_code == 200 and put.json()["data"]["control_plane_gateway_ips"] == ["string"]
    put = await client.put(
        f"/api/network-config/{ids['network']}",
        json={
            "routers": [{"name": "string", "subnet_gateways": ["string"]}],
            "security_groups": [{"name": "sg-1", "rules": [{"direction": "string", "protocol": "tcp"}]}],
        },
    )
    assert put.status_code == 200 and put.json()["data"]["routers"][0]["subnet_gateways"] == ["string"]

    async def act(service: str, action: str, older: bool = False) -> httpx.Response:
        asked = {"service_name": service, "action": action}
        body = {"scenario_id": ids["scenario"], **({"services": [asked]} if older else {"service": asked})}
        return await client.post("/api/scenarios/actions", json=body)

    # ... and left out when deployed, as Merak did, each warning naming its field (here through the
    # older `services` list).
    reply = await act("topology", "DEPLOY", older=True)
    assert reply.status_code == 200, reply.text
    message = reply.json()["message"]
    assert message.startswith("Action successfully - DEPLOY on Topology got - ")
    left_out = message.partition(". Left out, as Merak did: ")[2].split("; ")
    assert any(w.startswith("config.gateway_ips: 1 control-plane gateway(s): not emulated") for w in left_out)
    assert any(w.startswith("config.images: 1 image(s)") for w in left_out), left_out

    # The scenario keeps them, "<service>: …": streamed by WatchScenario from its first message, and read
    # by GetScenario (gRPC and REST).
    request = scenario_pb2.WatchScenarioRequest(scenario_id=ids["scenario"])
    progress = [p async for p in stub.WatchScenario(request, timeout=60)]
    assert progress[-1].topology_status == scenario_pb2.READY, progress[-1]
    kept = list(progress[0].warnings)
    assert kept and all(w.startswith("topology: config.") for w in kept)
    assert any(w.startswith("topology: config.gateway_ips: ") for w in kept)
    assert list(progress[-1].warnings) == kept
    scenario = await stub.GetScenario(scenario_pb2.GetRequest(id=ids["scenario"]))
    assert list(scenario.warnings) == kept
    assert (await client.get(f"/api/scenarios/{ids['scenario']}")).json()["data"]["warnings"] == kept

    reply = await act("network", "DEPLOY")
    assert reply.status_code == 200, reply.text
    message = reply.json()["message"]
    assert message.startswith("Action successfully - DEPLOY on Network done. Left out, as Merak did: ")
    assert "config.network.routers[0].subnets[0]: 'string' names no subnet of this config" in message
    assert "config.network.routers[0]: joins no subnet of this config" in message
    assert (
        "config.network.security_groups[0].rules[0].direction: 'string' is not ingress or egress" in message
    )
    scenario = await stub.GetScenario(scenario_pb2.GetRequest(id=ids["scenario"]))
    assert list(scenario.warnings)[: len(kept)] == kept
    assert any(w.startswith("network: config.network.routers[0]: ") for w in scenario.warnings)

    # What cannot be deployed without is still refused, naming the field (400), and nothing is asked of
    # compute (unreachable here).
    put = await client.put(f"/api/compute-config/{ids['compute']}", json={"number_of_vm_per_vpc": 0})
    assert put.status_code == 200 and put.json()["data"]["number_of_vm_per_vpc"] == 0
    reply = await act("compute", "DEPLOY")
    assert reply.status_code == 400, reply.text
    assert reply.json()["message"] == (
        f"Scenario Action Failed. compute config {ids['compute']}: number_of_vm_per_vpc: "
        "must be at least 1 for UNIFORM"
    )
    assert (await client.get(f"/api/scenarios/{ids['scenario']}")).json()["data"]["compute_status"] == "NONE"
    # A CHECK of what was never deployed: Merak's empty counts, which its teste2e parses.
    reply = await act("compute", "CHECK")
    assert reply.status_code == 200 and reply.json()["data"] == {"vms": [{"id": "0 out of 0 done!"}]}
    assert reply.json()["message"] == (
        "Action successfully - CHECK on Compute got - DONE: 0, READY: 0, DEPLOYING: 0, DELETING: 0, "
        "ERROR: 0, Others: 0"
    )

    # A service deleted takes its warnings with it; the topology's stay.
    reply = await act("network", "DELETE")
    assert reply.status_code == 200, reply.text
    scenario = await stub.GetScenario(scenario_pb2.GetRequest(id=ids["scenario"]))
    assert list(scenario.warnings) == kept


async def test_results_need_deployed_vms(rest: tuple[httpx.AsyncClient, str]) -> None:
    client, _ = rest
    ids = await create_all(client)
    reply = await client.get(f"/api/scenarios/{ids['scenario']}/results")
    assert reply.status_code == 409 and reply.json()["status"] == "FAILED"
    assert "has no VMs deployed" in reply.json()["message"]
    reply = await client.get("/api/scenarios/nope/results")
    assert (reply.status_code, reply.json()["message"]) == (404, "Scenario not found!")
