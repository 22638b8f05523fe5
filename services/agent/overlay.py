"""The agent's overlay API: a VNI's flood list and the remote VMs its vhost's bridge and VXLAN know."""

from __future__ import annotations

from functools import partial

from merak.logs import get_logger
from merak.v1 import agent_pb2
from services.agent import convert
from services.agent.vhost_planes import VhostPlanes

log = get_logger(__name__)


class OverlayOperations:
    """SetVpcPeers through each vhost's plane."""

    def __init__(self, planes: VhostPlanes) -> None:
        self._planes = planes

    async def set_vpc_peers(self, request: agent_pb2.SetVpcPeersRequest) -> agent_pb2.SetVpcPeersReply:
        """Set the VNI's flood list and push or withdraw remote VMs' entries."""
        vhost = self._planes.vhost(request.vhost)
        plane = self._planes.plane(vhost)
        vni = convert.vni("vni", request.vni)  # checked before anything changes, as every field
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
