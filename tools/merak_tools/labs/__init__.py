"""What labs run and how to end them (`merak labs`): scenarios and bare topologies, listed, shown, destroyed.

A lab is a scenario of the scenario service (with the topology, network and VMs it deployed), or a
topology the topology service runs that no deployed scenario refers to (made with grpcurl, or left
by a client that created it directly). Everything is read and done over the services' gRPC APIs.
"""

from merak_tools.labs.client import LabsClient
from merak_tools.labs.models import (
    Destroyed,
    Endpoints,
    Host,
    Lab,
    LabDetail,
    LabError,
    LabKind,
    UnknownLab,
    VmCounts,
)

__all__ = [
    "Destroyed",
    "Endpoints",
    "Host",
    "Lab",
    "LabDetail",
    "LabError",
    "LabKind",
    "LabsClient",
    "UnknownLab",
    "VmCounts",
]
