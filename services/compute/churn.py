"""Churn: the VMs of a compute config replaced at a rate for a while, the population kept at its size.

Each tick replaces the oldest VMs: a newborn is created on the host and in the subnet of the VM it
replaces, the overlay of its VNI learns it, then the old VM is deleted and withdrawn. A newborn that
fails is dropped and its elder kept, so failures cost rate, not population. Ticks are planned in Redis
before they act, so a retried activity redoes the same tick and goes on from there.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

import grpc
from temporalio import activity

from merak.logs import get_logger
from merak.v1 import agent_pb2, agent_pb2_grpc, common_pb2
from services.compute.contracts import BatchOutcome, ChurnInput, PluginName
from services.compute.plugins import Calls, VmPlugin, raise_activity_error
from services.compute.store import ComputeStore, HostRecord, Meta, VmRecord

log = get_logger(__name__)

# A tick replaces at most this share of the population (the rest of the rate waits for the next),
# so the VMs alive stay within a few percent of the target while newborns and elders overlap.
TICK_SHARE = 0.04
MIN_TICK, MAX_TICK = 0.2, 2.0

AgentFor = Callable[[str], "agent_pb2_grpc.MerakAgentServiceAsyncStub"]  # the stub type is in the .pyi only
Recorder = Callable[[str, Meta, Calls, int], Awaitable[float]]


def tick_seconds(rate: float, population: int) -> float:
    """How often a tick runs: about TICK_SHARE of the population per tick, within MIN_TICK..MAX_TICK."""
    return min(MAX_TICK, max(MIN_TICK, TICK_SHARE * max(population, 1) / rate))


def per_tick(population: int) -> int:
    """The most VMs one tick replaces."""
    return max(1, int(TICK_SHARE * population))


@dataclass(frozen=True, slots=True)
class Triple:
    """One replacement: the host, the VM that goes and its newborn's record."""

    host: str
    victim: VmRecord
    newborn: VmRecord


