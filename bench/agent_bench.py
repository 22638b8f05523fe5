"""VM creation in one vhost through the agent, beside a reference `ip -batch` script in the same run.

Ours: an agent process (as the topology service starts it, inside the vhost's namespace) answering
CreateVms over gRPC: per VM a namespace, a veth pair (host end on the VPC bridge), MAC, address,
lo up, default route; the VPC namespace with its bridge and VXLAN device once.
Reference: the same namespaces, veth pairs, bridge ports, MACs, addresses and routes made by
iproute2: one `ip -batch` in the root namespace (namespaces, veth pairs born in place), one
`ip -n <vpc> -batch` (bridge ports), and one `ip -n <vm> -batch` per VM (iproute2 batches take
no per-line namespace). Prints both rates and their ratio (target: ours ≥ 2.0 times the reference, issue #31).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from pyroute2 import IPRoute

from bench.results import Outcome, expected
from merak import netns, vhostsfile
from merak.grpcclient import health_serving
from merak.naming import gateway_mac
from merak.v1 import agent_pb2, agent_pb2_grpc

UNDERLAY_IP = "192.168.251.1"
VNI = 4242


def _mac(i: int) -> str:
    return f"02:be:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"


def _ip(i: int) -> str:
    return f"10.77.{(i + 2) // 256}.{(i + 2) % 256}"


def make_vhost(name: str) -> None:
    """A vhost namespace with an underlay NIC carrying UNDERLAY_IP (as the topology service builds it)."""
    netns.create(name)

    def setup() -> None:
        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            ipr.link("add", ifname="ul0", kind="veth", peer={"ifname": "ul1"})
            index = ipr.link_lookup(ifname="ul0")[0]
            ipr.addr("add", index=index, address=UNDERLAY_IP, prefixlen=24)
            ipr.link("set", index=index, state="up")

    netns.run_in(name, setup)


async def run_ours(count: int, batch: int, work: Path, prefix: str) -> float:
    """Seconds for the agent to create `count` VMs (in batches), measured at the gRPC client."""
    vhost_ns = f"{prefix}-vh"
    await asyncio.to_thread(make_vhost, vhost_ns)
    vhost = vhostsfile.Vhost(
        name="vhost-0", index=0, netns=vhost_ns, vm_ns_prefix=f"{prefix}-0", datapath_ip=UNDERLAY_IP,
        prefix_len=24, nic="ul0", mac="02:00:00:00:00:01",
    )  # fmt: skip
    vhosts_file = work / "agent.json"
    vhostsfile.write(vhosts_file, vhostsfile.VhostsFile("bench", "bench", "real", (vhost,)))
    endpoint = f"unix://{work}/agent.sock"
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.agent", "--listen", endpoint, "--vhosts_file", str(vhosts_file),
        "--netns", vhost_ns, "--metrics_port", "-1", "--log_level", "WARNING",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not await health_serving(endpoint):
            if agent.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError("agent did not start")
            await asyncio.sleep(0.05)
        vpc = agent_pb2.VpcSpec(
            vpc_id="vpc-bench", vni=VNI, gateway_mac=gateway_mac(VNI),
            subnets=[agent_pb2.SubnetGateway(cidr="10.77.0.0/16", gateway="10.77.0.1")],
        )  # fmt: skip
        vms = [
            agent_pb2.VmSpec(name=f"v{i:04d}", vpc_id="vpc-bench", vni=VNI, ip=_ip(i), prefix_len=16,
                             mac=_mac(i), gateway="10.77.0.1")
            for i in range(count)
        ]  # fmt: skip
        async with grpc.aio.insecure_channel(endpoint) as channel:
            stub = agent_pb2_grpc.MerakAgentServiceStub(channel)
            start = time.perf_counter()
            for first in range(0, count, batch):
                request = agent_pb2.CreateVmsRequest(
                    vhost="vhost-0", vpcs=[vpc], vms=vms[first : first + batch]
                )
                reply = await stub.CreateVms(request, timeout=600)
                if reply.failed:
                    raise RuntimeError(f"{reply.failed} VMs failed: {reply.results[0].error}")
            elapsed = time.perf_counter() - start
            await stub.DeleteVms(agent_pb2.DeleteVmsRequest(vhost="vhost-0", all=True), timeout=600)
        return elapsed
    finally:
        agent.terminate()
        await asyncio.wait_for(agent.wait(), timeout=10)
        netns.remove(vhost_ns)


def run_reference(count: int, work: Path, prefix: str) -> float:
    """Seconds for iproute2 to build the same VMs."""
    vpc = f"{prefix}-rvpc"
    root_script = [f"netns add {vpc}"]
    root_script += [f"netns add {prefix}-r{i:04d}" for i in range(count)]
    root_script += [
        f"link add t{i:04d} netns {vpc} type veth peer name eth0 netns {prefix}-r{i:04d}"
        for i in range(count)
    ]
    vpc_script = ["link set lo up", "link add br0 type bridge", "link set br0 up"]
    vpc_script += [f"link set t{i:04d} master br0 up" for i in range(count)]
    (work / "root.batch").write_text("\n".join(root_script) + "\n")
    (work / "vpc.batch").write_text("\n".join(vpc_script) + "\n")
    start = time.perf_counter()
    subprocess.run(["ip", "-batch", str(work / "root.batch")], check=True)
    subprocess.run(["ip", "-n", vpc, "-batch", str(work / "vpc.batch")], check=True)
    for i in range(count):
        script = (
            f"link set lo up\nlink set eth0 address {_mac(i)}\naddr add {_ip(i)}/16 dev eth0\n"
            "link set eth0 up\nroute add default via 10.77.0.1\n"
        )
        subprocess.run(["ip", "-n", f"{prefix}-r{i:04d}", "-batch", "-"], input=script.encode(), check=True)
    elapsed = time.perf_counter() - start
    for name in netns.list_names(f"{prefix}-r"):
        netns.remove(name)
    return elapsed


def main(argv: list[str] | None = None) -> Outcome:
    """Run the agent benchmark; its row: the ratio to ip -batch."""
    parser = argparse.ArgumentParser(prog="python -m bench agent")
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=250, help="VMs per CreateVms call")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("agent benchmark: needs root")
        return Outcome(1)
    prefix = f"mkb{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix="mkb", dir="/tmp"))
    try:
        ours = asyncio.run(run_ours(args.vms, args.batch, work, prefix))
        reference = run_reference(args.vms, work, prefix)
    finally:
        for name in netns.list_names(prefix):
            netns.remove(name)
        shutil.rmtree(work, ignore_errors=True)
    ours_rate, reference_rate = args.vms / ours, args.vms / reference
    print(
        f"agent CreateVms:  {args.vms} VMs in {ours:.2f}s = {ours_rate:.0f} VMs/s (batches of {args.batch})"
    )
    print(f"ip -batch script: {args.vms} VMs in {reference:.2f}s = {reference_rate:.0f} VMs/s")
    target = expected("agent_vs_ip_batch").target
    print(f"ratio (agent / ip -batch): {ours_rate / reference_rate:.2f}  (target ≥ {target:g})")
    leaked = netns.list_names(prefix)
    if leaked:
        print(f"LEAK: {leaked[:5]}")
    row = expected("agent_vs_ip_batch").row(
        f"agent: {args.vms:,} VMs vs ip -batch, same run",
        ours_rate / reference_rate,
        detail=f"CreateVms {ours:.2f} s ({ours_rate:.0f} VMs/s, batches of {args.batch})",
        reference=f"ip -batch {reference:.2f} s ({reference_rate:.0f} VMs/s)",
        full_size=args.vms >= 1000,
        ok=not leaked,
        note="namespaces leaked" if leaked else "",
    )
    return Outcome(1 if leaked else 0, [row])
