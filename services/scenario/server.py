"""gRPC servicer of the scenario service: thin; the work is in EntityManager and ScenarioManager."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from merak.grpcserver import ServiceRegistration
from merak.v1 import compute_pb2, scenario_pb2, scenario_pb2_grpc
from services.scenario.entities import EntityManager
from services.scenario.manager import ScenarioManager
from services.scenario.models import (
    COMPUTE_CONFIG,
    NETWORK_CONFIG,
    SCENARIO,
    SERVICE_CONFIG,
    TEST_CONFIG,
    TOPOLOGY_CONFIG,
)

SERVICE_NAME = "scenario.MerakScenarioService"
_grpc = scenario_pb2_grpc
Context = grpc.aio.ServicerContext[Any, Any]


class ScenarioServicer(_grpc.MerakScenarioServiceServicer):
    """scenario.MerakScenarioService."""

    def __init__(self, entities: EntityManager, manager: ScenarioManager) -> None:
        self.entities = entities
        self.manager = manager

    async def CreateTopologyConfig(
        self, request: scenario_pb2.TopologyConfig, context: Context
    ) -> scenario_pb2.TopologyConfig:
        """Store a new TopologyConfig; the id is generated when empty."""
        return await self.entities.create(TOPOLOGY_CONFIG, request)

    async def GetTopologyConfig(
        self, request: scenario_pb2.GetRequest, context: Context
    ) -> scenario_pb2.TopologyConfig:
        """One TopologyConfig; NOT_FOUND when missing."""
        return await self.entities.get(TOPOLOGY_CONFIG, request.id)

    async def ListTopologyConfigs(
        self, request: scenario_pb2.ListRequest, context: Context
    ) -> scenario_pb2.ListTopologyConfigsReply:
        """A page of TopologyConfigs in id order."""
        items, token = await self.entities.list(TOPOLOGY_CONFIG, request.page_size, request.page_token)
        return scenario_pb2.ListTopologyConfigsReply(items=items, next_page_token=token)

    async def UpdateTopologyConfig(
        self, request: scenario_pb2.UpdateTopologyConfigRequest, context: Context
    ) -> scenario_pb2.TopologyConfig:
        """Replace the fields named by update_mask (every non-empty field when it is empty)."""
        return await self.entities.update(
            TOPOLOGY_CONFIG, request.config, request.update_mask.paths, "config"
        )

    async def DeleteTopologyConfig(
        self, request: scenario_pb2.DeleteRequest, context: Context
    ) -> scenario_pb2.DeleteReply:
        """Delete a TopologyConfig; FAILED_PRECONDITION while a scenario refers to it."""
        await self.entities.delete(TOPOLOGY_CONFIG, request.id)
        return scenario_pb2.DeleteReply(id=request.id)

    async def CreateNetworkConfig(
        self, request: scenario_pb2.NetworkConfig, context: Context
    ) -> scenario_pb2.NetworkConfig:
        """Store a new NetworkConfig; the id is generated when empty."""
        return await self.entities.create(NETWORK_CONFIG, request)

    async def GetNetworkConfig(
        self, request: scenario_pb2.GetRequest, context: Context
    ) -> scenario_pb2.NetworkConfig:
        """One NetworkConfig; NOT_FOUND when missing."""
        return await self.entities.get(NETWORK_CONFIG, request.id)

    async def ListNetworkConfigs(
        self, request: scenario_pb2.ListRequest, context: Context
    ) -> scenario_pb2.ListNetworkConfigsReply:
        """A page of NetworkConfigs in id order."""
        items, token = await self.entities.list(NETWORK_CONFIG, request.page_size, request.page_token)
        return scenario_pb2.ListNetworkConfigsReply(items=items, next_page_token=token)

    async def UpdateNetworkConfig(
        self, request: scenario_pb2.UpdateNetworkConfigRequest, context: Context
    ) -> scenario_pb2.NetworkConfig:
        """Replace the fields named by update_mask (every non-empty field when it is empty)."""
        return await self.entities.update(NETWORK_CONFIG, request.config, request.update_mask.paths, "config")

    async def DeleteNetworkConfig(
        self, request: scenario_pb2.DeleteRequest, context: Context
    ) -> scenario_pb2.DeleteReply:
        """Delete a NetworkConfig; FAILED_PRECONDITION while a scenario refers to it."""
        await self.entities.delete(NETWORK_CONFIG, request.id)
        return scenario_pb2.DeleteReply(id=request.id)

    async def CreateComputeConfig(
        self, request: scenario_pb2.ComputeConfig, context: Context
    ) -> scenario_pb2.ComputeConfig:
        """Store a new ComputeConfig; the id is generated when empty."""
        return await self.entities.create(COMPUTE_CONFIG, request)

    async def GetComputeConfig(
        self, request: scenario_pb2.GetRequest, context: Context
    ) -> scenario_pb2.ComputeConfig:
        """One ComputeConfig; NOT_FOUND when missing."""
        return await self.entities.get(COMPUTE_CONFIG, request.id)

    async def ListComputeConfigs(
        self, request: scenario_pb2.ListRequest, context: Context
    ) -> scenario_pb2.ListComputeConfigsReply:
        """A page of ComputeConfigs in id order."""
        items, token = await self.entities.list(COMPUTE_CONFIG, request.page_size, request.page_token)
        return scenario_pb2.ListComputeConfigsReply(items=items, next_page_token=token)

    async def UpdateComputeConfig(
        self, request: scenario_pb2.UpdateComputeConfigRequest, context: Context
    ) -> scenario_pb2.ComputeConfig:
        """Replace the fields named by update_mask (every non-empty field when it is empty)."""
        return await self.entities.update(COMPUTE_CONFIG, request.config, request.update_mask.paths, "config")

    async def DeleteComputeConfig(
        self, request: scenario_pb2.DeleteRequest, context: Context
    ) -> scenario_pb2.DeleteReply:
        """Delete a ComputeConfig; FAILED_PRECONDITION while a scenario refers to it."""
        await self.entities.delete(COMPUTE_CONFIG, request.id)
        return scenario_pb2.DeleteReply(id=request.id)

    async def CreateServiceConfig(
        self, request: scenario_pb2.ServiceConfig, context: Context
    ) -> scenario_pb2.ServiceConfig:
        """Store a new ServiceConfig; the id is generated when empty."""
        return await self.entities.create(SERVICE_CONFIG, request)

    async def GetServiceConfig(
        self, request: scenario_pb2.GetRequest, context: Context
    ) -> scenario_pb2.ServiceConfig:
        """One ServiceConfig; NOT_FOUND when missing."""
        return await self.entities.get(SERVICE_CONFIG, request.id)

    async def ListServiceConfigs(
        self, request: scenario_pb2.ListRequest, context: Context
    ) -> scenario_pb2.ListServiceConfigsReply:
        """A page of ServiceConfigs in id order."""
        items, token = await self.entities.list(SERVICE_CONFIG, request.page_size, request.page_token)
        return scenario_pb2.ListServiceConfigsReply(items=items, next_page_token=token)

    async def UpdateServiceConfig(
        self, request: scenario_pb2.UpdateServiceConfigRequest, context: Context
    ) -> scenario_pb2.ServiceConfig:
        """Replace the fields named by update_mask (every non-empty field when it is empty)."""
        return await self.entities.update(SERVICE_CONFIG, request.config, request.update_mask.paths, "config")

    async def DeleteServiceConfig(
        self, request: scenario_pb2.DeleteRequest, context: Context
    ) -> scenario_pb2.DeleteReply:
        """Delete a ServiceConfig; FAILED_PRECONDITION while a scenario refers to it."""
        await self.entities.delete(SERVICE_CONFIG, request.id)
        return scenario_pb2.DeleteReply(id=request.id)

    async def CreateTestConfig(
        self, request: scenario_pb2.TestConfig, context: Context
    ) -> scenario_pb2.TestConfig:
        """Store a new TestConfig; the id is generated when empty."""
        return await self.entities.create(TEST_CONFIG, request)

    async def GetTestConfig(
        self, request: scenario_pb2.GetRequest, context: Context
    ) -> scenario_pb2.TestConfig:
        """One TestConfig; NOT_FOUND when missing."""
        return await self.entities.get(TEST_CONFIG, request.id)

    async def ListTestConfigs(
        self, request: scenario_pb2.ListRequest, context: Context
    ) -> scenario_pb2.ListTestConfigsReply:
        """A page of TestConfigs in id order."""
        items, token = await self.entities.list(TEST_CONFIG, request.page_size, request.page_token)
        return scenario_pb2.ListTestConfigsReply(items=items, next_page_token=token)

    async def UpdateTestConfig(
        self, request: scenario_pb2.UpdateTestConfigRequest, context: Context
    ) -> scenario_pb2.TestConfig:
        """Replace the fields named by update_mask (every non-empty field when it is empty)."""
        return await self.entities.update(TEST_CONFIG, request.config, request.update_mask.paths, "config")

    async def DeleteTestConfig(
        self, request: scenario_pb2.DeleteRequest, context: Context
    ) -> scenario_pb2.DeleteReply:
        """Delete a TestConfig; FAILED_PRECONDITION while a scenario refers to it."""
        await self.entities.delete(TEST_CONFIG, request.id)
        return scenario_pb2.DeleteReply(id=request.id)

    async def CreateScenario(self, request: scenario_pb2.Scenario, context: Context) -> scenario_pb2.Scenario:
        """Store a new Scenario; the id is generated when empty."""
        return await self.entities.create(SCENARIO, request)

    async def GetScenario(self, request: scenario_pb2.GetRequest, context: Context) -> scenario_pb2.Scenario:
        """One Scenario (statuses under way read again from the services); NOT_FOUND when missing."""
        return await self.manager.current(await self.entities.get(SCENARIO, request.id))

    async def ListScenarios(
        self, request: scenario_pb2.ListRequest, context: Context
    ) -> scenario_pb2.ListScenariosReply:
        """A page of Scenarios in id order."""
        items, token = await self.entities.list(SCENARIO, request.page_size, request.page_token)
        return scenario_pb2.ListScenariosReply(items=items, next_page_token=token)

    async def UpdateScenario(
        self, request: scenario_pb2.UpdateScenarioRequest, context: Context
    ) -> scenario_pb2.Scenario:
        """Replace the fields named by update_mask (every non-empty field when it is empty)."""
        return await self.entities.update(SCENARIO, request.scenario, request.update_mask.paths, "scenario")

    async def DeleteScenario(
        self, request: scenario_pb2.DeleteScenarioRequest, context: Context
    ) -> scenario_pb2.DeleteReply:
        """Delete a scenario; a deployed one only with teardown, which removes what it deployed first."""
        await self.manager.delete_scenario(request.id, request.teardown)
        return scenario_pb2.DeleteReply(id=request.id)

    async def ScenarioAction(
        self, request: scenario_pb2.ScenarioActionRequest, context: Context
    ) -> scenario_pb2.ScenarioActionReply:
        """DEPLOY / CHECK / DELETE / UPDATE of one service of a scenario."""
        return await self.manager.action(
            request.scenario_id, request.service.service_name, request.service.action
        )

    async def WatchScenario(
        self, request: scenario_pb2.WatchScenarioRequest, context: Context
    ) -> AsyncIterator[scenario_pb2.ScenarioProgress]:
        """Progress of a scenario, pushed on every change until no service is in a transition."""
        async for progress in self.manager.watch(request.scenario_id):
            yield progress

    async def RunTest(
        self, request: scenario_pb2.RunTestRequest, context: Context
    ) -> scenario_pb2.TestReport:
        """The connectivity test: VMs ping each other through the agents."""
        return await self.manager.run_test(request)

    async def GetResults(
        self, request: scenario_pb2.GetResultsRequest, context: Context
    ) -> compute_pb2.ComputeResults:
        """The control plane's results for the scenario's VMs."""
        return await self.manager.results(request.scenario_id)


def registration(servicer: ScenarioServicer) -> ServiceRegistration:
    """How to put the servicer on a server."""
    return ServiceRegistration(
        SERVICE_NAME, lambda server: _grpc.add_MerakScenarioServiceServicer_to_server(servicer, server)
    )
