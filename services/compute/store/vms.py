"""The inventory of a compute config: its hosts and shards, its VM records, and the per-status counts
the VM writes keep exact (Lua), which progress reads."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from string import Template
from typing import Any

import redis.asyncio as aioredis
from google.protobuf import json_format

from merak.v1 import common_pb2, compute_pb2
from services.compute.contracts import CREATE
from services.compute.inventory import Counts, Host, PlannedVm, SubnetRef, place_host
from services.compute.store.keys import PREFIX, ConfigStore
from services.compute.store.records import HostRecord, Meta, VmRecord
from services.compute.store.results import OPERATION_KEYS

MAX_ERRORS = 100
INVENTORY_CHUNK_VMS = 5_000
# Hosts written per pipeline by a CREATE (their records only).
INVENTORY_CHUNK_HOSTS = 2_000

# A host is "unsettled" while it holds a VM record that is not DONE (being created or deleted, or in
# ERROR): `open` counts those per host and `unsettled` (a sorted set, score 0, so ranged by name)
# holds the hosts whose count is above zero. Progress reads its first hosts and its size, never
# every host's counts.
_SETTLE = """
local function settle(open, unsettled, host, delta)
  if delta == 0 then return end
  if redis.call('HINCRBY', open, host, delta) > 0 then
    redis.call('ZADD', unsettled, 0, host)
  else
    redis.call('HDEL', open, host)
    redis.call('ZREM', unsettled, host)
  end
end
"""

# What the count-keeping scripts share: a stored record's status, read as text (a record is compact
# JSON whose first keys are "t", "name", "status": no string value can hold `"status":` unescaped),
# decoded only when not found so; and the per-status changes of one call, applied once per status
# (not per VM) to the config's and the host's counts, the host's count of VMs not DONE following them.
_COUNTING = _SETTLE + Template("""
local function status_of(raw)
  local status = string.match(raw, '"status":(%d+)')
  if status then return status end
  return tostring(cjson.decode(raw)['status'])
end
local changes = {}
local function count(status, n)
  changes[status] = (changes[status] or 0) + n
end
local function apply_counts(counts, hostcounts, open, unsettled, host)
  local delta = 0
  for status, n in pairs(changes) do
    if n ~= 0 then
      redis.call('HINCRBY', counts, status, n)
      redis.call('HINCRBY', hostcounts, host .. '|' .. status, n)
      if status ~= '$done_status' then delta = delta + n end
    end
  end
  settle(open, unsettled, host, delta)
end
""").substitute(done_status=common_pb2.DONE)

# The templates a write's records name (records.SHARED), ARGV's JSON {name: template}: written with the
# records, in the same step.
_PUT_TEMPLATES = Template("""
for name, template in pairs(cjson.decode($arg)) do
  redis.call('HSET', $key, name, template)
end
""")

# Sets VM records and keeps the per-status counts (whole config and per host) exact, even when a
# retried activity writes the same status twice. $-names are filled in from the constants below.
_SET_VMS = _COUNTING + Template("""
local vms, counts, hostcounts, errors, open, unsettled = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local host = ARGV[1]
$put_templates
for i = 3, #ARGV, 2 do
  local name, record = ARGV[i], ARGV[i + 1]
  local new = status_of(record)
  local old = redis.call('HGET', vms, name)
  redis.call('HSET', vms, name, record)
  local before = old and status_of(old) or nil
  if before ~= new then
    if before then count(before, -1) end
    count(new, 1)
    if new == '$error_status' and redis.call('LLEN', errors) < $max_errors then
      local err = cjson.decode(record)['error']
      if err and err ~= '' then redis.call('RPUSH', errors, name .. ': ' .. err) end
    end
  end
end
apply_counts(counts, hostcounts, open, unsettled, host)
return 1
""").substitute(
    error_status=common_pb2.ERROR,
    max_errors=MAX_ERRORS,
    put_templates=_PUT_TEMPLATES.substitute(key="KEYS[7]", arg="ARGV[2]"),
)

# Removes VM records, taking them out of the counts.
_DROP_VMS = (
    _COUNTING
    + """
