"""Every Redis key of the network service, and the Lua scripts that keep IPAM and VNIs race-free."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import NoReturn

import redis.asyncio as aioredis
from google.protobuf import json_format
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from merak.callstats import ControlPlaneCall
from merak.errors import FailedPrecondition
from merak.store import RedisStore, optimistic
from merak.v1 import network_pb2
from services.network.models import (
    AlcorEndpoints,
    NetworkState,
    Node,
    OvnRemotes,
    RouterState,
    RuleState,
    SecurityGroupState,
    SubnetState,
    VpcState,
)

PREFIX = "merak:network"
# At most this many calls into the control plane are kept per network config (the oldest go first).
MAX_CALLS_KEPT = 10_000

# Hands out N addresses of several subnets in one step, all or nothing. A subnet's bitmap has one bit
# per address (bit i = network address + i), with network, broadcast and gateway set at creation.
# The ports hash maps vm_id -> "slot:offset", so asking again for a VM gives back its address; the
# reply marks addresses handed out by this call with a leading "+".
# A subnet with host blocks (block size > 0 addresses, a multiple of 8, so a block is whole bytes of the
# bitmap) also has a block bitmap (bit b: block b has an owner), owners (block -> host), hosts (host ->
# its blocks, "3,17") and used (block -> addresses held in it, whoever holds them). A VM on host h gets
# the lowest free address of h's blocks; else h claims the lowest free block; else it borrows the lowest
# free address of the subnet (every block is owned then). Its value is "slot:offset/len@h", len the
# route h advertises for it: the block's prefix, or 32 when borrowed. A block with an address held in it
# keeps its owner, so that route stays true while the VM holds the address.
#   KEYS: state (must exist), ports hash, allocated-count hash, then per subnet group 5 keys: bitmap,
#         block bitmap, owners, hosts, used
#   ARGV: k, k slots, k capacities, k block sizes (0: no blocks), k block counts, k block prefix lengths,
#         then (vm_id, group, host) triples; groups count from 1; host is "" for a subnet without blocks
# Errors: MISSING (config deleted), CONFLICT <triple index> <current> (a VM already holds an address in
# another subnet or on another host), EXHAUSTED <group> <free>.
_ALLOCATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('MISSING') end
local k = tonumber(ARGV[1])
local first = 2 + 5 * k
local n = (#ARGV - first + 1) / 3
local function key(g, j) return KEYS[3 + 5 * (g - 1) + j] end
local function arg(g, j) return ARGV[1 + j * k + g] end
local need, seen = {}, {}
for g = 1, k do need[g] = 0 end
for i = 0, n - 1 do
  local at = first + 3 * i
  local vm, g, host = ARGV[at], tonumber(ARGV[at + 1]), ARGV[at + 2]
  local current = redis.call('HGET', KEYS[2], vm)
  if current then
    local elsewhere = host ~= '' and string.match(current, '@(.*)$') ~= host
    if string.match(current, '^(%d+):') ~= arg(g, 0) or elsewhere then
      return redis.error_reply('CONFLICT ' .. i .. ' ' .. current)
    end
  elseif seen[vm] == nil then
    seen[vm] = g .. '@' .. host
    need[g] = need[g] + 1
  elseif seen[vm] ~= g .. '@' .. host then
    return redis.error_reply('CONFLICT ' .. i .. ' ')
  end
end
for g = 1, k do
  if need[g] > 0 then
    local used = tonumber(redis.call('HGET', KEYS[3], arg(g, 0)) or '0')
    local free = tonumber(arg(g, 1)) - used
    if free < need[g] then return redis.error_reply('EXHAUSTED ' .. g .. ' ' .. free) end
  end
end
-- Per batch: the lowest byte that may hold a free bit (bits are only set here), per group; and per
-- (group, host) its blocks and how many of the first ones are full.
local cursor, borrow, mine = {}, {}, {}
local function in_block(g, b, bytes)
  return redis.call('BITPOS', key(g, 1), 0, b * bytes, (b + 1) * bytes - 1)
end
local function take(g, host)
  local size = tonumber(arg(g, 2))
  local bytes, suffix = math.floor(size / 8), '/' .. arg(g, 4) .. '@' .. host
  local id = g .. '@' .. host
  local entry = mine[id]
  if entry == nil then
    entry = {list = {}, full = 0}
    for b in string.gmatch(redis.call('HGET', key(g, 4), host) or '', '%d+') do
      entry.list[#entry.list + 1] = tonumber(b)
    end
    mine[id] = entry
  end
  local pos = -1
  while pos < 0 and entry.full < #entry.list do
    pos = in_block(g, entry.list[entry.full + 1], bytes)
    if pos < 0 then entry.full = entry.full + 1 end
  end
  if pos < 0 then
    -- BITPOS without a range: 0 for a missing key, the bit past the end when every block is owned.
    local b = redis.call('BITPOS', key(g, 2), 0)
    if b < tonumber(arg(g, 3)) then
      redis.call('SETBIT', key(g, 2), b, 1)
      redis.call('HSET', key(g, 3), b, host)
      entry.list[#entry.list + 1] = b
      redis.call('HSET', key(g, 4), host, table.concat(entry.list, ','))
      pos = in_block(g, b, bytes)
    else
      pos = redis.call('BITPOS', key(g, 1), 0, borrow[g] or 0)
      borrow[g] = math.floor(pos / 8)
      suffix = '/32@' .. host
    end
  end
  redis.call('HINCRBY', key(g, 5), math.floor(pos / size), 1)
  return pos, suffix
end
local out = {}
for i = 0, n - 1 do
  local at = first + 3 * i
  local vm, g, host = ARGV[at], tonumber(ARGV[at + 1]), ARGV[at + 2]
  local current = redis.call('HGET', KEYS[2], vm)
  if current then
    out[i + 1] = current
  else
    local pos, suffix
    if tonumber(arg(g, 2)) == 0 then
      pos, suffix = redis.call('BITPOS', key(g, 1), 0, cursor[g] or 0), ''
      cursor[g] = math.floor(pos / 8)
    else
      pos, suffix = take(g, host)
    end
    redis.call('SETBIT', key(g, 1), pos, 1)
    local value = arg(g, 0) .. ':' .. pos .. suffix
    redis.call('HSET', KEYS[2], vm, value)
    redis.call('HINCRBY', KEYS[3], arg(g, 0), 1)
    out[i + 1] = '+' .. value
  end
end
return out
"""

