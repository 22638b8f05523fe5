"""Faults as people type them on a command line (merak fault, teste2e --fault) and as the protos say them."""

from __future__ import annotations

import argparse
import re

from merak.v1 import scenario_pb2, topology_pb2

_RATE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
# The processes of the control plane under test a fault can crash or freeze: OVN central's (the
# stack's components) and each emulated host's ovn-controller (named `ovn-controller@<vhost>`).
CENTRAL_PROCESSES = ("ovn-northd", "ovn-nb", "ovn-sb")
HOST_PROCESSES = ("ovn-controller",)


def process_fault(target: str, state: int) -> topology_pb2.ProcessFault | None:
    """`ovn-northd` or `ovn-controller@vhost-1` as a ProcessFault; None when `target` names no process
    (then it is a vhost)."""
    process, at, vhost = target.partition("@")
    if process in CENTRAL_PROCESSES and not at:
        return topology_pb2.ProcessFault(process=process, state=state)  # type: ignore[arg-type]
    if process in HOST_PROCESSES and at:
        return topology_pb2.ProcessFault(process=process, vhost=vhost, state=state)  # type: ignore[arg-type]
    return None


def process_where(fault: topology_pb2.ProcessFault) -> str:
    """`ovn-northd`, `ovn-controller@vhost-1`."""
    return f"{fault.process}@{fault.vhost}" if fault.vhost else fault.process


def parse_link_fault(text: str) -> topology_pb2.LinkFault:
    """`vhost-2:loss=5,rate=10mbit,delay=20,jitter=5,down` (or `rack-1/r1-eth2:down`) as a LinkFault."""
    where, _, settings = text.partition(":")
    node, _, nic = where.partition("/")
    fault = topology_pb2.LinkFault(node=node, nic=nic)
    for item in filter(None, settings.split(",")):
        key, _, value = item.partition("=")
        try:
            if key == "down" and not value:
                fault.down = True
            elif key == "loss":
                fault.loss_percent = float(value.rstrip("%"))
            elif key == "rate":
                match = re.fullmatch(r"([0-9.]+)\s*([kmg]?)(?:bit|b)?(?:/s|ps)?", value.lower())
                if match is None:
                    raise ValueError(value)
                fault.rate_bps = int(float(match.group(1)) * _RATE_UNITS[match.group(2)])
            elif key in ("delay", "jitter"):
                setattr(fault, f"{key}_ms", float(value.removesuffix("ms")))
            else:
                raise ValueError(item)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{item!r} in {text!r}: use down, loss=PERCENT, rate=10mbit, delay=MS, jitter=MS"
            ) from None
    return fault


def parse_partition(text: str) -> topology_pb2.Partition:
    """`vhost-0,vhost-1/vhost-2` as a Partition (two sides of vhosts, split by "/")."""
    side_a, slash, side_b = text.partition("/")
    if not slash or not side_a or not side_b:
        raise argparse.ArgumentTypeError(f"{text!r}: use vhost-0,vhost-1/vhost-2 (the two sides, split by /)")
    return topology_pb2.Partition(side_a=side_a.split(","), side_b=side_b.split(","))


_WHEN = {"at": "at_seconds", "for": "duration_seconds", "every": "every_seconds"}


def parse_scheduled_fault(text: str) -> scenario_pb2.ScheduledFault:
    """`at=5 for=2 repeat=3 every=10 link=vhost-2:down` as a ScheduledFault: space-separated items, one
    of link=NODE[/NIC]:SETTINGS, partition=A1,A2/B1, crash=VHOST, freeze=VHOST (or an OVN process:
    crash=ovn-northd, freeze=ovn-controller@VHOST); name=, at=, for= (0 or left out: until compute is
    deleted), repeat=, every= (seconds)."""
    fault = scenario_pb2.ScheduledFault()
    for item in text.split():
        key, equals, value = item.partition("=")
        if not equals or not value:
            raise argparse.ArgumentTypeError(f"{item!r} in {text!r}: use KEY=VALUE items")
        try:
            if key in _WHEN:
                setattr(fault, _WHEN[key], float(value.removesuffix("s")))
            elif key == "repeat":
                fault.repeat = int(value)
            elif key == "name":
                fault.name = value
            elif key == "link":
                fault.link.CopyFrom(parse_link_fault(value))
            elif key == "partition":
                fault.partition.CopyFrom(parse_partition(value))
            elif key in ("crash", "freeze"):
                state = topology_pb2.HOST_CRASHED if key == "crash" else topology_pb2.HOST_FROZEN
                process = process_fault(value, state)
                if process is not None:
                    fault.process.CopyFrom(process)
                else:
                    fault.host.CopyFrom(topology_pb2.HostFault(vhost=value, state=state))
            else:
                raise argparse.ArgumentTypeError(
                    f"{key!r} in {text!r}: use name, at, for, repeat, every and one of link, partition, "
                    "crash, freeze"
                )
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} in {text!r}: not a number") from None
    if fault.WhichOneof("fault") is None:
        raise argparse.ArgumentTypeError(f"{text!r}: say what fails (link=, partition=, crash= or freeze=)")
    return fault


def link_where(link: topology_pb2.LinkFault) -> str:
    """`vhost-2` or `rack-1/r1-eth2`."""
    return f"{link.node}{'/' + link.nic if link.nic else ''}"


def link_what(link: topology_pb2.LinkFault) -> str:
    """What a link suffers, for people: "down, loss 5%, rate 10,000,000 bit/s" ("" for nothing)."""
    what = ["down"] if link.down else []
    what += [f"loss {link.loss_percent:g}%"] if link.loss_percent else []
    what += [f"rate {link.rate_bps:,} bit/s"] if link.rate_bps else []
    what += [f"delay {link.delay_ms:g} ms"] if link.delay_ms else []
    what += [f"jitter {link.jitter_ms:g} ms"] if link.jitter_ms else []
    return ", ".join(what)


def partition_what(partition: topology_pb2.Partition) -> str:
    """`vhost-0, vhost-1 | vhost-2`."""
    return f"{', '.join(partition.side_a)} | {', '.join(partition.side_b)}"


def host_state(host: topology_pb2.HostFault | topology_pb2.ProcessFault) -> str:
    """`crashed`, `frozen`."""
    return topology_pb2.HostState.Name(host.state).removeprefix("HOST_").lower()
