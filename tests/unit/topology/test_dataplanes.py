"""The data plane of a topology: chosen once by name, an unknown name refused with the known ones,
and what each plane makes a backend do (namespaces, agents' namespaces, impairments, agent packing)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from merak.errors import FailedPrecondition, InvalidArgument
from services.topology import dataplanes
from services.topology.dataplanes import FAKE, REAL
from services.topology.models import TopologySpec
from services.topology.names import ns_name


def spec(dataplane: str) -> TopologySpec:
    return TopologySpec(topology_id="lab-1", name="", type=0, number_of_vhosts=1, dataplane=dataplane)


def test_a_spec_carries_the_plane_its_name_picks() -> None:
    assert spec("real").plane is REAL
    assert spec("fake").plane is FAKE
    assert TopologySpec(topology_id="lab-1", name="", type=0, number_of_vhosts=1).plane is dataplanes.DEFAULT


def test_an_unknown_plane_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(InvalidArgument) as caught:
        spec("virtual")
    assert caught.value.field == "config.dataplane"
    assert "'virtual'" in caught.value.message and "known: fake, real" in caught.value.message
    assert dataplanes.names() == ["fake", "real"]


def test_a_changed_spec_picks_its_plane_again() -> None:
    assert replace(spec("real"), dataplane="fake").plane is FAKE
    assert replace(spec("real"), name="other") == replace(spec("real"), name="other")


def test_a_real_vhosts_agent_works_in_its_namespace_a_fake_ones_in_its_own() -> None:
    short = spec("real").short_id
    assert REAL.vhost_netns(short, "vhost-3") == ns_name(short, "vhost-3")
    assert FAKE.vhost_netns(short, "vhost-3") == ""


def test_only_a_plane_with_links_can_be_impaired() -> None:
    REAL.check_impairable()
    with pytest.raises(FailedPrecondition, match="a fake dataplane has no links to impair"):
        FAKE.check_impairable()


def test_what_each_plane_builds() -> None:
    assert (REAL.builds_namespaces, REAL.impairs_links, REAL.packs_agents) == (True, True, False)
    assert (FAKE.builds_namespaces, FAKE.impairs_links, FAKE.packs_agents) == (False, False, True)
