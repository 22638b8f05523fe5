"""Every Redis key of the topology service."""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from google.protobuf import json_format

from merak.store import RedisStore
from merak.v1 import topology_pb2

PREFIX = "merak:topology"

# Topology lifecycle, stored in the meta hash.
DEPLOYING = "DEPLOYING"
READY = "READY"
ERROR = "ERROR"
DELETING = "DELETING"


@dataclass(frozen=True, slots=True)
class TopologyRecord:
    """A stored topology: its request and where its deployment stands."""

    topology_id: str
    config: topology_pb2.InternalTopologyConfiguration
    status: str
    built: bool
    error: str
    created_at: float
    updated_at: float


class TopologyStore(RedisStore):
    """Topologies in Redis: the config as sent, and a small meta hash; vhost state is read live."""

    def __init__(self, redis: aioredis.Redis, prefix: str = PREFIX) -> None:
        super().__init__(redis, prefix)

    def _config_key(self, topology_id: str) -> str:
        return self.key("topo", topology_id, "config")

    def _meta_key(self, topology_id: str) -> str:
        return self.key("topo", topology_id, "meta")

    def _faults_key(self, topology_id: str) -> str:
        return self.key("topo", topology_id, "faults")

    async def faults(self, topology_id: str) -> topology_pb2.SetFaultsRequest:
        """The impairments the lab suffers (the last SetFaults; empty when none)."""
        raw = await self.redis.get(self._faults_key(topology_id))
        request = topology_pb2.SetFaultsRequest(topology_id=topology_id)
        if raw:
            json_format.Parse(raw, request)
        return request

    async def set_faults(self, request: topology_pb2.SetFaultsRequest) -> None:
        """Remember the impairments set (deleted with the topology)."""
        await self.redis.set(
            self._faults_key(request.topology_id), json_format.MessageToJson(request, indent=None)
        )

    def _short_key(self, short_id: str) -> str:
        return self.key("short", short_id)

    @property
    def _ids_key(self) -> str:
        return self.key("ids")

    async def claim_short_id(self, short_id: str, topology_id: str) -> str:
        """Reserve `short_id` for `topology_id`; returns the topology that holds it (maybe another)."""
        await self.redis.set(self._short_key(short_id), topology_id, nx=True)
        holder = str(await self.redis.get(self._short_key(short_id)) or topology_id)
        return holder

    async def create(self, config: topology_pb2.InternalTopologyConfiguration, short_id: str) -> None:
        """Store a new topology in DEPLOYING state."""
        now = time.time()
        await self._put(config, {"short_id": short_id, "created_at": now, "updated_at": now}, new=True)

    async def replace_config(
        self,
        config: topology_pb2.InternalTopologyConfiguration,
        previous: topology_pb2.InternalTopologyConfiguration,
    ) -> None:
        """An UPDATE: the new config, DEPLOYING (not built) until the lab follows it; the config the lab
        had is kept until then (a restarted service finishes the update from it)."""
        meta: dict[str, str | float] = {
            "updated_at": time.time(),
            "previous": json_format.MessageToJson(previous, indent=None),
        }
        await self._put(config, meta, new=False)

    async def _put(
        self, config: topology_pb2.InternalTopologyConfiguration, meta: dict[str, str | float], *, new: bool
    ) -> None:
        """The config, and the meta DEPLOYING (not built) with `meta`'s fields; a `new` one is listed."""
        topology_id = config.topology_id
        mapping: dict[str | bytes | bytearray | memoryview[int] | int | float, str | float] = {
            "status": DEPLOYING,
            "built": "0",
            "error": "",
        }
        mapping.update(meta.items())
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._config_key(topology_id), json_format.MessageToJson(config, indent=None))
            pipe.hset(self._meta_key(topology_id), mapping=mapping)
            if new:
                pipe.sadd(self._ids_key, topology_id)
            await pipe.execute()

    async def previous_config(self, topology_id: str) -> topology_pb2.InternalTopologyConfiguration | None:
        """The config of the lab an unfinished UPDATE started from, or None."""
        raw = await self.redis.hget(self._meta_key(topology_id), "previous")
        if not raw:
            return None
        return json_format.Parse(raw, topology_pb2.InternalTopologyConfiguration())

    async def forget_previous(self, topology_id: str) -> None:
        """The UPDATE is over."""
        await self.redis.hdel(self._meta_key(topology_id), "previous")

    async def get(self, topology_id: str) -> TopologyRecord | None:
        """The stored topology, or None."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self._config_key(topology_id))
            pipe.hgetall(self._meta_key(topology_id))
            raw, meta = await pipe.execute()
        if raw is None or not meta:
            return None
        config = json_format.Parse(raw, topology_pb2.InternalTopologyConfiguration())
        return TopologyRecord(
            topology_id=topology_id,
            config=config,
            status=meta.get("status", DEPLOYING),
            built=meta.get("built") == "1",
            error=meta.get("error", ""),
            created_at=float(meta.get("created_at", 0)),
            updated_at=float(meta.get("updated_at", 0)),
        )

    async def set_status(
        self, topology_id: str, status: str, *, built: bool | None = None, error: str = ""
    ) -> None:
        """Record where the deployment stands."""
        mapping: dict[str | bytes | bytearray | memoryview[int] | int | float, str | float] = {
            "status": status,
            "error": error,
            "updated_at": time.time(),
        }
        if built is not None:
            mapping["built"] = "1" if built else "0"
        await self.redis.hset(self._meta_key(topology_id), mapping=mapping)

    async def ids(self) -> list[str]:
        """Every stored topology id."""
        members = await self.redis.smembers(self._ids_key)
        return sorted(str(m) for m in members)

    async def delete(self, topology_id: str, short_id: str) -> None:
        """Forget a topology (after its emulation is gone)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(
                self._config_key(topology_id), self._meta_key(topology_id), self._faults_key(topology_id)
            )
            pipe.srem(self._ids_key, topology_id)
            await pipe.execute()
        # Release the short id only if this topology still holds it.
        if await self.redis.get(self._short_key(short_id)) == topology_id:
            await self.redis.delete(self._short_key(short_id))
