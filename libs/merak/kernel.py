"""The kernel features the product uses, each tried for real in a scratch network namespace.

`merak doctor` reports every feature; a service asks `kernel_has(name)` before it relies on an optional
one (the topology's impairments ask for netem). Probing needs root and removes what it made.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute

from merak import netns


@dataclass(frozen=True, slots=True)
class Feature:
    """A kernel feature: required or optional, what the product uses it for, how to try it."""

    name: str
    required: bool
    uses: str  # what the product uses it for (or that it does not)
    probe: Callable[[Any, str], None]  # (IPRoute in a scratch namespace, namespace name)


def _link(ifname: str, kind: str, **kwargs: Any) -> Callable[[Any, str], None]:
    def probe(ipr: Any, _ns: str) -> None:
        ipr.link("add", ifname=ifname, kind=kind, **kwargs)

    return probe


def _qdisc(kind: str, **kwargs: Any) -> Callable[[Any, str], None]:
    def probe(ipr: Any, _ns: str) -> None:
        ifname = f"q-{kind}"[:15]
        ipr.link("add", ifname=ifname, kind="veth", peer=f"qp-{kind}"[:15])
        ipr.tc("add", kind, ipr.link_lookup(ifname=ifname)[0], 0x10000, **kwargs)

    return probe


def _nftables(_ipr: Any, ns: str) -> None:
    nft = shutil.which("nft")
    if nft is None:
        raise FileNotFoundError("no nft tool")
    # nsenter (util-linux) runs nft inside the scratch namespace, so nothing touches this machine's rules.
    done = subprocess.run(
        ["nsenter", f"--net={netns.path_of(ns)}", nft, "add", "table", "inet", "merak_doctor"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if done.returncode != 0:
        raise OSError(done.stderr.strip() or f"nft exited {done.returncode}")


FEATURES: tuple[Feature, ...] = (
    Feature("veth", True, "links, VM NICs", _link("p-veth", "veth", peer="p-veth-b")),
    Feature("bridge", True, "switches, VPC bridges", _link("p-bridge", "bridge")),
    Feature(
        "vxlan",
        True,
        "the VPC overlay between vhosts",
        _link("p-vxlan", "vxlan", vxlan_id=42, vxlan_port=4789),
    ),
    Feature(
        "tbf",
        False,
        "faults: rate limits (SetFaults)",
        _qdisc("tbf", rate="1mbit", burst=32000, latency="400ms"),
    ),
    Feature("netem", False, "faults: delay, jitter (SetFaults)", _qdisc("netem", delay=1000)),
    Feature("nftables", False, "faults: loss, partitions (SetFaults; apt: nftables)", _nftables),
    Feature(
        "vrf",
        False,
        "not needed: a namespace per (vhost, VPC)",
        _link("p-vrf", "vrf", vrf_table=10),
    ),
    Feature(
        "bridge vlan filtering",
        False,
        "not needed: a bridge per VPC",
        _link("p-vlanbr", "bridge", br_vlan_filtering=1),
    ),
)


def describe(exc: BaseException) -> str:
    """A probe's failure in words."""
    code = getattr(exc, "code", None)
    if code in (errno.ENOENT, errno.EOPNOTSUPP):
        return "not in this kernel"  # an unknown link kind or qdisc
    if isinstance(code, int) and code > 0:
        return os.strerror(code)
    return str(exc) or type(exc).__name__


class NoNamespace(Exception):
    """The scratch namespace could not be made."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(str(cause))
        self.cause = cause


@contextlib.contextmanager
def scratch() -> Iterator[tuple[Any, str]]:
    """This thread inside a uniquely named scratch namespace, with a netlink socket; always removed."""
    ns = f"mkdoctor-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        netns.create(ns)
    except OSError as exc:
        raise NoNamespace(exc) from exc
    try:
        with netns.entered(ns), IPRoute() as ipr:
            yield ipr, ns
    finally:
        netns.remove(ns)


def kernel_has(name: str) -> bool:
    """Whether this kernel has the feature `name` of FEATURES (e.g. "netem"), tried as the doctor
    tries it (root)."""
    feature = next(f for f in FEATURES if f.name == name)
    with scratch() as (ipr, ns):
        try:
            feature.probe(ipr, ns)
        except Exception:
            return False
        return True
