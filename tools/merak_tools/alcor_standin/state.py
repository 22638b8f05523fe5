"""What the Alcor stand-in holds (VPCs, subnets, routers, security groups, nodes, ports) and what it
records of the requests it answered."""

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
    lock: threading.Lock = field(default_factory=threading.Lock)

    def objects(self) -> int:
        """How many objects (other than ports) Alcor holds."""
        return sum(
            len(d) for d in (self.nodes, self.vpcs, self.subnets, self.groups, self.rules, self.routers)
        )
