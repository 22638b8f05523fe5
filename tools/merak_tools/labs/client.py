"""The labs of one stack, read and destroyed over the scenario, topology and compute services' gRPC APIs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import ExitStack
from functools import partial
from typing import Protocol, TypeVar

import grpc

from merak.errors import enum_name
from merak.grpcclient import open_blocking_channel
from merak.naming import topology_short_id
from merak.v1 import (
    common_pb2,
    compute_pb2,
    compute_pb2_grpc,
    scenario_pb2,
    scenario_pb2_grpc,
    topology_pb2,
    topology_pb2_grpc,
)
from merak_tools.labs.models import (
    Destroyed,
    Endpoints,
    Host,
    Lab,
    LabDetail,
    LabError,
    UnknownLab,
    VmCounts,
)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class _Page(Protocol[T_co]):
    """A page of a scenario service list reply."""

    @property
    def items(self) -> Iterable[T_co]: ...

    @property
    def next_page_token(self) -> str: ...


DEFAULT_PLUGIN = "native"
# ListScenarios and the config lists: the largest page the scenario service gives.
PAGE_SIZE = 1000
# The configs a scenario names: their kind, the scenario's field, the scenario service's delete method.
CONFIG_REFS: tuple[tuple[str, str, str], ...] = (
    ("topology", "topology_id", "DeleteTopologyConfig"),
    ("network", "network_config_id", "DeleteNetworkConfig"),
    ("compute", "compute_config_id", "DeleteComputeConfig"),
    ("service", "service_config_id", "DeleteServiceConfig"),
    ("test", "test_config_id", "DeleteTestConfig"),
)


def _status(value: int) -> str:
    return enum_name(scenario_pb2.ServiceStatus, value)


def _vm_counts(progress: compute_pb2.ComputeProgress) -> VmCounts:
    return VmCounts(
        operation=progress.operation,
        total=progress.total,
        done=progress.done,
        deploying=progress.deploying,
        deleting=progress.deleting,
        error=progress.error,
        finished=progress.finished,
        failure=progress.failure,
    )


class LabsClient:
    """The labs of one stack: blocking gRPC calls to its scenario, topology and compute services.

    Use it as a context manager (it opens and closes the channels).
    """

    def __init__(
        self, endpoints: Endpoints, *, timeout: float = 30.0, destroy_timeout: float = 1200.0
    ) -> None:
        self.endpoints = endpoints
        self.timeout = timeout
        self.destroy_timeout = destroy_timeout
        self._channels = ExitStack()

    def __enter__(self) -> LabsClient:
        open_ = self._channels.enter_context
        self.scenario = scenario_pb2_grpc.MerakScenarioServiceStub(
            open_(open_blocking_channel(self.endpoints.scenario))
        )
        self.topology = topology_pb2_grpc.MerakTopologyServiceStub(
            open_(open_blocking_channel(self.endpoints.topology))
        )
        self.compute = compute_pb2_grpc.MerakComputeServiceStub(
            open_(open_blocking_channel(self.endpoints.compute))
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._channels.close()

    # --- calls -------------------------------------------------------------------------------

    def _call(self, service: str, call: Callable[[], T]) -> T:
        """`call()`, its gRPC error as a LabError naming the service, its address and the status."""
        try:
            return call()
        except grpc.RpcError as exc:
            address = getattr(self.endpoints, service)
            hint = " (is the stack up? `merak status`)" if exc.code() == grpc.StatusCode.UNAVAILABLE else ""
            raise LabError(
                f"{service} service at {address}: {exc.code().name}: {exc.details()}{hint}"
            ) from None

    def _listed(self, method: Callable[..., _Page[T]]) -> list[T]:
        """Every item of one of the scenario service's paged lists (ListScenarios, ListTopologyConfigs…)."""
        items: list[T] = []
        token = ""
        while True:
            request = scenario_pb2.ListRequest(page_size=PAGE_SIZE, page_token=token)
            reply = self._call("scenario", partial(method, request, timeout=self.timeout))
            items += reply.items
            token = reply.next_page_token
            if not token:
                return items

    def _scenarios(self) -> list[scenario_pb2.Scenario]:
        return self._listed(self.scenario.ListScenarios)

    def _running(self) -> dict[str, topology_pb2.TopologySummary]:
        reply = self._call(
            "topology",
            lambda: self.topology.ListTopologies(topology_pb2.ListTopologiesRequest(), timeout=self.timeout),
        )
        return {t.topology_id: t for t in reply.topologies}

    def _vms(self, scenario: scenario_pb2.Scenario) -> tuple[VmCounts | None, str]:
        """Compute's counts for a scenario whose compute is deployed (None, and why, when unknown)."""
        if scenario.compute_status == scenario_pb2.NONE:
            return None, ""
        request = compute_pb2.InternalComputeConfigInfo(
            operation_type=common_pb2.INFO,
            config=compute_pb2.InternalComputeConfiguration(
                compute_config_id=scenario.compute_config_id, scenario_id=scenario.id
            ),
        )
        try:
            reply = self.compute.ComputeHandler(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None, "compute has no VMs of it"
            return None, f"compute: {exc.code().name}: {exc.details()}"
        return _vm_counts(reply.progress), ""

    # --- listing -----------------------------------------------------------------------------

    def labs(self) -> list[Lab]:
        """Every scenario (in id order), then every running topology no deployed scenario refers to."""
        scenarios = self._scenarios()
        running = self._running()
        topology_configs = {c.id: c for c in self._listed(self.scenario.ListTopologyConfigs)}
        network_configs = {c.id: c for c in self._listed(self.scenario.ListNetworkConfigs)}
        owned = {s.topology_id for s in scenarios if s.topology_status != scenario_pb2.NONE}
        labs = [self._scenario_lab(s, running, topology_configs, network_configs) for s in scenarios]
        labs += [_bare_lab(t) for tid, t in sorted(running.items()) if tid not in owned]
        return labs

    def _scenario_lab(
        self,
        scenario: scenario_pb2.Scenario,
        running: dict[str, topology_pb2.TopologySummary],
        topology_configs: dict[str, scenario_pb2.TopologyConfig],
        network_configs: dict[str, scenario_pb2.NetworkConfig],
    ) -> Lab:
        # The topology runs for this scenario only if the scenario deployed it.
        summary = running.get(scenario.topology_id) if scenario.topology_status != scenario_pb2.NONE else None
        topology = topology_configs.get(scenario.topology_id, scenario_pb2.TopologyConfig())
        network = network_configs.get(scenario.network_config_id, scenario_pb2.NetworkConfig())
        vms, note = self._vms(scenario)
        if summary is not None and summary.error:
            note = "; ".join(n for n in (f"topology: {summary.error}", note) if n)
        return Lab(
            kind="scenario",
            id=scenario.id,
            name=scenario.name,
            topology_id=scenario.topology_id,
            status=_status(scenario.status),
            topology_status=_status(scenario.topology_status),
            network_status=_status(scenario.network_status),
            compute_status=_status(scenario.compute_status),
            running=summary.status if summary is not None else "",
            vhosts=summary.number_of_vhosts if summary is not None else 0,
            planned_vhosts=topology.number_of_vhosts,
            vms=vms,
            plugin=network.plugin.lower() or DEFAULT_PLUGIN,
            backend=(summary.backend if summary is not None else "") or topology.backend or "local",
            dataplane=(summary.dataplane if summary is not None else "") or topology.dataplane or "real",
            configs={
                label: getattr(scenario, ref) for label, ref, _method in CONFIG_REFS if getattr(scenario, ref)
            },
            note=note,
        )

    def resolve(self, ref: str, labs: list[Lab] | None = None) -> Lab:
        """The lab `ref` names: a scenario id, a scenario name if only one has it, or a topology id
        (the scenario that deployed that topology, else the bare topology)."""
        labs = self.labs() if labs is None else labs
        scenarios = [lab for lab in labs if lab.kind == "scenario"]
        for lab in scenarios:
            if lab.id == ref:
                return lab
        named = [lab for lab in scenarios if lab.name == ref]
        if len(named) == 1:
            return named[0]
        if named:
            ids = ", ".join(lab.id for lab in named)
            raise LabError(f"{len(named)} scenarios are named {ref!r} ({ids}); name one by its id")
        for lab in labs:
            if lab.running and lab.topology_id == ref:
                return lab
        referring = [lab for lab in scenarios if lab.topology_id == ref]
        if len(referring) == 1:  # a scenario's topology that does not run (yet, or any more)
            return referring[0]
        if referring:
            ids = ", ".join(lab.id for lab in referring)
            raise LabError(f"{len(referring)} scenarios name topology {ref!r} ({ids}); name one by its id")
        raise UnknownLab(
            f"no lab {ref!r}: it is no scenario id, scenario name or running topology id (see `merak labs`)"
        )

    def show(self, ref: str) -> LabDetail:
        """One lab with its hosts (from the topology service's INFO), endpoints and how to get inside."""
        lab = self.resolve(ref)
        hosts: list[Host] = []
        if lab.running:
            request = topology_pb2.InternalTopologyInfo(
                operation_type=common_pb2.INFO,
                config=topology_pb2.InternalTopologyConfiguration(topology_id=lab.topology_id),
            )
            reply = self._call(
                "topology", lambda: self.topology.TopologyHandler(request, timeout=self.timeout)
            )
            hosts = [_host(node) for node in reply.compute_nodes]
        return LabDetail(lab, hosts, self.endpoints, _exec_hints(lab, hosts))

    # --- destroying --------------------------------------------------------------------------

    def destroy(self, ref: str, *, configs: bool = False) -> Destroyed:
        """Tear down the lab `ref` names and delete it; with `configs`, a scenario's configs too."""
        return self.destroy_lab(self.resolve(ref), configs=configs)

    def destroy_lab(self, lab: Lab, *, configs: bool = False) -> Destroyed:
        """A scenario: DeleteScenario with teardown (compute, network, topology, then the scenario);
        with `configs`, then the configs it named that no other scenario uses. A bare topology: DELETE."""
        if lab.kind == "topology":
            request = topology_pb2.InternalTopologyInfo(
                operation_type=common_pb2.DELETE,
                config=topology_pb2.InternalTopologyConfiguration(topology_id=lab.topology_id),
            )
            self._call(
                "topology", lambda: self.topology.TopologyHandler(request, timeout=self.destroy_timeout)
            )
            self._check_gone(lab)
            return Destroyed("topology", lab.id, lab.name, lab.topology_id)
        delete = scenario_pb2.DeleteScenarioRequest(id=lab.id, teardown=True)
        self._call("scenario", lambda: self.scenario.DeleteScenario(delete, timeout=self.destroy_timeout))
        if lab.running:
            self._check_gone(lab)
        destroyed = Destroyed("scenario", lab.id, lab.name, lab.topology_id)
        if configs:
            self._delete_configs(lab, destroyed)
        return destroyed

    def _check_gone(self, lab: Lab) -> None:
        """The topology service no longer lists the lab's topology."""
        left = self._running().get(lab.topology_id)
        if left is not None:
            raise LabError(
                f"topology {lab.topology_id} of {lab.kind} {lab.id} still runs ({left.status}) after it "
                "was deleted"
            )

    def _delete_configs(self, lab: Lab, destroyed: Destroyed) -> None:
        """Delete the configs of a deleted scenario that no other scenario names (those are kept)."""
        users: dict[tuple[str, str], list[str]] = {}
        for other in self._scenarios():
            for label, ref, _method in CONFIG_REFS:
                users.setdefault((label, getattr(other, ref)), []).append(other.id)
        for label, _ref, method in CONFIG_REFS:
            config_id = lab.configs.get(label)
            if not config_id:
                continue
            what = f"{label} config {config_id}"
            using = users.get((label, config_id))
            if using:
                destroyed.configs_kept.append(f"{what} (used by scenario {', '.join(using)})")
                continue
            request = scenario_pb2.DeleteRequest(id=config_id)
            try:
                getattr(self.scenario, method)(request, timeout=self.timeout)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    continue  # gone already: nothing to keep or report
                if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:  # a scenario took it meanwhile
                    destroyed.configs_kept.append(f"{what} ({exc.details()})")
                    continue
                raise LabError(
                    f"scenario {lab.id} is deleted, but deleting its {what} failed: "
                    f"{exc.code().name}: {exc.details()}"
                ) from None
            destroyed.configs_deleted.append(what)

    def destroy_all(self, *, configs: bool = False) -> list[tuple[Lab, Destroyed | LabError]]:
        """Destroy every lab (scenarios first, then bare topologies); one failing does not stop the rest."""
        outcomes: list[tuple[Lab, Destroyed | LabError]] = []
        for lab in self.labs():
            try:
                outcomes.append((lab, self.destroy_lab(lab, configs=configs)))
            except LabError as exc:
                outcomes.append((lab, exc))
        return outcomes


def _bare_lab(summary: topology_pb2.TopologySummary) -> Lab:
    return Lab(
        kind="topology",
        id=summary.topology_id,
        name=summary.name,
        topology_id=summary.topology_id,
        status="",
        topology_status="",
        network_status="",
        compute_status="",
        running=summary.status,
        vhosts=summary.number_of_vhosts,
        planned_vhosts=0,  # no config asked for it
        vms=None,
        plugin="",
        backend=summary.backend,
        dataplane=summary.dataplane,
        note=f"topology: {summary.error}" if summary.error else "",
    )


def _host(node: common_pb2.InternalComputeInfo) -> Host:
    ip = f"{node.datapath_ip}/{node.datapath_prefix_len}" if node.datapath_prefix_len else node.datapath_ip
    return Host(
        name=node.name,
        datapath_ip=ip,
        status=enum_name(common_pb2.Status, node.status),
        agent_endpoint=node.agent_endpoint,
        detail=node.status_detail,
    )


def _exec_hints(lab: Lab, hosts: list[Host]) -> list[str]:
    """How to get inside the running lab: `merak exec` lines for its first vhost and VMs, or why not."""
    if not lab.running or not hosts:
        return []
    if lab.dataplane == "fake":
        return ["nothing to exec into: the dataplane is fake (no namespaces)"]
    if lab.backend != "local":
        return [f"not with merak exec: the vhosts are pods of the {lab.backend} backend (kubectl exec)"]
    first = hosts[0].name
    short = topology_short_id(lab.topology_id)
    return [
        f"merak exec --topology {lab.topology_id} {first} - -- ip addr",
        f"merak exec --topology {lab.topology_id} {first} <vm> -- ip addr   "
        f"(VMs of {first}: ip netns list | grep mk-{short}-0-)",
    ]
