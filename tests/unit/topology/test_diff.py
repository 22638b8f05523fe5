"""What an UPDATE of a topology changes: nodes by name, links by both ends; the rest stays."""

from __future__ import annotations

import pytest

from merak.errors import InvalidArgument
from services.topology.diff import check_update, diff
from tests.unit.topology.test_generator import build, config


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
