"""gRPC servicer of the scenario service."""

from __future__ import annotations

from typing import Any

import grpc

from merak.errors import Unimplemented
from merak.grpcserver import ServiceRegistration
from merak.v1 import scenario_pb2, scenario_pb2_grpc

SERVICE_NAME = "scenario.MerakScenarioService"
_grpc = scenario_pb2_grpc


class ScenarioServicer(_grpc.MerakScenarioServiceServicer):
    """scenario.MerakScenarioService."""

    async def CreateTopologyConfig(
        self, request: scenario_pb2.TopologyConfig, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.TopologyConfig:
        """scenario.MerakScenarioService/CreateTopologyConfig."""
        raise Unimplemented("CreateTopologyConfig is not implemented yet")

    async def GetTopologyConfig(
        self, request: scenario_pb2.GetRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.TopologyConfig:
        """scenario.MerakScenarioService/GetTopologyConfig."""
        raise Unimplemented("GetTopologyConfig is not implemented yet")

    async def ListTopologyConfigs(
        self, request: scenario_pb2.ListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.ListTopologyConfigsReply:
        """scenario.MerakScenarioService/ListTopologyConfigs."""
        raise Unimplemented("ListTopologyConfigs is not implemented yet")

    async def UpdateTopologyConfig(
        self, request: scenario_pb2.UpdateTopologyConfigRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.TopologyConfig:
        """scenario.MerakScenarioService/UpdateTopologyConfig."""
        raise Unimplemented("UpdateTopologyConfig is not implemented yet")

    async def DeleteTopologyConfig(
        self, request: scenario_pb2.DeleteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.DeleteReply:
        """scenario.MerakScenarioService/DeleteTopologyConfig."""
        raise Unimplemented("DeleteTopologyConfig is not implemented yet")

    async def CreateNetworkConfig(
        self, request: scenario_pb2.NetworkConfig, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.NetworkConfig:
        """scenario.MerakScenarioService/CreateNetworkConfig."""
        raise Unimplemented("CreateNetworkConfig is not implemented yet")

    async def GetNetworkConfig(
        self, request: scenario_pb2.GetRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.NetworkConfig:
        """scenario.MerakScenarioService/GetNetworkConfig."""
        raise Unimplemented("GetNetworkConfig is not implemented yet")

    async def ListNetworkConfigs(
        self, request: scenario_pb2.ListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.ListNetworkConfigsReply:
        """scenario.MerakScenarioService/ListNetworkConfigs."""
        raise Unimplemented("ListNetworkConfigs is not implemented yet")

    async def UpdateNetworkConfig(
        self, request: scenario_pb2.UpdateNetworkConfigRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.NetworkConfig:
        """scenario.MerakScenarioService/UpdateNetworkConfig."""
        raise Unimplemented("UpdateNetworkConfig is not implemented yet")

    async def DeleteNetworkConfig(
        self, request: scenario_pb2.DeleteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.DeleteReply:
        """scenario.MerakScenarioService/DeleteNetworkConfig."""
        raise Unimplemented("DeleteNetworkConfig is not implemented yet")

    async def CreateComputeConfig(
        self, request: scenario_pb2.ComputeConfig, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.ComputeConfig:
        """scenario.MerakScenarioService/CreateComputeConfig."""
        raise Unimplemented("CreateComputeConfig is not implemented yet")

    async def GetComputeConfig(
        self, request: scenario_pb2.GetRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.ComputeConfig:
        """scenario.MerakScenarioService/GetComputeConfig."""
        raise Unimplemented("GetComputeConfig is not implemented yet")

    async def ListComputeConfigs(
        self, request: scenario_pb2.ListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.ListComputeConfigsReply:
        """scenario.MerakScenarioService/ListComputeConfigs."""
        raise Unimplemented("ListComputeConfigs is not implemented yet")

    async def UpdateComputeConfig(
        self, request: scenario_pb2.UpdateComputeConfigRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.ComputeConfig:
        """scenario.MerakScenarioService/UpdateComputeConfig."""
        raise Unimplemented("UpdateComputeConfig is not implemented yet")

    async def DeleteComputeConfig(
        self, request: scenario_pb2.DeleteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.DeleteReply:
        """scenario.MerakScenarioService/DeleteComputeConfig."""
        raise Unimplemented("DeleteComputeConfig is not implemented yet")

    async def CreateServiceConfig(
        self, request: scenario_pb2.ServiceConfig, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.ServiceConfig:
        """scenario.MerakScenarioService/CreateServiceConfig."""
        raise Unimplemented("CreateServiceConfig is not implemented yet")

    async def GetServiceConfig(
        self, request: scenario_pb2.GetRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.ServiceConfig:
        """scenario.MerakScenarioService/GetServiceConfig."""
        raise Unimplemented("GetServiceConfig is not implemented yet")

    async def ListServiceConfigs(
        self, request: scenario_pb2.ListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.ListServiceConfigsReply:
        """scenario.MerakScenarioService/ListServiceConfigs."""
        raise Unimplemented("ListServiceConfigs is not implemented yet")

    async def UpdateServiceConfig(
        self, request: scenario_pb2.UpdateServiceConfigRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.ServiceConfig:
        """scenario.MerakScenarioService/UpdateServiceConfig."""
        raise Unimplemented("UpdateServiceConfig is not implemented yet")

    async def DeleteServiceConfig(
        self, request: scenario_pb2.DeleteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.DeleteReply:
        """scenario.MerakScenarioService/DeleteServiceConfig."""
        raise Unimplemented("DeleteServiceConfig is not implemented yet")

    async def CreateTestConfig(
        self, request: scenario_pb2.TestConfig, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.TestConfig:
        """scenario.MerakScenarioService/CreateTestConfig."""
        raise Unimplemented("CreateTestConfig is not implemented yet")

    async def GetTestConfig(
        self, request: scenario_pb2.GetRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.TestConfig:
        """scenario.MerakScenarioService/GetTestConfig."""
        raise Unimplemented("GetTestConfig is not implemented yet")

    async def ListTestConfigs(
        self, request: scenario_pb2.ListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.ListTestConfigsReply:
        """scenario.MerakScenarioService/ListTestConfigs."""
        raise Unimplemented("ListTestConfigs is not implemented yet")

    async def UpdateTestConfig(
        self, request: scenario_pb2.UpdateTestConfigRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.TestConfig:
        """scenario.MerakScenarioService/UpdateTestConfig."""
        raise Unimplemented("UpdateTestConfig is not implemented yet")

    async def DeleteTestConfig(
        self, request: scenario_pb2.DeleteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.DeleteReply:
        """scenario.MerakScenarioService/DeleteTestConfig."""
        raise Unimplemented("DeleteTestConfig is not implemented yet")

    async def CreateScenario(
        self, request: scenario_pb2.Scenario, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.Scenario:
        """scenario.MerakScenarioService/CreateScenario."""
        raise Unimplemented("CreateScenario is not implemented yet")

    async def GetScenario(
        self, request: scenario_pb2.GetRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.Scenario:
        """scenario.MerakScenarioService/GetScenario."""
        raise Unimplemented("GetScenario is not implemented yet")

    async def ListScenarios(
        self, request: scenario_pb2.ListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.ListScenariosReply:
        """scenario.MerakScenarioService/ListScenarios."""
        raise Unimplemented("ListScenarios is not implemented yet")

    async def UpdateScenario(
        self, request: scenario_pb2.UpdateScenarioRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.Scenario:
        """scenario.MerakScenarioService/UpdateScenario."""
        raise Unimplemented("UpdateScenario is not implemented yet")

    async def DeleteScenario(
        self, request: scenario_pb2.DeleteScenarioRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.DeleteReply:
        """scenario.MerakScenarioService/DeleteScenario."""
        raise Unimplemented("DeleteScenario is not implemented yet")

    async def ScenarioAction(
        self, request: scenario_pb2.ScenarioActionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scenario_pb2.ScenarioActionReply:
        """scenario.MerakScenarioService/ScenarioAction."""
        raise Unimplemented("ScenarioAction is not implemented yet")


def registration(servicer: ScenarioServicer) -> ServiceRegistration:
    """How to put the servicer on a server."""
    return ServiceRegistration(
        SERVICE_NAME, lambda server: _grpc.add_MerakScenarioServiceServicer_to_server(servicer, server)
    )
