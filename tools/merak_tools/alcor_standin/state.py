"""What the Alcor stand-in holds (VPCs, subnets, routers, security groups, nodes, ports) and what it
records of the requests it answered and of the goal states it pushed to hosts."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Recorded:
    """One request the fake received; `service` is the listener's service ("" on the single port)."""

    method: str
    path: str
    body: Any
    service: str = ""


@dataclass
class FailRule:
    """Answer the first request matching `method` and containing `path_part` with `status`."""

    method: str
    path_part: str
    status: int
    message: str = "forced by test"


@dataclass(frozen=True)
class Push:
    """One goal state pushed (or not) to a host's agent, as DPM/NCM push them.

    `outcome`: "ok" (every status SUCCESS or PENDING), "dropped" (push_drop: never sent), "error: ..."
    (the reply refused something, or the host is not registered), "failed: ..." (no reply). `statuses`:
    the reply's (ResourceType, resource id, OperationStatus). `neighbor_ids` are kept when the state
    records requests (`record`); `neighbors` counts them always.
    """

    host: str  # the node's name (or the binding:host_id no node answers to)
    target: str  # "local_ip:server_port"; "" when nothing was sent anywhere
    sent_at: float  # time.monotonic()
    seconds: float  # until the reply (or the failure)
    port_ids: tuple[str, ...]
    neighbor_ids: tuple[str, ...]
    outcome: str
    statuses: tuple[tuple[int, str, int], ...] = ()
    neighbors: int = 0
    attempts: int = 0

    @property
    def kind(self) -> str:
        """The outcome without its detail: ok, dropped, error or failed."""
        return self.outcome.partition(":")[0]


@dataclass
class AlcorState:
    """What the fake Alcor holds, and the requests it saw."""

    requests: list[Recorded] = field(default_factory=list)
    ports: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    vpcs: dict[str, dict[str, Any]] = field(default_factory=dict)
    subnets: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    routers: dict[str, dict[str, Any]] = field(default_factory=dict)
    next_host: int = 2  # a counter for MACs (and addresses of ports without a known subnet)
    # Per subnet: the addresses in use, and where the next free-address search starts.
    taken: dict[str, set[str]] = field(default_factory=dict)
    cursor: dict[str, int] = field(default_factory=dict)
    record: bool = True  # keep every request (tests); off for long load runs, `times` is kept anyway
    # (time.monotonic(), method, Alcor service, seconds held) of every answered request: rates and
    # latency as the server saw them (held: from the request's arrival to its answer, latency included).
    times: list[tuple[float, str, str, float]] = field(default_factory=list)
    next_segment: int = 4096
    fail_next: list[int] = field(default_factory=list)  # status codes to answer, one per request
    fail_rules: list[FailRule] = field(default_factory=list)
    # The goal states pushed to hosts, in the order they were answered (or given up).
    pushes: list[Push] = field(default_factory=list)
    # Per port, time.monotonic() when it was "posted", "bound" to a host, and "applied" (its host's
    # reply gave it SUCCESS).
    port_times: dict[str, dict[str, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def objects(self) -> int:
        """How many objects (other than ports) Alcor holds."""
        return sum(
            len(d) for d in (self.nodes, self.vpcs, self.subnets, self.groups, self.rules, self.routers)
        )

    def push_counts(self) -> dict[str, int]:
        """How many pushes ended each way (ok, dropped, error, failed); call with `lock` held."""
        counts = dict.fromkeys(("ok", "dropped", "error", "failed"), 0)
        for push in self.pushes:
            counts[push.kind] = counts.get(push.kind, 0) + 1
        return counts
