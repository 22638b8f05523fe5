"""A churn's state in Redis: its clock and counters, the age list (who is replaced next) and each tick's
plan, kept so that a retried activity redoes the same tick."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence

from services.compute.store.keys import ConfigStore

# churn             hash: started_at, tick (the next), replaced, failed, running, generation
# churn:age         list of "host|vm", oldest first: who is replaced next
# churn:plan:<tick> JSON [[host, victim, newborn(, victim's record)], …]


class ChurnState(ConfigStore):
    """The churn of compute configs (services/compute/churn.py runs it)."""

    async def state(self, config_id: str) -> dict[str, str]:
        """The churn hash ({} before a churn)."""
        return await self.hash_of(self.config_key(config_id, "churn"))

    async def start(self, config_id: str, started_at: float, hosts: Sequence[str]) -> None:
        """Once: the churn's clock, and its age list from the hosts' VMs, interleaved host by host."""
        if not await self.redis.hsetnx(self.config_key(config_id, "churn"), "started_at", started_at):
            return  # a retried activity: it resumes
        columns = [
            [f"{h}|{n!s}" for n in await self.redis.lrange(self.config_key(config_id, "order", h), 0, -1)]
            for h in hosts
        ]
        aged = [entry for row in itertools.zip_longest(*columns) for entry in row if entry]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self.config_key(config_id, "churn"),
                mapping={
                    "tick": 0,
                    "replaced": 0,
                    "failed": 0,
                    "running": "1",
                    "generation": int(started_at) % 1_000_000,
                },
            )
            pipe.delete(self.config_key(config_id, "churn:age"))
            if aged:
                pipe.rpush(self.config_key(config_id, "churn:age"), *aged)
            await pipe.execute()

    async def plan(self, config_id: str, tick: int, size: int) -> list[list[str]]:
        """The tick's [host, victim, newborn(, victim's record)] entries: the `size` oldest VMs, kept
        for a retry. Newborn names carry the churn's generation: a later churn never meets them."""
        key = self.config_key(config_id, "churn:plan", str(tick))
        raw = await self.redis.get(key)
        if raw is not None:
            plan: list[list[str]] = json.loads(raw)
            return plan
        generation = await self.redis.hget(self.config_key(config_id, "churn"), "generation") or "0"
        age = self.config_key(config_id, "churn:age")
        oldest = [str(v) for v in await self.redis.lrange(age, 0, size - 1)]
        plan = []
        for j, entry in enumerate(oldest):
            host, _, victim = entry.partition("|")
            plan.append([host, victim, f"r{generation!s}-{tick}-{j}"])
        await self.save_plan(config_id, tick, plan)
        return plan

    async def save_plan(self, config_id: str, tick: int, plan: list[list[str]]) -> None:
        """Keep a tick's plan (with the victims' records once read: a retry needs them after they went)."""
        await self.redis.set(self.config_key(config_id, "churn:plan", str(tick)), json.dumps(plan))

    async def end_tick(
        self,
        config_id: str,
        tick: int,
        replaced: Sequence[Sequence[str]],
        abandoned: Sequence[Sequence[str]] = (),
        vanished: Sequence[Sequence[str]] = (),
    ) -> None:
        """A tick is over: replaced victims leave the host lists and the age list, their newborns join its
        end; newborns that failed ([host, name]) leave the host lists (their victims stay); victims that
        were gone before the tick ([host, name]) leave both."""
        age = self.config_key(config_id, "churn:age")
        async with self.redis.pipeline(transaction=True) as pipe:
            for host, victim in vanished:
                pipe.lrem(self.config_key(config_id, "order", host), 1, victim)
                pipe.lrem(age, 1, f"{host}|{victim}")
            for host, victim, newborn in replaced:
                pipe.lrem(self.config_key(config_id, "order", host), 1, victim)
                pipe.lrem(age, 1, f"{host}|{victim}")
                pipe.rpush(age, f"{host}|{newborn}")
            for host, newborn in abandoned:
                pipe.lrem(self.config_key(config_id, "order", host), 1, newborn)
            pipe.delete(self.config_key(config_id, "churn:plan", str(tick)))
            pipe.hset(self.config_key(config_id, "churn"), "tick", tick + 1)
            pipe.hincrby(self.config_key(config_id, "churn"), "replaced", len(replaced))
            pipe.hincrby(self.config_key(config_id, "churn"), "failed", len(abandoned))
            await pipe.execute()

    async def end(self, config_id: str) -> None:
        """The churn is over."""
        await self.redis.hset(self.config_key(config_id, "churn"), "running", "0")