# Gives addresses back, each only if the VM still holds the address the caller read (a concurrent
# release of the same VM, followed by a new allocation of that address, must not free it again). In a
# subnet with host blocks, a block nobody holds an address in any more goes back to the pool.
#   KEYS: ports hash, allocated-count hash, then per slot the 5 keys of _ALLOCATE's groups
#   ARGV: k, k block sizes (0: no blocks), then (vm_id, expected "slot:offset...", slot index from 1)
_RELEASE = """
local k = tonumber(ARGV[1])
local released = 0
for i = 2 + k, #ARGV, 3 do
  local vm, expected, s = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  if redis.call('HGET', KEYS[1], vm) == expected then
    local slot, offset = string.match(expected, '^(%d+):(%d+)')
    local base, size = 2 + 5 * (s - 1), tonumber(ARGV[1 + s])
    redis.call('HDEL', KEYS[1], vm)
    redis.call('SETBIT', KEYS[base + 1], tonumber(offset), 0)
    redis.call('HINCRBY', KEYS[2], slot, -1)
    if size > 0 then
      local b = math.floor(tonumber(offset) / size)
      if redis.call('HINCRBY', KEYS[base + 5], b, -1) <= 0 then
        redis.call('HDEL', KEYS[base + 5], b)
        redis.call('SETBIT', KEYS[base + 2], b, 0)
        local owner = redis.call('HGET', KEYS[base + 3], b)
        redis.call('HDEL', KEYS[base + 3], b)
        if owner then
          local kept = {}
          for x in string.gmatch(redis.call('HGET', KEYS[base + 4], owner) or '', '%d+') do
            if tonumber(x) ~= b then kept[#kept + 1] = x end
          end
          if #kept == 0 then
            redis.call('HDEL', KEYS[base + 4], owner)
          else
            redis.call('HSET', KEYS[base + 4], owner, table.concat(kept, ','))
          end
        end
      end
    end
    released = released + 1
  end
end
return released
"""

