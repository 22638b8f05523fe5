"""The connectivity test (Merak's `pingall`): VMs ping each other through the agents; VPCs stay isolated."""

from __future__ import annotations

import asyncio
import random
import socket
import sys
import time
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import overload

import grpc

from merak.errors import FailedPrecondition, InvalidArgument, from_rpc_error
from merak.grpcclient import ChannelPool
from merak.logs import get_logger
from merak.stats import percentile
from merak.v1 import agent_pb2, agent_pb2_grpc, common_pb2, scenario_pb2

log = get_logger(__name__)

DEFAULT_TEST_NAME = "pingall"
# Merak's agents listen here when a compute node names only its pod IP.
AGENT_PORT = 40054

Pair = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Vm:
    """A VM found through its agent."""

    vhost: str
    name: str
    ip: str
    vpc_id: str
    endpoint: str


class VmTable(Sequence[Vm]):
    """The VMs found, kept column by column: a vhost's place, the name (interned: the same names repeat on
    every vhost), the IPv4 address as 4 bytes, the VPC's index. A million `Vm` objects were ~130 MB of
    the scenario service; these columns are ~16 bytes a VM. A `Vm` is made when one is asked for."""

    def __init__(self) -> None:
        self._places: list[tuple[str, str]] = []  # (vhost, agent endpoint)
        self._place = array("I")
        self._names: list[str] = []
        self._ips = array("I")
        self._odd_ips: dict[int, str] = {}  # addresses that are not dotted IPv4 as written, by index
        self._vpcs: list[str] = []
        self._vpc_index: dict[str, int] = {}
        self._vpc = array("I")
        self.unaddressed = 0  # VMs listed without an address (not in the table)

    def add(self, vhost: str, endpoint: str, listed: Iterable[agent_pb2.VmInfo]) -> None:
        """A vhost's VMs, as its agent listed them."""
        place = len(self._places)
        self._places.append((vhost, endpoint))
        for vm in listed:
            if not vm.ip:
                self.unaddressed += 1
                continue
            index = len(self._names)
            self._place.append(place)
            self._names.append(sys.intern(vm.name))
            try:
                packed = socket.inet_aton(vm.ip)
            except OSError:
                packed = b""
            if len(packed) == 4 and socket.inet_ntoa(packed) == vm.ip:
                self._ips.append(int.from_bytes(packed, "big"))
            else:
                self._ips.append(0)
                self._odd_ips[index] = vm.ip
            self._vpc.append(self._vpc_of(vm.vpc_id))

    def _vpc_of(self, vpc_id: str) -> int:
        index = self._vpc_index.get(vpc_id)
        if index is None:
            index = self._vpc_index[vpc_id] = len(self._vpcs)
            self._vpcs.append(vpc_id)
        return index

    def extend(self, other: VmTable) -> None:
        """`other`'s VMs after these (each vhost's table joined in the order of the vhosts)."""
        places = len(self._places)
        self._places += other._places
        self._place.extend(p + places for p in other._place)
        offset = len(self._names)
        self._names += other._names
        self._ips.extend(other._ips)
        self._odd_ips.update((i + offset, ip) for i, ip in other._odd_ips.items())
        vpcs = [self._vpc_of(v) for v in other._vpcs]
        self._vpc.extend(vpcs[v] for v in other._vpc)
        self.unaddressed += other.unaddressed

    def columns(self) -> Iterator[tuple[str, str]]:
        """(vhost, VPC id) of each VM, in order, without making a `Vm` each."""
        places, vpcs = self._places, self._vpcs
        for place, vpc in zip(self._place, self._vpc, strict=True):
            yield places[place][0], vpcs[vpc]

    def ip(self, index: int) -> str:
        """The address of VM `index`."""
        odd = self._odd_ips.get(index)
        return odd if odd is not None else socket.inet_ntoa(self._ips[index].to_bytes(4, "big"))

    def __len__(self) -> int:
        return len(self._names)

    @overload
    def __getitem__(self, index: int) -> Vm: ...
    @overload
    def __getitem__(self, index: slice) -> list[Vm]: ...
    def __getitem__(self, index: int | slice) -> Vm | list[Vm]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        vhost, endpoint = self._places[self._place[index]]
        return Vm(vhost, self._names[index], self.ip(index), self._vpcs[self._vpc[index]], endpoint)


