"""One teste2e run over the scenario service's gRPC API: create the configs and the scenario, deploy
topology, network and compute with live progress, run the ping-all test, tear down and check nothing is
left."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import grpc

from merak import protojson
from merak.grpcclient import open_channel, retry_unavailable
from merak.naming import topology_short_id
from merak.v1 import (
    compute_pb2,
    compute_pb2_grpc,
    scenario_pb2,
    scenario_pb2_grpc,
    topology_pb2,
    topology_pb2_grpc,
)
from merak_tools.teste2e.options import Options, build_configs
from merak_tools.teste2e.progress import PhaseBar
from merak_tools.teste2e.report import E2EError, Report, console, describe

T = TypeVar("T")


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
            try:
                await self._deploy(scenario_pb2.COMPUTE, "compute")
            except E2EError:
                # What the control plane did is the first thing to read when VMs failed: kept anyway.
                with contextlib.suppress(E2EError, grpc.aio.AioRpcError):
                    await self._results()
                raise
            await self._results()
            await self._test()
        except (E2EError, grpc.aio.AioRpcError) as exc:
            self.report.errors.append(describe(exc))
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
        self.report.calls[f"DEPLOY {name}"] = time.perf_counter() - started
        console.print(f"DEPLOY {name}: {reply.return_message}")
        for warning in reply.warnings:
            console.print(f"  left out: {warning}", markup=False)
        self.report.warnings += list(reply.warnings)
        if reply.service_status != scenario_pb2.READY:
            await self._follow(name)
        self.report.phases[f"deploy {name}"] = time.perf_counter() - started

    async def _follow(self, name: str) -> None:
        """Follow the scenario live until the service leaves DEPLOYING; fail if it did not get READY."""
        status = scenario_pb2.NONE
        with PhaseBar(console, name) as bar:

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
                        bar.print(f"[{color}]{progress.message}[/{color}]")
                    if name == "topology" and progress.topology.total:
                        bar.update(total=progress.topology.total, completed=progress.topology.ready)
                    elif name == "compute" and progress.compute.churning:
                        bar.update(description=f"compute (churn: {progress.compute.churned} replaced)")
                    elif name == "compute" and progress.compute.total:
                        done = progress.compute.done
                        bar.update(total=progress.compute.total, completed=done + progress.compute.error)
                        self.report.vms, self.report.vms_done = progress.compute.total, done
                return seen

            status = await self._retried(watch)
        if status != scenario_pb2.READY:
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
        started = time.perf_counter()
        results = await self._retried(lambda left: self.stub.GetResults(request, timeout=left))
        self.report.calls["GetResults"] = time.perf_counter() - started
        self.report.results = protojson.to_dict(results)
        if results.overlay_source:
            console.print(f"overlay: from {results.overlay_source}")
        for op in results.operations:
            console.print(
                f"control plane: {op.plugin} {op.operation}: {op.requests} requests, {op.rate:.0f}/s, "
                f"p50 {op.latency.p50_ms:.1f} ms, p95 {op.latency.p95_ms:.1f} ms, "
                f"p99 {op.latency.p99_ms:.1f} ms, {op.errors} errors"
            )
        if results.chassis:
            full = next((c.at for c in results.chassis if c.chassis and c.registered >= c.chassis), None)
            last = results.chassis[-1]
            console.print(
                f"OVN chassis: {last.registered} of {last.chassis} in the southbound database"
                + (f" (all of them from {full:.1f} s on)" if full is not None else "")
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
        """Delete what the run made, then check that nothing of it is left."""
        if not self.scenario_id:
            return
        started = time.perf_counter()
        with PhaseBar(console, "teardown") as bar:
            follow = asyncio.create_task(self._follow_vms_deleted(bar))
            try:
                await self._delete()
            except (E2EError, grpc.aio.AioRpcError) as exc:
                self.report.errors.append(f"teardown: {describe(exc)}")
            finally:
                follow.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follow
        await self._verify_teardown(started)

    async def _follow_vms_deleted(self, bar: PhaseBar) -> None:
        """The VMs deleted as the teardown goes, from compute's WatchProgress, on `bar`. Quiet when compute
        cannot be asked (another address, no compute config): the teardown does not depend on it."""
        config_id = self.report.ids.get("compute", "")
        if not config_id:
            return
        request = compute_pb2.WatchProgressRequest(compute_config_id=config_id)
        try:
            async with open_channel(self.opts.compute_address) as channel:
                stub = compute_pb2_grpc.MerakComputeServiceStub(channel)
                while True:
                    async for progress in stub.WatchProgress(request):
                        if progress.operation != "DELETE":
                            break  # the create's progress, over: the DELETE has not started yet
                        if progress.total:
                            bar.update(
                                total=progress.total,
                                completed=progress.total - vms_left(progress),
                                description="teardown: VMs deleted",
                            )
                        if progress.finished:
                            # Its total 0: the config went with its VMs, after the last count seen.
                            gone = bar.total if not progress.total else None
                            bar.update(completed=gone, description="teardown: VMs deleted, then the lab")
                            return
                    await asyncio.sleep(0.5)
        except grpc.aio.AioRpcError:
            return  # the config is gone (the delete is over), or compute is not where we looked

    async def _delete(self) -> None:
        """The scenario, torn down (its VMs, network and topology), then its configs."""
        request = scenario_pb2.DeleteScenarioRequest(id=self.scenario_id, teardown=True)
        await self._retried(lambda left: self.stub.DeleteScenario(request, timeout=left))
        for kind, method in (("topology", "DeleteTopologyConfig"), ("network", "DeleteNetworkConfig"),
                             ("service", "DeleteServiceConfig"), ("compute", "DeleteComputeConfig"),
                             ("test", "DeleteTestConfig")):  # fmt: skip
            await self._retried(partial(self._delete_config, method, self.report.ids[kind]))

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


def vms_left(progress: compute_pb2.ComputeProgress) -> int:
    """VMs that still have a record: a deleted VM's record goes."""
    return (
        progress.none + progress.deploying + progress.ready + progress.deleting + progress.updating
        + progress.error + progress.done
    )  # fmt: skip


def local_namespaces(topology_id: str) -> list[str]:
    """Namespaces of the topology on this machine (the local backend), if any are left."""
    if not os.path.isdir("/run/netns"):
        return []
    prefix = f"mk-{topology_short_id(topology_id)}-"
    return sorted(n for n in os.listdir("/run/netns") if n.startswith(prefix))[:10]
