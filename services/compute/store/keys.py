"""Where compute's state lives in Redis: the key layout, and the base every part of the store shares."""

from __future__ import annotations

import redis.asyncio as aioredis

from merak.store import RedisStore

PREFIX = "merak:compute"

# merak:compute:ids                  set of the config ids with an inventory
# merak:compute:cfg:<id>:…           one compute config:
#   config                 the stored request (JSON), written last: the inventory exists once it is there
#   request_fingerprint    the fingerprint of the request as it came (before the network filled it in)
#   meta                   hash: the operation (records.Meta)
#   hosts                  hash: host -> records.HostRecord (its `pending` counts: VMs not written yet)
#   placement              hash: "s:<vpc index>:<subnet index>" -> inventory.SubnetRef (JSON), "sgs" -> the
#                          security groups: what a shard needs to write the VMs CREATE only counted
#   shard:<n>              list of the shard's hosts
#   order:<host>           list of the host's VM names: batches are ranges of it
#   drop:<host>            list of the VM names an UPDATE removed (to be deleted)
#   vms:<host>             hash: VM name -> records.VmRecord as stored (VmRecord.stored: the VM's own fields
#                          and the name of its template)
#   templates              hash: template name -> what the VMs of a subnet share (records.SHARED), named
#                          by its content
#   counts, hostcounts     hash: VMs per status, of the config and per "host|status"
#   open, unsettled        hash: VMs not DONE per host; sorted set of the hosts where that is above 0
#   errors                 list: the first VM errors
#   churn, churn:age, churn:plan:<tick>   a churn's clock, who goes next, a tick's plan
#   population, born       samples: VMs alive at each churn tick, when churn newborns became ready
#   calls, ready           samples: the control plane's calls, when the operation's VMs became ready
#   vnis, vni:<vni>        the overlay index: VNI -> host -> [(ip, mac)]
#   withdrawn              what left the overlay; overlay:before, what it held when the operation began


class ConfigStore(RedisStore):
    """A part of compute's store: every key of a compute config is under `merak:compute:cfg:<id>:`."""

    def __init__(self, redis: aioredis.Redis, prefix: str = PREFIX) -> None:
        super().__init__(redis, prefix)

    def config_key(self, config_id: str, *parts: str) -> str:
        """`merak:compute:cfg:<config_id>:<part>:…`."""
        return self.key("cfg", config_id, *parts)

    async def delete_config(self, config_id: str) -> int:
        """Forget a config entirely; returns how many keys went."""
        gone = await self.delete_under("cfg", config_id)
        await self.redis.srem(self.key("ids"), config_id)
        return gone