@dataclass
class Sample:
    """The pairs to try: same-VPC pairs (expected to pass) and cross-VPC pairs (expected to fail)."""

    connectivity: list[Pair] = field(default_factory=list)
    isolation: list[Pair] = field(default_factory=list)
    connectivity_total: int = 0
    isolation_total: int = 0


def _indexes() -> array[int]:
    return array("I")


class _Groups:
    """VM indexes by VPC, by vhost and by both; and each VPC's addresses."""

    def __init__(self, vms: Sequence[Vm]) -> None:
        self.vms = vms
        # Indexes as 4-byte arrays, not lists of ints (a million VMs: ~150 MB as three lists).
        self.by_vpc: dict[str, array[int]] = defaultdict(_indexes)
        self.by_host: dict[str, array[int]] = defaultdict(_indexes)
        self.by_vpc_host: dict[tuple[str, str], array[int]] = defaultdict(_indexes)
        # Built when a cross-VPC pair is first drawn (one VPC has none; a million addresses are ~60 MB).
        self._ips_by_vpc: dict[str, set[str]] | None = None
        columns = vms.columns() if isinstance(vms, VmTable) else ((vm.vhost, vm.vpc_id) for vm in vms)
        for i, (vhost, vpc_id) in enumerate(columns):
            self.by_vpc[vpc_id].append(i)
            self.by_host[vhost].append(i)
            self.by_vpc_host[(vpc_id, vhost)].append(i)

    def ambiguous(self, src: int, dst: int) -> bool:
        """A cross-VPC destination whose address also exists in the source's VPC reaches that VM instead."""
        if self._ips_by_vpc is None:
            self._ips_by_vpc = defaultdict(set)
            for vm in self.vms:
                self._ips_by_vpc[vm.vpc_id].add(vm.ip)
        return self.vms[dst].ip in self._ips_by_vpc[self.vms[src].vpc_id]

    def same_host(self, src: int, dst: int) -> bool:
        """Both VMs sit on one vhost."""
        return self.vms[src].vhost == self.vms[dst].vhost


@dataclass(frozen=True)
class _PairClass:
    """One class of pairs: how many there are, how to draw one at random, how to list them all."""

    count: int
    draw: Callable[[random.Random], Pair | None]
    every: Callable[[], Iterator[Pair]]


def _classes(groups: _Groups) -> tuple[_PairClass, _PairClass, _PairClass, _PairClass]:
    """Same VPC across hosts, same VPC on one host, across VPCs and hosts, across VPCs on one host."""
    vms = groups.vms
    n = len(vms)
    same_vpc = sum(len(g) * (len(g) - 1) for g in groups.by_vpc.values())
    same_vpc_host = sum(len(g) * (len(g) - 1) for g in groups.by_vpc_host.values())
    same_host = sum(len(g) * (len(g) - 1) for g in groups.by_host.values())
    cross_vpc_same_host = same_host - same_vpc_host
    cross_vpc_cross_host = n * (n - 1) - same_vpc - cross_vpc_same_host

    def draw_vpc_cross_host(rng: random.Random) -> Pair | None:
        src = rng.randrange(n)
        dst = rng.choice(groups.by_vpc[vms[src].vpc_id])
        return (src, dst) if not groups.same_host(src, dst) else None

    def every_vpc_cross_host() -> Iterator[Pair]:
        for src, vm in enumerate(vms):
            yield from ((src, d) for d in groups.by_vpc[vm.vpc_id] if not groups.same_host(src, d))

    def draw_vpc_same_host(rng: random.Random) -> Pair | None:
        src = rng.randrange(n)
        dst = rng.choice(groups.by_vpc_host[(vms[src].vpc_id, vms[src].vhost)])
        return (src, dst) if dst != src else None

    def every_vpc_same_host() -> Iterator[Pair]:
        for src, vm in enumerate(vms):
            yield from ((src, d) for d in groups.by_vpc_host[(vm.vpc_id, vm.vhost)] if d != src)

    def draw_cross_vpc_cross_host(rng: random.Random) -> Pair | None:
        src, dst = rng.randrange(n), rng.randrange(n)
        if vms[src].vpc_id == vms[dst].vpc_id or groups.same_host(src, dst) or groups.ambiguous(src, dst):
            return None
        return src, dst

    def every_cross_vpc_cross_host() -> Iterator[Pair]:
        for src, vm in enumerate(vms):
            for vpc, members in groups.by_vpc.items():
                if vpc != vm.vpc_id:
                    yield from (
                        (src, d)
                        for d in members
                        if not groups.same_host(src, d) and not groups.ambiguous(src, d)
                    )

    def draw_cross_vpc_same_host(rng: random.Random) -> Pair | None:
        src = rng.randrange(n)
        dst = rng.choice(groups.by_host[vms[src].vhost])
        if vms[src].vpc_id == vms[dst].vpc_id or groups.ambiguous(src, dst):
            return None
        return src, dst

    def every_cross_vpc_same_host() -> Iterator[Pair]:
        for src, vm in enumerate(vms):
            yield from (
                (src, d)
                for d in groups.by_host[vm.vhost]
                if vms[d].vpc_id != vm.vpc_id and not groups.ambiguous(src, d)
            )

    return (
        _PairClass(same_vpc - same_vpc_host, draw_vpc_cross_host, every_vpc_cross_host),
        _PairClass(same_vpc_host, draw_vpc_same_host, every_vpc_same_host),
        _PairClass(cross_vpc_cross_host, draw_cross_vpc_cross_host, every_cross_vpc_cross_host),
        _PairClass(cross_vpc_same_host, draw_cross_vpc_same_host, every_cross_vpc_same_host),
    )


