"""What the scenario service keeps: entity kinds, references between them, the services a scenario deploys;
no I/O. Statuses are derived in states.py."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from merak.v1 import compute_pb2, scenario_pb2

Status: TypeAlias = scenario_pb2.ServiceStatus.ValueType
ServiceName: TypeAlias = scenario_pb2.ServiceName.ValueType
Action: TypeAlias = scenario_pb2.Action.ValueType

M = TypeVar("M", bound=Message)


@dataclass(frozen=True, slots=True)
class Kind(Generic[M]):
    """One kind of stored entity: its key part, its name for people, its message type."""

    name: str
    label: str
    message: type[M]

    def copy(self, entity: M) -> M:
        """A deep copy of `entity`."""
        result = self.message()
        result.CopyFrom(entity)
        return result


TOPOLOGY_CONFIG: Kind[scenario_pb2.TopologyConfig] = Kind(
    "topology", "topology config", scenario_pb2.TopologyConfig
)
NETWORK_CONFIG: Kind[scenario_pb2.NetworkConfig] = Kind(
    "network", "network config", scenario_pb2.NetworkConfig
)
COMPUTE_CONFIG: Kind[scenario_pb2.ComputeConfig] = Kind(
    "compute", "compute config", scenario_pb2.ComputeConfig
)
SERVICE_CONFIG: Kind[scenario_pb2.ServiceConfig] = Kind(
    "service", "service config", scenario_pb2.ServiceConfig
)
TEST_CONFIG: Kind[scenario_pb2.TestConfig] = Kind("test", "test config", scenario_pb2.TestConfig)
SCENARIO: Kind[scenario_pb2.Scenario] = Kind("scenario", "scenario", scenario_pb2.Scenario)

CONFIG_KINDS: tuple[Kind[Any], ...] = (
    TOPOLOGY_CONFIG,
    NETWORK_CONFIG,
    COMPUTE_CONFIG,
    SERVICE_CONFIG,
    TEST_CONFIG,
)

# Set by the service, never by Create or Update.
IMMUTABLE_FIELDS = frozenset({"id", "created_at", "updated_at"})
STATUS_FIELDS = frozenset({"status", "topology_status", "network_status", "compute_status"})


@dataclass(frozen=True, slots=True)
class Reference:
    """A scenario's reference to a config: the scenario field, the config kind and id."""

    field: str
    kind: Kind[Any]
    id: str


# A scenario's five references, in Merak's order.
REFERENCE_FIELDS: tuple[tuple[str, Kind[Any]], ...] = (
    ("topology_id", TOPOLOGY_CONFIG),
    ("network_config_id", NETWORK_CONFIG),
    ("compute_config_id", COMPUTE_CONFIG),
    ("service_config_id", SERVICE_CONFIG),
    ("test_config_id", TEST_CONFIG),
)


def references(scenario: scenario_pb2.Scenario) -> list[Reference]:
    """The configs a scenario refers to (empty ids left out)."""
    return [
        Reference(field, kind, getattr(scenario, field))
        for field, kind in REFERENCE_FIELDS
        if getattr(scenario, field)
    ]


@dataclass(frozen=True, slots=True)
class Service:
    """A service a scenario deploys: its enum value, names, and where its status and config live."""

    name: ServiceName
    label: str
    # As Merak's summary strings spell it ("DEPLOY on Topology got - ...").
    title: str
    status_field: str
    config_field: str
    config_kind: Kind[Any]


TOPOLOGY = Service(
    scenario_pb2.TOPOLOGY, "topology", "Topology", "topology_status", "topology_id", TOPOLOGY_CONFIG
)
NETWORK = Service(
    scenario_pb2.NETWORK, "network", "Network", "network_status", "network_config_id", NETWORK_CONFIG
)
COMPUTE = Service(
    scenario_pb2.COMPUTE, "compute", "Compute", "compute_status", "compute_config_id", COMPUTE_CONFIG
)
# Deploy order; delete goes the other way.
SERVICES: tuple[Service, ...] = (TOPOLOGY, NETWORK, COMPUTE)
SERVICE_BY_NAME: dict[int, Service] = {int(s.name): s for s in SERVICES}


def deploy_type(config: scenario_pb2.ComputeConfig) -> compute_pb2.VMDeployType.ValueType:
    """The deploy type; ASSIGN without vms_per_host is UNIFORM, Merak's default."""
    # ASSIGN is the proto default (0): a config that names no deploy type reads as ASSIGN.
    if config.vm_deploy_type == compute_pb2.ASSIGN and not config.vms_per_host:
        return compute_pb2.UNIFORM
    return config.vm_deploy_type


def now() -> Timestamp:
    """The current time as a protobuf Timestamp."""
    stamp = Timestamp()
    stamp.FromNanoseconds(time.time_ns())
    return stamp
