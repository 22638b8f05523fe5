"""Every Redis key of the compute service: the VM inventory, per-status counts, operation state."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from string import Template

import redis.asyncio as aioredis
from google.protobuf import json_format

from merak.store import RedisStore
from merak.v1 import common_pb2, compute_pb2
from services.compute.contracts import CREATE
from services.compute.inventory import Host, PlannedVm

PREFIX = "merak:compute"
MAX_ERRORS = 100
INVENTORY_CHUNK_VMS = 5_000
# Samples kept per compute config for its results (calls, VM ready times): ~40 bytes each.
RESULT_SAMPLES = 2_000_000

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

# Sets VM records and keeps the per-status counts (whole config and per host) exact, even when a
# retried activity writes the same status twice. $-names are filled in from the constants below.
_SET_VMS = _SETTLE + Template("""
local vms, counts, hostcounts, errors, open, unsettled = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local host = ARGV[1]
local delta = 0
for i = 2, #ARGV, 2 do
  local name, record = ARGV[i], ARGV[i + 1]
  local new = tostring(cjson.decode(record)['status'])
  local old = redis.call('HGET', vms, name)
  redis.call('HSET', vms, name, record)
  local before = old and tostring(cjson.decode(old)['status']) or nil
  if before ~= new then
    if before then
      redis.call('HINCRBY', counts, before, -1)
      redis.call('HINCRBY', hostcounts, host .. '|' .. before, -1)
      if before ~= '$done_status' then delta = delta - 1 end
    end
    redis.call('HINCRBY', counts, new, 1)
    redis.call('HINCRBY', hostcounts, host .. '|' .. new, 1)
    if new ~= '$done_status' then delta = delta + 1 end
    local err = cjson.decode(record)['error']
    if new == '$error_status' and err and err ~= '' and redis.call('LLEN', errors) < $max_errors then
      redis.call('RPUSH', errors, name .. ': ' .. err)
    end
  end
end
settle(open, unsettled, host, delta)
return 1
""").substitute(error_status=common_pb2.ERROR, done_status=common_pb2.DONE, max_errors=MAX_ERRORS)

# Removes VM records, taking them out of the counts.
_DROP_VMS = _SETTLE + Template("""
local vms, counts, hostcounts, open, unsettled = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local host = ARGV[1]
local gone, delta = 0, 0
for i = 2, #ARGV do
  local old = redis.call('HGET', vms, ARGV[i])
  if old then
    local before = tostring(cjson.decode(old)['status'])
    redis.call('HDEL', vms, ARGV[i])
    redis.call('HINCRBY', counts, before, -1)
    redis.call('HINCRBY', hostcounts, host .. '|' .. before, -1)
    if before ~= '$done_status' then delta = delta - 1 end
    gone = gone + 1
  end
