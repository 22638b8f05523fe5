"""Every Redis key of the compute service, and nothing else touches Redis: one ComputeStore, one part
per concern, each a module of this package.

keys       where everything lives (the key layout) and the base of the parts
records    what is stored: HostRecord, VmRecord, Meta (no I/O)
vms        the inventory: hosts, shards, VM records and the per-status counts their writes keep
progress   an operation's start and end, and the counts, unsettled hosts and errors progress reads
churn      a churn's clock, age list and tick plans
overlay    the overlay index: VNI -> host -> VMs
results    the samples the results are built from
"""

from __future__ import annotations

import redis.asyncio as aioredis
from google.protobuf import json_format

from merak.v1 import compute_pb2
from services.compute.store.churn import ChurnState
from services.compute.store.keys import PREFIX, ConfigStore
from services.compute.store.overlay import OverlayIndex
from services.compute.store.progress import OperationProgress
from services.compute.store.records import HostRecord, Meta, VmRecord
from services.compute.store.results import RESULT_SAMPLES, ResultSamples
from services.compute.store.vms import VmInventory

__all__ = ["PREFIX", "RESULT_SAMPLES", "ComputeStore", "HostRecord", "Meta", "VmRecord"]


class ComputeStore(ConfigStore):
    """Compute's state in Redis: the configs themselves here, the rest in its parts."""

    def __init__(self, redis: aioredis.Redis, prefix: str = PREFIX) -> None:
        super().__init__(redis, prefix)
        self.vms = VmInventory(redis, prefix)
        self.progress = OperationProgress(redis, prefix)
        self.churn = ChurnState(redis, prefix)
        self.overlay = OverlayIndex(redis, prefix)
        self.results = ResultSamples(redis, prefix)

    async def exists(self, config_id: str) -> bool:
        """True when the config has an inventory."""
        return bool(await self.redis.exists(self.config_key(config_id, "config")))

    async def config(self, config_id: str) -> compute_pb2.InternalComputeConfiguration | None:
        """The stored request (as the network service completed it)."""
        raw = await self.redis.get(self.config_key(config_id, "config"))
        if raw is None:
            return None
        return json_format.Parse(raw, compute_pb2.InternalComputeConfiguration())

    async def request_fingerprint(self, config_id: str) -> str | None:
        """The fingerprint of the request, as it came, that made the stored config (None for a config
        stored before fingerprints were kept)."""
        raw = await self.redis.get(self.config_key(config_id, "request_fingerprint"))
        return None if raw is None else str(raw)

    async def ids(self) -> list[str]:
        """Every config with an inventory."""
        return sorted(str(m) for m in await self.redis.smembers(self.key("ids")))

    async def delete(self, config_id: str) -> int:
        """Forget a config entirely; returns how many keys went."""
        return await self.delete_config(config_id)
