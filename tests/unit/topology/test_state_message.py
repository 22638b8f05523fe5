"""INFO's message never says READY while a vhost is not: it names the vhosts that are not."""

from __future__ import annotations

from merak.v1 import common_pb2
from services.topology.backends import VhostRuntime
from services.topology.manager import state_message

READY = VhostRuntime(status=common_pb2.READY)
DOWN = VhostRuntime(status=common_pb2.ERROR, detail="agent crashed by a host fault")


def test_a_lab_whose_vhosts_are_all_ready_says_so() -> None:
    names = ["vhost-0", "vhost-1"]
    assert state_message("real", "READY", names, dict.fromkeys(names, READY)) == (
        "real topology READY; READY: 2"
    )


def test_a_vhost_in_error_is_named_and_ready_is_not_said() -> None:
    names = ["vhost-0", "vhost-1", "vhost-2"]
    runtime = {"vhost-0": READY, "vhost-1": DOWN}  # vhost-2: nothing known of it
    said = state_message("real", "READY", names, runtime)
    assert said == (
        "real topology built, 2 of 3 vhosts not ready (vhost-1 ERROR, vhost-2 NONE); "
        "ERROR: 1, Others: 1, ready: 1"
    )
    assert "READY" not in said


def test_many_vhosts_not_ready_show_the_first_few() -> None:
    names = [f"vhost-{i}" for i in range(8)]
    said = state_message("fake", "DEPLOYING", names, dict.fromkeys(names, DOWN))
    assert said.startswith(
        "fake topology DEPLOYING, 8 of 8 vhosts not ready (vhost-0 ERROR, vhost-1 ERROR, vhost-2 ERROR, "
        "vhost-3 ERROR, vhost-4 ERROR and 3 more); ERROR: 8"
    ), said
    assert "READY" not in said and "ready:" not in said
