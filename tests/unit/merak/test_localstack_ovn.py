"""OVN central in the local stack: its three components (argv, environment, ports that follow the
offset), the network service told where it is, the stack without OVN, the health checks against a real
central, and the supervisor's restart of one whose files cannot be made."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from merak import ovs
from merak.procs import alive
from merak_tools.localstack import (
    OVN_COMPONENTS,
    SERVICES,
    Component,
    LocalStack,
    StackSettings,
    components,
    jsonrpc,
    ovn_central,
)
from merak_tools.localstack.components import ovsdb_serving, unixctl_answers
from merak_tools.ovncentral import RunningCentral
from merak_tools.supervise import Supervisor
from tests.support import stack_port_offset
from tests.support.ovn import skip_without_ovn


def _by_name(settings: StackSettings, *, ovn: bool | None = None) -> dict[str, Component]:
    return {c.name: c for c in components(settings, ovn=ovn)}


def test_ovn_components_run_in_the_foreground_on_sockets_and_loopback(tmp_path: Path) -> None:
    skip_without_ovn()
    settings = StackSettings(state_dir=tmp_path, port_offset=3000)
    names = [c.name for c in components(settings, ovn=True)]
    # After Redis and Temporal, before every service: the network service's ovn plugin needs them.
    assert names[:5] == ["redis", "temporal", *OVN_COMPONENTS]
    assert names[5 : 5 + len(SERVICES)] == list(SERVICES)
    parts = _by_name(settings, ovn=True)
    root = tmp_path / "ovn"
    assert ovn_central(settings).root == root
    nb, sb, northd = (parts[name] for name in OVN_COMPONENTS)
    assert nb.ports == {"tcp": 9641} and sb.ports == {"tcp": 9642} and northd.ports == {}
    assert f"--remote=punix:{root}/ovnnb_db.sock" in nb.argv
    assert "--remote=ptcp:9641:127.0.0.1" in nb.argv
    assert "--remote=ptcp:9642:127.0.0.1" in sb.argv
    assert f"--ovnnb-db=unix:{root}/ovnnb_db.sock" in northd.argv
    assert f"--ovnsb-db=unix:{root}/ovnsb_db.sock" in northd.argv
    for part in (nb, sb, northd):
        assert "--detach" not in part.argv  # a child of the stack: SIGTERM ends it, no pid file of its own
        assert part.env["OVS_RUNDIR"] == part.env["OVN_RUNDIR"] == str(root)
        assert part.marker and part.marker in " ".join(part.argv)  # how its pid file is trusted
        assert part.marker.startswith(str(root))  # another stack's central is not ours
    # The network service's ovn plugin gets the central's unix remotes (valid OVSDB remotes).
    network = parts["network"].env
    assert network["MERAK_OVN_NB"] == f"unix:{root}/ovnnb_db.sock"
    assert ovs.check_remote("MERAK_OVN_NB", network["MERAK_OVN_NB"])
    assert network["MERAK_OVN_SB"] == f"unix:{root}/ovnsb_db.sock"
    assert not any(k.startswith("MERAK_OVN") for name in ("topology", "compute") for k in parts[name].env)

    # The databases are made before the first start, and kept: a second prepare leaves them.
    assert nb.prepare is not None
    nb.prepare()
    made = {kind: ovs.Central(root).db(kind).stat().st_mtime_ns for kind in ("nb", "sb")}
    nb.prepare()
    assert {kind: ovs.Central(root).db(kind).stat().st_mtime_ns for kind in ("nb", "sb")} == made

    # The ports shift with the offset like every other port of the stack.
    plain = _by_name(StackSettings(state_dir=tmp_path, port_offset=0), ovn=True)
    assert plain["ovn-nb"].ports == {"tcp": ovs.NB_PORT} and plain["ovn-sb"].ports == {"tcp": ovs.SB_PORT}


def test_a_relative_state_directory_still_gives_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    skip_without_ovn()
    monkeypatch.chdir(tmp_path)
    parts = _by_name(StackSettings(state_dir=Path("state")), ovn=True)
    # The processes run in the state directory: a relative path there would point elsewhere.
    assert f"--remote=punix:{tmp_path}/state/ovn/ovnnb_db.sock" in parts["ovn-nb"].argv
    assert parts["network"].env["MERAK_OVN_SB"] == f"unix:{tmp_path}/state/ovn/ovnsb_db.sock"


def test_without_ovn_the_stack_runs_the_rest_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ovs, "missing", lambda: ["ovn-northd (ovn-central)"])
    stack = LocalStack(StackSettings(state_dir=tmp_path), out=lambda _line: None)
    assert "OVN is not installed (missing ovn-northd (ovn-central)" in stack.ovn_off
    names = [c.name for c in stack.components]
    assert not set(OVN_COMPONENTS) & set(names) and "network" in names
    network = next(c for c in stack.components if c.name == "network")
    assert "MERAK_OVN_NB" not in network.env and "MERAK_OVN_SB" not in network.env


def test_a_state_directory_that_cannot_be_an_ovsdb_remote_turns_ovn_off(tmp_path: Path) -> None:
    skip_without_ovn()
    # The network service refuses such a remote at start-up: the stack leaves OVN out instead.
    stack = LocalStack(StackSettings(state_dir=tmp_path / "my state"), out=lambda _line: None)
    assert stack.ovn_off.startswith("the state directory cannot hold OVN's sockets")
    assert not {c.name for c in stack.components} & set(OVN_COMPONENTS)


@pytest.fixture
def long_central() -> Iterator[RunningCentral]:
    """A real central whose sockets' paths are longer than a unix socket address holds."""
    skip_without_ovn()
    base = Path(tempfile.mkdtemp(prefix=f"mk-ovn-long-{'x' * 80}-", dir="/tmp"))
    running = RunningCentral(base / "central")
    try:
        running.start()
        yield running
    finally:
        running.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_health_asks_the_real_servers_even_at_a_long_path(long_central: RunningCentral) -> None:
    central = long_central.central
    assert len(str(central.socket("nb"))) > 107
    assert ovsdb_serving(central.socket("nb"), "OVN_Northbound")
    assert ovsdb_serving(central.socket("sb"), "OVN_Southbound")
    assert not ovsdb_serving(central.socket("nb"), "OVN_Southbound")
    control = central.root / "ovn-northd.ctl"
    assert unixctl_answers(control, "status")
    assert str(jsonrpc(control, "status")).startswith("Status: ")
    assert not unixctl_answers(control, "no-such-command")
    assert not ovsdb_serving(central.root / "absent.sock", "OVN_Northbound")


