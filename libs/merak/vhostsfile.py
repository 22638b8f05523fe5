"""The vhosts file: the JSON document that tells an agent which emulated hosts it serves.

The topology service writes it (the local backend next to the agent's socket, the kubernetes
backend into the pod's environment, which the pod's script writes out) and the agent reads it
at start. This module owns the format; its keys are the contract between the two:

    {"topology_id": "...", "short_id": "...", "dataplane": "real",
     "vhosts": [{"name": "vhost-0", "index": 0, "netns": "mk-...-vhost-0", "vm_ns_prefix": "mk-...-0",
                 "datapath_ip": "10.200.0.1", "prefix_len": 16, "nic": "vh0-eth1", "mac": "02:...",
                 "goalstate_address": "127.16.0.1:50001"}]}

`goalstate_address` (optional, "" when absent) is where the vhost serves Alcor's host-agent API
(GoalStateProvisioner) once its network uses the alcor plugin.

Both sides validate what they hold: a name that could not be a namespace or an interface, or a
vhost named twice, is refused when the document is built and when it is read.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Namespace names and prefixes are what merak.netns accepts (an empty netns is "this machine's").
from merak import netns

# A vhost name becomes part of namespace names (`mk-<short>-<name>`): what `ip netns` takes, bounded.
_VHOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# A kernel interface name (IFNAMSIZ - 1 characters), no '/', ':' or whitespace.
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_OCTET = r"(25[0-5]|2[0-4][0-9]|1?[0-9]{1,2})"
_ADDRESS = re.compile(rf"{_OCTET}(\.{_OCTET}){{3}}:[0-9]{{1,5}}")


class VhostsFileError(ValueError):
    """A vhosts file (or what would be written as one) is not well formed."""


@dataclass(frozen=True, slots=True)
class Vhost:
    """One emulated host: its namespace (empty when the data plane makes none), data-plane address
    and NIC, MAC, and the prefix of the namespaces the agent makes for its VMs."""

    name: str
    index: int
    netns: str
    vm_ns_prefix: str
    datapath_ip: str
    prefix_len: int
    nic: str
    mac: str
    goalstate_address: str = ""  # IPv4:port where the vhost serves GoalStateProvisioner ("": nowhere)

    def __post_init__(self) -> None:
        where = f"vhost {self.name!r}"
        if not _VHOST_NAME.fullmatch(self.name):
            raise VhostsFileError(f"vhost name {self.name!r}: 1-64 of A-Z, a-z, 0-9, '_', '.', '-'")
        if self.index < 0:
            raise VhostsFileError(f"{where}: index {self.index} is negative")
        if self.netns and not netns.VALID_NAME.fullmatch(self.netns):
            raise VhostsFileError(f"{where}: {self.netns!r} is not a namespace name")
        if not netns.VALID_NAME.fullmatch(self.vm_ns_prefix):
            raise VhostsFileError(f"{where}: {self.vm_ns_prefix!r} is not a namespace name prefix")
        if not 0 <= self.prefix_len <= 32:
            raise VhostsFileError(f"{where}: prefix_len {self.prefix_len} is not 0-32")
        if self.nic and not _IFNAME.fullmatch(self.nic):
            raise VhostsFileError(f"{where}: {self.nic!r} is not an interface name")
        if self.mac and not _MAC.fullmatch(self.mac):
            raise VhostsFileError(f"{where}: {self.mac!r} is not a lowercase MAC address")
        if self.goalstate_address and not _ADDRESS.fullmatch(self.goalstate_address):
            raise VhostsFileError(f"{where}: goalstate_address {self.goalstate_address!r} is not IPv4:port")


@dataclass(frozen=True, slots=True)
class VhostsFile:
    """What one agent serves: the topology, its data plane ("real", "fake") and its vhosts, in order."""

    topology_id: str
    short_id: str
    dataplane: str
    vhosts: tuple[Vhost, ...]

    def __post_init__(self) -> None:
        if not self.dataplane:
            raise VhostsFileError("dataplane: required")
        names = {vhost.name for vhost in self.vhosts}
        if len(names) != len(self.vhosts):
            raise VhostsFileError(f"topology {self.topology_id!r}: a vhost is listed twice")

    @property
    def names(self) -> tuple[str, ...]:
        """The vhosts' names, in order."""
        return tuple(vhost.name for vhost in self.vhosts)


_VHOST_FIELDS: tuple[tuple[str, type], ...] = (
    ("name", str),
    ("index", int),
    ("netns", str),
    ("vm_ns_prefix", str),
    ("datapath_ip", str),
    ("prefix_len", int),
    ("nic", str),
    ("mac", str),
)
_OPTIONAL_VHOST_FIELDS: tuple[tuple[str, type], ...] = (("goalstate_address", str),)
_FILE_FIELDS: tuple[tuple[str, type], ...] = (("topology_id", str), ("short_id", str), ("dataplane", str))


def dumps(document: VhostsFile) -> str:
    """The document as the agent reads it (compact JSON, keys in the order of the field lists above)."""
    body: dict[str, Any] = {key: getattr(document, key) for key, _ in _FILE_FIELDS}
    keys = [key for key, _ in (*_VHOST_FIELDS, *_OPTIONAL_VHOST_FIELDS)]
    body["vhosts"] = [{key: getattr(v, key) for key in keys} for v in document.vhosts]
    return json.dumps(body, separators=(",", ":"))


def loads(text: str) -> VhostsFile:
    """The document in `text`; VhostsFileError when it is not one (a key missing or mistyped)."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise VhostsFileError(f"not JSON: {exc}") from None
    values = _fields(raw, _FILE_FIELDS, "the document")
    entries = raw.get("vhosts")
    if not isinstance(entries, list):
        raise VhostsFileError("vhosts: a list is required")
    vhosts = tuple(
        Vhost(
            **_fields(entry, _VHOST_FIELDS, f"vhosts[{i}]"),
            **_fields(entry, _OPTIONAL_VHOST_FIELDS, f"vhosts[{i}]", optional=True),
        )
        for i, entry in enumerate(entries)
    )
    return VhostsFile(vhosts=vhosts, **values)


def write(path: Path, document: VhostsFile) -> None:
    """Write `document` to `path` at once (a draft renamed over it): an agent started before its file is
    written waits for it and must never read half of one."""
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    draft.write_text(dumps(document))
    os.replace(draft, path)


def read(path: Path) -> VhostsFile:
    """The document in `path`; OSError when it cannot be read, VhostsFileError when it is not one."""
    try:
        return loads(path.read_text())
    except VhostsFileError as exc:
        raise VhostsFileError(f"{path}: {exc}") from None


def _fields(
    raw: Any, fields: tuple[tuple[str, type], ...], where: str, *, optional: bool = False
) -> dict[str, Any]:
    """The `fields` of the JSON object `raw`, each of its type (an int is not a bool); others ignored;
    `optional` ones may be absent."""
    if not isinstance(raw, dict):
        raise VhostsFileError(f"{where}: an object is required")
    values = {}
    for key, kind in fields:
        if optional and key not in raw:
            continue
        value = raw.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise VhostsFileError(f"{where}: {key} must be a {kind.__name__}, got {value!r}")
        values[key] = value
    return values
