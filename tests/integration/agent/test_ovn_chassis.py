"""Emulated hosts as real OVN chassis: the agent's Chassis in each vhost namespace against a real OVN
central started by the test; VMs plugged into br-int go `up` in NB, ping and carry TCP across chassis
(geneve), and stopping a chassis leaves no process and puts the host's address back."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from merak import netns
from merak.procs import alive
from merak_tools.ovncentral import RunningCentral
from services.agent.models import VmSpec
from services.agent.ovn.chassis import DAEMONS, Chassis, ChassisSpec, read_pid
from services.agent.planes.real.vms import OVN_VM_MTU
from services.agent.validation import host_ifname
from tests.integration.agent.test_real_plane import Vhost, lab

pytestmark = pytest.mark.root


def _wait_up(central: RunningCentral, port: str) -> None:
    central.nbctl("--timeout=30", "wait-until", "Logical_Switch_Port", port, "up=true")


@pytest.fixture
def chassis_dir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="mk-ch-", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _chassis(vhost: Vhost, root: Path, index: int) -> Chassis:
    return Chassis(
        ChassisSpec(
            system_id=f"{vhost.ns}-ch",
            netns=vhost.ns,
            root=root / str(index),
            encap_ip=vhost.ip,
            nic="ul0",
            prefix_len=24,
            dummy=False,
        )
    )


def test_two_real_chassis_bind_ports_and_carry_packets(
    ovn_central: RunningCentral, chassis_dir: Path
) -> None:
    nb = ovn_central
    nb.nbctl("ls-add", "sw0", "--", "ls-add", "sw1", "--", "lr-add", "r0")
    for k, (switch, net) in enumerate((("sw0", "10.7.0"), ("sw1", "10.7.1"))):
        mac = f"02:00:00:00:07:0{k}"
        nb.nbctl(
            "lrp-add", "r0", f"r0-{switch}", mac, f"{net}.1/24",
            "--", "lsp-add", switch, f"{switch}-r0",
            "--", "lsp-set-type", f"{switch}-r0", "router",
            "--", "lsp-set-addresses", f"{switch}-r0", "router",
            "--", "lsp-set-options", f"{switch}-r0", f"router-port=r0-{switch}",
        )  # fmt: skip
    vms = [
        ("v0", "sw0", "10.7.0.10", "02:aa:00:00:00:10"),
        ("v1", "sw0", "10.7.0.11", "02:aa:00:00:00:11"),
        ("v2", "sw1", "10.7.1.12", "02:aa:00:00:00:12"),
    ]
    for name, switch, ip, mac in vms:
        nb.nbctl(
            "lsp-add", switch, f"lsp-{name}",
            "--", "lsp-set-addresses", f"lsp-{name}", f"{mac} {ip}",
            "--", "lsp-set-port-security", f"lsp-{name}", f"{mac} {ip}",
        )  # fmt: skip
    with lab(2) as vhosts:
        chassis = [_chassis(v, chassis_dir, i) for i, v in enumerate(vhosts)]
        try:
            for ch in chassis:
                assert ch.ensure(nb.sb) is True
                assert ch.ensure(nb.sb) is False  # idempotent
            out = subprocess.run(
                ["ovn-sbctl", f"--db={nb.sb}", "--bare", "--columns=name", "list", "Chassis"],
                capture_output=True, text=True, check=True,
            ).stdout.split()  # fmt: skip
            assert sorted(out) == sorted(c.spec.system_id for c in chassis)
            placed = {"v0": 0, "v1": 1, "v2": 1}
            for name, _switch, ip, mac in vms:
                vhost = vhosts[placed[name]]
                gateway = ip.rsplit(".", 1)[0] + ".1"
                spec = VmSpec(name, "vpc-x", 0, ip, 24, mac, gateway, ovn_port=f"lsp-{name}")
                [result] = vhost.dp.create_vms([spec])
                assert result.ok, result
                chassis[placed[name]].add_ports([(host_ifname(name), f"lsp-{name}")])
            for name, *_ in vms:
                _wait_up(nb, f"lsp-{name}")
            assert chassis[1].ports() == {host_ifname("v1"): "lsp-v1", host_ifname("v2"): "lsp-v2"}
            src = vhosts[0].dp
            # Across chassis in one switch (geneve), and through the router to the other subnet; the
            # first packets of a new tunnel may be lost while OVS resolves the remote address.
            results = src.ping("v0", ["10.7.0.11", "10.7.1.12", "10.7.0.1"], timeout=1.0, retries=10)
            assert all(r.ok for r in results), results
            tcp_carries_data(vhosts[1].dp.vm_ns("v2"), "10.7.1.12", vhosts[0].dp.vm_ns("v0"))
            # A security group as the ovn plugin writes one (ml2/ovn's shape): v2 lets TCP in (stateful)
            # and nothing else, so ICMP to it drops in the datapath while TCP still flows.
            nb.nbctl(
                "pg-add", "pg_tcp_only", "lsp-v2",
                "--", "acl-add", "pg_tcp_only", "to-lport", "1002", "outport == @pg_tcp_only && ip4 && tcp",
                "allow-related",
                "--", "acl-add", "pg_tcp_only", "to-lport", "1001", "outport == @pg_tcp_only && ip", "drop",
            )  # fmt: skip
            nb.nbctl("--wait=hv", "sync")
            assert not any(r.ok for r in src.ping("v0", ["10.7.1.12"], timeout=1.0, retries=2))
            assert src.ping("v0", ["10.7.0.11"], timeout=1.0, retries=5)[0].ok  # others still answer
            tcp_carries_data(vhosts[1].dp.vm_ns("v2"), "10.7.1.12", vhosts[0].dp.vm_ns("v0"))
            info = subprocess.run(
                ["ip", "-n", vhosts[0].dp.vm_ns("v0"), "-o", "link", "show", "eth0"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            assert f"mtu {OVN_VM_MTU}" in info
            features = subprocess.run(
                ["ip", "netns", "exec", vhosts[0].dp.vm_ns("v0"), "ethtool", "-k", "eth0"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            assert "tx-checksumming: off" in features
            chassis[1].del_ports([host_ifname("v1")])
            nb.nbctl("--timeout=30", "wait-until", "Logical_Switch_Port", "lsp-v1", "up=false")
        finally:
            pids = [read_pid(ch.spec.pid_file(d), d) for ch in chassis for d in DAEMONS]
            for ch in chassis:
                ch.stop()
        assert not any(p is not None and alive(p) for p in pids)
        # Each ovn-controller removed its chassis from the southbound database as it exited.
        left = subprocess.run(
            ["ovn-sbctl", f"--db={nb.sb}", "--bare", "--columns=name", "list", "Chassis"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        assert left == []
        assert not any(ch.spec.root.exists() for ch in chassis)
        # The host's address is back on its NIC, br-phy is gone.
        addrs = subprocess.run(
            ["ip", "-n", vhosts[0].ns, "-o", "-4", "addr"], capture_output=True, text=True, check=True
        ).stdout
        assert "ul0" in addrs and vhosts[0].ip in addrs and "br-phy" not in addrs


def tcp_carries_data(server_ns: str, server_ip: str, client_ns: str, size: int = 1 << 20) -> None:
    """1 MiB over TCP from a VM on one chassis to a VM on another."""
    received = bytearray()
    with netns.entered(server_ns):
        listener = socket.socket()
    listener.bind((server_ip, 0))
    listener.listen(1)
    listener.settimeout(20)
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(20)
            while len(received) < size:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                received.extend(chunk)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            with netns.entered(client_ns):
                client = socket.socket()
            client.settimeout(5)
            try:
                client.connect((server_ip, port))
                break
            except OSError:
                client.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with client:
            client.settimeout(20)
            client.sendall(b"x" * size)
    finally:
        thread.join(timeout=30)
        listener.close()
    assert len(received) == size
