"""The plane registry: known kinds, an unknown name listing them, and a fake plane free of the kernel code."""

from __future__ import annotations

import subprocess
import sys

import pytest

from merak.errors import InvalidArgument
from services.agent.planes import known_planes
from services.agent.planes.fake import FakeDataplane
from services.agent.vhosts import VhostSet


def test_an_unknown_plane_names_the_known_ones() -> None:
    with pytest.raises(InvalidArgument, match=r"^dataplane: unknown dataplane 'virtual'; known: fake, real$"):
        known_planes().get("virtual")


def test_only_the_real_plane_touches_the_kernel() -> None:
    planes = known_planes()
    assert (planes.get("fake").touches_kernel, planes.get("real").touches_kernel) == (False, True)


def test_the_fake_kind_builds_an_empty_fake_plane() -> None:
    vhost = VhostSet.standalone().get("")
    plane = known_planes().get("fake").build(vhost)
    assert isinstance(plane, FakeDataplane) and plane.list_vms() == []


@pytest.mark.parametrize("module", ["services.agent.planes.fake", "services.agent.server"])
def test_a_fake_agent_loads_no_netlink_code(module: str) -> None:
    # A fresh interpreter: this one has pyroute2 loaded by the other tests.
    probe = (
        f"import sys, {module}; "
        "print(sorted(m for m in ('pyroute2', 'services.agent.kernel', 'services.agent.planes.real') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