end
settle(open, unsettled, host, delta)
return gone
""").substitute(done_status=common_pb2.DONE)


@dataclass(frozen=True, slots=True)
class HostRecord:
    """One host of a compute config, as stored (JSON under the host's name)."""

    index: int
    endpoint: str  # the agent's gRPC target
    vtep: str  # the vhost's data-plane address
    count: int  # VMs planned on it
    shard: int
    fake: bool = False
    # An UPDATE took the host out of the config: its VMs go (drop list), then the record.
    leaving: bool = False

    def to_json(self) -> str:
        """Compact JSON."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> HostRecord:
        """Parse a stored record."""
        return cls(**json.loads(raw))


@dataclass
class VmRecord:
    """One VM of the inventory, as stored (JSON)."""

    id: str
    name: str
    host: str
    vpc: str
    subnet: str
    project: str
    tenant: str
    cidr: str
    gw: str
    sgs: list[str] = field(default_factory=list)
    ip: str = ""
    mac: str = ""
    prefix: int = 0
    vni: int = 0
    gmac: str = ""
    remote: str = ""
    device: str = ""
    status: int = common_pb2.DEPLOYING
    error: str = ""

    def to_json(self) -> str:
        """Compact JSON."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> VmRecord:
        """Parse a stored record."""
        return cls(**json.loads(raw))


def _vm_record(vm: PlannedVm, secgroups: list[str]) -> VmRecord:
    """A planned VM's record, DEPLOYING."""
    ref = vm.subnet
    return VmRecord(
        id=vm.vm_id,
        name=vm.name,
        host=vm.host,
        vpc=ref.vpc_id,
        subnet=ref.subnet_id,
        project=ref.project_id,
        tenant=ref.tenant_id,
        cidr=ref.cidr,
        gw=ref.gateway,
        sgs=secgroups,
    )


@dataclass(frozen=True, slots=True)
class Meta:
    """Where an operation of a compute config stands."""

    operation: str
    running: bool
    total: int
    batch_size: int
    shards: int
    plugin: str
    netconfig_id: str
    # Alcor's port manager (alcor plugin).
    alcor_url: str
    failure: str
    started_at: float
    finished_at: float


class ComputeStore(RedisStore):
    """The compute inventory in Redis."""

    def __init__(self, redis: aioredis.Redis, prefix: str = PREFIX) -> None:
        super().__init__(redis, prefix)
        self._set_vms = redis.register_script(_SET_VMS)
        self._drop_vms = redis.register_script(_DROP_VMS)

    def _k(self, config_id: str, *parts: str) -> str:
        return self.key("cfg", config_id, *parts)

    async def exists(self, config_id: str) -> bool:
        """True when the config has an inventory."""
        return bool(await self.redis.exists(self._k(config_id, "config")))

    async def config(self, config_id: str) -> compute_pb2.InternalComputeConfiguration | None:
        """The stored request."""
        raw = await self.redis.get(self._k(config_id, "config"))
        if raw is None:
            return None
        return json_format.Parse(raw, compute_pb2.InternalComputeConfiguration())

    async def create(
        self,
        config: compute_pb2.InternalComputeConfiguration,
        hosts: Sequence[Host],
        planned: dict[str, list[PlannedVm]],
        *,
        hosts_per_shard: int,
        batch_size: int,
        plugin: str,
    ) -> int:
        """Write the inventory (every VM DEPLOYING); returns the number of shards."""
        config_id = config.compute_config_id
        shards = max(1, -(-len(hosts) // hosts_per_shard))
        total = sum(len(v) for v in planned.values())
        secgroups = list(config.vm_deploy.secgroups)
        try:
            # Chunks of a few thousand VMs: one pipeline of a million records (~200 MB) times out.
            chunk: list[Host] = []
            for host in hosts:
                chunk.append(host)
                if sum(len(planned[h.name]) for h in chunk) >= INVENTORY_CHUNK_VMS:
                    await self._write_hosts(config_id, chunk, planned, secgroups, hosts_per_shard)
                    chunk = []
            if chunk:
                await self._write_hosts(config_id, chunk, planned, secgroups, hosts_per_shard)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(self._k(config_id, "counts"), str(common_pb2.DEPLOYING), total)
                now = time.time()
                pipe.hset(
                    self._k(config_id, "meta"),
                    mapping={
                        "operation": CREATE,
                        "running": "1",
                        "total": total,
                        "batch_size": batch_size,
                        "shards": shards,
                        "plugin": plugin,
                        "netconfig_id": config.netconfig_id,
                        "alcor_url": config.alcor_url,
                        "failure": "",
                        "started_at": now,
                        "finished_at": 0,
                    },
                )
                pipe.sadd(self.key("ids"), config_id)
                # Written last: an inventory exists (exists()) only once it is complete.
                pipe.set(self._k(config_id, "config"), json_format.MessageToJson(config, indent=None))
                await pipe.execute()
        except BaseException:
            await self.delete(config_id)
            raise
        return shards

    async def _write_hosts(
        self,
        config_id: str,
        hosts: Sequence[Host],
        planned: dict[str, list[PlannedVm]],
        secgroups: list[str],
        hosts_per_shard: int,
    ) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for host in hosts:
                shard = host.index // hosts_per_shard
                vms = planned[host.name]
                record = HostRecord(
                    index=host.index,
                    endpoint=host.agent_endpoint,
                    vtep=host.datapath_ip,
                    count=len(vms),
                    shard=shard,
                    fake=host.fake,
                )
                pipe.hset(self._k(config_id, "hosts"), host.name, record.to_json())
                pipe.rpush(self._k(config_id, "shard", str(shard)), host.name)
                if not vms:
                    continue
                records = {vm.name: _vm_record(vm, secgroups).to_json() for vm in vms}
                pipe.hset(self._k(config_id, "vms", host.name), mapping=records)  # type: ignore[arg-type]
                pipe.rpush(self._k(config_id, "order", host.name), *[vm.name for vm in vms])
                pipe.hset(self._k(config_id, "hostcounts"), f"{host.name}|{common_pb2.DEPLOYING}", len(vms))
                pipe.hset(self._k(config_id, "open"), host.name, len(vms))
                pipe.zadd(self._k(config_id, "unsettled"), {host.name: 0})
            await pipe.execute()

    async def meta(self, config_id: str) -> Meta | None:
        """The operation state."""
        raw = await self.hash_of(self._k(config_id, "meta"))
        if not raw:
            return None
        return Meta(
            operation=raw["operation"],
            running=raw["running"] == "1",
            total=int(raw["total"]),
            batch_size=int(raw["batch_size"]),
            shards=int(raw["shards"]),
            plugin=raw["plugin"],
            netconfig_id=raw["netconfig_id"],
            alcor_url=raw.get("alcor_url", ""),
            failure=raw.get("failure", ""),
            started_at=float(raw.get("started_at", 0)),
            finished_at=float(raw.get("finished_at", 0)),
        )

    async def start_operation(self, config_id: str, operation: str) -> None:
        """Mark an operation as running (a churn of the one before is forgotten)."""
        await self.forget_churn(config_id)
        await self.redis.hset(
            self._k(config_id, "meta"),
            mapping={
                "operation": operation,
                "running": "1",
                "failure": "",
                "started_at": time.time(),
                "finished_at": 0,
            },
        )

    # --- churn ---------------------------------------------------------------------------------
    # churn             hash: started_at, tick (the next), replaced, failed, running
    # churn:age         list of "host|vm", oldest first: who is replaced next
    # churn:plan:<tick> JSON [[host, victim, newborn], …]: a retried tick redoes the same plan
    # population        list of "at|VMs": the VMs alive, sampled at each tick

    async def forget_churn(self, config_id: str) -> None:
        """No churn state (a new operation)."""
        keys = [
            self._k(config_id, part)
            for part in ("churn", "churn:age", "population", "born", "overlay:before")
        ]
        keys += [k async for k in self.redis.scan_iter(match=self._k(config_id, "churn:plan:*"))]
        await self.redis.delete(*keys)

    async def churn_state(self, config_id: str) -> dict[str, str]:
        """The churn hash ({} before a churn)."""
        return await self.hash_of(self._k(config_id, "churn"))

    async def start_churn(self, config_id: str, started_at: float, hosts: Sequence[str]) -> None:
        """Once: the churn's clock, and its age list from the hosts' VMs, interleaved host by host."""
        if not await self.redis.hsetnx(self._k(config_id, "churn"), "started_at", started_at):
            return  # a retried activity: it resumes
        columns = [
            [f"{h}|{n!s}" for n in await self.redis.lrange(self._k(config_id, "order", h), 0, -1)]
            for h in hosts
        ]
        aged = [entry for row in itertools.zip_longest(*columns) for entry in row if entry]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self._k(config_id, "churn"),
                mapping={
                    "tick": 0,
                    "replaced": 0,
                    "failed": 0,
                    "running": "1",
                    "generation": int(started_at) % 1_000_000,
                },
            )
            pipe.delete(self._k(config_id, "churn:age"))
            if aged:
                pipe.rpush(self._k(config_id, "churn:age"), *aged)
            await pipe.execute()

    async def churn_plan(self, config_id: str, tick: int, size: int) -> list[list[str]]:
        """The tick's [host, victim, newborn(, victim's record)] entries: the `size` oldest VMs, kept
        for a retry. Newborn names carry the churn's generation: a later churn never meets them."""
        key = self._k(config_id, "churn:plan", str(tick))
        raw = await self.redis.get(key)
        if raw is not None:
            plan: list[list[str]] = json.loads(raw)
            return plan
        generation = await self.redis.hget(self._k(config_id, "churn"), "generation") or "0"
        oldest = [str(v) for v in await self.redis.lrange(self._k(config_id, "churn:age"), 0, size - 1)]
        plan = []
        for j, entry in enumerate(oldest):
            host, _, victim = entry.partition("|")
            plan.append([host, victim, f"r{generation!s}-{tick}-{j}"])
        await self.save_churn_plan(config_id, tick, plan)
        return plan

    async def save_churn_plan(self, config_id: str, tick: int, plan: list[list[str]]) -> None:
        """Keep a tick's plan (with the victims' records once read: a retry needs them after they went)."""
        await self.redis.set(self._k(config_id, "churn:plan", str(tick)), json.dumps(plan))

    async def born(self, config_id: str, host: str, names: Sequence[str]) -> None:
        """New VMs of a churn tick join the host's VMs (a DELETE finds them)."""
        if not names:
            return
        key = self._k(config_id, "order", host)
        present = {str(n) for n in await self.redis.lrange(key, 0, -1)}
        fresh = [n for n in names if n not in present]
        if fresh:
            await self.redis.rpush(key, *fresh)

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
        async with self.redis.pipeline(transaction=True) as pipe:
            for host, victim in vanished:
                pipe.lrem(self._k(config_id, "order", host), 1, victim)
                pipe.lrem(self._k(config_id, "churn:age"), 1, f"{host}|{victim}")
            for host, victim, newborn in replaced:
                pipe.lrem(self._k(config_id, "order", host), 1, victim)
                pipe.lrem(self._k(config_id, "churn:age"), 1, f"{host}|{victim}")
                pipe.rpush(self._k(config_id, "churn:age"), f"{host}|{newborn}")
            for host, newborn in abandoned:
                pipe.lrem(self._k(config_id, "order", host), 1, newborn)
            pipe.delete(self._k(config_id, "churn:plan", str(tick)))
            pipe.hset(self._k(config_id, "churn"), "tick", tick + 1)
            pipe.hincrby(self._k(config_id, "churn"), "replaced", len(replaced))
            pipe.hincrby(self._k(config_id, "churn"), "failed", len(abandoned))
            await pipe.execute()

    async def overlay_vni(self, config_id: str, vni: int) -> dict[str, list[list[str]]]:
        """Host → [(ip, mac)] of one VNI."""
        raw = await self.hash_of(self._k(config_id, "vni", str(vni)))
        return {host: json.loads(value) for host, value in raw.items()}

    async def end_churn(self, config_id: str) -> None:
        """The churn is over."""
        await self.redis.hset(self._k(config_id, "churn"), "running", "0")

    async def record_born(self, config_id: str, offsets: Sequence[float]) -> None:
        """When churn newborns became ready (seconds since the operation started): VMs ready per
        second counts them; time to VM ready (of the operation's own VMs) does not."""
        if offsets:
            key = self._k(config_id, "born")
            await self.redis.rpush(key, *[f"{at:.3f}" for at in offsets])
            await self.redis.ltrim(key, -RESULT_SAMPLES, -1)

    async def born_offsets(self, config_id: str) -> list[float]:
        """What record_born kept."""
        return [float(r) for r in await self.redis.lrange(self._k(config_id, "born"), 0, -1)]

    async def sample_population(self, config_id: str, at: float) -> int:
        """Record how many VMs are alive (DONE) now; returns it."""
        alive = int(await self.redis.hget(self._k(config_id, "counts"), str(common_pb2.DONE)) or 0)
        key = self._k(config_id, "population")
        await self.redis.rpush(key, f"{at:.3f}|{alive}")
        await self.redis.ltrim(key, -RESULT_SAMPLES, -1)
        return alive

    async def population(self, config_id: str) -> list[tuple[float, int]]:
        """The population samples (seconds since the operation started, VMs alive)."""
        samples = []
        for raw in await self.redis.lrange(self._k(config_id, "population"), 0, -1):
            at, _, value = str(raw).partition("|")
            samples.append((float(at), int(value)))
        return samples

    async def finish_operation(self, config_id: str, failure: str = "") -> None:
        """Mark the operation as over."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self._k(config_id, "meta"),
                mapping={"running": "0", "failure": failure, "finished_at": time.time()},
            )
            pipe.delete(self._k(config_id, "overlay:before"))
            await pipe.execute()

    async def hosts(self, config_id: str) -> dict[str, HostRecord]:
        """Every host of the config by name."""
        raw = await self.hash_of(self._k(config_id, "hosts"))
        return {name: HostRecord.from_json(value) for name, value in raw.items()}

    async def hosts_named(self, config_id: str, names: Sequence[str]) -> dict[str, HostRecord]:
        """The hosts of these names (those that exist): one round trip, and no work for the others
        (a batch, or a shard, must not cost more because the config has 10,000 hosts)."""
        if not names:
            return {}
        raw = await self.redis.hmget(self._k(config_id, "hosts"), list(names))
        found = zip(names, raw, strict=True)
        return {name: HostRecord.from_json(str(value)) for name, value in found if value}

    async def shard_hosts(self, config_id: str, shard: int) -> list[str]:
        """The hosts of a shard, in order."""
        return [str(h) for h in await self.redis.lrange(self._k(config_id, "shard", str(shard)), 0, -1)]

    async def batch_names(
        self, config_id: str, host: str, batch: int, batch_size: int, *, dropped: bool = False
    ) -> list[str]:
        """The VM names of batch `batch` of `host` (of its drop list: the VMs an UPDATE removed)."""
        start = batch * batch_size
        key = self._k(config_id, "drop" if dropped else "order", host)
        names = await self.redis.lrange(key, start, start + batch_size - 1)
        return [str(n) for n in names]

    async def vm_count(self, config_id: str, host: str) -> int:
        """How many VMs the host's list holds."""
        return int(await self.redis.llen(self._k(config_id, "order", host)))

    async def dropped_count(self, config_id: str, host: str) -> int:
        """How many VMs an UPDATE removed from `host` (to be deleted)."""
        return int(await self.redis.llen(self._k(config_id, "drop", host)))

    async def update_inventory(
        self,
        config: compute_pb2.InternalComputeConfiguration,
        hosts: Sequence[Host],
        planned: dict[str, list[PlannedVm]],
        *,
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
            names = [str(n) for n in await self.redis.lrange(self._k(config_id, "order", host.name), 0, -1)]
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
                pipe.hset(self._k(config_id, "hosts"), host.name, record.to_json())
                if before is None:
                    pipe.rpush(self._k(config_id, "shard", str(shard)), host.name)
                pipe.delete(self._k(config_id, "order", host.name))
                if kept or new:
                    pipe.rpush(self._k(config_id, "order", host.name), *kept, *[vm.name for vm in new])
                if gone:
                    pipe.rpush(self._k(config_id, "drop", host.name), *gone)
                await pipe.execute()
            await self.put_vms(config_id, host.name, [_vm_record(vm, secgroups) for vm in new])
            added += len(new)
            dropped += len(gone)
        for name, before in stored.items():
            if any(h.name == name for h in hosts):
                continue
            names = [str(n) for n in await self.redis.lrange(self._k(config_id, "order", name), 0, -1)]
            leaving = HostRecord(
                before.index, before.endpoint, before.vtep, 0, before.shard, before.fake, leaving=True
            )
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(self._k(config_id, "hosts"), name, leaving.to_json())
                pipe.delete(self._k(config_id, "order", name))
                if names:
                    pipe.rpush(self._k(config_id, "drop", name), *names)
                await pipe.execute()
            dropped += len(names)
        total = sum(len(v) for v in planned.values())
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._k(config_id, "meta"), mapping={"total": total, "shards": shards})
            # The results are of the current operation.
            pipe.delete(
                self._k(config_id, "calls"), self._k(config_id, "ready"), self._k(config_id, "errors")
            )
            pipe.set(self._k(config_id, "config"), json_format.MessageToJson(config, indent=None))
            await pipe.execute()
        return added, dropped, shards

    async def finish_update(self, config_id: str) -> None:
        """After an UPDATE: leaving hosts and drop lists are forgotten (their VMs are gone)."""
        hosts = await self.hosts(config_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            for name, record in hosts.items():
                pipe.delete(self._k(config_id, "drop", name))
                if record.leaving:
                    pipe.hdel(self._k(config_id, "hosts"), name)
                    pipe.lrem(self._k(config_id, "shard", str(record.shard)), 0, name)
                    pipe.delete(self._k(config_id, "order", name))
            await pipe.execute()

    async def vms(self, config_id: str, host: str, names: Sequence[str] | None = None) -> list[VmRecord]:
        """VM records of a host (all, or the named ones that exist)."""
        key = self._k(config_id, "vms", host)
        if names is None:
            return [VmRecord.from_json(v) for v in (await self.hash_of(key)).values()]
        if not names:
            return []
        values = await self.redis.hmget(key, list(names))
        return [VmRecord.from_json(str(v)) for v in values if v is not None]

    async def put_vms(self, config_id: str, host: str, records: Iterable[VmRecord]) -> None:
        """Write VM records, keeping the status counts exact."""
        args: list[str] = [host]
        for record in records:
            args += [record.name, record.to_json()]
        if len(args) > 1:
            keys = [
                self._k(config_id, "vms", host),
                self._k(config_id, "counts"),
                self._k(config_id, "hostcounts"),
                self._k(config_id, "errors"),
                self._k(config_id, "open"),
                self._k(config_id, "unsettled"),
            ]
            await self._set_vms(keys=keys, args=args)

    async def drop_vms(self, config_id: str, host: str, names: Sequence[str]) -> int:
        """Remove VM records (deleted VMs), taking them out of the counts."""
        if not names:
            return 0
        keys = [
            self._k(config_id, "vms", host),
            self._k(config_id, "counts"),
            self._k(config_id, "hostcounts"),
            self._k(config_id, "open"),
            self._k(config_id, "unsettled"),
        ]
        return int(await self._drop_vms(keys=keys, args=[host, *names]))

    async def counts(self, config_id: str) -> dict[int, int]:
        """VMs per status."""
        raw = await self.hash_of(self._k(config_id, "counts"))
        return {int(k): int(v) for k, v in raw.items() if int(v)}

    async def unsettled_hosts(self, config_id: str, limit: int) -> tuple[int, dict[str, dict[int, int]]]:
        """How many hosts hold VMs that are not DONE, and the VMs per status of the first `limit` of
        them by name: the size of the answer does not grow with the hosts of the config."""
        key = self._k(config_id, "unsettled")
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(key)
            pipe.zrange(key, 0, limit - 1)
            count, names = await pipe.execute()
        names = [str(n) for n in names]
        statuses = list(common_pb2.Status.values())
        fields = [f"{host}|{status}" for host in names for status in statuses]
        values = await self.redis.hmget(self._k(config_id, "hostcounts"), fields) if fields else []
        result: dict[str, dict[int, int]] = {host: {} for host in names}
        for key, value in zip(fields, values, strict=True):
            if value is not None and int(value):
                host, _, status = key.rpartition("|")
                result[host][int(status)] = int(value)
        return int(count), result

    async def errors(self, config_id: str, limit: int = 20) -> list[str]:
        """The first VM errors."""
        return [str(e) for e in await self.redis.lrange(self._k(config_id, "errors"), 0, limit - 1)]

    async def record_results(
        self,
        config_id: str,
        plugin: str,
        calls: Sequence[tuple[str, str, float, float]],
        ready: Sequence[float] = (),
    ) -> None:
        """Keep the control plane's calls (operation, code, seconds, at: seconds since the operation
        started) and VM ready offsets for the results; the newest RESULT_SAMPLES of each are kept."""
        if not calls and not ready:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            if calls:
                key = self._k(config_id, "calls")
                pipe.rpush(key, *[f"{plugin}|{op}|{code}|{sec:.6f}|{at:.3f}" for op, code, sec, at in calls])
                pipe.ltrim(key, -RESULT_SAMPLES, -1)
            if ready:
                key = self._k(config_id, "ready")
                pipe.rpush(key, *[f"{at:.3f}" for at in ready])
                pipe.ltrim(key, -RESULT_SAMPLES, -1)
            await pipe.execute()

    async def results(self, config_id: str) -> tuple[list[str], list[float]]:
        """The kept calls ("plugin|operation|code|seconds|at") and VM ready offsets."""
        calls = [str(c) for c in await self.redis.lrange(self._k(config_id, "calls"), 0, -1)]
        ready = [float(r) for r in await self.redis.lrange(self._k(config_id, "ready"), 0, -1)]
        return calls, ready

    async def reset_overlay(self, config_id: str) -> dict[int, dict[str, list[list[str]]]]:
        """Forget the overlay index (it is rebuilt from the DONE VMs); returns what it held when this
        operation first asked (kept until the operation ends: a retried rebuild still knows it)."""
        key = self._k(config_id, "overlay:before")
        current = await self.overlay(config_id)
        snapshot = json.dumps({str(vni): hosts for vni, hosts in current.items()})
        await self.redis.set(key, snapshot, nx=True)
        raw = await self.redis.get(key)
        before = {int(vni): hosts for vni, hosts in json.loads(raw or "{}").items()}
        keys = [self._k(config_id, "vni", str(vni)) for vni in current]
        keys += [self._k(config_id, part) for part in ("vnis", "withdrawn")]
        await self.redis.delete(*keys)
        return before

    async def put_withdrawn(self, config_id: str, withdrawn: dict[int, dict[str, list[list[str]]]]) -> None:
        """VNI → host → [(ip, mac)] of VMs that left the overlay: their entries are taken back."""
        if withdrawn:
            await self.redis.set(
                self._k(config_id, "withdrawn"),
                json.dumps({str(vni): hosts for vni, hosts in withdrawn.items()}),
            )

    async def withdrawn(self, config_id: str) -> dict[int, dict[str, list[list[str]]]]:
        """What put_withdrawn kept."""
        raw = await self.redis.get(self._k(config_id, "withdrawn"))
        if raw is None:
            return {}
        return {int(vni): hosts for vni, hosts in json.loads(raw).items()}

    async def put_overlay(self, config_id: str, vni: int, host: str, entries: list[list[str]]) -> None:
        """The VMs (ip, mac) a host has in a VNI, for the overlay programming."""
        await self.redis.hset(self._k(config_id, "vni", str(vni)), host, json.dumps(entries))
        await self.redis.sadd(self._k(config_id, "vnis"), str(vni))

    async def overlay(self, config_id: str) -> dict[int, dict[str, list[list[str]]]]:
        """VNI → host → [(ip, mac)] of every DONE VM."""
        result: dict[int, dict[str, list[list[str]]]] = {}
        for vni in await self.redis.smembers(self._k(config_id, "vnis")):
            raw = await self.hash_of(self._k(config_id, "vni", str(vni)))
            result[int(vni)] = {host: json.loads(value) for host, value in raw.items()}
        return result

    async def ids(self) -> list[str]:
        """Every config with an inventory."""
        return sorted(str(m) for m in await self.redis.smembers(self.key("ids")))

    async def delete(self, config_id: str) -> int:
        """Forget a config entirely; returns how many keys went."""
        gone = await self.delete_under("cfg", config_id)
        await self.redis.srem(self.key("ids"), config_id)
        return gone
