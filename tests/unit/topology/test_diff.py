"""What an UPDATE of a topology changes: nodes by name, links by both ends; the rest stays."""

from __future__ import annotations

import pytest

from merak.errors import InvalidArgument
from merak.v1 import topology_pb2
from services.topology.diff import check_update, check_vhosts, diff
from tests.unit.topology.test_generator import build, config, custom


def test_growing_a_tree_keeps_every_vhost_link_and_rewires_only_the_fabric_above() -> None:
    old = build(config(number_of_vhosts=5, number_of_racks=0, vhost_per_rack=3, ports_per_vswitch=2))
    new = build(config(number_of_vhosts=8, number_of_racks=0, vhost_per_rack=3, ports_per_vswitch=2))
    change = diff(old, new)
    assert sorted(n.name for n in change.added_nodes if not n.is_switch) == ["vhost-5", "vhost-6", "vhost-7"]
    assert not [n for n in change.removed_nodes if not n.is_switch]
    kept = {(link.a_node, link.b_node) for link in old.links} - {
        (lk.a_node, lk.b_node) for lk in change.removed_links
    }
    assert {(f"rack-{1 + j // 3}", f"vhost-{j}") for j in range(5)} - {("rack-2", "vhost-3")} <= kept
    assert change.summary().startswith("+3 vhosts")
    assert diff(new, new).empty and diff(new, new).summary() == "no change"
    shrink = diff(new, old)
    assert sorted(n.name for n in shrink.removed_nodes if not n.is_switch) == [
        "vhost-5",
        "vhost-6",
        "vhost-7",
    ]


def test_an_update_keeps_the_labs_identity_and_addresses() -> None:
    old = build(config()).spec
    with pytest.raises(InvalidArgument) as caught:
        check_update(old, build(config(data_plane_cidr="10.9.0.0/16")).spec)
    assert caught.value.field == "config.data_plane_cidr"
    check_update(old, build(config(number_of_vhosts=9)).spec)


def test_a_vhost_that_stays_keeps_its_position_and_its_nics() -> None:
    VHOST = topology_pb2.VHOST  # noqa: N806 - the proto's name
    nodes = [(f"h{i}", VHOST, [(f"h{i}-eth1", f"10.0.0.{i + 1}/24")]) for i in range(3)]
    old = build(custom(nodes, [("h0", "h1"), ("h1", "h2")]))
    check_vhosts(old, build(custom([*nodes, ("h3", VHOST, [("h3-eth1", "10.0.0.4/24")])], [("h0", "h1")])))
    with pytest.raises(InvalidArgument, match="would move from position 1 to 0"):
        check_vhosts(old, build(custom(nodes[1:], [("h1", "h2")])))  # h0 removed: the others shift
    moved = [nodes[0], ("h1", VHOST, [("h1-eth1", "10.0.0.9/24")]), nodes[2]]
    with pytest.raises(InvalidArgument, match="addresses would change"):
        check_vhosts(old, build(custom(moved, [("h0", "h1")])))
