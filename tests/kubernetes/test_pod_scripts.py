"""The vhost and switch pods' commands, run for real in network namespaces standing in for pods.

No cluster runs here, but what a pod's command does is kernel work: each test enters a fresh
namespace (as the container runtime would), starts the command, then plays meshnet's part by
adding the veth ends after the command started, and checks the result with real packets.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from merak import netns
from services.topology.backends.kubernetes.objects import (
    AGENT_PORT,
    SWITCH_SCRIPT,
    VHOST_SCRIPT,
    KubernetesOptions,
    build_objects,
)
from services.topology.models import vhost_mac
from tests.kubernetes.conftest import e2e_topology
from tests.support import assert_eventually, unique_name
from tests.support.plugin import MakeNetns

pytestmark = pytest.mark.root

OPTIONS = KubernetesOptions()
VENV_BIN = str(Path(sys.executable).parent)


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def in_pod(namespace: str, script: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Run a pod's command in `namespace`, as its container would (same network namespace, own process)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{namespace}", "sh", "-c", script],
            env={"PATH": f"{VENV_BIN}:{os.environ['PATH']}", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test started; stopped after it, pass or fail."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def grpc_healthy_from(namespace: str, address: str) -> bool:
    probe = (
        "import sys; from merak.grpcclient import health_serving_blocking as ok; "
        f"sys.exit(not ok({address!r}))"
    )
    done = subprocess.run(
        ["nsenter", f"--net=/run/netns/{namespace}", sys.executable, "-c", probe],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


async def test_the_vhost_pod_waits_for_its_nic_configures_it_and_serves_the_agent(
    make_netns: MakeNetns, processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    pod, rack = make_netns(), make_netns()
    topology = e2e_topology(unique_name("pod-"))
    (vhost,) = [
        p
        for p in build_objects(topology, OPTIONS, OPTIONS.default_images).pods
        if p["metadata"]["name"] == "vhost-0"
    ]
    env = {e["name"]: e["value"] for e in vhost["spec"]["containers"][0]["env"]}
    env["MERAK_VHOSTS_FILE"] = str(tmp_path / "vhosts.json")  # the container's /run/merak is this machine's
    env["MERAK_STATE_DIR"] = str(tmp_path)
    attached = env["MERAK_VHOST_NETNS"]
    try:
        proc = in_pod(pod, VHOST_SCRIPT, env, tmp_path / "vhost.log")
        processes.append(proc)
        await asyncio.sleep(0.5)
        assert proc.poll() is None, "the pod waits for meshnet's interface"
        assert not netns.exists(attached)

        # meshnet's part: the link to rack-1 appears after the container started.
        ip("link", "add", "vh0-eth1", "netns", pod, "type", "veth", "peer", "name", "r1-eth1", "netns", rack)
        ip("-n", rack, "addr", "add", "10.200.0.254/16", "dev", "r1-eth1")
        ip("-n", rack, "link", "set", "r1-eth1", "up")

        async def healthy() -> bool:
            assert proc.poll() is None, (tmp_path / "vhost.log").read_text()
            return await asyncio.to_thread(grpc_healthy_from, rack, f"10.200.0.1:{AGENT_PORT}")

        # The readiness probe's view: the agent's gRPC health on the pod IP, port 40054.
        probed: bool = await assert_eventually(
            healthy, timeout=30, interval=0.2, message="agent not healthy over the link"
        )
        assert probed
        (link,) = json.loads(ip("-n", pod, "-j", "addr", "show", "vh0-eth1"))
        assert link["address"] == vhost_mac(topology.spec.short_id, 0)
        ipv4 = {(a["local"], a["prefixlen"]) for a in link["addr_info"] if a["family"] == "inet"}
        assert ipv4 == {("10.200.0.1", 16)}
        assert "UP" in link["flags"]
        # The pod's own namespace got the name the agent's vhosts file gives it.
        assert netns.exists(attached)
        written = json.loads(await asyncio.to_thread(Path(env["MERAK_VHOSTS_FILE"]).read_text))
        assert written["vhosts"][0]["netns"] == attached
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, "the agent drains and exits on SIGTERM"
    finally:
        netns.remove(attached)


async def test_the_switch_pod_bridges_its_interfaces_as_they_appear(
    make_netns: MakeNetns, processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    switch, left, right = make_netns(), make_netns(), make_netns()
    marker = tmp_path / "bridged"
    env = {"MERAK_NICS": "r1-eth1 r1-eth2", "MERAK_BRIDGED_MARKER": str(marker)}
    proc = in_pod(switch, SWITCH_SCRIPT, env, tmp_path / "switch.log")
    processes.append(proc)
    ip("link", "add", "r1-eth1", "netns", switch, "type", "veth", "peer", "name", "eth0", "netns", left)
    await asyncio.sleep(0.5)
    assert not marker.exists(), "not ready while an interface is missing"
    ip("link", "add", "r1-eth2", "netns", switch, "type", "veth", "peer", "name", "eth0", "netns", right)
    await assert_eventually(marker.exists, timeout=10, message="switch never ready")
    ports = {link["ifname"] for link in json.loads(ip("-n", switch, "-j", "link", "show", "master", "br0"))}
    assert ports == {"r1-eth1", "r1-eth2"}

    for namespace, address in ((left, "10.9.0.1/24"), (right, "10.9.0.2/24")):
        ip("-n", namespace, "addr", "add", address, "dev", "eth0")
        ip("-n", namespace, "link", "set", "eth0", "up")

    def ping() -> bool:
        done = subprocess.run(
            ["ip", "netns", "exec", left, "ping", "-c", "1", "-W", "1", "10.9.0.2"],
            capture_output=True,
            check=False,
        )
        return done.returncode == 0

    async def pinged() -> bool:
        return await asyncio.to_thread(ping)

    # A fresh bridge port needs about a second before it forwards.
    crossed: bool = await assert_eventually(pinged, timeout=15, interval=0.2, message="no ping across")
    assert crossed
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0, "the switch pod stops at once on SIGTERM"
