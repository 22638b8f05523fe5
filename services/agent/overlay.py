"""The agent's overlay API: a VNI's flood list and the remote VMs its vhost's bridge and VXLAN know, or,
for a routed VPC, its remote vhosts and the prefixes routed to each."""

from __future__ import annotations

import time
from functools import partial

from merak.logs import get_logger
from merak.v1 import agent_pb2
from services.agent import convert
from services.agent.planes import Plane
from services.agent.vhost_planes import VhostPlanes
from services.agent.vhosts import Vhost

log = get_logger(__name__)


class OverlayOperations:
    """SetVpcPeers through each vhost's plane."""

    def __init__(self, planes: VhostPlanes) -> None:
        self._planes = planes

    async def set_vpc_peers(self, request: agent_pb2.SetVpcPeersRequest) -> agent_pb2.SetVpcPeersReply:
        """Set the VNI's flood list and push or withdraw remote VMs' entries; in routed form, converge the
        VNI's remote vhosts and routes."""
        vhost = self._planes.vhost(request.vhost)
        plane = self._planes.plane(vhost)
        vni = convert.vni("vni", request.vni)  # checked before anything changes, as every field
        if request.routed:
            return await self._set_routed(vhost, plane, vni, request)
        vteps = [convert.ipv4(f"vteps[{i}]", v) for i, v in enumerate(request.vteps)]
        added = [convert.neighbor(f"neighbors[{i}]", n) for i, n in enumerate(request.neighbors)]
        removed = [
            convert.neighbor(f"removed_neighbors[{i}]", n) for i, n in enumerate(request.removed_neighbors)
        ]
        run = self._planes.run
        # The overlay is programmed once every VM of the lab exists: the namespaces present now are
        # the lab the VMs' neighbour tables must hold.
        await self._planes.size_host(0, "vpc peers set")
        async with self._planes.lock(vhost):
            if not request.neighbors_only:
                await run(partial(plane.set_vni_peers, vni, vteps))
            if removed:
                await run(partial(plane.remove_neighbors, vni, removed))
            if added:
                await run(partial(plane.push_neighbors, vni, added))
        log.info("vpc_peers_set", vhost=vhost.name, vni=vni, vteps=len(vteps), neighbors=len(added))
        return agent_pb2.SetVpcPeersReply(vteps=len(vteps), neighbors=len(added))

    async def _set_routed(
        self, vhost: Vhost, plane: Plane, vni: int, request: agent_pb2.SetVpcPeersRequest
    ) -> agent_pb2.SetVpcPeersReply:
        """SetVpcPeers in routed form: `peers` and `local_prefixes` are the VNI's whole state."""
        peers = convert.routed_peers("peers", request.peers)
        local = [convert.prefix(f"local_prefixes[{i}]", p) for i, p in enumerate(request.local_prefixes)]
        started = time.perf_counter()
        async with self._planes.lock(vhost):
            state = await self._planes.run(partial(plane.set_routed_peers, vni, peers, local))
        log.info(
            "routed_peers_set",
            vhost=vhost.name,
            vni=vni,
            peers=state.peers,
            routes=state.routes,
            local_routes=state.local_routes,
            seconds=round(time.perf_counter() - started, 3),
        )
        return agent_pb2.SetVpcPeersReply(
            vteps=state.peers, routes=state.routes, local_routes=state.local_routes
        )