def _take(rng: random.Random, pairs: _PairClass, wanted: int) -> list[Pair]:
    """Up to `wanted` distinct pairs of a class, at random (all of them when there are no more)."""
    if wanted <= 0 or pairs.count == 0:
        return []
    if wanted >= pairs.count:
        return list(pairs.every())
    if 2 * wanted >= pairs.count:
        # Few enough to list; drawing at random would mostly hit pairs already taken.
        return rng.sample(list(pairs.every()), min(wanted, pairs.count))
    taken: set[Pair] = set()
    attempts = 100 * wanted + 1000
    while len(taken) < wanted and attempts > 0:
        attempts -= 1
        pair = pairs.draw(rng)
        if pair is not None:
            taken.add(pair)
    return sorted(taken)


def sample_pairs(vms: Sequence[Vm], max_pairs: int, seed: int, limit: int) -> Sample:
    """The pairs to try: all of them, or a sample (the same for the same seed) when `max_pairs` is lower.

    The sample splits `max_pairs` between same-VPC and cross-VPC pairs in proportion (at least one
    cross-VPC pair when there are any), and prefers pairs across vhosts, which go through the overlay.
    """
    groups = _Groups(vms)
    cross_host, same_host, iso_cross, iso_same = _classes(groups)
    conn_total = cross_host.count + same_host.count
    iso_total = iso_cross.count + iso_same.count
    total = conn_total + iso_total
    sample = Sample(connectivity_total=conn_total, isolation_total=iso_total)
    if max_pairs == 0 or max_pairs >= total:
        if total > limit:
            raise InvalidArgument(
                "max_pairs",
                f"{len(vms)} VMs make {total} pairs, more than {limit}; give max_pairs to take a sample",
            )
        sample.connectivity = sorted([*cross_host.every(), *same_host.every()])
        sample.isolation = sorted([*iso_cross.every(), *iso_same.every()])
        return sample
    iso_budget = round(max_pairs * iso_total / total)
    if iso_total and not iso_budget and max_pairs >= 2:
        iso_budget = 1
    conn_budget = max_pairs - iso_budget
    # Whatever one kind cannot use goes to the other.
    if conn_budget > conn_total:
        iso_budget, conn_budget = iso_budget + conn_budget - conn_total, conn_total
    if iso_budget > iso_total:
        conn_budget, iso_budget = conn_budget + iso_budget - iso_total, iso_total
    rng = random.Random(seed)
    across = _take(rng, cross_host, conn_budget)
    sample.connectivity = sorted(across + _take(rng, same_host, conn_budget - len(across)))
    iso_across = _take(rng, iso_cross, iso_budget)
    sample.isolation = sorted(iso_across + _take(rng, iso_same, iso_budget - len(iso_across)))
    return sample


