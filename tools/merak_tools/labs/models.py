"""What `merak labs` speaks of: a lab, its VMs and hosts, what destroying it removed, and its errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

LabKind = Literal["scenario", "topology"]


class LabError(Exception):
    """A lab could not be listed, found or destroyed; the message says why, for people."""


class UnknownLab(LabError):
    """No scenario id, unique scenario name or running topology id is what was asked for."""


@dataclass(frozen=True)
class Endpoints:
    """Where the services answer (gRPC "host:port"), and the scenario service's REST API if known."""

    scenario: str
    topology: str
    compute: str
    rest: str = ""


@dataclass(frozen=True)
class VmCounts:
    """The VMs of a scenario as compute reports them: its current or last operation, VMs per status."""

    operation: str
    total: int
    done: int
    deploying: int
    deleting: int
    error: int
    finished: bool
    failure: str = ""

    @property
    def settled(self) -> bool:
        """Every VM is made and the operation is over without failing."""
        return self.finished and not self.failure and self.done == self.total and self.error == 0


@dataclass(frozen=True)
class Lab:
    """One lab: a scenario and what runs of it, or a topology that no deployed scenario refers to."""

    kind: LabKind
    # The scenario's id, or the topology's for a bare topology.
    id: str
    name: str
    topology_id: str
    # The scenario's statuses as it recorded them (ServiceStatus names); "" for a bare topology.
    status: str
    topology_status: str
    network_status: str
    compute_status: str
    # The topology as its service sees it now (DEPLOYING, READY, ERROR, DELETING); "" when not running.
    running: str
    # Vhosts of the running topology (0 when none runs), and how many the topology config asks for.
    vhosts: int
    planned_vhosts: int
    vms: VmCounts | None
    plugin: str
    backend: str
    dataplane: str
    # The configs a scenario names, by kind ("topology", "network", "compute", "service", "test").
    configs: dict[str, str] = field(default_factory=dict)
    # What could not be read (compute unreachable, a topology's error).
    note: str = ""


@dataclass(frozen=True)
class Host:
    """An emulated host (vhost) of a running lab."""

    name: str
    datapath_ip: str
    status: str
    agent_endpoint: str
    detail: str


@dataclass(frozen=True)
class LabDetail:
    """`merak labs show`: a lab, its hosts, the services' endpoints, how to get inside."""

    lab: Lab
    hosts: list[Host]
    endpoints: Endpoints
    exec_hints: list[str]


@dataclass(frozen=True)
class Destroyed:
    """What `destroy` removed (and which configs it kept because another scenario uses them)."""

    kind: LabKind
    id: str
    name: str
    topology_id: str
    configs_deleted: list[str] = field(default_factory=list)
    configs_kept: list[str] = field(default_factory=list)
