"""Merak's own teste2e REST flow (tools/teste2e/teste2e.go at e518ade), replayed step by step.

The bodies are what Go's json.Marshal makes of teste2e's structs: every field of Merak's entities,
placeholders included (`"string"` as a router's subnet, a gateway's IP, a vnode, a vlink and every field
of a security-group rule), empty ids and statuses, zero times. The flow is Merak's: POST the five configs
and the scenario taking only `data.id`; DEPLOY topology and poll CHECK until the READY field of the
message (its second comma field) equals the vhosts; DEPLOY network; DEPLOY compute and poll CHECK until
`data.vms[0].id` reads "<n> out of <n> done!". Unlike Merak's teste2e, which ignored every reply, each
step here must answer 2xx with Merak's OK envelope: a step that does not is an error naming it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

ZERO_TIME = "0001-01-01T00:00:00Z"
NUM_VHOST = 5


class MerakClientError(AssertionError):
    """A step of a Merak client answered something else than 2xx with the OK envelope."""


def _rule() -> dict[str, Any]:
    return {
        "id": "",
        "name": "string",
        "description": "string",
        "ethertype": "string",
        "direction": "string",
        "protocol": "string",
        "port_range": "string",
        "remote_group_id": "string",
        "remote_ip_prefix": "string",
    }


def _vpc(vpc_id: str) -> dict[str, Any]:
    subnet = {
        "subnet_id": "",
        "subnet_cidr": "10.1.0.0/16",
        "subnet_gateway": "10.1.0.1",
        "number_of_vms": 50,
    }
    return {
        "vpc_id": vpc_id,
        "tenant_id": "123456789",
        "project_id": "123456789",
        "vpc_cidr": "10.1.0.0/16",
        "number_of_subnets": 1,
        "subnet_info": [subnet],
    }


def _service(
    name: str, cmd: str, url: str, parameters: list[str], *, when: str, where: str
) -> dict[str, Any]:
    codes = [200, 201] if cmd in {"curl", "alcorIp"} else [0]
    return {
        "id": "",
        "name": name,
        "cmd": cmd,
        "url": url,
        "parameters": parameters,
        "return_code": codes,
        "return_string": [""],
        "when_to_run": when,
        "where_to_run": where,
    }


def bodies(num_vhost: int = NUM_VHOST, alcor_host: str = "") -> dict[str, dict[str, Any]]:
    """teste2e.go's config(): the topology, network, service, compute and test configs it POSTs.

    `alcor_host` stands for the node address teste2e read from Kubernetes (Alcor's vpcmanager and
    netwconfigmanager services, whose NodePorts 30001-30008 and 30014 it assumed). Merak always ran
    against Alcor; without `alcor_host` the service config is the same less its `alcorIp` entry (which
    is what selects the alcor plugin), so that the native plugin runs Merak's flow.
    """
    alcor_ip = alcor_host or "127.0.0.1"
    curl = ["-X POST", "-H 'Content-Type: application/json'", "-H 'Accept: */*'"]
    image = {"args": ["string"], "cmd": ["string"]}
    common = {"id": "", "status": "", "created_at": ZERO_TIME, "updated_at": ZERO_TIME}
    host_info = (
        '-d \'{ "host_info": [ { "host_dvr_mac": "string", "local_ip": "string", "mac_address": '
        '"string", "ncm_id": "string", "ncm_uri": "string", "node_id": "string", "node_name": '
        '"string", "server_port": 0, "veth": "string" } ]}\''
    )
    topology = {
        **common,
        "name": "Top1",
        "type": "FATTREE",
        "number_of_vhosts": num_vhost,
        "number_of_racks": 2,
        "vhosts_per_rack": 5,
        "ports_per_vswitch": 5,
        "data_plane_cidr": "10.200.0.0/16",
        "number_of_control_plane_gateways": 0,
        "control_plane_gateway_ips": None,
        "images": [
            {**image, "id": "image-1", "name": "ACA", "registry": "meraksim/merak-agent:dev"},
            {**image, "id": "image-2", "name": "OVS", "registry": "yanmo96/ovs_only:latest"},
        ],
        "vnodes": [{"name": "string", "type": "", "nics": [{"name": "string", "ip": "string"}]}],
        "vlinks": [{"name": "string", "from": "string", "to": "string"}],
    }
    network = {
        **common,
        "name": "network-config-1",
        "number_of_vpcs": 1,
        "number_of_subnet_per_vpc": 1,
        "number_of_security_groups": 1,
        "vpcs": [_vpc("10.1.0.0/16")],
        "routers": [{"id": "", "name": "string", "subnet_gateways": ["string"]}],
        "gateways": [{"id": "", "name": "string", "ips": ["string"]}],
        "security_groups": [
            {
                "id": "",
                "name": "sg-1",
                "tenant_id": "123456789",
                "project_id": "123456789",
                "rules": [_rule()],
                "apply_to": ["string"],
            },
        ],
    }
    service = {
        "id": "",
        "name": "service-config-1",
        "created_at": ZERO_TIME,
        "updated_at": ZERO_TIME,
        "services": [
            _service("alcor cluster's ip address", "alcorIp", alcor_ip, curl, when="INIT", where="NETWORK"),
            _service(
                "alcor-createDefaultTable",
                "curl",
                f"http://{alcor_ip}:30001/segments/createDefaultTable",
                curl,
                when="INIT",
                where="INIT",
            ),
            _service(
                "alcor-nodemanager",
                "curl",
                f"http://{alcor_ip}:30007/nodes/bulk",
                [*curl, host_info],
                when="AFTER:alcor-createDefaultTable",
                where="NETWORK",
            ),
            _service(
                "aca-cmd",
                "/root/alcor-control-agent/build/bin/AlcorControlAgent",
                "",
                ["-d", f"-a {alcor_ip}", "-p 30014"],
                when="INIT",
                where="AGENT",
            ),
        ],
    }
    if not alcor_host:
        service["services"] = service["services"][1:]
    compute_vpc = _vpc("")
    compute = {
        **common,
        "name": "compute-config-1",
        "number_of_compute_nodes": num_vhost,
        "number_of_port_per_vm": 1,
        "vm_deploy_type": "UNIFORM",
        "scheduler": "SEQUENTIAL",
        "number_of_vm_per_vpc": 50,
        "vpc_info": [compute_vpc],
    }
    test = {
        **common,
        "name": "test-config-1",
        "tests": [
            {
                "id": "string",
                "name": "pingall",
                "script": "github.com/merak/test/scripts/script1.sh",
                "cmd": "ping",
                "parameters": ["string"],
                "when_to_run": "after:VM_CREATED",
                "where_to_run": "AGENT",
            },
        ],
    }
    return {"topology": topology, "network": network, "service": service, "compute": compute, "test": test}


PATHS = {
    "topology": "/api/topologies",
    "network": "/api/network-config",
    "service": "/api/service-config",
    "compute": "/api/compute-config",
    "test": "/api/test-config",
}


@dataclass
class Step:
    """One request of the flow and what it answered."""

    method: str
    path: str
    status_code: int
    reply: dict[str, Any]


@dataclass
class MerakTeste2e:
    """Merak's teste2e against a REST base URL; every step is kept in `steps`."""

    base_url: str
    num_vhost: int = NUM_VHOST
    alcor_host: str = ""
    timeout: float = 300.0
    ids: dict[str, str] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)

    async def call(
        self, client: httpx.AsyncClient, method: str, path: str, body: Any = None
    ) -> dict[str, Any]:
        """One request; anything but 2xx with `"status": "OK"` fails the flow, naming the step."""
        response = await client.request(method, path, json=body)
        try:
            reply: dict[str, Any] = response.json()
        except ValueError:
            reply = {"raw": response.text}
        self.steps.append(Step(method, path, response.status_code, reply))
        if not 200 <= response.status_code < 300 or reply.get("status") != "OK":
            raise MerakClientError(f"{method} {path} {body!r}: HTTP {response.status_code}: {reply}")
        return reply

    async def action(self, client: httpx.AsyncClient, service: str, action: str) -> dict[str, Any]:
        """POST /api/scenarios/actions as teste2e builds it (the Go struct: status included, empty)."""
        body = {
            "scenario_id": self.ids["scenario"],
            "service": {"service_name": service, "action": action, "status": ""},
        }
        return await self.call(client, "POST", "/api/scenarios/actions", body)

    async def deploy(self) -> None:
        """config(), deployTopo(), deployNetwork(), deployCompute()."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout) as client:
            for kind, body in bodies(self.num_vhost, self.alcor_host).items():
                self.ids[kind] = (await self.call(client, "POST", PATHS[kind], body))["data"]["id"]
            scenario = {
                "id": "",
                "name": "scenario-test-1",
                "project_id": "123456789",
                "topology_id": self.ids["topology"],
                "service_config_id": self.ids["service"],
                "network_config_id": self.ids["network"],
                "compute_config_id": self.ids["compute"],
                "test_config_id": self.ids["test"],
                "status": "",
                "created_at": ZERO_TIME,
                "updated_at": ZERO_TIME,
            }
            self.ids["scenario"] = (await self.call(client, "POST", "/api/scenarios", scenario))["data"]["id"]
            await self.action(client, "topology", "DEPLOY")
            await self._poll(client, "topology", self._topology_ready, interval=1.0)
            await self.action(client, "network", "DEPLOY")
            await self.action(client, "compute", "DEPLOY")
            await self._poll(client, "compute", self._compute_done, interval=0.5)

    def _topology_ready(self, reply: dict[str, Any]) -> bool:
        # teste2e.go: strings.Split(strings.Split(message, ",")[1], ":")[1] == numVhost
        ready = reply["message"].split(",")[1].split(":")[1].strip()
        return int(ready) == self.num_vhost

    @staticmethod
    def _compute_done(reply: dict[str, Any]) -> bool:
        # teste2e.go: data.vms.0.id split on spaces; token 0 == token 3. Merak's teste2e polled forever
        # when VMs failed; here a compute operation that ended with VMs in error fails the flow.
        progress = reply["data"].get("progress", {})
        if progress.get("finished") and (progress.get("error") or progress.get("failure")):
            raise MerakClientError(f"compute failed: {progress}")
        words = str(reply["data"]["vms"][0]["id"]).split(" ")
        return words[0] == words[3]

    async def _poll(self, client: httpx.AsyncClient, service: str, done: Any, interval: float) -> None:
        deadline = time.monotonic() + self.timeout
        while not done(await self.action(client, service, "CHECK")):
            if time.monotonic() > deadline:
                raise MerakClientError(
                    f"CHECK {service}: not done after {self.timeout:.0f}s: {self.steps[-1]}"
                )
            await asyncio.sleep(interval)

    async def delete(self) -> None:
        """The teardown Merak's users did by hand, in Merak's order: DELETE compute (until its status is
        NONE), network, topology, then the scenario and the five configs."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout) as client:
            for service in ("compute", "network", "topology"):
                await self.action(client, service, "DELETE")
                deadline = time.monotonic() + self.timeout
                while True:
                    scenario = await self.call(client, "GET", f"/api/scenarios/{self.ids['scenario']}")
                    if scenario["data"][f"{service}_status"] == "NONE":
                        break
                    if time.monotonic() > deadline:
                        raise MerakClientError(
                            f"DELETE {service}: still {scenario['data']} after {self.timeout}s"
                        )
                    await asyncio.sleep(0.5)
            await self.call(client, "DELETE", f"/api/scenarios/{self.ids['scenario']}")
            for kind, path in PATHS.items():
                await self.call(client, "DELETE", f"{path}/{self.ids[kind]}")
