"""`teste2e`: Merak's end-to-end test against a running stack, over the scenario service's gRPC API.

Builds Merak's e2e scenario (by default 5 hosts x 10 VMs, 1 VPC, 1 subnet), deploys topology,
network and compute with live progress, runs the ping-all test, prints a summary, writes a JSON
report and tears everything down (unless --keep), checking that nothing is left.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
from google.protobuf import json_format
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from merak import protojson
from merak.faultspec import parse_scheduled_fault
from merak.grpcclient import open_channel, retry_unavailable
from merak.naming import topology_short_id
from merak.v1 import compute_pb2, scenario_pb2, scenario_pb2_grpc, topology_pb2, topology_pb2_grpc
from merak_tools import report_html

console = Console(stderr=True)
READY = scenario_pb2.READY
FAILED = scenario_pb2.FAILED
T = TypeVar("T")


class E2EError(Exception):
    """A phase failed; the message says which and why."""


@dataclass
class Options:
    """What to build and where."""

    scenario_address: str = "localhost:40050"
    topology_address: str = "localhost:40052"
    hosts: int = 5
    vms_per_host: int = 10
    vpcs: int = 1
    subnets: int = 1
    vhosts_per_rack: int = 5
    racks: int = 0
    ports_per_switch: int = 5
    backend: str = "local"
    dataplane: str = "real"
    plugin: str = "native"
    alcor_ip: str = ""
    max_pairs: int = 0
    # VMs per second to start (Merak's RPS scheduler and `rps`); 0: as fast as the lab goes.
    rps: float = 0.0
    keep: bool = False
    report: Path = Path("teste2e-report.json")
    timeout: float = 1800.0
    name: str = ""
    # Merak's REST API (http://host:3000): configs and actions go there, as Merak's teste2e sent them.
    rest: str = ""
    # One self-contained HTML page with the results and their plots.
    html: Path | None = None
    # The test config's fault schedule: applied while compute creates the VMs.
    faults: list[scenario_pb2.ScheduledFault] = field(default_factory=list)
    # Churn once the VMs are made: VMs replaced per second, for how long.
    churn_rate: float = 0.0
    churn_seconds: float = 0.0


@dataclass
class Report:
    """What happened, for the summary and the JSON report."""

    options: dict[str, Any]
    ids: dict[str, str] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    vms: int = 0
    vms_done: int = 0
    test: dict[str, Any] = field(default_factory=dict)
    # The control plane's results (compute's GetResults: requests, latencies, rates, time to ready).
    results: dict[str, Any] = field(default_factory=dict)
    teardown: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    # What the services left out of the configs, as Merak did (placeholders), each naming its field.
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Everything passed."""
        return not self.errors


def vpc_block(vpc: int, vms: int) -> tuple[int, int]:
    """(base address, prefix) of VPC `vpc`: 10.<vpc+1>.0.0/16, or <vpc+20>.0.0.0/8 when a /16 is too small."""
    if vms <= 60_000:
        return (10 << 24) | ((vpc + 1) << 16), 16
    return (vpc + 20) << 24, 8  # VPC address space is private to its namespaces: any block will do


def _dotted(address: int) -> str:
    return ".".join(str(address >> shift & 255) for shift in (24, 16, 8, 0))


def subnet_plan(vpc: int, subnets: int, vms_per_subnet: int) -> list[tuple[str, str]]:
    """(cidr, gateway) of each subnet of VPC `vpc`: its block cut in equal parts."""
    base, vpc_prefix = vpc_block(vpc, vms_per_subnet * subnets)
    prefix = vpc_prefix + (math.ceil(math.log2(subnets)) if subnets > 1 else 0)
    capacity = 2 ** (32 - prefix) - 3  # network, broadcast and gateway
    if vms_per_subnet > capacity:
        raise E2EError(f"{vms_per_subnet} VMs per subnet do not fit a /{prefix}; use fewer subnets or VPCs")
    step = 2 ** (32 - prefix)
    return [(f"{_dotted(base + j * step)}/{prefix}", _dotted(base + j * step + 1)) for j in range(subnets)]


