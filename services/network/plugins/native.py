"""The native plugin: our own small control plane (ids, a VNI per VPC, IPAM in this service)."""

from __future__ import annotations

from merak.errors import ResourceExhausted
from merak.naming import gateway_mac
from services.network.metrics import NetworkMetrics
from services.network.models import NetworkSpec, NetworkState
from services.network.plugins import DeleteProgress, NetworkPlugin
from services.network.plugins.grow import grow_state
from services.network.store import NetworkStore


class NativePlugin(NetworkPlugin):
    """VPCs get a VNI from the service-wide pool and the anycast gateway MAC the agents derive from it."""

    name = "native"
    allocates_ports = True

    def __init__(self, store: NetworkStore, metrics: NetworkMetrics, *, vni_min: int, vni_max: int) -> None:
        super().__init__(metrics)
        self.store = store
        self.vni_min = vni_min
        self.vni_max = vni_max

    async def apply(self, spec: NetworkSpec, current: NetworkState | None) -> NetworkState:
        """Ids for what is new, VNIs for new VPCs; existing objects stay as they are."""
        with self.timed("apply"):
            return await self._apply(spec, current)

    async def _apply(self, spec: NetworkSpec, current: NetworkState | None) -> NetworkState:
        more = len(spec.vpcs) - (len(current.vpcs) if current else 0)
        vnis = await self.store.allocate_vnis(more, spec.netconfig_id, self.vni_min, self.vni_max)
        if vnis is None:
            raise ResourceExhausted(
                f"no free VNI for {more} more VPCs "
                f"(the pool {self.vni_min}-{self.vni_max} is shared by every network config)"
            )
        new_vnis = iter(vnis)

        def new_vpc() -> tuple[int, str]:
            vni = next(new_vnis)
            return vni, gateway_mac(vni)

        return grow_state(spec, current, self.name, new_vpc)

    async def remove(
        self,
        state: NetworkState,
        keep: NetworkState | None = None,
        progress: DeleteProgress | None = None,
        *,
        best_effort: bool = False,
    ) -> None:
        """Give the VNIs of the VPCs beyond `keep` back to the pool (only those this config holds)."""
        kept = len(keep.vpcs) if keep else 0
        with self.timed("remove"):
            await self.store.release_vnis(state.netconfig_id, [vpc.vni for vpc in state.vpcs[kept:]])
