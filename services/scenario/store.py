"""Every Redis key of the scenario service: configs, scenarios, their index and who refers to what."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from google.protobuf import json_format
from redis.asyncio.client import Pipeline

from merak.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from merak.store import RedisStore, optimistic
from merak.v1 import scenario_pb2
from services.scenario.models import SERVICES, Kind, M, Reference, references
from services.scenario.states import status_of

PREFIX = "merak:scenario"

# Keys:
#   merak:scenario:<kind>:<id>            the entity, as protobuf JSON
#   merak:scenario:index:<kind>           sorted set of the ids of a kind (score 0: ordered by id)
#   merak:scenario:refs:<kind>:<id>       set of the scenarios that refer to a config
#   merak:scenario:faults:<scenario id>   the scenario's fault schedule as it ran (JSON, faultrun.py)


def _text(raw: bytes | str) -> str:
    # The client is made with decode_responses=True; its stubs cannot know that.
    return raw if isinstance(raw, str) else raw.decode()


def dumps(entity: Any) -> str:
    """Protobuf JSON with the proto field names (as Merak's JSON entities)."""
    return json_format.MessageToJson(entity, preserving_proto_field_name=True, indent=None)


class ScenarioStore(RedisStore):
    """Configs and scenarios in Redis, every kind through the same methods; references are kept consistent
    by optimistic transactions (merak.store.optimistic)."""

    def __init__(self, redis: aioredis.Redis, prefix: str = PREFIX) -> None:
        super().__init__(redis, prefix)

    def entity_key(self, kind: Kind[Any], entity_id: str) -> str:
        """Where an entity lives."""
        return self.key(kind.name, entity_id)

    def index_key(self, kind: Kind[Any]) -> str:
        """The ids of a kind, in order."""
        return self.key("index", kind.name)

    def refs_key(self, kind: Kind[Any], config_id: str) -> str:
        """The scenarios that refer to a config."""
        return self.key("refs", kind.name, config_id)

    def _load(self, kind: Kind[M], raw: bytes | str) -> M:
        return json_format.Parse(_text(raw), kind.message(), ignore_unknown_fields=True)

    async def get(self, kind: Kind[M], entity_id: str) -> M | None:
        """The entity, or None."""
        raw = await self.redis.get(self.entity_key(kind, entity_id))
        return None if raw is None else self._load(kind, raw)

    async def get_each(self, wanted: Sequence[tuple[Kind[Any], str]]) -> list[Any]:
        """The entities named by (kind, id), in order, None for each missing; one round trip."""
        raws = await self.redis.mget([self.entity_key(kind, entity_id) for kind, entity_id in wanted])
        return [
            None if raw is None else self._load(kind, raw)
            for (kind, _), raw in zip(wanted, raws, strict=True)
        ]

    async def page(self, kind: Kind[M], after: str, limit: int) -> tuple[list[M], str]:
        """Up to `limit` entities with ids after `after`, in id order; and the last id if more follow."""
        found = await self.redis.zrangebylex(
            self.index_key(kind), f"({after}" if after else "-", "+", start=0, num=limit + 1
        )
        ids = [_text(i) for i in found]
        more = len(ids) > limit
        ids = ids[:limit]
        if not ids:
            return [], ""
        raws = await self.redis.mget([self.entity_key(kind, i) for i in ids])
        # An entity deleted between the two reads is simply not listed.
        items = [self._load(kind, raw) for raw in raws if raw is not None]
        return items, ids[-1] if more else ""

    async def fault_run(self, scenario_id: str) -> dict[str, Any] | None:
        """The scenario's fault schedule as it ran, or None."""
        found: dict[str, Any] | None = await self.get_json(self.key("faults", scenario_id))
        return found

    async def save_fault_run(self, scenario_id: str, run: dict[str, Any]) -> None:
        """Replace the scenario's fault schedule record."""
        await self.set_json(self.key("faults", scenario_id), run)

    async def delete_fault_run(self, scenario_id: str) -> None:
        """Forget the scenario's fault schedule."""
        await self.redis.delete(self.key("faults", scenario_id))

    async def fault_run_ids(self) -> list[str]:
        """The scenarios with a fault schedule record."""
        prefix = self.key("faults", "")
        return sorted(k.removeprefix(prefix) for k in await self.keys_under("faults"))

    async def scenarios_using(self, kind: Kind[Any], config_id: str) -> list[str]:
        """Ids of the scenarios that refer to a config."""
        return sorted(str(m) for m in await self.redis.smembers(self.refs_key(kind, config_id)))

    async def create(self, kind: Kind[M], entity: M, refs: Sequence[Reference] = ()) -> None:
        """Store a new entity; every reference must exist (InvalidArgument naming the field)."""
        # Every kind has an id; Message does not say so.
        entity_id: str = cast(Any, entity).id
        key = self.entity_key(kind, entity_id)

        async def body(pipe: Pipeline) -> None:
            if await pipe.exists(key):
                raise AlreadyExists(f"{kind.label} {entity_id!r} exists")
            for ref in refs:
                if not await pipe.exists(self.entity_key(ref.kind, ref.id)):
                    raise InvalidArgument(ref.field, f"no {ref.kind.label} {ref.id!r}")
            pipe.multi()  # type: ignore[no-untyped-call]  # untyped in redis-py
            pipe.set(key, dumps(entity))
            pipe.zadd(self.index_key(kind), {entity_id: 0})
            for ref in refs:
                pipe.sadd(self.refs_key(ref.kind, ref.id), entity_id)

        await optimistic(self.redis, [key, *(self.entity_key(r.kind, r.id) for r in refs)], body)

    async def modify(
        self, kind: Kind[M], entity_id: str, change: Callable[[M], M], *, field_prefix: str = ""
    ) -> M:
        """Read, change and write one entity atomically (again if it changed meanwhile); returns it.

        `change` gets a copy and may raise. For a scenario, new references must exist, the reference
        sets follow, and service statuses are mirrored on the configs (Merak kept them there).
        `field_prefix` goes before the field named by an error about a reference.
        """
        key = self.entity_key(kind, entity_id)

        async def body(pipe: Pipeline) -> M:
            raw = await pipe.get(key)
            if raw is None:
                raise NotFound(f"{kind.label} {entity_id!r} does not exist")
            old = self._load(kind, raw)
            new = change(kind.copy(old))
            if new == old:
                return old
            writes: dict[str, str] = {key: dumps(new)}
            removed: list[Reference] = []
            added: list[Reference] = []
            if isinstance(new, scenario_pb2.Scenario) and isinstance(old, scenario_pb2.Scenario):
                before, after = references(old), references(new)
                removed = [r for r in before if r not in after]
                added = [r for r in after if r not in before]
                for ref in added:
                    await pipe.watch(self.entity_key(ref.kind, ref.id))
                    if not await pipe.exists(self.entity_key(ref.kind, ref.id)):
                        raise InvalidArgument(f"{field_prefix}{ref.field}", f"no {ref.kind.label} {ref.id!r}")
                writes.update(await self._mirrored_statuses(pipe, old, new))
            pipe.multi()  # type: ignore[no-untyped-call]  # untyped in redis-py
            for write_key, value in writes.items():
                pipe.set(write_key, value)
            for ref in removed:
                pipe.srem(self.refs_key(ref.kind, ref.id), entity_id)
            for ref in added:
                pipe.sadd(self.refs_key(ref.kind, ref.id), entity_id)
            return new

        return await optimistic(self.redis, [key], body)

    async def _mirrored_statuses(
        self, pipe: Pipeline, old: scenario_pb2.Scenario, new: scenario_pb2.Scenario
    ) -> dict[str, str]:
        """The configs whose status follows a changed service status, serialized (each one watched)."""
        writes: dict[str, str] = {}
        for service in SERVICES:
            status = status_of(new, service)
            config_id = getattr(new, service.config_field)
            if status == status_of(old, service) or not config_id:
                continue
            config_key = self.entity_key(service.config_kind, config_id)
            await pipe.watch(config_key)
            raw = await pipe.get(config_key)
            if raw is None:
                continue
            config = self._load(service.config_kind, raw)
            config.status = status
            writes[config_key] = dumps(config)
        return writes

    async def delete(self, kind: Kind[M], entity_id: str, check: Callable[[M], None] | None = None) -> M:
        """Delete one entity, refused while a scenario refers to it; `check` may refuse too. Returns it."""
        key = self.entity_key(kind, entity_id)
        refs_key = self.refs_key(kind, entity_id)

        async def body(pipe: Pipeline) -> M:
            raw = await pipe.get(key)
            if raw is None:
                raise NotFound(f"{kind.label} {entity_id!r} does not exist")
            entity = self._load(kind, raw)
            users = sorted(str(u) for u in await pipe.smembers(refs_key))
            if users:
                named = ", ".join(repr(u) for u in users[:5]) + (" …" if len(users) > 5 else "")
                noun = "scenario" if len(users) == 1 else "scenarios"
                raise FailedPrecondition(
                    f"{kind.label} {entity_id!r} is used by {noun} {named}; delete the {noun} "
                    "or point it at another config first"
                )
            if check is not None:
                check(entity)
            pipe.multi()  # type: ignore[no-untyped-call]  # untyped in redis-py
            pipe.delete(key)
            pipe.zrem(self.index_key(kind), entity_id)
            if isinstance(entity, scenario_pb2.Scenario):
                for ref in references(entity):
                    pipe.srem(self.refs_key(ref.kind, ref.id), entity_id)
            return entity

        return await optimistic(self.redis, [key, refs_key], body)