# VNIs come from one pool shared by every network config: a hash vni -> owner and a cursor that walks
# the range, so a released VNI is reused only after the others.
#   KEYS: owners hash, cursor; ARGV: n, owner, lowest, highest
_ALLOCATE_VNIS = """
local n, owner = tonumber(ARGV[1]), ARGV[2]
local low, high = tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('HLEN', KEYS[1]) + n > high - low + 1 then return redis.error_reply('EXHAUSTED') end
local c = tonumber(redis.call('GET', KEYS[2]) or low)
if c < low or c > high then c = low end
local out = {}
while #out < n do
  if redis.call('HSETNX', KEYS[1], c, owner) == 1 then out[#out + 1] = c end
  c = c + 1
  if c > high then c = low end
end
redis.call('SET', KEYS[2], c)
return out
"""

#   KEYS: owners hash, cursor; ARGV: owner, then VNIs. With no VNI left in use the cursor goes too:
#   a network service whose configs are all deleted leaves no key behind.
_RELEASE_VNIS = """
local released = 0
for i = 2, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    released = released + 1
  end
end
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[2]) end
return released
"""


@dataclass(frozen=True, slots=True)
class StoredNetwork:
    """A network config as stored: the request as sent and what it built."""

    config: network_pb2.InternalNetConfigConfiguration
    state: NetworkState


@dataclass(frozen=True, slots=True)
class AllocationFailure:
    """Why an allocation handed out nothing: MISSING, CONFLICT (pair index) or EXHAUSTED (group index)."""

    reason: str
    index: int = 0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class SubnetPool:
    """One subnet's part of an allocation: its slot, how many addresses it can hand out, and its host
    blocks (addresses per block, how many, their prefix length; 0 when it has none)."""

    slot: int
    capacity: int
    block_size: int = 0
    blocks: int = 0
    block_prefix: int = 0


# The keys of one subnet's IPAM, after its bitmap (see _ALLOCATE).
_BLOCK_PARTS = ("blocks", "owners", "hosts", "used")


@dataclass(frozen=True, slots=True)
class HeldAddress:
    """An address as the store keeps it: "slot:offset", with "/len@host" in a subnet with host blocks."""

    slot: int
    offset: int
    route_len: int = 0
    host: str = ""

    @classmethod
    def parse(cls, value: str) -> HeldAddress:
        """The address a stored value stands for."""
        slot, _, rest = value.partition(":")
        where, _, host = rest.partition("@")
        offset, _, length = where.partition("/")
        return cls(int(slot), int(offset), int(length or 0), host)