local vms, counts, hostcounts, open, unsettled = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local host = ARGV[1]
local gone = 0
for i = 2, #ARGV do
  local old = redis.call('HGET', vms, ARGV[i])
  if old then
    redis.call('HDEL', vms, ARGV[i])
    count(status_of(old), -1)
    gone = gone + 1
  end
end
apply_counts(counts, hostcounts, open, unsettled, host)
return gone
"""
)

# Sets the status of VM records in place (a DELETE's DELETING mark), keeping the counts exact: the stored
# JSON's `"status":N` is replaced, the record neither decoded nor encoded again, nor sent. A record that
# holds an error (cleared with the mark) or whose status is not found in that form is left to the
# caller, whose full write does it: their names are returned. Names that have no record are skipped.
_MARK_VMS = (
    _COUNTING
    + """
local vms, counts, hostcounts, open, unsettled = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local host, new = ARGV[1], ARGV[2]
local left = {}
for i = 3, #ARGV do
  local old = redis.call('HGET', vms, ARGV[i])
  if old then
    local before = string.match(old, '"status":(%d+)')
    if before == nil or string.find(old, '"error":', 1, true) then
      left[#left + 1] = ARGV[i]
    elseif before ~= new then
      local record = string.gsub(old, '"status":%d+', '"status":' .. new, 1)
      redis.call('HSET', vms, ARGV[i], record)
      count(before, -1)
      count(new, 1)
    end
  end
end
apply_counts(counts, hostcounts, open, unsettled, host)
return left
"""
)

# One host's VMs written by the first caller only: KEYS hosts, vms:<host>, order:<host>, meta, templates;
# ARGV the host, its record with `pending` cleared, the records' templates, then (name, stored record)
# pairs. The check and the write are one step: a shard's planning that timed out and its retry, or a
# CREATE's and a DELETE's, never write a host twice (its order list doubled, DONE records set back to
# DEPLOYING), nor anything once the config is gone.
# Returns the VMs written, 0 when the host was placed already, -1 when the config or host is gone.
_PLACE_HOST = Template("""
if redis.call('exists', KEYS[4]) == 0 then return -1 end
local current = redis.call('hget', KEYS[1], ARGV[1])
if not current then return -1 end
local pending = cjson.decode(current)['pending']
if type(pending) ~= 'table' or #pending == 0 then return 0 end
$put_templates
for i = 4, #ARGV, 2 do
  redis.call('hset', KEYS[2], ARGV[i], ARGV[i + 1])
  redis.call('rpush', KEYS[3], ARGV[i])
end
redis.call('hset', KEYS[1], ARGV[1], ARGV[2])
return (#ARGV - 3) / 2
""").substitute(put_templates=_PUT_TEMPLATES.substitute(key="KEYS[5]", arg="ARGV[3]"))


class VmInventory(ConfigStore):
    """The hosts, shards and VM records of compute configs, with their per-status counts."""

    def __init__(self, redis: aioredis.Redis, prefix: str = PREFIX) -> None:
        super().__init__(redis, prefix)
        self._set_vms = redis.register_script(_SET_VMS)
        self._drop_vms = redis.register_script(_DROP_VMS)
        self._mark_vms = redis.register_script(_MARK_VMS)
        self._place_host = redis.register_script(_PLACE_HOST)
        # Templates read so far, by name: named by their content, so what a name holds never changes.
        self._templates: dict[str, dict[str, Any]] = {}

    async def create(
        self,
        config: compute_pb2.InternalComputeConfiguration,
        hosts: Sequence[Host],
        counts: Counts,
        *,
        request_fingerprint: str,
        hosts_per_shard: int,
        batch_size: int,
        plugin: str,
    ) -> int:
        """Write the inventory's hosts, each with the VMs it is to get counted (every VM DEPLOYING), and
        start its CREATE; returns the number of shards. O(hosts): the VM records are written by each
        shard's first activity (`place_pending`), so the CREATE call answers in a moment whatever the
        VMs' number. `request_fingerprint` is kept to know a repeat of this request
        (ComputeStore.request_fingerprint)."""
        config_id = config.compute_config_id
        shards = max(1, -(-len(hosts) // hosts_per_shard))
        total = sum(sum(per.values()) for per in counts.values())
        refs = {f"s:{ref.vpc_index}:{ref.subnet_index}": ref for per in counts.values() for ref in per}
        placement = {key: json.dumps(asdict(ref)) for key, ref in refs.items()}
        placement["sgs"] = json.dumps(list(config.vm_deploy.secgroups))
        try:
            for start in range(0, len(hosts), INVENTORY_CHUNK_HOSTS):
                await self._write_hosts(
                    config_id, hosts[start : start + INVENTORY_CHUNK_HOSTS], counts, hosts_per_shard
                )
            meta = Meta(
                operation=CREATE,
                running=True,
                total=total,
                batch_size=batch_size,
                shards=shards,
                plugin=plugin,
                netconfig_id=config.netconfig_id,
                alcor_url=config.alcor_url,
                failure="",
                started_at=time.time(),
                finished_at=0,
                alcor_own_overlay=config.alcor_own_overlay,
            )
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(self.config_key(config_id, "placement"), mapping=placement)  # type: ignore[arg-type]  # redis-py types the mapping with invariant keys
                pipe.hset(self.config_key(config_id, "counts"), str(common_pb2.DEPLOYING), total)
                pipe.hset(self.config_key(config_id, "meta"), mapping=meta.to_hash())  # type: ignore[arg-type]  # redis-py types the mapping with invariant keys
                pipe.sadd(self.key("ids"), config_id)
                pipe.set(self.config_key(config_id, "request_fingerprint"), request_fingerprint)
                # Written last: an inventory exists (ComputeStore.exists) only once it is complete.
                pipe.set(self.config_key(config_id, "config"), json_format.MessageToJson(config, indent=None))
                await pipe.execute()
        except BaseException:
            await self.delete_config(config_id)
            raise
        return shards

    async def _write_hosts(
        self, config_id: str, hosts: Sequence[Host], counts: Counts, hosts_per_shard: int
    ) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for host in hosts:
                shard = host.index // hosts_per_shard
                per = counts[host.name]
                count = sum(per.values())
                record = HostRecord(
                    index=host.index,
                    endpoint=host.agent_endpoint,
                    vtep=host.datapath_ip,
                    count=count,
                    shard=shard,
                    fake=host.fake,
                    pending=sorted([ref.vpc_index, ref.subnet_index, n] for ref, n in per.items() if n),
                )
                pipe.hset(self.config_key(config_id, "hosts"), host.name, record.to_json())
                pipe.rpush(self.config_key(config_id, "shard", str(shard)), host.name)
                if not count:
                    continue
                pipe.hset(
                    self.config_key(config_id, "hostcounts"), f"{host.name}|{common_pb2.DEPLOYING}", count
                )
                pipe.hset(self.config_key(config_id, "open"), host.name, count)
                pipe.zadd(self.config_key(config_id, "unsettled"), {host.name: 0})
            await pipe.execute()

    async def place_pending(self, config_id: str, names: Sequence[str]) -> int:
        """Write the VM records (DEPLOYING) and order lists of the named hosts whose VMs CREATE counted
        but did not write yet, a few thousand VMs per transaction, each host with its record's
        `pending` cleared in the same transaction (a retry skips what was written); how many VMs."""
        pending = {n: h for n, h in (await self.hosts_named(config_id, names)).items() if h.pending}
        if not pending:
            return 0
        raw = await self.hash_of(self.config_key(config_id, "placement"))
        secgroups = [str(g) for g in json.loads(raw.get("sgs", "[]"))]
        refs = {key: SubnetRef(**json.loads(value)) for key, value in raw.items() if key.startswith("s:")}
        written = 0
        chunk: dict[str, HostRecord] = {}
        for name, record in pending.items():
            chunk[name] = record
            if sum(r.count for r in chunk.values()) >= INVENTORY_CHUNK_VMS:
                written += await self._place(config_id, chunk, refs, secgroups)
                chunk = {}
        if chunk:
            written += await self._place(config_id, chunk, refs, secgroups)
        return written

    async def _place(
        self, config_id: str, hosts: dict[str, HostRecord], refs: dict[str, SubnetRef], secgroups: list[str]
    ) -> int:
        written = 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, record in hosts.items():
                counts = {refs[f"s:{vpc}:{subnet}"]: n for vpc, subnet, n in record.pending}
                pairs, templates = _stored(VmRecord.planned(vm, secgroups) for vm in place_host(name, counts))
                keys = [
                    self.config_key(config_id, "hosts"),
                    self.config_key(config_id, "vms", name),
                    self.config_key(config_id, "order", name),
                    self.config_key(config_id, "meta"),
                    self.config_key(config_id, "templates"),
                ]
                placed = replace(record, pending=[]).to_json()
                await self._place_host(keys=keys, args=[name, placed, templates, *pairs], client=pipe)
            for result in await pipe.execute():
                written += max(int(result), 0)
        return written

    async def update(
        self,
        config: compute_pb2.InternalComputeConfiguration,
        hosts: Sequence[Host],
        planned: dict[str, list[PlannedVm]],
        *,
        request_fingerprint: str,
        hosts_per_shard: int,
    ) -> tuple[int, int, int]:
        """An UPDATE: the new config's VMs that are not there yet are written DEPLOYING; the ones it no
        longer has go on their host's drop list; hosts it no longer has are `leaving`. Returns (VMs
        added, VMs to delete, shards)."""
        config_id = config.compute_config_id
        stored = await self.hosts(config_id)
        secgroups = list(config.vm_deploy.secgroups)
        added = dropped = 0
        shards = max((r.shard for r in stored.values()), default=-1) + 1
        for host in hosts:
            vms = planned[host.name]
            before = stored.get(host.name)
            shard = before.shard if before is not None else host.index // hosts_per_shard
            shards = max(shards, shard + 1)
            names = await self._names(config_id, host.name)
            wanted = {vm.name for vm in vms}
            present = set(names)
            kept = [n for n in names if n in wanted]
            new = [vm for vm in vms if vm.name not in present]
            gone = [n for n in names if n not in wanted]
            record = HostRecord(
                index=before.index if before is not None else host.index,
                endpoint=host.agent_endpoint,
                vtep=host.datapath_ip,
                count=len(kept) + len(new),
                shard=shard,
                fake=host.fake,
            )
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(self.config_key(config_id, "hosts"), host.name, record.to_json())
                if before is None:
                    pipe.rpush(self.config_key(config_id, "shard", str(shard)), host.name)
                pipe.delete(self.config_key(config_id, "order", host.name))
                if kept or new:
                    pipe.rpush(
                        self.config_key(config_id, "order", host.name), *kept, *[vm.name for vm in new]
                    )
                if gone:
                    pipe.rpush(self.config_key(config_id, "drop", host.name), *gone)
                await pipe.execute()
            await self.put(config_id, host.name, [VmRecord.planned(vm, secgroups) for vm in new])
            added += len(new)
            dropped += len(gone)
        for name, before in stored.items():
            if any(h.name == name for h in hosts):
                continue
            names = await self._names(config_id, name)
            leaving = HostRecord(
                before.index, before.endpoint, before.vtep, 0, before.shard, before.fake, leaving=True
            )
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(self.config_key(config_id, "hosts"), name, leaving.to_json())
                pipe.delete(self.config_key(config_id, "order", name))
                if names:
                    pipe.rpush(self.config_key(config_id, "drop", name), *names)
                await pipe.execute()
            dropped += len(names)
        total = sum(len(v) for v in planned.values())
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.config_key(config_id, "meta"), mapping={"total": total, "shards": shards})
            # The results are of the current operation.
            pipe.delete(
                self.config_key(config_id, "errors"),
                *(self.config_key(config_id, key) for key in OPERATION_KEYS),
            )
            pipe.set(self.config_key(config_id, "request_fingerprint"), request_fingerprint)
            pipe.set(self.config_key(config_id, "config"), json_format.MessageToJson(config, indent=None))
            await pipe.execute()
        return added, dropped, shards

    async def finish_update(self, config_id: str) -> None:
        """After an UPDATE: leaving hosts and drop lists are forgotten (their VMs are gone)."""
        hosts = await self.hosts(config_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            for name, record in hosts.items():
                pipe.delete(self.config_key(config_id, "drop", name))
                if record.leaving:
                    pipe.hdel(self.config_key(config_id, "hosts"), name)
                    pipe.lrem(self.config_key(config_id, "shard", str(record.shard)), 0, name)
                    pipe.delete(self.config_key(config_id, "order", name))
            await pipe.execute()

    async def hosts(self, config_id: str) -> dict[str, HostRecord]:
        """Every host of the config by name."""
        raw = await self.hash_of(self.config_key(config_id, "hosts"))
        return {name: HostRecord.from_json(value) for name, value in raw.items()}

    async def hosts_named(self, config_id: str, names: Sequence[str]) -> dict[str, HostRecord]:
        """The hosts of these names (those that exist): one round trip, and no work for the others
        (a batch, or a shard, must not cost more because the config has 10,000 hosts)."""
        if not names:
            return {}
        raw = await self.redis.hmget(self.config_key(config_id, "hosts"), list(names))
        found = zip(names, raw, strict=True)
        return {name: HostRecord.from_json(str(value)) for name, value in found if value}

    async def shard_hosts(self, config_id: str, shard: int) -> list[str]:
        """The hosts of a shard, in order."""
        key = self.config_key(config_id, "shard", str(shard))
        return [str(h) for h in await self.redis.lrange(key, 0, -1)]

    async def _names(self, config_id: str, host: str) -> list[str]:
        """Every VM name of the host's list."""
        return [str(n) for n in await self.redis.lrange(self.config_key(config_id, "order", host), 0, -1)]

    async def batch_names(
        self, config_id: str, host: str, batch: int, batch_size: int, *, dropped: bool = False
    ) -> list[str]:
        """The VM names of batch `batch` of `host` (of its drop list: the VMs an UPDATE removed)."""
        start = batch * batch_size
        key = self.config_key(config_id, "drop" if dropped else "order", host)
        names = await self.redis.lrange(key, start, start + batch_size - 1)
        return [str(n) for n in names]

    async def first_batches(
        self, config_id: str, hosts: Sequence[str], batch_size: int, *, dropped: bool = False
    ) -> dict[str, list[VmRecord]]:
        """The records of batch 0 of each host (of its drop list), in two round trips whatever the
        hosts' number: a group of fake hosts (GroupInput)."""
        kind = "drop" if dropped else "order"
        async with self.redis.pipeline(transaction=False) as pipe:
            for host in hosts:
                pipe.lrange(self.config_key(config_id, kind, host), 0, batch_size - 1)
            names = [[str(n) for n in found] for found in await pipe.execute()]
        async with self.redis.pipeline(transaction=False) as pipe:
            for host, named in zip(hosts, names, strict=True):
                if named:
                    pipe.hmget(self.config_key(config_id, "vms", host), named)
            values = iter(await pipe.execute())
        found = {
            host: [str(v) for v in next(values) if v is not None] if named else []
            for host, named in zip(hosts, names, strict=True)
        }
        return {host: await self._read(config_id, host, raw) for host, raw in found.items()}

    async def count(self, config_id: str, host: str) -> int:
        """How many VMs the host's list holds."""
        return int(await self.redis.llen(self.config_key(config_id, "order", host)))

    async def dropped_count(self, config_id: str, host: str) -> int:
        """How many VMs an UPDATE removed from `host` (to be deleted)."""
        return int(await self.redis.llen(self.config_key(config_id, "drop", host)))

    async def add_names(self, config_id: str, host: str, names: Sequence[str]) -> None:
        """VMs made after the inventory (a churn's newborns) join the host's list: a DELETE finds them."""
        if not names:
            return
        present = set(await self._names(config_id, host))
        fresh = [n for n in names if n not in present]
        if fresh:
            await self.redis.rpush(self.config_key(config_id, "order", host), *fresh)

    async def records(self, config_id: str, host: str, names: Sequence[str] | None = None) -> list[VmRecord]:
        """VM records of a host (all, or the named ones that exist)."""
        key = self.config_key(config_id, "vms", host)
        if names is None:
            return await self._read(config_id, host, list((await self.hash_of(key)).values()))
        if not names:
            return []
        values = await self.redis.hmget(key, list(names))
        return await self._read(config_id, host, [str(v) for v in values if v is not None])

    async def _read(self, config_id: str, host: str, raw: Sequence[str]) -> list[VmRecord]:
        """Stored records as records, their templates read once (those not read before)."""
        records: list[VmRecord] = []
        for value in raw:
            try:
                records.append(VmRecord.from_stored(value, host, self._templates))
            except KeyError:
                await self._learn_templates(config_id)
                records.append(VmRecord.from_stored(value, host, self._templates))
        return records

    async def _learn_templates(self, config_id: str) -> None:
        """Read the config's templates (a handful: one per subnet, and per VPC once addressed)."""
        stored = await self.hash_of(self.config_key(config_id, "templates"))
        self._templates.update((name, json.loads(template)) for name, template in stored.items())

    async def put(self, config_id: str, host: str, records: Iterable[VmRecord]) -> None:
        """Write VM records, keeping the status counts exact."""
        await self.put_hosts(config_id, {host: records})

    async def put_hosts(self, config_id: str, hosts: Mapping[str, Iterable[VmRecord]]) -> None:
        """Write the VM records of several hosts in one round trip, keeping the status counts exact."""
        async with self.redis.pipeline(transaction=False) as pipe:
            queued = False
            for host, records in hosts.items():
                pairs, templates = _stored(records)
                if pairs:
                    vms, counts, hostcounts, opened, unsettled = self._count_keys(config_id, host)
                    errors, shared = (self.config_key(config_id, k) for k in ("errors", "templates"))
                    keys = [vms, counts, hostcounts, errors, opened, unsettled, shared]
                    await self._set_vms(keys=keys, args=[host, templates, *pairs], client=pipe)
                    queued = True
            if queued:
                await pipe.execute()

    async def mark_hosts(self, config_id: str, hosts: Mapping[str, Sequence[VmRecord]], status: int) -> None:
        """Set the status of records of several hosts (clearing their error), in Redis and in `hosts`,
        keeping the counts exact: in one round trip, the records not sent again, but for those that
        held an error (their whole record is written, a second round trip). Records no longer stored
        stay gone."""
        for records in hosts.values():
            for record in records:
                record.status, record.error = status, ""
        queued = [(host, records) for host, records in hosts.items() if records]
        if not queued:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for host, records in queued:
                keys = self._count_keys(config_id, host)
                await self._mark_vms(keys=keys, args=[host, status, *(r.name for r in records)], client=pipe)
            lefts = await pipe.execute()
        whole: dict[str, list[VmRecord]] = {}
        for (host, records), left in zip(queued, lefts, strict=True):
            if left:
                named = {str(n) for n in left}
                whole[host] = [r for r in records if r.name in named]
        if whole:
            await self.put_hosts(config_id, whole)

    def _count_keys(self, config_id: str, host: str) -> list[str]:
        """The host's records and the counts their writes keep: KEYS of _MARK_VMS and _DROP_VMS."""
        return [
            self.config_key(config_id, "vms", host),
            *(self.config_key(config_id, k) for k in ("counts", "hostcounts", "open", "unsettled")),
        ]

    async def drop(self, config_id: str, host: str, names: Sequence[str]) -> int:
        """Remove VM records (deleted VMs), taking them out of the counts."""
        return await self.drop_hosts(config_id, {host: names})

    async def drop_hosts(self, config_id: str, hosts: Mapping[str, Sequence[str]]) -> int:
        """Remove the named VM records of several hosts in one round trip; how many were there."""
        async with self.redis.pipeline(transaction=False) as pipe:
            queued = False
            for host, names in hosts.items():
                if not names:
                    continue
                await self._drop_vms(keys=self._count_keys(config_id, host), args=[host, *names], client=pipe)
                queued = True
            return sum(int(gone) for gone in await pipe.execute()) if queued else 0


def _stored(records: Iterable[VmRecord]) -> tuple[list[str], str]:
    """(name, stored record) pairs, flat, and the JSON of the templates they name."""
    pairs: list[str] = []
    templates: dict[str, str] = {}
    for record in records:
        raw, name, template = record.stored()
        pairs += [record.name, raw]
        templates[name] = template
    return pairs, json.dumps(templates)
