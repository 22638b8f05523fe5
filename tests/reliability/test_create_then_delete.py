"""A DELETE right after a CREATE of a real topology leaves nothing: the kernel build in its thread
stops and ends before the namespaces are removed (21 of 30 such topologies used to leak 95)."""

from __future__ import annotations

import pytest

from merak import netns
from merak.naming import topology_short_id
from merak.v1 import topology_pb2
from services.topology.backends.local import ns_prefix
from tests.stack import ServiceStack
from tests.support import unique_name

pytestmark = [pytest.mark.root, pytest.mark.slow]


async def test_create_then_delete_at_once_leaves_no_namespace(services: ServiceStack) -> None:
    topology = await services.topology()
    leaked: dict[str, list[str]] = {}
    for i in range(12):
        config = topology_pb2.InternalTopologyConfiguration(
            topology_id=unique_name("cd-"),
            topology_type=topology_pb2.TREE,
            number_of_vhosts=20 + i,  # a different moment of the build each time
            vhost_per_rack=5,
            ports_per_vswitch=5,
            data_plane_cidr="10.221.0.0/24",
        )
        await topology.create(config)
        await topology.delete(config.topology_id)
        left = netns.list_names(ns_prefix(topology_short_id(config.topology_id)))
        if left:
            leaked[config.topology_id] = left
    assert leaked == {}
