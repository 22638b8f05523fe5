"""What compute stores about a config: its hosts, its VMs, its operation; as they are written to Redis."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from merak.v1 import common_pb2
from services.compute.inventory import PlannedVm


@dataclass(frozen=True, slots=True)
class HostRecord:
    """One host of a compute config, as stored (JSON under the host's name)."""

    index: int
    endpoint: str  # the agent's gRPC target
    vtep: str  # the vhost's data-plane address
    count: int  # VMs planned on it
    shard: int
    fake: bool = False
    # An UPDATE took the host out of the config: its VMs go (drop list), then the record.
    leaving: bool = False
    # The VMs a CREATE counted on the host and has not written yet, [vpc index, subnet index, how many]
    # each: the shard's first activity writes them (VmInventory.place_pending), not the CREATE call.
    pending: list[list[int]] = field(default_factory=list)

    def to_json(self) -> str:
        """Compact JSON."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> HostRecord:
        """Parse a stored record."""
        return cls(**json.loads(raw))


_COMPACT = json.JSONEncoder(separators=(",", ":")).encode


@dataclass
class VmRecord:
    """One VM of the inventory, as stored (JSON)."""

    id: str
    name: str
    host: str
    vpc: str
    subnet: str
    project: str
    tenant: str
    cidr: str
    gw: str
    sgs: list[str] = field(default_factory=list)
    ip: str = ""
    mac: str = ""
    prefix: int = 0
    vni: int = 0
    gmac: str = ""
    remote: str = ""
    device: str = ""
    status: int = common_pb2.DEPLOYING
    error: str = ""
    # What the overlay routes to the VM's host for it (a network config with per-host address blocks):
    # the host's block, or "<ip>/32" for an address borrowed outside it; "" when VMs are not routed.
    route: str = ""

    def to_json(self) -> str:
        """Compact JSON, the fields in their order. Not `asdict`, which copies every value recursively:
        it was 18% of the compute worker's time at a million VMs (py-spy)."""
        return _COMPACT(vars(self))

    @classmethod
    def from_json(cls, raw: str) -> VmRecord:
        """Parse a record's JSON (`to_json`)."""
        return cls(**json.loads(raw))

    def stored(self) -> tuple[str, str, str]:
        """The record as Redis keeps it: what is the VM's own, and the name of the template that holds
        what it shares with its subnet (`SHARED`); returns (record, template name, template). A million
        records of ~420 bytes were ~0.6 GiB of Redis; this form is about a third of it."""
        name, template = template_of(self)
        own: dict[str, Any] = {"t": name, "name": self.name, "status": self.status}
        if self.id != f"{self.host}.{self.name}":
            own["id"] = self.id
        for key in _OWN_OPTIONAL:
            value = getattr(self, key)
            if value:
                own[key] = value
        return _COMPACT(own), name, template

    @classmethod
    def from_stored(cls, raw: str, host: str, templates: Mapping[str, Mapping[str, Any]]) -> VmRecord:
        """A record as Redis keeps it (`stored`; a whole record, as written before templates, too), with
        its template from `templates` (KeyError when it is not there)."""
        own = json.loads(raw)
        name = own.pop("t", None)
        if name is None:
            return cls(**own)
        shared = dict(templates[name])
        shared["sgs"] = list(shared["sgs"])  # each record its own list
        return cls(id=own.pop("id", f"{host}.{own['name']}"), host=host, **shared, **own)

    @classmethod
    def planned(cls, vm: PlannedVm, secgroups: list[str]) -> VmRecord:
        """A planned VM's record, DEPLOYING."""
        ref = vm.subnet
        return cls(
            id=vm.vm_id,
            name=vm.name,
            host=vm.host,
            vpc=ref.vpc_id,
            subnet=ref.subnet_id,
            project=ref.project_id,
            tenant=ref.tenant_id,
            cidr=ref.cidr,
            gw=ref.gateway,
            sgs=secgroups,
        )


# What a VM shares with the VMs of its subnet (its VPC's, once addressed): kept once per config, as
# templates named by their content (so a name never means two things, and writing one twice is harmless).
SHARED = ("vpc", "subnet", "project", "tenant", "cidr", "gw", "sgs", "prefix", "vni", "gmac")
# The VM's own fields besides its name and status, stored only when set.
_OWN_OPTIONAL = ("ip", "mac", "remote", "device", "error", "route")


def template_of(record: VmRecord) -> tuple[str, str]:
    """The name and JSON of the template of `record`'s shared fields."""
    raw = _COMPACT({key: getattr(record, key) for key in SHARED})
    return hashlib.blake2b(raw.encode(), digest_size=8).hexdigest(), raw


@dataclass(frozen=True, slots=True)
class Meta:
    """Where an operation of a compute config stands (a hash of strings in Redis)."""

    operation: str
    running: bool
    total: int
    batch_size: int
    shards: int
    plugin: str
    netconfig_id: str
    # Alcor's port manager (alcor plugin).
    alcor_url: str
    failure: str
    started_at: float
    finished_at: float
    # Alcor plugin: our own overlay push too (else the overlay comes from Alcor's goal states only).
    alcor_own_overlay: bool = False

    def to_hash(self) -> dict[str, str | int | float]:
        """The fields as HSET writes them."""
        return {
            "operation": self.operation,
            "running": "1" if self.running else "0",
            "total": self.total,
            "batch_size": self.batch_size,
            "shards": self.shards,
            "plugin": self.plugin,
            "netconfig_id": self.netconfig_id,
            "alcor_url": self.alcor_url,
            "failure": self.failure,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "alcor_own_overlay": "1" if self.alcor_own_overlay else "0",
        }

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> Meta:
        """Parse the stored hash (fields added later have defaults)."""
        return cls(
            operation=raw["operation"],
            running=raw["running"] == "1",
            total=int(raw["total"]),
            batch_size=int(raw["batch_size"]),
            shards=int(raw["shards"]),
            plugin=raw["plugin"],
            netconfig_id=raw["netconfig_id"],
            alcor_url=raw.get("alcor_url", ""),
            failure=raw.get("failure", ""),
            started_at=float(raw.get("started_at", 0)),
            finished_at=float(raw.get("finished_at", 0)),
            alcor_own_overlay=raw.get("alcor_own_overlay") == "1",
        )