def name_of_test(test_config: scenario_pb2.TestConfig | None) -> str:
    """The test of the test config this run stands for: the first ping test, else Merak's "pingall"."""
    if test_config is not None:
        for test in test_config.tests:
            if "ping" in f"{test.name} {test.cmd}".lower():
                return test.name or DEFAULT_TEST_NAME
    return DEFAULT_TEST_NAME


@dataclass(frozen=True, slots=True)
class _Outcome:
    dst: int
    ok: bool
    rtt_ms: float
    error: str


@dataclass(frozen=True)
class PingOptions:
    """How a run pings: echo timeout, same-VPC retry window, agent calls in flight, failures listed."""

    max_pairs: int
    seed: int
    timeout: float
    retry: float
    concurrency: int
    listed_failures: int
    pair_limit: int
    call_timeout: float


class ConnectivityTest:
    """One run: find the VMs through the agents, ping the sampled pairs grouped by source VM, report."""

    def __init__(self, options: PingOptions) -> None:
        self.options = options

    async def run(
        self,
        scenario: scenario_pb2.Scenario,
        test_config: scenario_pb2.TestConfig | None,
        nodes: Sequence[common_pb2.InternalComputeInfo],
    ) -> scenario_pb2.TestReport:
        """Ping and report; agents that fail count as failed pairs, not as a failed RPC."""
        started = time.monotonic()
        options = self.options
        semaphore = asyncio.Semaphore(max(1, options.concurrency))
        async with ChannelPool() as agents:
            listed = await asyncio.gather(*(self._list_vms(agents, semaphore, node) for node in nodes))
            dataplane = next((d for d, _ in listed if d), "")
            vms = VmTable()
            for _, table in listed:
                vms.extend(table)
            del listed
            sample = sample_pairs(vms, options.max_pairs, options.seed, options.pair_limit)
            conn_by_src: dict[int, list[int]] = defaultdict(list)
            iso_by_src: dict[int, list[int]] = defaultdict(list)
            for src, dst in sample.connectivity:
                conn_by_src[src].append(dst)
            for src, dst in sample.isolation:
                iso_by_src[src].append(dst)
            # Isolation pairs get one try: a fresh port that is late would pass, not fail.
            calls = [
                self._ping(
                    agents=agents, semaphore=semaphore, vms=vms, src=src, dsts=dsts, retry=options.retry
                )
                for src, dsts in conn_by_src.items()
            ] + [
                self._ping(agents=agents, semaphore=semaphore, vms=vms, src=src, dsts=dsts, retry=0.0)
                for src, dsts in iso_by_src.items()
            ]
            outcomes = await asyncio.gather(*calls)
        conn_results = outcomes[: len(conn_by_src)]
        iso_results = outcomes[len(conn_by_src) :]
        report = scenario_pb2.TestReport(
            scenario_id=scenario.id,
            test_config_id=scenario.test_config_id,
            test_name=name_of_test(test_config),
            dataplane=dataplane,
            vhosts=len(nodes),
            vms=len(vms) + vms.unaddressed,
            vms_without_address=vms.unaddressed,
            pairs_total=sample.connectivity_total,
            pairs_tried=len(sample.connectivity),
            cross_host_pairs=sum(1 for s, d in sample.connectivity if vms[s].vhost != vms[d].vhost),
            isolation_pairs_total=sample.isolation_total,
            isolation_pairs_tried=len(sample.isolation),
            seed=options.seed,
        )
        rtts: list[float] = []
        failures: list[scenario_pb2.PairResult] = []
        violations: list[scenario_pb2.PairResult] = []
        for src, results in zip(conn_by_src, conn_results, strict=True):
            for outcome in results:
                if outcome.ok:
                    report.passed += 1
                    rtts.append(outcome.rtt_ms)
                else:
                    report.failed += 1
                    failures.append(_pair(vms, src, outcome, outcome.error or "no reply"))
        for src, results in zip(iso_by_src, iso_results, strict=True):
            for outcome in results:
                if outcome.ok:
                    report.isolation_violated += 1
                    violations.append(_pair(vms, src, outcome, "reached a VM of another VPC"))
                else:
                    report.isolation_held += 1
        listed_failures = options.listed_failures
        report.failures.extend(sorted(failures, key=_pair_key)[:listed_failures])
        report.isolation_violations.extend(sorted(violations, key=_pair_key)[:listed_failures])
        rtts.sort()
        report.rtt_p50_ms = round(percentile(rtts, 50), 3)
        report.rtt_p90_ms = round(percentile(rtts, 90), 3)
        report.rtt_p99_ms = round(percentile(rtts, 99), 3)
        report.rtt_max_ms = round(rtts[-1], 3) if rtts else 0.0
        report.elapsed_seconds = round(time.monotonic() - started, 3)
        report.return_message = (
            f"{report.test_name}: {report.passed} of {report.pairs_tried} pairs passed "
            f"({report.cross_host_pairs} across vhosts); isolation held for {report.isolation_held} of "
            f"{report.isolation_pairs_tried} pairs"
        )
        log.info(
            "connectivity_test_done",
            scenario_id=scenario.id,
            vms=report.vms,
            pairs=report.pairs_tried,
            passed=report.passed,
            failed=report.failed,
            isolation_held=report.isolation_held,
            isolation_violated=report.isolation_violated,
            elapsed_seconds=report.elapsed_seconds,
        )
        return report

    async def _list_vms(
        self, agents: ChannelPool, semaphore: asyncio.Semaphore, node: common_pb2.InternalComputeInfo
    ) -> tuple[str, VmTable]:
        endpoint = node.agent_endpoint or (f"{node.container_ip}:{AGENT_PORT}" if node.container_ip else "")
        if not endpoint:
            raise FailedPrecondition(f"vhost {node.name!r} has no agent endpoint; CHECK topology")
        async with semaphore:
            try:
                reply = await _agent(agents, endpoint).ListVms(
                    agent_pb2.ListVmsRequest(vhost=node.name), timeout=self.options.call_timeout
                )
            except grpc.aio.AioRpcError as exc:
                raise from_rpc_error(exc, f"agent of vhost {node.name!r}", endpoint) from None
        table = VmTable()
        table.add(node.name, endpoint, reply.vms)
        return reply.dataplane, table

    async def _ping(
        self,
        *,
        agents: ChannelPool,
        semaphore: asyncio.Semaphore,
        vms: Sequence[Vm],
        src: int,
        dsts: Sequence[int],
        retry: float,
    ) -> list[_Outcome]:
        source = vms[src]
        destinations = list(dict.fromkeys(vms[d].ip for d in dsts))
        request = agent_pb2.PingRequest(
            vhost=source.vhost,
            vm=source.name,
            destinations=destinations,
            timeout_seconds=self.options.timeout,
            retry_seconds=retry,
        )
        # The agent retries for `retry` seconds, then waits for the last echo.
        deadline = retry + 2 * self.options.timeout + 30
        async with semaphore:
            try:
                reply = await _agent(agents, source.endpoint).Ping(request, timeout=deadline)
            except grpc.aio.AioRpcError as exc:
                reason = from_rpc_error(exc, f"agent of vhost {source.vhost!r}", source.endpoint).described()
                return [_Outcome(d, False, 0.0, reason) for d in dsts]
        by_ip = {r.destination: r for r in reply.results}
        outcomes = []
        for d in dsts:
            result = by_ip.get(vms[d].ip)
            if result is None:
                outcomes.append(_Outcome(d, False, 0.0, "the agent returned no result"))
            else:
                outcomes.append(_Outcome(d, result.ok, result.rtt_ms, result.error))
        return outcomes


def _pair(vms: Sequence[Vm], src: int, outcome: _Outcome, reason: str) -> scenario_pb2.PairResult:
    s, d = vms[src], vms[outcome.dst]
    return scenario_pb2.PairResult(
        src_vhost=s.vhost,
        src_vm=s.name,
        src_ip=s.ip,
        src_vpc_id=s.vpc_id,
        dst_vhost=d.vhost,
        dst_vm=d.name,
        dst_ip=d.ip,
        dst_vpc_id=d.vpc_id,
        reason=reason,
        rtt_ms=outcome.rtt_ms,
    )


def _pair_key(pair: scenario_pb2.PairResult) -> tuple[str, str, str, str]:
    return pair.src_vhost, pair.src_vm, pair.dst_vhost, pair.dst_vm


def _agent(pool: ChannelPool, endpoint: str) -> agent_pb2_grpc.MerakAgentServiceAsyncStub:
    """The agent at `endpoint` ("unix:///…/agent.sock" or "host:port"), over the pool's channel."""
    return agent_pb2_grpc.MerakAgentServiceStub(pool.channel(endpoint))