class NetworkStore(RedisStore):
    """Network configs in Redis: config, state, IPAM bitmaps and port hash per config; the VNI pool."""

    def __init__(self, redis: aioredis.Redis, prefix: str = PREFIX) -> None:
        super().__init__(redis, prefix)
        self._allocate = redis.register_script(_ALLOCATE)
        self._release = redis.register_script(_RELEASE)
        self._allocate_vnis = redis.register_script(_ALLOCATE_VNIS)
        self._release_vnis = redis.register_script(_RELEASE_VNIS)
        # The last state read per network config, with its stored text: compute asks for addresses once
        # per batch, and a state with 10,000 nodes took longer to parse than the allocation itself.
        self._parsed: dict[str, tuple[str, NetworkState]] = {}

    # --- keys ----------------------------------------------------------------------------------

    @property
    def _ids_key(self) -> str:
        return self.key("ids")

    def _nc(self, netconfig_id: str, *parts: str) -> str:
        return self.key("nc", netconfig_id, *parts)

    def _bitmap_key(self, netconfig_id: str, slot: int) -> str:
        return self._nc(netconfig_id, "ipam", str(slot))

    def _subnet_keys(self, netconfig_id: str, slot: int) -> list[str]:
        """The address bitmap of a subnet, then its host blocks' keys (_ALLOCATE's 5 keys per group)."""
        bitmap = self._bitmap_key(netconfig_id, slot)
        return [bitmap, *(f"{bitmap}:{part}" for part in _BLOCK_PARTS)]

    @property
    def _vni_owners_key(self) -> str:
        return self.key("vni", "owners")

    @property
    def _vni_cursor_key(self) -> str:
        return self.key("vni", "cursor")

    def _keys_of(self, state: NetworkState) -> list[str]:
        netconfig_id = state.netconfig_id
        parts = ("config", "state", "ports", "allocated", "deleted", "calls")
        keys = [self._nc(netconfig_id, part) for part in parts]
        for _, subnet in state.subnets():
            keys += self._subnet_keys(netconfig_id, subnet.slot)
        return keys

    # --- network configs -----------------------------------------------------------------------

    async def get(self, netconfig_id: str) -> StoredNetwork | None:
        """The stored network config, or None."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self._nc(netconfig_id, "config"))
            pipe.get(self._nc(netconfig_id, "state"))
            raw_config, raw_state = await pipe.execute()
        if raw_config is None or raw_state is None:
            return None
        config = json_format.Parse(raw_config, network_pb2.InternalNetConfigConfiguration())
        return StoredNetwork(config, state_from_json(raw_state))

    async def state(self, netconfig_id: str) -> NetworkState | None:
        """Only the state of a network config (what AllocatePorts needs), or None."""
        raw = await self.redis.get(self._nc(netconfig_id, "state"))
        if raw is None:
            self._parsed.pop(netconfig_id, None)
            return None
        text = str(raw)
        cached = self._parsed.get(netconfig_id)
        if cached is not None and cached[0] == text:  # the same text: the same state (it is immutable)
            return cached[1]
        state = state_from_json(text)
        if len(self._parsed) >= 64:  # a few configs are in use at a time; keep memory bounded
            self._parsed.clear()
        self._parsed[netconfig_id] = (text, state)
        return state

    async def ids(self) -> list[str]:
        """Every stored network config id."""
        return sorted(str(m) for m in await self.redis.smembers(self._ids_key))

    def _write(
        self,
        pipe: Pipeline,
        config: network_pb2.InternalNetConfigConfiguration,
        state: NetworkState,
        new_subnets: list[SubnetState],
    ) -> None:
        netconfig_id = state.netconfig_id
        pipe.set(self._nc(netconfig_id, "config"), json_format.MessageToJson(config, indent=None))
        pipe.set(self._nc(netconfig_id, "state"), state_to_json(state))
        pipe.sadd(self._ids_key, netconfig_id)
        for subnet in new_subnets:
            key = self._bitmap_key(netconfig_id, subnet.slot)
            for offset in sorted({0, subnet.size - 1, subnet.gateway_offset}):
                pipe.setbit(key, offset, 1)

    async def create(
        self,
        config: network_pb2.InternalNetConfigConfiguration,
        state: NetworkState,
        ipam_subnets: list[SubnetState],
    ) -> bool:
        """Store a new network config in one transaction; False when one with that id exists."""
        config_key = self._nc(state.netconfig_id, "config")

        async def write(pipe: Pipeline) -> bool:
            if await pipe.exists(config_key):
                return False
            pipe.multi()  # type: ignore[no-untyped-call]  # unannotated in redis-py
            self._write(pipe, config, state, ipam_subnets)
            return True

        return await optimistic(self.redis, [config_key], write, on_conflict=lambda: False)

    async def replace(
        self,
        config: network_pb2.InternalNetConfigConfiguration,
        old: NetworkState,
        new: NetworkState,
        ipam_subnets: list[SubnetState],
    ) -> None:
        """Store the grown network config of an UPDATE, provided nobody changed it meanwhile."""
        state_key = self._nc(old.netconfig_id, "state")

        def changed() -> NoReturn:
            raise FailedPrecondition(
                f"network config {old.netconfig_id!r} changed during the UPDATE; send it again"
            ) from None

        async def write(pipe: Pipeline) -> None:
            current = await pipe.get(state_key)
            if current is None or state_from_json(str(current)) != old:
                changed()
            pipe.multi()  # type: ignore[no-untyped-call]  # unannotated in redis-py
            self._write(pipe, config, new, ipam_subnets)

        await optimistic(self.redis, [state_key], write, on_conflict=changed)

    async def delete(self, netconfig_id: str) -> NetworkState | None:
        """Forget a network config and all its IPAM in one transaction; returns what was removed."""
        state_key = self._nc(netconfig_id, "state")

        async def remove(pipe: Pipeline) -> NetworkState | None:
            raw = await pipe.get(state_key)
            if raw is None:
                return None
            state = state_from_json(str(raw))
            pipe.multi()  # type: ignore[no-untyped-call]  # unannotated in redis-py
            pipe.delete(*self._keys_of(state))
            pipe.srem(self._ids_key, netconfig_id)
            return state

        removed = await optimistic(self.redis, [state_key], remove)
        if removed is None:
            await self.redis.delete(self._nc(netconfig_id, "config"))
            await self.redis.srem(self._ids_key, netconfig_id)
        return removed

    # --- calls into the control plane (the last MAX_CALLS_KEPT per config) -----------------------

    async def add_calls(self, netconfig_id: str, made: Sequence[ControlPlaneCall]) -> None:
        """Keep the calls an operation of the config made (the last MAX_CALLS_KEPT of them)."""
        if not made:
            return
        key = self._nc(netconfig_id, "calls")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, *(f"{c.operation}|{c.code}|{c.seconds!r}|{c.at!r}" for c in made))
            pipe.ltrim(key, -MAX_CALLS_KEPT, -1)
            await pipe.execute()

    async def calls(self, netconfig_id: str) -> list[ControlPlaneCall]:
        """The calls kept for the config, oldest first (a malformed entry is skipped)."""
        kept = []
        for raw in await self.redis.lrange(self._nc(netconfig_id, "calls"), 0, -1):
            parts = str(raw).split("|")
            if len(parts) != 4:
                continue
            try:
                kept.append(ControlPlaneCall(parts[0], parts[1], float(parts[2]), float(parts[3])))
            except ValueError:
                continue
        return kept

    # --- Alcor DELETE progress -----------------------------------------------------------------

    async def deleted_steps(self, netconfig_id: str) -> set[str]:
        """The DELETE steps already done in the control plane for this config."""
        return {str(m) for m in await self.redis.smembers(self._nc(netconfig_id, "deleted"))}

    async def mark_deleted(self, netconfig_id: str, step: str) -> None:
        """Record that one DELETE step is done, so a retried DELETE skips it."""
        await self.redis.sadd(self._nc(netconfig_id, "deleted"), step)

    # --- VNI pool ------------------------------------------------------------------------------

    async def allocate_vnis(self, count: int, owner: str, lowest: int, highest: int) -> list[int] | None:
        """`count` VNIs unused by any network config, or None when the pool is too small."""
        if count == 0:
            return []
        try:
            values = await self._allocate_vnis(
                keys=[self._vni_owners_key, self._vni_cursor_key], args=[count, owner, lowest, highest]
            )
        except ResponseError as exc:
            if str(exc).startswith("EXHAUSTED"):
                return None
            raise
        return [int(v) for v in values]

    async def release_vnis(self, owner: str, vnis: list[int]) -> int:
        """Give back the VNIs that `owner` holds; returns how many went back."""
        if not vnis:
            return 0
        keys = [self._vni_owners_key, self._vni_cursor_key]
        return int(await self._release_vnis(keys=keys, args=[owner, *vnis]))

    async def vni_owner(self, vni: int) -> str | None:
        """The network config that holds a VNI."""
        owner = await self.redis.hget(self._vni_owners_key, str(vni))
        return None if owner is None else str(owner)

    # --- IPAM ----------------------------------------------------------------------------------

    async def allocate(
        self, netconfig_id: str, pools: list[SubnetPool], requests: list[tuple[str, int, str]]
    ) -> list[str] | AllocationFailure:
        """Addresses ("slot:offset", or "slot:offset/len@host" in a subnet with host blocks; "+" first
        when new) for (vm_id, pool index, host) triples, all or nothing."""
        if not requests:
            return []
        keys = [
            self._nc(netconfig_id, "state"),
            self._nc(netconfig_id, "ports"),
            self._nc(netconfig_id, "allocated"),
        ]
        for pool in pools:
            keys += self._subnet_keys(netconfig_id, pool.slot)
        args: list[str | int] = [len(pools)]
        for column in ("slot", "capacity", "block_size", "blocks", "block_prefix"):
            args += [getattr(pool, column) for pool in pools]
        for vm_id, pool_index, host in requests:
            args += [vm_id, pool_index + 1, host]
        try:
            values = await self._allocate(keys=keys, args=args)
        except ResponseError as exc:
            reason, _, rest = str(exc).partition(" ")
            if reason not in ("MISSING", "CONFLICT", "EXHAUSTED"):
                raise
            index, _, detail = rest.partition(" ")
            return AllocationFailure(reason, int(index or 0) - (1 if reason == "EXHAUSTED" else 0), detail)
        return [str(v) for v in values]

    async def lookup(self, netconfig_id: str, vm_ids: list[str]) -> list[str | None]:
        """The address ("slot:offset") each VM holds, or None."""
        if not vm_ids:
            return []
        values = await self.redis.hmget(self._nc(netconfig_id, "ports"), vm_ids)
        return [None if v is None else str(v) for v in values]

    async def release(
        self, netconfig_id: str, held: list[tuple[str, str]], block_sizes: dict[int, int] | None = None
    ) -> int:
        """Free the addresses (vm_id, value as read) still held as read, and the host blocks left empty
        (`block_sizes`: addresses per block by slot, for the subnets with blocks); returns how many."""
        if not held:
            return 0
        slots = sorted({int(value.partition(":")[0]) for _, value in held})
        index = {slot: i + 1 for i, slot in enumerate(slots)}
        keys = [self._nc(netconfig_id, "ports"), self._nc(netconfig_id, "allocated")]
        for slot in slots:
            keys += self._subnet_keys(netconfig_id, slot)
        sizes = block_sizes or {}
        args: list[str | int] = [len(slots), *(sizes.get(slot, 0) for slot in slots)]
        for vm_id, value in held:
            args += [vm_id, value, index[int(value.partition(":")[0])]]
        return int(await self._release(keys=keys, args=args))

    async def allocated(self, netconfig_id: str) -> dict[int, int]:
        """Addresses handed out per subnet slot."""
        counts = await self.redis.hgetall(self._nc(netconfig_id, "allocated"))
        return {int(slot): int(n) for slot, n in counts.items()}


# --- state <-> JSON ------------------------------------------------------------------------------


def state_to_json(state: NetworkState) -> str:
    """The JSON form of a NetworkState."""
    return json.dumps(asdict(state), separators=(",", ":"), sort_keys=True)


def state_from_json(raw: str) -> NetworkState:
    """A NetworkState from its JSON form."""
    data = json.loads(raw)
    return NetworkState(
        netconfig_id=data["netconfig_id"],
        plugin=data["plugin"],
        vpcs=tuple(
            VpcState(**{**vpc, "subnets": tuple(SubnetState(**s) for s in vpc["subnets"])})
            for vpc in data["vpcs"]
        ),
        security_groups=tuple(
            SecurityGroupState(
                **{
                    **sg,
                    "rules": tuple(RuleState(**r) for r in sg["rules"]),
                    "apply_to": tuple(sg["apply_to"]),
                }
            )
            for sg in data["security_groups"]
        ),
        routers=tuple(RouterState(**{**r, "subnet_ids": tuple(r["subnet_ids"])}) for r in data["routers"]),
        nodes=tuple(Node(**n) for n in data["nodes"]),
        alcor=AlcorEndpoints(**data["alcor"]) if data.get("alcor") else None,
        ovn=OvnRemotes(**data["ovn"]) if data.get("ovn") else None,
    )