def build_configs(opts: Options, tag: str) -> dict[str, Any]:
    """Merak's teste2e configs (merak-reference §7), sized by the options."""
    racks = opts.racks or math.ceil(opts.hosts / opts.vhosts_per_rack)
    cidr = "10.200.0.0/16" if opts.hosts < 60_000 else "10.0.0.0/8"
    topology = scenario_pb2.TopologyConfig(
        name=f"Top-{tag}", type=topology_pb2.TREE, number_of_vhosts=opts.hosts, number_of_racks=racks,
        vhosts_per_rack=opts.vhosts_per_rack, ports_per_vswitch=opts.ports_per_switch, data_plane_cidr=cidr,
        backend=opts.backend, dataplane=opts.dataplane,
    )  # fmt: skip
    topology.images.add(id="image-1", name="ACA", registry="meraksim/merak-agent:dev")
    topology.images.add(id="image-2", name="OVS", registry="yanmo96/ovs_only:latest")
    total = opts.hosts * opts.vms_per_host
    per_vpc = total // opts.vpcs
    network = scenario_pb2.NetworkConfig(
        name=f"network-{tag}", number_of_vpcs=opts.vpcs, number_of_subnet_per_vpc=opts.subnets,
        number_of_security_groups=1, plugin=opts.plugin,
    )  # fmt: skip
    vpc_infos = []
    for v in range(opts.vpcs):
        base, prefix = vpc_block(v, per_vpc)
        vpc = scenario_pb2.VpcInfo(
            tenant_id="123456789",
            project_id="123456789",
            vpc_cidr=f"{_dotted(base)}/{prefix}",
            number_of_subnets=opts.subnets,
        )
        for cidr_s, gateway in subnet_plan(v, opts.subnets, per_vpc // opts.subnets):
            vpc.subnet_info.add(
                subnet_cidr=cidr_s, subnet_gateway=gateway, number_of_vms=per_vpc // opts.subnets
            )
        network.vpcs.append(vpc)
        vpc_infos.append(vpc)
    network.security_groups.add(name="sg-1", tenant_id="123456789", project_id="123456789")
    service = scenario_pb2.ServiceConfig(name=f"service-{tag}")
    if opts.alcor_ip:
        service.services.add(name="alcorIp", cmd="alcorIp", url=opts.alcor_ip, where_to_run="NETWORK")
    compute = scenario_pb2.ComputeConfig(
        name=f"compute-{tag}", number_of_compute_nodes=opts.hosts, number_of_port_per_vm=1,
        vm_deploy_type=compute_pb2.UNIFORM, number_of_vm_per_vpc=per_vpc,
        scheduler=compute_pb2.RPS if opts.rps > 0 else compute_pb2.SEQUENTIAL, rps=opts.rps,
        churn_rate=opts.churn_rate, churn_seconds=opts.churn_seconds,
    )  # fmt: skip
    compute.vpc_info.extend(vpc_infos)
    test = scenario_pb2.TestConfig(name=f"test-{tag}")
    test.tests.add(
        id="test-1", name="pingall", cmd="ping", when_to_run="after:VM_CREATED", where_to_run="AGENT"
    )
    test.fault_schedule.extend(opts.faults)
    return {"topology": topology, "network": network, "service": service, "compute": compute, "test": test}


class Runner:
    """One teste2e run."""

    def __init__(self, opts: Options, channel: grpc.aio.Channel) -> None:
        self.opts = opts
        self.stub = scenario_pb2_grpc.MerakScenarioServiceStub(channel)
        tag = opts.name or f"e2e-{int(time.time())}-{os.getpid()}"
        self.report = Report(options={k: str(v) for k, v in vars(opts).items()})
        self.configs = build_configs(opts, tag)
        self.scenario_id = ""

    async def run(self) -> Report:
        """Create, deploy, test; always tear down unless --keep."""
        try:
            await self._create()
            await self._deploy(scenario_pb2.TOPOLOGY, "topology")
            await self._deploy(scenario_pb2.NETWORK, "network")
            await self._deploy(scenario_pb2.COMPUTE, "compute")
            await self._results()
            await self._test()
        except (E2EError, grpc.aio.AioRpcError) as exc:
            self.report.errors.append(_describe(exc))
        except asyncio.CancelledError:
            self.report.errors.append("interrupted")
            await self._teardown()
            raise
        if not self.opts.keep:
            await self._teardown()
        return self.report

    async def _create(self) -> None:
        started = time.perf_counter()
        ids = self.report.ids
        ids["topology"] = (await self.stub.CreateTopologyConfig(self.configs["topology"])).id
        ids["network"] = (await self.stub.CreateNetworkConfig(self.configs["network"])).id
        ids["service"] = (await self.stub.CreateServiceConfig(self.configs["service"])).id
        ids["compute"] = (await self.stub.CreateComputeConfig(self.configs["compute"])).id
        ids["test"] = (await self.stub.CreateTestConfig(self.configs["test"])).id
        scenario = await self.stub.CreateScenario(
            scenario_pb2.Scenario(
                name="scenario-test-1",
                project_id="123456789",
                topology_id=ids["topology"],
                service_config_id=ids["service"],
                network_config_id=ids["network"],
                compute_config_id=ids["compute"],
                test_config_id=ids["test"],
            )
        )
        self.scenario_id = self.report.ids["scenario"] = scenario.id
        self.report.phases["create configs"] = time.perf_counter() - started
        console.print(f"scenario [bold]{scenario.id}[/bold] created")

    async def _action(self, service: int, action: int) -> scenario_pb2.ScenarioActionReply:
        request = scenario_pb2.ScenarioActionRequest(
            scenario_id=self.scenario_id,
            service=scenario_pb2.ServiceAction(service_name=service, action=action),  # type: ignore[arg-type]
        )
        reply: scenario_pb2.ScenarioActionReply = await self._retried(
            lambda left: self.stub.ScenarioAction(request, timeout=left)
        )
        return reply

    async def _retried(self, call: Callable[[float], Awaitable[T]]) -> T:
        """An idempotent call, made again while the scenario service answers UNAVAILABLE (restarting)."""

        def say(exc: grpc.aio.AioRpcError, wait: float) -> None:
            console.print(
                f"[yellow]scenario service unavailable ({exc.details()}); again in {wait:.1f}s[/yellow]"
            )

        return await retry_unavailable(call, timeout=self.opts.timeout, on_retry=say)

    async def _deploy(self, service: int, name: str) -> None:
        started = time.perf_counter()
        reply = await self._action(service, scenario_pb2.DEPLOY)
        console.print(f"DEPLOY {name}: {reply.return_message}")
        for warning in reply.warnings:
            console.print(f"  left out: {warning}", markup=False)
        self.report.warnings += list(reply.warnings)
        if reply.service_status != READY:
            await self._follow(name)
        self.report.phases[f"deploy {name}"] = time.perf_counter() - started

    async def _follow(self, name: str) -> None:
        """Follow the scenario live until the service leaves DEPLOYING; fail if it did not get READY."""
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        status = scenario_pb2.NONE
        with Progress(*columns, console=console, transient=False) as bars:
            bar = bars.add_task(name, total=None)

            async def watch(left: float) -> scenario_pb2.ServiceStatus.ValueType:
                """Follow the stream to its end; a broken stream (UNAVAILABLE) is opened again."""
                seen: scenario_pb2.ServiceStatus.ValueType = scenario_pb2.NONE
                stream = self.stub.WatchScenario(
                    scenario_pb2.WatchScenarioRequest(scenario_id=self.scenario_id), timeout=left
                )
                async for progress in stream:
                    seen = getattr(progress, f"{name}_status")
                    if progress.HasField("fault"):
                        color = "red" if progress.fault.error else "yellow"
                        bars.console.print(f"[{color}]{progress.message}[/{color}]")
                    if name == "topology" and progress.topology.total:
                        bars.update(bar, total=progress.topology.total, completed=progress.topology.ready)
                    elif name == "compute" and progress.compute.churning:
                        bars.update(bar, description=f"compute (churn: {progress.compute.churned} replaced)")
                    elif name == "compute" and progress.compute.total:
                        done = progress.compute.done
                        bars.update(
                            bar, total=progress.compute.total, completed=done + progress.compute.error
                        )
                        self.report.vms, self.report.vms_done = progress.compute.total, done
                return seen

            status = await self._retried(watch)
        if status != READY:
            reply = await self._action(
                {
                    "topology": scenario_pb2.TOPOLOGY,
                    "network": scenario_pb2.NETWORK,
                    "compute": scenario_pb2.COMPUTE,
                }[name],
                scenario_pb2.CHECK,
            )
            raise E2EError(f"{name} is {scenario_pb2.ServiceStatus.Name(status)}: {reply.return_message}")

    async def _results(self) -> None:
        """What the control plane did for this run's VMs, kept for the report."""
        request = scenario_pb2.GetResultsRequest(scenario_id=self.scenario_id)
        results = await self._retried(lambda left: self.stub.GetResults(request, timeout=left))
        self.report.results = protojson.to_dict(results)
        for op in results.operations:
            console.print(
                f"control plane: {op.plugin} {op.operation}: {op.requests} requests, {op.rate:.0f}/s, "
                f"p50 {op.latency.p50_ms:.1f} ms, p99 {op.latency.p99_ms:.1f} ms, {op.errors} errors"
            )
        if results.churned:
            console.print(
                f"churn: {results.churned} VMs replaced in {self.opts.churn_seconds:g}s "
                f"({results.churned / self.opts.churn_seconds:.1f}/s, asked {self.opts.churn_rate:g}/s); "
                f"VMs alive between {results.population_min} and {results.population_max}"
            )

    async def _test(self) -> None:
        started = time.perf_counter()
        request = scenario_pb2.RunTestRequest(scenario_id=self.scenario_id, max_pairs=self.opts.max_pairs)
        report = await self._retried(lambda left: self.stub.RunTest(request, timeout=left))
        self.report.phases["ping test"] = time.perf_counter() - started
        self.report.test = protojson.to_dict(report)
        console.print(f"ping-all: {report.return_message}")
        if report.failed or report.isolation_violated:
            for pair in list(report.failures)[:10] + list(report.isolation_violations)[:10]:
                console.print(f"  [red]{pair.src_vm}@{pair.src_vhost} → {pair.dst_ip}[/red]: {pair.reason}")
            raise E2EError(
                f"ping test: {report.failed} pairs failed, {report.isolation_violated} isolation violations"
            )
        if not report.pairs_tried:
            raise E2EError("ping test: no pair was tried")

    async def _teardown(self) -> None:
        if not self.scenario_id:
            return
        started = time.perf_counter()
        try:
            request = scenario_pb2.DeleteScenarioRequest(id=self.scenario_id, teardown=True)
            await self._retried(lambda left: self.stub.DeleteScenario(request, timeout=left))
            for kind, method in (("topology", "DeleteTopologyConfig"), ("network", "DeleteNetworkConfig"),
                                 ("service", "DeleteServiceConfig"), ("compute", "DeleteComputeConfig"),
                                 ("test", "DeleteTestConfig")):  # fmt: skip
                await self._retried(partial(self._delete_config, method, self.report.ids[kind]))
        except grpc.aio.AioRpcError as exc:
            self.report.errors.append(f"teardown: {_describe(exc)}")
        await self._verify_teardown(started)

    async def _delete_config(self, method: str, config_id: str, left: float) -> None:
        await getattr(self.stub, method)(scenario_pb2.DeleteRequest(id=config_id), timeout=left)

    async def _verify_teardown(self, started: float) -> None:
        """Record the teardown's duration, and fail the run if anything of it is left."""
        self.report.phases["teardown"] = time.perf_counter() - started
        self.report.teardown = await self._leftovers()
        if any(self.report.teardown.values()):
            self.report.errors.append(f"left behind: {self.report.teardown}")
        else:
            console.print("teardown verified: nothing left")

    async def _leftovers(self) -> dict[str, Any]:
        """What is still there after the teardown: the topology (asked of its service) and namespaces."""
        topology_id = self.report.ids.get("topology", "")
        left: dict[str, Any] = {}
        try:
            async with open_channel(self.opts.topology_address) as channel:
                listed = await topology_pb2_grpc.MerakTopologyServiceStub(channel).ListTopologies(
                    topology_pb2.ListTopologiesRequest(), timeout=30
                )
            left["topologies"] = [t.topology_id for t in listed.topologies if t.topology_id == topology_id]
        except grpc.aio.AioRpcError as exc:
            console.print(
                f"[yellow]could not ask the topology service ({exc.code().name}); not checked[/yellow]"
            )
        if topology_id:
            left["namespaces"] = await asyncio.to_thread(local_namespaces, topology_id)
        return {k: v for k, v in left.items() if v}


REST_PATHS = {
    "topology": "/api/topologies",
    "network": "/api/network-config",
    "service": "/api/service-config",
    "compute": "/api/compute-config",
    "test": "/api/test-config",
}


class RestRunner(Runner):
    """The same run over Merak's REST API, polled as Merak's teste2e polled it; the ping test and the
    teardown check still use the gRPC API (the same store answers both)."""

    def __init__(self, opts: Options, channel: grpc.aio.Channel) -> None:
        super().__init__(opts, channel)
        self.http = httpx.AsyncClient(base_url=opts.rest.rstrip("/"), timeout=opts.timeout)

    async def run(self) -> Report:
        """Create, deploy, test, tear down; then close the HTTP client."""
        try:
            return await super().run()
        finally:
            await self.http.aclose()

    async def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """One REST call; a FAILED envelope is an error that carries Merak's message."""
        try:
            response = await self.http.request(method, path, json=body)
            reply: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise E2EError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if reply.get("status") != "OK":
            raise E2EError(f"{method} {path}: HTTP {response.status_code}: {reply.get('message')}")
        return reply

    async def _create(self) -> None:
        started = time.perf_counter()
        ids = self.report.ids
        for kind, path in REST_PATHS.items():
            body = json_format.MessageToDict(self.configs[kind], preserving_proto_field_name=True)
            ids[kind] = (await self._call("POST", path, body))["data"]["id"]
        scenario = {
            "name": "scenario-test-1", "project_id": "123456789", "topology_id": ids["topology"],
            "service_config_id": ids["service"], "network_config_id": ids["network"],
            "compute_config_id": ids["compute"], "test_config_id": ids["test"],
        }  # fmt: skip
        created = await self._call("POST", "/api/scenarios", scenario)
        self.scenario_id = ids["scenario"] = created["data"]["id"]
        self.report.phases["create configs"] = time.perf_counter() - started
        console.print(f"scenario [bold]{self.scenario_id}[/bold] created over REST at {self.opts.rest}")

    async def _status(self, name: str) -> str:
        """The scenario's status of one service (NONE, DEPLOYING, READY, …)."""
        scenario = (await self._call("GET", f"/api/scenarios/{self.scenario_id}"))["data"]
        return str(scenario.get(f"{name}_status", ""))

    async def _rest_action(self, service: str, action: str) -> dict[str, Any]:
        body = {"scenario_id": self.scenario_id, "service": {"service_name": service, "action": action}}
        return await self._call("POST", "/api/scenarios/actions", body)

    async def _deploy(self, service: int, name: str) -> None:
        started = time.perf_counter()
        reply = await self._rest_action(name, "DEPLOY")
        console.print(f"DEPLOY {name}: {reply['message']}")
        deadline = time.monotonic() + self.opts.timeout
        while not await self._deployed(name):
            if time.monotonic() > deadline:
                raise E2EError(f"{name} not ready after {self.opts.timeout:.0f}s")
            await asyncio.sleep(1.0)
        self.report.phases[f"deploy {name}"] = time.perf_counter() - started

    async def _deployed(self, name: str) -> bool:
        """Merak's teste2e tests: the READY field of the topology CHECK (2nd comma field) equals the
        vhosts; the compute CHECK's `data.vms[0].id` reads "<done> out of <total> done!" with done = total."""
        if name == "network":
            return True
        reply = await self._rest_action(name, "CHECK")
        if await self._status(name) == "FAILED":
            raise E2EError(f"{name} FAILED: {reply['message']}")
        if name == "topology":
            ready = reply["message"].split(",")[1].split(":")[1].strip()
            return int(ready) == self.opts.hosts
        words = str((reply.get("data") or {}).get("vms", [{}])[0].get("id", "")).split(" ")
        self.report.vms = int(words[3]) if len(words) > 3 else 0
        self.report.vms_done = int(words[0]) if words[0].isdigit() else 0
        return len(words) > 3 and words[0] == words[3]

    async def _teardown(self) -> None:
        if not self.scenario_id:
            return
        started = time.perf_counter()
        try:
            await self._delete_services()
            await self._call("DELETE", f"/api/scenarios/{self.scenario_id}")
            for kind, path in REST_PATHS.items():
                await self._call("DELETE", f"{path}/{self.report.ids[kind]}")
        except E2EError as exc:
            self.report.errors.append(f"teardown: {exc}")
        await self._verify_teardown(started)

    async def _delete_services(self) -> None:
        """DELETE compute (and wait until its VMs are gone), network, topology: Merak's order."""
        for name in ("compute", "network", "topology"):
            if await self._status(name) == "NONE":
                continue
            await self._rest_action(name, "DELETE")
            deadline = time.monotonic() + self.opts.timeout
            while (status := await self._status(name)) != "NONE":
                if time.monotonic() > deadline:
                    raise E2EError(f"{name} still {status} after {self.opts.timeout:.0f}s")
                await asyncio.sleep(0.5)
                await self._rest_action(name, "CHECK")


def local_namespaces(topology_id: str) -> list[str]:
    """Namespaces of the topology on this machine (the local backend), if any are left."""
    if not os.path.isdir("/run/netns"):
        return []
    prefix = f"mk-{topology_short_id(topology_id)}-"
    return sorted(n for n in os.listdir("/run/netns") if n.startswith(prefix))[:10]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)


