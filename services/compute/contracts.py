"""Inputs and outputs of compute's Temporal workflows and activities: small dataclasses, no I/O.

Payloads carry ids and counts, never VM lists: activities read the inventory from Redis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Operation(StrEnum):
    """What a deployment does to the VMs of a compute config (payloads carry the string)."""

    CREATE = "create"
    DELETE = "delete"
    # A running config changed: prune the VMs it no longer has, create the new ones, redo the overlay.
    UPDATE = "update"
    # The delete phase of an UPDATE, per shard: the VMs on the hosts' drop lists.
    PRUNE = "prune"


CREATE = Operation.CREATE
DELETE = Operation.DELETE
UPDATE = Operation.UPDATE
PRUNE = Operation.PRUNE


class PluginName(StrEnum):
    """How VMs get their addresses and ports: our IPAM (native), Alcor's port manager through the agents
    (alcor), or our IPAM with a logical switch port per VM in OVN (ovn)."""

    NATIVE = "native"
    ALCOR = "alcor"
    OVN = "ovn"


class ActivityName(StrEnum):
    """Every activity's registered name, shared by the workflows that call and the worker that serves."""

    SHARD_PLAN = "compute.shard_plan"
    PREPARE_HOSTS = "compute.prepare_hosts"
    CREATE_BATCH = "compute.create_batch"
    FAIL_BATCH = "compute.fail_batch"
    DELETE_BATCH = "compute.delete_batch"
    CREATE_GROUP = "compute.create_group"
    DELETE_GROUP = "compute.delete_group"
    OVERLAY_INDEX = "compute.overlay_index"
    PROGRAM_OVERLAY = "compute.program_overlay"
    CHURN = "compute.churn"
    FINISH = "compute.finish"


SEQUENTIAL = "sequential"
RPS = "rps"
RANDOM = "random"


@dataclass
class Schedule:
    """How batches are paced: one after another per host, at a target rate, or in a random order."""

    kind: str = SEQUENTIAL
    rps: float = 0.0
    seed: int = 0


@dataclass
class DeployInput:
    """One operation (create or delete) of a compute config, split into host shards."""

    config_id: str
    operation: str
    shards: int
    schedule: Schedule = field(default_factory=Schedule)
    # Once the VMs are made: VMs replaced per second, for how long (0: no churn).
    churn_rate: float = 0.0
    churn_seconds: float = 0.0
    # Our own overlay push once the VMs are made (off with Alcor's goal states building the overlay).
    program_overlay: bool = True


@dataclass
class ShardInput:
    """One shard of hosts of an operation."""

    config_id: str
    operation: str
    shard: int
    schedule: Schedule = field(default_factory=Schedule)
    # This shard's part of the RPS target.
    rps: float = 0.0


@dataclass
class ShardRef:
    """Which shard (and, for PRUNE, that its hosts' drop lists are meant)."""

    config_id: str
    shard: int
    operation: str = ""


@dataclass
class HostBatches:
    """A host of a shard and how many batches its VMs make."""

    host: str
    batches: int
    batch_size: int
    # The host's VM count (0 in a plan made before it was recorded: then every batch counts full).
    vms: int = 0
    # A fake vhost (no kernel: its batches cost the activity more than the VMs).
    fake: bool = False

    def size_of(self, batch: int) -> int:
        """How many VMs batch `batch` holds (the last one may be short)."""
        if not self.vms:
            return self.batch_size
        return max(0, min(self.batch_size, self.vms - batch * self.batch_size))


@dataclass
class ShardPlan:
    """The hosts of a shard."""

    hosts: list[HostBatches]


@dataclass
class BatchInput:
    """One batch of VMs of one host."""

    config_id: str
    host: str
    batch: int
    # Paced batches (the RPS scheduler): the wall-clock time (Unix seconds) at which to begin; the
    # activity waits for it. Workflow timers fire about a second late, so the workflow starts a
    # paced batch up to PACE_LEAD early and the activity keeps the sub-second time.
    start_at: float = 0.0
    # PRUNE: the batch is of the host's drop list (VMs an UPDATE removed), not of its VMs.
    operation: str = ""


@dataclass
class GroupInput:
    """The single batches of several fake hosts, in one activity. A million fake VMs are 10,000 hosts of
    one batch each: an activity per batch cost Temporal and the worker more than the VMs themselves."""

    config_id: str
    hosts: list[str]
    # CREATE, DELETE or PRUNE (each host's batch 0 of its drop list).
    operation: str = ""


# How early a paced batch may be started by the workflow (see BatchInput.start_at).
PACE_LEAD = 1.5


@dataclass
class BatchOutcome:
    """What a batch did."""

    done: int = 0
    failed: int = 0


@dataclass
class BatchFailure:
    """A batch that failed as a whole: its VMs are marked ERROR with the reason."""

    config_id: str
    host: str
    batch: int
    operation: str
    reason: str


@dataclass
class FinishInput:
    """The end of an operation."""

    config_id: str
    operation: str
    done: int
    failed: int
    failure: str = ""


@dataclass
class ChurnInput:
    """Replace `rate` VMs per second for `seconds` (a retried activity resumes where it was)."""

    config_id: str
    rate: float
    seconds: float


@dataclass
class DeployResult:
    """What an operation did, summed over its shards."""

    done: int = 0
    failed: int = 0
