"""The overlay index of a compute config: VNI -> host -> [(ip, mac)] of its DONE VMs, what an operation
took out of it, and what it held when the operation began."""

from __future__ import annotations

import json

from services.compute.store.keys import ConfigStore

Members = dict[str, list[list[str]]]  # host -> [(ip, mac)] of one VNI


class OverlayIndex(ConfigStore):
    """What each vhost of a VNI must learn about the others (the overlay programming reads it)."""

    async def reset(self, config_id: str) -> dict[int, Members]:
        """Forget the overlay index (it is rebuilt from the DONE VMs); returns what it held when this
        operation first asked (kept until the operation ends: a retried rebuild still knows it)."""
        key = self.config_key(config_id, "overlay:before")
        current = await self.members(config_id)
        snapshot = json.dumps({str(vni): hosts for vni, hosts in current.items()})
        await self.redis.set(key, snapshot, nx=True)
        raw = await self.redis.get(key)
        before = {int(vni): hosts for vni, hosts in json.loads(raw or "{}").items()}
        keys = [self.config_key(config_id, "vni", str(vni)) for vni in current]
        keys += [self.config_key(config_id, part) for part in ("vnis", "withdrawn")]
        await self.redis.delete(*keys)
        return before

    async def put_withdrawn(self, config_id: str, withdrawn: dict[int, Members]) -> None:
        """VNI → host → [(ip, mac)] of VMs that left the overlay: their entries are taken back."""
        if withdrawn:
            await self.redis.set(
                self.config_key(config_id, "withdrawn"),
                json.dumps({str(vni): hosts for vni, hosts in withdrawn.items()}),
            )

    async def withdrawn(self, config_id: str) -> dict[int, Members]:
        """What put_withdrawn kept."""
        raw = await self.redis.get(self.config_key(config_id, "withdrawn"))
        if raw is None:
            return {}
        return {int(vni): hosts for vni, hosts in json.loads(raw).items()}

    async def put(self, config_id: str, vni: int, host: str, entries: list[list[str]]) -> None:
        """The VMs (ip, mac) a host has in a VNI, for the overlay programming."""
        await self.redis.hset(self.config_key(config_id, "vni", str(vni)), host, json.dumps(entries))
        await self.redis.sadd(self.config_key(config_id, "vnis"), str(vni))

    async def members(self, config_id: str) -> dict[int, Members]:
        """VNI → host → [(ip, mac)] of every DONE VM."""
        result: dict[int, Members] = {}
        for vni in await self.redis.smembers(self.config_key(config_id, "vnis")):
            result[int(vni)] = await self.members_of(config_id, int(vni))
        return result

    async def members_of(self, config_id: str, vni: int) -> Members:
        """Host → [(ip, mac)] of one VNI."""
        raw = await self.hash_of(self.config_key(config_id, "vni", str(vni)))
        return {host: json.loads(value) for host, value in raw.items()}