def print_summary(report: Report) -> None:
    """Phase durations, VMs/s, ping pairs."""
    table = Table(title="teste2e summary")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    for phase, seconds in report.phases.items():
        table.add_row(phase, f"{seconds:.1f}")
    console.print(table)
    compute = report.phases.get("deploy compute")
    if compute and report.vms_done:
        console.print(
            f"VMs: {report.vms_done} of {report.vms} created, {report.vms_done / compute:.0f} VMs/s"
        )
    if report.test:
        test = report.test
        console.print(
            f"ping pairs: {test.get('passed', 0)} passed, {test.get('failed', 0)} failed of "
            f"{test.get('pairs_tried', 0)} tried; isolation held for {test.get('isolation_held', 0)} of "
            f"{test.get('isolation_pairs_tried', 0)} cross-VPC pairs; "
            f"RTT p50 {test.get('rtt_p50_ms', 0):.2f} ms, p99 {test.get('rtt_p99_ms', 0):.2f} ms"
        )
    for error in report.errors:
        console.print(f"[red]FAILED[/red] {error}")
    if report.ok:
        console.print("[green]teste2e passed[/green]")


def parse(argv: list[str] | None) -> Options:
    """Command line → options."""
    parser = argparse.ArgumentParser(prog="teste2e", description=__doc__)
    defaults = Options()
    parser.add_argument("--scenario-address", default=defaults.scenario_address)
    parser.add_argument(
        "--topology-address", default=defaults.topology_address, help="to verify the teardown"
    )
    parser.add_argument("--hosts", type=int, default=defaults.hosts)
    parser.add_argument("--vms-per-host", type=int, default=defaults.vms_per_host)
    parser.add_argument("--vpcs", type=int, default=defaults.vpcs)
    parser.add_argument("--subnets", type=int, default=defaults.subnets, help="subnets per VPC")
    parser.add_argument("--racks", type=int, default=defaults.racks, help="0: as many as needed")
    parser.add_argument("--vhosts-per-rack", type=int, default=defaults.vhosts_per_rack)
    parser.add_argument("--ports-per-switch", type=int, default=defaults.ports_per_switch)
    parser.add_argument("--backend", default=defaults.backend, choices=["local", "kubernetes"])
    parser.add_argument("--dataplane", default=defaults.dataplane, choices=["real", "fake"])
    parser.add_argument("--plugin", default=defaults.plugin, choices=["native", "alcor"])
    parser.add_argument("--alcor-ip", default="", help="Alcor's address (with --plugin alcor)")
    parser.add_argument("--max-pairs", type=int, default=0, help="ping sample size (0: every pair)")
    parser.add_argument(
        "--rps", type=float, default=0.0, help="VMs started per second (Merak's RPS scheduler; 0: no pacing)"
    )
    parser.add_argument("--keep", action="store_true", help="leave the lab up")
    parser.add_argument("--report", type=Path, default=defaults.report, help="JSON report path")
    parser.add_argument("--timeout", type=float, default=defaults.timeout, help="seconds per phase")
    parser.add_argument("--name", default="", help="name tag of the configs")
    parser.add_argument(
        "--rest", default="", help="Merak's REST API (e.g. http://localhost:3000): drive the run over it"
    )
    parser.add_argument(
        "--html", type=Path, default=None, help="write the report as one HTML page with plots"
    )
    parser.add_argument(
        "--churn-rate", type=float, default=0.0, help="once the VMs are made, replace this many per second"
    )
    parser.add_argument("--churn-seconds", type=float, default=0.0, help="for this long (with --churn-rate)")
    parser.add_argument(
        "--fault", dest="faults", action="append", type=parse_scheduled_fault, default=[],
        metavar="'at=S [for=S] [repeat=N every=S] [name=N] link=NODE:down|partition=A/B|crash=V|freeze=V'",
        help="a fault while compute deploys (repeatable), e.g. --fault 'at=5 for=10 link=vhost-1:loss=10'",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if (
        min(
            args.hosts,
            args.vms_per_host,
            args.vpcs,
            args.subnets,
            args.vhosts_per_rack,
            args.ports_per_switch,
        )
        < 1
    ):
        parser.error("counts must be at least 1")
    if args.rps < 0:
        parser.error("--rps must be 0 (no pacing) or more")
    if args.churn_rate < 0 or args.churn_seconds < 0 or bool(args.churn_rate) != bool(args.churn_seconds):
        parser.error("--churn-rate and --churn-seconds go together, both above 0")
    if args.vms_per_host % (args.vpcs * args.subnets):
        # Merak's scenario manager divides with a floor (VMs per VPC / hosts / subnets): refuse counts
        # that would silently create fewer VMs than asked.
        parser.error("--vms-per-host must be a multiple of --vpcs x --subnets")
    return Options(**{k: v for k, v in vars(args).items()})


async def main_async(opts: Options) -> Report:
    """Run with Ctrl-C tearing down what was created."""
    async with open_channel(opts.scenario_address) as channel:
        runner = RestRunner(opts, channel) if opts.rest else Runner(opts, channel)
        task = asyncio.create_task(runner.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            return runner.report


def main(argv: list[str] | None = None) -> int:
    """Console script `teste2e`; exit 0 only when every phase passed and nothing was left behind."""
    opts = parse(argv)
    report = asyncio.run(main_async(opts))
    document = vars(report) | {"ok": report.ok}
    opts.report.write_text(json.dumps(document, indent=2, default=str))
    if opts.html is not None:
        opts.html.write_text(report_html.render(json.loads(json.dumps(document, default=str))))
        console.print(f"html report: {opts.html}")
    print_summary(report)
    console.print(f"report: {opts.report}")
    if opts.keep and report.ok:
        console.print(
            f"lab kept (scenario {report.ids.get('scenario')}); look around: `ip netns list`, "
            f"`merak exec vhost-0 v0-0-0 -- ip addr`, `merak labs show {report.ids.get('scenario')}`; "
            f"tear it down with `merak labs destroy {report.ids.get('scenario')}`"
        )
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