class ChurnRun:
    """One churn of one compute config."""

    def __init__(
        self, store: ComputeStore, plugin: VmPlugin, agent: AgentFor, record: Recorder, agent_timeout: float
    ) -> None:
        self.store = store
        self.plugin = plugin
        self.agent = agent
        self.record = record
        self.agent_timeout = agent_timeout

    async def run(self, churn: ChurnInput, meta: Meta) -> BatchOutcome:
        """Replace `churn.rate` VMs per second until `churn.seconds` after the churn began."""
        config_id = churn.config_id
        hosts = {n: h for n, h in (await self.store.vms.hosts(config_id)).items() if not h.leaving}
        ordered = sorted(hosts, key=lambda n: hosts[n].index)
        await self.store.churn.start(config_id, time.time(), ordered)
        state = await self.store.churn.state(config_id)
        began = float(state["started_at"])
        tick = int(state.get("tick", 0))
        replaced = int(state.get("replaced", 0))
        failed = int(state.get("failed", 0))
        population = meta.total
        interval = tick_seconds(churn.rate, population)
        end = began + churn.seconds
        while (now := time.time()) < end:
            activity.heartbeat(tick)
            due = int(churn.rate * (now - began)) - replaced - failed
            if due <= 0:
                # Pacing: the schedule says when the next VMs are due (not a wait for a condition).
                await asyncio.sleep(min(interval, end - now))
                continue
            plan = await self.store.churn.plan(config_id, tick, min(due, per_tick(population)))
            if not plan:
                break  # no VM to replace
            done, lost = await self._tick(config_id, meta, hosts, tick, plan)
            replaced += done
            failed += lost
            tick += 1
        await self.store.churn.end(config_id)
        alive = [n for _, n in await self.store.results.population(config_id)]
        log.info(
            "churn_finished",
            config_id=config_id,
            ticks=tick,
            replaced=replaced,
            failed=failed,
            rate=round(replaced / churn.seconds, 2),
            population_min=min(alive, default=0),
            population_max=max(alive, default=0),
        )
        return BatchOutcome(done=replaced, failed=failed)

    async def _tick(
        self, config_id: str, meta: Meta, hosts: dict[str, HostRecord], tick: int, plan: list[list[str]]
    ) -> tuple[int, int]:
        by_host: dict[str, list[list[str]]] = defaultdict(list)
        for entry in plan:
            by_host[entry[0]].append(entry)
        if any(len(entry) < 4 for entry in plan):
            # First attempt: the victims' records join the plan, so a retry after they went still
            # knows what to withdraw.
            for host, entries in by_host.items():
                elders = {
                    r.name: r for r in await self.store.vms.records(config_id, host, [e[1] for e in entries])
                }
                for entry in entries:
                    elder = elders.get(entry[1])
                    entry[3:] = [elder.to_json() if elder else ""]
            await self.store.churn.save_plan(config_id, tick, plan)
        triples: list[Triple] = []
        abandoned: list[list[str]] = []
        vanished: list[list[str]] = []
        for host, entries in by_host.items():
            born = {r.name: r for r in await self.store.vms.records(config_id, host, [e[2] for e in entries])}
            for _, victim, newborn, snapshot in entries:
                if not snapshot:
                    vanished.append([host, victim])  # gone before the tick (a VM deleted meanwhile)
                    continue
                elder = VmRecord.from_json(snapshot)
                child = born.get(newborn) or replace(
                    elder, id=f"{host}.{newborn}", name=newborn, ip="", mac="", prefix=0, vni=0, gmac="",
                    remote="", device="", status=common_pb2.DEPLOYING, error="",
                )  # fmt: skip
                triples.append(Triple(host, elder, child))
        calls: Calls = []

        async def make(host: str, group: list[Triple]) -> None:
            # Recorded first (a DELETE finds them), then made.
            await self.store.vms.add_names(config_id, host, [t.newborn.name for t in group])
            todo = [t.newborn for t in group if t.newborn.status != common_pb2.DONE]
            if not todo:
                return
            await self.store.vms.put(config_id, host, todo)
            try:
                await self.plugin.create(self.agent(hosts[host].endpoint), host, meta, todo, calls)
            finally:
                await self.store.vms.put(config_id, host, todo)

        # The hosts side by side: a tick is a few round trips, not a few per host.
        await _each_host(triples, make)
        await self.store.results.sample_population(config_id, time.time() - meta.started_at)
        ok = [t for t in triples if t.newborn.status == common_pb2.DONE]
        lost = [t for t in triples if t.newborn.status != common_pb2.DONE]

        async def unmake(host: str, group: list[Triple]) -> None:
            # Elders whose newborn lives go; newborns that failed go instead (their elders stay).
            done = [t.victim for t in group if t.newborn.status == common_pb2.DONE]
            failed = [t.newborn for t in group if t.newborn.status != common_pb2.DONE]
            await self._delete(config_id, meta, (host, hosts[host]), done + failed, calls)

        await _each_host(triples, unmake)
        abandoned += [[t.host, t.newborn.name] for t in lost]
        if meta.plugin != PluginName.ALCOR or meta.alcor_own_overlay:  # else Alcor's goal states do it
            await self._overlay(config_id, hosts, ok)
        await self.store.results.sample_population(config_id, time.time() - meta.started_at)
        at = await self.record(config_id, meta, calls, 0)
        await self.store.results.record_born(config_id, [at] * len(ok))
        await self.store.churn.end_tick(
            config_id, tick, [[t.host, t.victim.name, t.newborn.name] for t in ok], abandoned, vanished
        )
        return len(ok), len(lost)

    async def _delete(
        self, config_id: str, meta: Meta, host: tuple[str, HostRecord], records: list[VmRecord], calls: Calls
    ) -> None:
        name, record = host
        if not records:
            return
        try:
            await self.plugin.delete(self.agent(record.endpoint), name, meta, records, calls)
        except grpc.aio.AioRpcError as exc:
            raise_activity_error(exc, f"agent delete on {name}")
        await self.plugin.release(meta, records, calls)
        await self.store.vms.drop(config_id, name, [r.name for r in records])

    async def _overlay(self, config_id: str, hosts: dict[str, HostRecord], ok: Sequence[Triple]) -> None:
        """The other vhosts of each touched VNI learn the newborns and forget the elders; the overlay
        index follows."""
        by_vni: dict[int, list[Triple]] = defaultdict(list)
        for t in ok:
            if t.newborn.vni and not hosts[t.host].fake:
                by_vni[t.newborn.vni].append(t)
        for vni, group in by_vni.items():
            members = await self.store.overlay.members_of(config_id, vni)
            for host, touched in _grouped(group).items():
                gone = {(t.victim.ip, t.victim.mac) for t in touched}
                kept = [e for e in members.get(host, []) if (e[0], e[1]) not in gone]
                members[host] = kept + [[t.newborn.ip, t.newborn.mac] for t in touched]
                await self.store.overlay.put(config_id, vni, host, members[host])
            pushes = [
                self._push(vni, host, hosts, group)
                for host in members
                if host in hosts and not hosts[host].fake
            ]
            await asyncio.gather(*pushes)

    async def _push(
        self,
        vni: int,
        host: str,
        hosts: dict[str, HostRecord],
        group: Sequence[Triple],
    ) -> None:
        """One vhost of a VNI learns the other vhosts' newborns and forgets their elders."""
        others = [t for t in group if t.host != host]
        if not others:
            return
        request = agent_pb2.SetVpcPeersRequest(
            vhost=host,
            vni=vni,
            neighbors_only=True,  # a newborn lives where its elder did: the VNI's vhosts are the same
            neighbors=[
                agent_pb2.Neighbor(ip=t.newborn.ip, mac=t.newborn.mac, vtep=hosts[t.host].vtep)
                for t in others
            ],
            removed_neighbors=[
                agent_pb2.Neighbor(ip=t.victim.ip, mac=t.victim.mac, vtep=hosts[t.host].vtep) for t in others
            ],
        )
        try:
            await self.agent(hosts[host].endpoint).SetVpcPeers(request, timeout=self.agent_timeout)
        except grpc.aio.AioRpcError as exc:
            raise_activity_error(exc, f"agent SetVpcPeers on {host}")


async def _each_host(triples: Sequence[Triple], work: Callable[[str, list[Triple]], Awaitable[None]]) -> None:
    """`work` for each host's triples, the hosts side by side; the first failure is raised once all ended."""
    outcomes = await asyncio.gather(
        *(work(host, group) for host, group in _grouped(triples).items()), return_exceptions=True
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


def _grouped(triples: Sequence[Triple]) -> dict[str, list[Triple]]:
    by_host: dict[str, list[Triple]] = defaultdict(list)
    for t in triples:
        by_host[t.host].append(t)
    return by_host