def test_a_server_that_never_answers_is_unhealthy_within_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()
        accepted: list[socket.socket] = []
        thread = threading.Thread(target=lambda: accepted.append(server.accept()[0]))
        thread.start()
        assert not ovsdb_serving(path, "OVN_Northbound")  # accepted, never answered: 1 s timeout
        thread.join()
        accepted[0].close()
    with socket.socket(socket.AF_UNIX) as server:
        path.unlink()
        server.bind(str(path))
        server.listen()

        def answer_in_two_parts() -> None:
            conn = server.accept()[0]
            with conn:
                conn.recv(4096)
                reply = json.dumps({"id": 0, "result": ["OVN_Northbound"], "error": None}).encode()
                conn.sendall(reply[:10])
                conn.sendall(reply[10:])

        thread = threading.Thread(target=answer_in_two_parts)
        thread.start()
        assert ovsdb_serving(path, "OVN_Northbound")
        thread.join()


def test_a_restart_that_cannot_prepare_is_tried_again_later(tmp_path: Path) -> None:
    skip_without_ovn()
    settings = StackSettings(state_dir=tmp_path, port_offset=stack_port_offset(14000))
    for directory in (settings.run_dir, settings.log_dir):
        directory.mkdir()
    stack = LocalStack(settings, out=lambda _line: None)
    nb = next(c for c in stack.components if c.name == "ovn-nb")
    stack.pid_file(nb).write_text("999999999\n")  # meant to run (a pid file), not running: it died
    settings.ovn_dir.write_text("a file where the central's directory goes\n")
    supervisor = Supervisor(stack)
    try:
        assert supervisor.check(now=0.0) == []  # seen dead: due in 1 s
        assert supervisor.check(now=1.5) == []  # the restart fails (no directory): logged, not raised
        assert supervisor.wait["ovn-nb"] == 2.0 and stack.running_pid(nb) is None
        settings.ovn_dir.unlink()
        assert supervisor.check(now=2.0) == []  # due again, after the longer wait
        assert supervisor.check(now=4.5) == ["ovn-nb"]
        deadline = time.monotonic() + 10
        while not nb.health():
            assert time.monotonic() < deadline, "ovn-nb did not answer after its restart"
            time.sleep(0.05)
        assert stack.running_pid(nb) is not None
    finally:
        assert stack.down(keep_labs=True) in ([], ["ovn-nb"])


def test_down_stops_a_frozen_component_without_waiting_for_the_kill(tmp_path: Path) -> None:
    skip_without_ovn()
    settings = StackSettings(state_dir=tmp_path, port_offset=stack_port_offset(14000))
    for directory in (settings.run_dir, settings.log_dir):
        directory.mkdir()
    stack = LocalStack(settings, out=lambda _line: None)
    sb = next(c for c in stack.components if c.name == "ovn-sb")
    stack.start_component(sb)
    try:
        deadline = time.monotonic() + 10
        while not sb.health():
            assert time.monotonic() < deadline, "ovn-sb did not answer"
            time.sleep(0.05)
        pid = stack.running_pid(sb)
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # as a process fault freezes it
        assert not sb.health()
    finally:
        started = time.monotonic()
        assert stack.down(keep_labs=True) == ["ovn-sb"]
    assert time.monotonic() - started < 5  # SIGTERM acted on, not the SIGKILL after 20 s
    assert not alive(pid) and not ovs.Central(settings.ovn_dir).socket("sb").exists()
