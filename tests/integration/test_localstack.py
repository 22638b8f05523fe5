"""`merak up / status / down` on this machine, on ports of its own beside any running stack (OVN central
included where OVN is installed)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from merak import netns, ovs
from merak.procs import alive
from merak.v1 import common_pb2, topology_pb2, topology_pb2_grpc
from merak_tools.localstack import (
    OVN_COMPONENTS,
    SERVICES,
    LocalStack,
    StackError,
    StackSettings,
    code_fingerprint,
    ovn_central,
    port_in_use,
    quiet_port,
)
from services.topology.models import TopologySpec
from tests.support import stack_port_offset, unique_name
from tests.support.ovn import skip_without_ovn

pytestmark = pytest.mark.slow


@pytest.fixture
def settings() -> Iterator[StackSettings]:
    # An offset far from the defaults, from other test runs and from the e2e stack (12000-13990) keeps
    # this stack to itself; a short state directory keeps agent socket paths under the 108-byte limit.
    offset = stack_port_offset(10000)
    state = Path(tempfile.mkdtemp(prefix="mks", dir="/tmp"))
    yield StackSettings(
        state_dir=state,
        port_offset=offset,
        redis_port=quiet_port(),
        temporal_port=quiet_port(),
        temporal_ui_port=quiet_port(),
        compute_workers=2,  # more than one worker process, each with its own metrics port
    )
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def stack(settings: StackSettings) -> Iterator[LocalStack]:
    stack = LocalStack(settings, out=lambda _line: None)
    try:
        yield stack
    finally:
        stack.down()


def _reflected(address: str) -> set[str]:
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        return {s.name for reply in replies for s in reply.list_services_response.service}


def _ctl(program: str, remote: str, *args: str) -> str:
    """`ovn-nbctl` / `ovn-sbctl` against `remote`, from outside the product."""
    done = subprocess.run(
        [ovs.program(program), f"--db={remote}", "--timeout=10", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


def _check_ovn_central(settings: StackSettings, pids: dict[str, int | None]) -> None:
    """The stack's OVN central answers on its unix sockets and on loopback TCP, northd turns NB into SB,
    no chassis yet, and the network service was told where it is."""
    central = ovn_central(settings)
    nb, sb = central.remote("nb"), central.remote("sb")
    assert _ctl("ovn-nbctl", nb, "show") == ""  # a new, empty NB
    assert _ctl("ovn-sbctl", sb, "--bare", "--columns=name", "list", "Chassis").strip() == ""
    nb_tcp, sb_tcp = (f"tcp:127.0.0.1:{settings.ovn_port(kind)}" for kind in ("nb", "sb"))
    _ctl("ovn-nbctl", nb_tcp, "ls-add", "stack-sw")
    deadline = time.monotonic() + 20
    while "stack-sw" not in _ctl("ovn-sbctl", sb, "--columns=external_ids", "list", "Datapath_Binding"):
        assert time.monotonic() < deadline, "northd did not turn the NB switch into an SB datapath"
        time.sleep(0.1)
    assert "stack-sw" in _ctl("ovn-sbctl", sb_tcp, "--columns=external_ids", "list", "Datapath_Binding")
    status = subprocess.run(
        [ovs.program("ovs-appctl"), "-t", str(central.root / "ovn-northd.ctl"), "status"],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout  # fmt: skip
    assert status.strip() == "Status: active"
    environ = Path(f"/proc/{pids['network']}/environ").read_bytes().split(b"\0")
    assert f"MERAK_OVN_NB={nb}".encode() in environ and f"MERAK_OVN_SB={sb}".encode() in environ


def _ovn_processes(settings: StackSettings) -> list[str]:
    """Live processes whose command line names the stack's OVN directory (a zombie's is empty)."""
    pgrep = ["pgrep", "-af", str(settings.ovn_dir)]
    return subprocess.run(pgrep, capture_output=True, text=True, check=False).stdout.splitlines()


def _check_redis_password(settings: StackSettings, pids: dict[str, int | None]) -> None:
    """The stack's Redis asks for the password kept in the state directory (mode 0600), which no process
    shows on its command line; the services, which started and answer, were given it in their environment."""
    password = settings.redis_password
    assert len(password) == 64
    for secret in (settings.redis_password_file, settings.state_dir / "redis" / "redis.conf"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    with socket.create_connection(("127.0.0.1", settings.redis_port), timeout=5) as anonymous:
        anonymous.sendall(b"SET merak:intruder 1\r\n")
        assert anonymous.recv(256).startswith(b"-NOAUTH Authentication required")
    wrong = redis.Redis(host="127.0.0.1", port=settings.redis_port, password="guess")
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()
    wrong.close()
    with redis.Redis.from_url(settings.redis_url) as client:
        assert client.ping() and client.exists("merak:intruder") == 0
    for pid in pids.values():
        assert password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    environ = Path(f"/proc/{pids['scenario']}/environ").read_bytes().split(b"\0")
    assert f"MERAK_REDIS_URL={settings.redis_url}".encode() in environ


def test_up_twice_status_down(stack: LocalStack, settings: StackSettings) -> None:
    ovn = [] if stack.ovn_off else list(OVN_COMPONENTS)
    states = stack.up()
    assert [s.component.name for s in states] == [
        "redis", "temporal", *ovn, *SERVICES, *settings.worker_names, "supervisor"
    ]  # fmt: skip
    assert all(s.healthy for s in states), [(s.component.name, s.running) for s in states]
    pids = {s.component.name: s.pid for s in states}
    for name in SERVICES:
        names = _reflected(f"127.0.0.1:{settings.grpc_port(name)}")
        assert "grpc.health.v1.Health" in names
        assert "grpc.reflection.v1alpha.ServerReflection" in names
        assert any(n.endswith(f"{name}.Merak{name.capitalize()}Service") for n in names), names
    assert (settings.state_dir / "redis" / "appendonlydir").exists()  # AOF on, in the state directory
    assert (settings.state_dir / "temporal" / "temporal.db").exists()
    _check_redis_password(settings, pids)
    if ovn:
        _check_ovn_central(settings, pids)

    again = stack.up()  # harmless: nothing restarted
    assert {s.component.name: s.pid for s in again} == pids

    # The code changed under the running stack: its services start again; Redis and Temporal stay.
    stack.code_file.write_text("other code\n")
    restarted = {s.component.name: s.pid for s in stack.up()}
    python = [*SERVICES, *settings.worker_names, "supervisor"]
    assert all(restarted[name] not in (None, pids[name]) for name in python), (pids, restarted)
    assert all(restarted[name] == pids[name] for name in ("redis", "temporal", *ovn))
    assert stack.code_file.read_text().strip() == code_fingerprint()
    pids = restarted

    # A component that dies is started again by the supervisor (a worker, Redis itself, OVN central's).
    for name in ("compute-worker", "redis", *ovn):
        victim = next(c for c in stack.components if c.name == name)
        os.kill(pids[name] or 0, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (stack.running_pid(victim) in (None, pids[name])) or not victim.health():
            assert time.monotonic() < deadline, f"{name} not restarted"
            time.sleep(0.1)
        pids[name] = stack.running_pid(victim)
    if ovn:  # the NB database outlived its server
        assert "stack-sw" in _ctl("ovn-nbctl", ovn_central(settings).remote("nb"), "ls-list")

    # A running lab is torn down by `down`: no agent and no namespace outlives the stack.
    topology_id = unique_name("stack-")
    with grpc.insecure_channel(f"127.0.0.1:{settings.grpc_port('topology')}") as channel:
        stub = topology_pb2_grpc.MerakTopologyServiceStub(channel)
        config = topology_pb2.InternalTopologyConfiguration(
            topology_id=topology_id, topology_type=topology_pb2.TREE, number_of_vhosts=2,
            vhost_per_rack=2, ports_per_vswitch=2, data_plane_cidr="10.203.0.0/24",
        )  # fmt: skip
        stub.TopologyHandler(
            topology_pb2.InternalTopologyInfo(operation_type=common_pb2.CREATE, config=config)
        )
        listed = stub.ListTopologies(topology_pb2.ListTopologiesRequest()).topologies
        assert [t.topology_id for t in listed] == [topology_id]
        info = topology_pb2.InternalTopologyInfo(operation_type=common_pb2.INFO, config=config)
        deadline = time.monotonic() + 60
        while not all(n.status == common_pb2.READY for n in stub.TopologyHandler(info).compute_nodes):
            assert time.monotonic() < deadline, "lab not READY"
            time.sleep(0.1)
    # Safe by default: every socket the stack and its lab's agents listen on is on loopback.
    lab_agents = subprocess.run(
        ["pgrep", "-f", f"services.agent .*{settings.state_dir}"], capture_output=True, text=True, check=False
    ).stdout.split()
    ours = {str(pid) for pid in pids.values() if pid} | set(lab_agents)
    assert len(lab_agents) == 2
    listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    exposed = [
        line.split()[3]
        for line in listening.splitlines()
        if any(f"pid={pid}," in line for pid in ours)
        and not line.split()[3].startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:"))
    ]
    assert exposed == []
    assert any(f"pid={pid}," in line for pid in lab_agents for line in listening.splitlines())  # metrics
    for name in ovn[:2]:  # OVN's databases on loopback TCP too
        port = next(c for c in stack.components if c.name == name).ports["tcp"]
        assert any(
            line.split()[3] == f"127.0.0.1:{port}" and f"pid={pids[name]}," in line
            for line in listening.splitlines()
        ), listening
    short = TopologySpec(topology_id=topology_id, name="", type=0, number_of_vhosts=1).short_id
    assert netns.list_names(f"mk-{short}-")
    assert stack.teardown_labs() == [topology_id]
    assert netns.list_names(f"mk-{short}-") == []
    agents = subprocess.run(["pgrep", "-f", "services.agent"], capture_output=True, text=True, check=False)
    assert str(settings.state_dir) not in agents.stdout

    stopped = stack.down()
    assert sorted(stopped) == sorted(
        ["redis", "temporal", *ovn, *SERVICES, *settings.worker_names, "supervisor"]
    )
    assert not any(alive(pid) for pid in pids.values() if pid)
    assert not any(s.running for s in stack.status())
    assert stack.down() == []
    if ovn:
        # Nothing of OVN central is left running or listening; its databases stay for the next `up`.
        central = ovn_central(settings)
        assert _ovn_processes(settings) == []
        assert not any(port_in_use(settings.ovn_port(kind)) for kind in ("nb", "sb"))
        assert not central.socket("nb").exists() and not central.socket("sb").exists()
        assert central.db("nb").exists() and central.db("sb").exists()
        nb = next(c for c in stack.components if c.name == "ovn-nb")
        stack.start_component(nb)
        deadline = time.monotonic() + 20
        while not nb.health():
            assert time.monotonic() < deadline, "ovn-nb did not start again"
            time.sleep(0.1)
        assert "stack-sw" in _ctl("ovn-nbctl", central.remote("nb"), "ls-list")
        assert stack.down() == ["ovn-nb"]
        assert _ovn_processes(settings) == []


def test_a_redis_without_a_password_is_started_again_with_one(
    stack: LocalStack, settings: StackSettings
) -> None:
    """A Redis an earlier Merak started (no password) is restarted by `up` with one; its data stays."""
    data = settings.state_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)  # the stack made its password there already
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    earlier = subprocess.Popen(
        [binary, "--port", str(settings.redis_port), "--bind", "127.0.0.1", "--dir", str(data),
         "--appendonly", "yes", "--save", ""],
        stdout=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    redis_component = next(c for c in stack.components if c.name == "redis")
    stack.pid_file(redis_component).write_text(f"{earlier.pid}\n")
    try:
        with redis.Redis(host="127.0.0.1", port=settings.redis_port) as open_redis:
            deadline = time.monotonic() + 20
            while True:
                try:
                    open_redis.set("merak:kept", "1")
                    break
                except redis.ConnectionError:
                    assert time.monotonic() < deadline, "the password-less redis-server did not start"
                    time.sleep(0.05)
        states = {s.component.name: s for s in stack.up()}
        assert earlier.wait(timeout=30) == 0  # stopped by SIGTERM (a clean exit)
        assert states["redis"].healthy and states["redis"].pid != earlier.pid
        with redis.Redis.from_url(settings.redis_url, decode_responses=True) as client:
            assert client.get("merak:kept") == "1"
    finally:
        if earlier.poll() is None:
            earlier.kill()
            earlier.wait()


def test_port_taken_says_which_and_starts_nothing(stack: LocalStack, settings: StackSettings) -> None:
    with socket.socket() as squatter:
        squatter.bind(("0.0.0.0", settings.grpc_port("network")))
        squatter.listen()
        with pytest.raises(StackError, match=rf"port {settings.grpc_port('network')} \(network grpc\)"):
            stack.up()
    assert not any(s.running for s in stack.status())
    assert not list((settings.state_dir / "run").glob("*.pid"))


def test_ovn_port_taken_says_which_and_starts_nothing(stack: LocalStack, settings: StackSettings) -> None:
    skip_without_ovn()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", settings.ovn_port("sb")))
        squatter.listen()
        with pytest.raises(StackError, match=rf"port {settings.ovn_port('sb')} \(ovn-sb tcp\)"):
            stack.up()
    assert not any(s.running for s in stack.status())
    assert not list((settings.state_dir / "run").glob("*.pid"))
    assert _ovn_processes(settings) == []


def test_a_port_left_in_time_wait_by_a_client_is_not_taken() -> None:
    # The stack's ports lie in the kernel's ephemeral range: a finished client connection that used
    # one as its source port sits in TIME-WAIT, a trial bind fails, yet a server can listen there.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.socket() as client:
            client.connect(server.getsockname())
            source_port = client.getsockname()[1]
            accepted, _ = server.accept()
            client.close()  # the side that closes first keeps the TIME-WAIT
            accepted.close()
    assert not port_in_use(source_port)
    # A live client connection's source port is held: a server's bind there fails (CI saw the
    # topology service fail to start so).
    with socket.socket() as server, socket.socket() as client:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client.connect(server.getsockname())
        assert port_in_use(client.getsockname()[1])
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert port_in_use(listener.getsockname()[1])
