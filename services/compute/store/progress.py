"""An operation of a compute config (CREATE, UPDATE, DELETE): it starts, it ends, and what its progress
reads meanwhile: VMs per status, the hosts not settled yet, the first errors."""

from __future__ import annotations

import time

from merak.v1 import common_pb2
from services.compute.store.keys import ConfigStore
from services.compute.store.records import Meta


class OperationProgress(ConfigStore):
    """The operation state of compute configs and the counts the VM writes keep (store.vms)."""

    async def meta(self, config_id: str) -> Meta | None:
        """The operation state."""
        raw = await self.hash_of(self.config_key(config_id, "meta"))
        if not raw:
            return None
        return Meta.from_hash(raw)

    async def start(self, config_id: str, operation: str) -> None:
        """Mark an operation as running; what the one before kept for itself goes (its churn, the churn's
        samples, the overlay as it found it)."""
        keys = [
            self.config_key(config_id, part)
            for part in ("churn", "churn:age", "population", "born", "overlay:before")
        ]
        plans = self.config_key(config_id, "churn:plan:*")
        keys += [k async for k in self.redis.scan_iter(match=plans)]
        await self.redis.delete(*keys)
        await self.redis.hset(
            self.config_key(config_id, "meta"),
            mapping={
                "operation": operation,
                "running": "1",
                "failure": "",
                "started_at": time.time(),
                "finished_at": 0,
            },
        )

    async def finish(self, config_id: str, failure: str = "") -> None:
        """Mark the operation as over."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self.config_key(config_id, "meta"),
                mapping={"running": "0", "failure": failure, "finished_at": time.time()},
            )
            pipe.delete(self.config_key(config_id, "overlay:before"))
            await pipe.execute()

    async def counts(self, config_id: str) -> dict[int, int]:
        """VMs per status."""
        raw = await self.hash_of(self.config_key(config_id, "counts"))
        return {int(k): int(v) for k, v in raw.items() if int(v)}

    async def unsettled_hosts(self, config_id: str, limit: int) -> tuple[int, dict[str, dict[int, int]]]:
        """How many hosts hold VMs that are not DONE, and the VMs per status of the first `limit` of
        them by name: the size of the answer does not grow with the hosts of the config."""
        key = self.config_key(config_id, "unsettled")
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(key)
            pipe.zrange(key, 0, limit - 1)
            count, names = await pipe.execute()
        names = [str(n) for n in names]
        statuses = list(common_pb2.Status.values())
        fields = [f"{host}|{status}" for host in names for status in statuses]
        values = await self.redis.hmget(self.config_key(config_id, "hostcounts"), fields) if fields else []
        result: dict[str, dict[int, int]] = {host: {} for host in names}
        for key, value in zip(fields, values, strict=True):
            if value is not None and int(value):
                host, _, status = key.rpartition("|")
                result[host][int(status)] = int(value)
        return int(count), result

    async def errors(self, config_id: str, limit: int = 20) -> list[str]:
        """The first VM errors."""
        key = self.config_key(config_id, "errors")
        return [str(e) for e in await self.redis.lrange(key, 0, limit - 1)]
