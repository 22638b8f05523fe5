"""`merak demo`: the stack up, then Merak's end-to-end scenario."""

from __future__ import annotations

from merak.grpcclient import health_serving_blocking
from merak_tools import teste2e
from merak_tools.cli.output import console
from merak_tools.cli.stack import cmd_up, grpcurl_security
from merak_tools.localstack import SERVICES, StackSettings


def cmd_demo(settings: StackSettings, extra: list[str]) -> int:
    """Bring the stack up, run Merak's e2e scenario (5 hosts x 10 VMs, ping-all), leave the stack up."""
    if cmd_up(settings) != 0:
        return 1
    failed = [name for name in SERVICES if not health_serving_blocking(settings.grpc_address(name))]
    if failed:
        console.print(f"[red]error:[/red] not serving: {', '.join(failed)}")
        return 1
    argv = [
        "--scenario-address", f"localhost:{settings.grpc_port('scenario')}",
        "--topology-address", f"localhost:{settings.grpc_port('topology')}",
        "--compute-address", f"localhost:{settings.grpc_port('compute')}",
        "--report", str(settings.state_dir / "teste2e-report.json"),
        *extra,
    ]  # fmt: skip
    code = teste2e.main(argv)
    console.print(
        "\n[bold]Look around[/bold] (the stack is still up; `merak down` stops it):\n"
        f"  Temporal UI (every workflow): http://localhost:{settings.temporal_ui_port}, namespace merak\n"
        f"  grpcurl {grpcurl_security()} localhost:{settings.grpc_port('scenario')} list\n"
        f"  grpcurl {grpcurl_security()} localhost:{settings.grpc_port('topology')} "
        "topology.MerakTopologyService/ListTopologies\n"
        "  keep the lab to explore it: merak demo --keep   (or teste2e --keep)\n"
        "  then: ip netns list | grep mk-          # emulated hosts, switches, VMs\n"
        "        merak exec vhost-0 v0-0-0 -- ip addr          # inside a VM\n"
        "        merak exec vhost-0 v0-0-0 -- ping -c 2 10.1.0.12\n"
        f"  metrics: curl -s localhost:{settings.metrics_port('compute-worker')}/metrics | grep merak_"
    )
    return code
