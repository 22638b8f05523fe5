"""gRPC servicer of the scenario service."""

from __future__ import annotations

from merak.grpcserver import ServiceRegistration
from merak.v1 import scenario_pb2_grpc

SERVICE_NAME = "scenario.MerakScenarioService"


class ScenarioServicer(scenario_pb2_grpc.MerakScenarioServiceServicer):
    """scenario.MerakScenarioService; RPCs not overridden here answer UNIMPLEMENTED."""


def registration(servicer: ScenarioServicer) -> ServiceRegistration:
    """How to put the servicer on a server."""
    return ServiceRegistration(
        SERVICE_NAME, lambda server: scenario_pb2_grpc.add_MerakScenarioServiceServicer_to_server(servicer, server)
    )
