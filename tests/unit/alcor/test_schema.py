"""Alcor's southbound schema as generated here: field numbers, types, enums and methods are Alcor's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from alcor.schema import (
    common_pb2,
    gateway_pb2,
    goalstate_pb2,
    goalstateprovisioner_pb2,
    goalstateprovisioner_pb2_grpc,
    neighbor_pb2,
    port_pb2,
    subnet_pb2,
    subscribeinfoprovisioner_pb2,
    vpc_pb2,
)
from merak.grpcserver import ServiceRegistration
from tests.support.plugin import StartServer

PACKAGE = "alcor.schema"

# Alcor's field table (schema/proto3 at alcor fe4c185, the commit ACA builds against), restated:
# message -> (field, tag, type). "repeated X" and "map<K, V>" as in a .proto; nested types by their
# path inside the package.
FIELDS: dict[str, list[tuple[str, int, str]]] = {
    "GoalState": [
        ("format_version", 1, "uint32"),
        ("vpc_states", 2, "repeated VpcState"),
        ("subnet_states", 3, "repeated SubnetState"),
        ("port_states", 4, "repeated PortState"),
        ("neighbor_states", 5, "repeated NeighborState"),
        ("security_group_states", 6, "repeated SecurityGroupState"),
        ("dhcp_states", 7, "repeated DHCPState"),
        ("router_states", 8, "repeated RouterState"),
        ("gateway_states", 9, "repeated GatewayState"),
    ],
    "GoalStateV2": [
        ("format_version", 1, "uint32"),
        ("host_resources", 2, "map<string, HostResources>"),
        ("vpc_states", 3, "map<string, VpcState>"),
        ("subnet_states", 4, "map<string, SubnetState>"),
        ("port_states", 5, "map<string, PortState>"),
        ("dhcp_states", 6, "map<string, DHCPState>"),
        ("neighbor_states", 7, "map<string, NeighborState>"),
        ("security_group_states", 8, "map<string, SecurityGroupState>"),
        ("router_states", 9, "map<string, RouterState>"),
        ("gateway_states", 10, "map<string, GatewayState>"),
    ],
    "ResourceIdType": [("type", 1, "ResourceType"), ("id", 2, "string")],
    "HostResources": [("resources", 1, "repeated ResourceIdType")],
    "VpcState": [("operation_type", 1, "OperationType"), ("configuration", 2, "VpcConfiguration")],
    "VpcConfiguration": [
        ("revision_number", 1, "uint32"),
        ("request_id", 2, "string"),
        ("id", 3, "string"),
        ("update_type", 4, "UpdateType"),
        ("project_id", 5, "string"),
        ("name", 6, "string"),
        ("cidr", 7, "string"),
        ("tunnel_id", 8, "uint32"),
        ("gateway_ids", 9, "repeated string"),
    ],
    "SubnetState": [("operation_type", 1, "OperationType"), ("configuration", 2, "SubnetConfiguration")],
    "SubnetConfiguration": [
        ("revision_number", 1, "uint32"),
        ("request_id", 2, "string"),
        ("id", 3, "string"),
        ("update_type", 4, "UpdateType"),
        ("network_type", 5, "NetworkType"),
        ("vpc_id", 6, "string"),
        ("name", 7, "string"),
        ("cidr", 8, "string"),
        ("tunnel_id", 9, "uint64"),
        ("gateway", 10, "SubnetConfiguration.Gateway"),
        ("dhcp_enable", 11, "bool"),
        ("extra_dhcp_options", 12, "repeated SubnetConfiguration.ExtraDhcpOption"),
        ("dns_entry_list", 13, "repeated SubnetConfiguration.DnsEntry"),
        ("availability_zone", 14, "string"),
    ],
    "SubnetConfiguration.Gateway": [("ip_address", 1, "string"), ("mac_address", 2, "string")],
    "PortState": [("operation_type", 1, "OperationType"), ("configuration", 2, "PortConfiguration")],
    "PortConfiguration": [
        ("revision_number", 1, "uint32"),
        ("request_id", 2, "string"),
        ("id", 3, "string"),
        ("update_type", 4, "UpdateType"),
        ("vpc_id", 5, "string"),
        ("name", 6, "string"),
        ("device_id", 7, "string"),
        ("device_owner", 8, "string"),
        ("mac_address", 9, "string"),
        ("admin_state_up", 10, "bool"),
        ("host_info", 11, "PortConfiguration.HostInfo"),
        ("fixed_ips", 12, "repeated PortConfiguration.FixedIp"),
        ("allow_address_pairs", 13, "repeated PortConfiguration.AllowAddressPair"),
        ("security_group_ids", 14, "repeated PortConfiguration.SecurityGroupId"),
    ],
    "PortConfiguration.FixedIp": [("subnet_id", 1, "string"), ("ip_address", 2, "string")],
    "NeighborState": [("operation_type", 1, "OperationType"), ("configuration", 2, "NeighborConfiguration")],
    "NeighborConfiguration": [
        ("revision_number", 1, "uint32"),
        ("request_id", 2, "string"),
        ("id", 3, "string"),
        ("update_type", 4, "UpdateType"),
        ("vpc_id", 5, "string"),
        ("name", 6, "string"),
        ("mac_address", 7, "string"),
        ("host_mac_address", 8, "string"),
        ("host_ip_address", 9, "string"),
        ("fixed_ips", 10, "repeated NeighborConfiguration.FixedIp"),
        ("allow_address_pairs", 11, "repeated NeighborConfiguration.AllowAddressPair"),
    ],
    "NeighborConfiguration.FixedIp": [
        ("neighbor_type", 1, "NeighborType"),
        ("subnet_id", 2, "string"),
        ("ip_address", 3, "string"),
        ("arion_group", 4, "string"),
        ("tunnel_id", 5, "uint32"),
    ],
    "RouterState": [("operation_type", 1, "OperationType"), ("configuration", 2, "RouterConfiguration")],
    "RouterConfiguration": [
        ("revision_number", 1, "uint32"),
        ("request_id", 2, "string"),
        ("id", 3, "string"),
        ("update_type", 4, "UpdateType"),
        ("host_dvr_mac_address", 5, "string"),
        ("subnet_routing_tables", 6, "repeated RouterConfiguration.SubnetRoutingTable"),
    ],
    "RouterConfiguration.SubnetRoutingTable": [
        ("subnet_id", 1, "string"),
        ("routing_rules", 2, "repeated RouterConfiguration.RoutingRule"),
    ],
    "RouterConfiguration.RoutingRule": [
        ("operation_type", 1, "OperationType"),
        ("id", 2, "string"),
        ("name", 3, "string"),
        ("destination", 4, "string"),
        ("next_hop_ip", 5, "string"),
        ("priority", 6, "uint32"),
        ("routing_rule_extra_info", 7, "RouterConfiguration.RoutingRuleExtraInfo"),
    ],
    "RouterConfiguration.RoutingRuleExtraInfo": [
        ("destination_type", 1, "DestinationType"),
        ("next_hop_mac", 2, "string"),
    ],
    "DHCPConfiguration": [
        ("revision_number", 1, "uint32"),
        ("request_id", 2, "string"),
        ("id", 3, "string"),
        ("update_type", 4, "UpdateType"),
        ("subnet_id", 5, "string"),
        ("mac_address", 6, "string"),
        ("ipv4_address", 7, "string"),
        ("ipv6_address", 8, "string"),
        ("port_host_name", 9, "string"),
    ],
    "GatewayConfiguration": [
        ("revision_number", 1, "uint32"),
        ("request_id", 2, "string"),
        ("id", 3, "string"),
        ("gateway_type", 4, "GatewayType"),
        ("destinations", 5, "repeated GatewayConfiguration.destination"),
        ("zeta_info", 6, "GatewayConfiguration.zeta"),
        ("arion_info", 7, "GatewayConfiguration.arion"),
    ],
    "GoalStateOperationReply": [
        ("format_version", 1, "uint32"),
        ("operation_statuses", 2, "repeated GoalStateOperationReply.GoalStateOperationStatus"),
        ("message_total_operation_time", 3, "uint32"),
    ],
    "GoalStateOperationReply.GoalStateOperationStatus": [
        ("resource_id", 1, "string"),
        ("resource_type", 2, "ResourceType"),
        ("operation_type", 3, "OperationType"),
        ("operation_status", 4, "OperationStatus"),
        ("dataplane_programming_time", 5, "uint32"),
        ("network_configuration_time", 6, "uint32"),
        ("state_elapse_time", 7, "uint32"),
    ],
    "HostRequest.ResourceStateRequest": [
        ("request_type", 1, "RequestType"),
        ("request_id", 2, "string"),
        ("tunnel_id", 3, "uint32"),
        ("source_ip", 4, "string"),
        ("source_port", 5, "uint32"),
        ("destination_ip", 6, "string"),
        ("destination_port", 7, "uint32"),
        ("ethertype", 8, "EtherType"),
        ("protocol", 9, "Protocol"),
    ],
    "NeighborRulesRequest": [
        ("format_version", 1, "uint32"),
        ("request_id", 2, "string"),
        ("neigborstates", 3, "repeated NeighborState"),
    ],
}

ENUMS: dict[str, dict[str, int]] = {
    "ResourceType": {
        "VPC": 0,
        "SUBNET": 1,
        "PORT": 2,
        "NEIGHBOR": 3,
        "SECURITYGROUP": 4,
        "DHCP": 5,
        "ROUTER": 6,
        "GATEWAY": 7,
    },
    "OperationType": {"INFO": 0, "CREATE": 1, "UPDATE": 2, "GET": 3, "DELETE": 4},
    "OperationStatus": {"SUCCESS": 0, "FAILURE": 1, "INVALID_ARG": 2, "PENDING": 3, "OUT_OF_ORDER": 4},
    "RequestType": {"ON_DEMAND": 0, "AGENT_RESTARTED": 1},
    "EtherType": {"IPV4": 0, "IPV6": 1},
    "Protocol": {"TCP": 0, "UDP": 1, "ICMP": 2, "HTTP": 3, "ARP": 4},
    "NetworkType": {"VXLAN": 0, "VLAN": 1, "GRE": 2, "GENEVE": 3, "VXLAN_GPE": 4},
    "UpdateType": {"DELTA": 0, "FULL": 1},
    "NeighborType": {"L2": 0, "L3": 1},
    "SecurityGroupConfiguration.Direction": {"EGRESS": 0, "INGRESS": 1},
    "DestinationType": {"INTERNET": 0, "VPC_GW": 1},
    "GatewayType": {"DEFAULT": 0, "ZETA": 1, "TGW": 2, "IGW": 3, "NGW": 4, "ARION": 5},
    "SubscribeOperation": {"Subscribe": 0, "Unsubscribe": 1},
}

# Alcor's file split: which file defines each top-level type (the last part of our path is Alcor's name).
FILES: dict[str, list[str]] = {
    "common.proto": [
        "ResourceType",
        "OperationType",
        "OperationStatus",
        "RequestType",
        "EtherType",
        "Protocol",
        "NetworkType",
        "UpdateType",
    ],
    "goalstate.proto": ["GoalState", "ResourceIdType", "HostResources", "GoalStateV2"],
    "vpc.proto": ["VpcConfiguration", "VpcState"],
    "subnet.proto": ["SubnetConfiguration", "SubnetState"],
    "port.proto": ["PortConfiguration", "PortState"],
    "neighbor.proto": ["NeighborType", "NeighborConfiguration", "NeighborState"],
    "securitygroup.proto": ["SecurityGroupConfiguration", "SecurityGroupState"],
    "dhcp.proto": ["DHCPConfiguration", "DHCPState"],
    "router.proto": ["DestinationType", "RouterConfiguration", "RouterState"],
    "gateway.proto": ["GatewayType", "GatewayConfiguration", "GatewayState"],
    "goalstateprovisioner.proto": [
        "GoalStateOperationReply",
        "HostRequest",
        "HostRequestReply",
        "NeighborRulesRequest",
    ],
    "subscribeinfoprovisioner.proto": ["SubscribeOperation", "NodeSubscribeInfo", "SubscribeOperationReply"],
}

# GoalStateProvisioner's methods: (request, response, client streams, server streams).
METHODS: dict[str, tuple[str, str, bool, bool]] = {
    "PushNetworkResourceStates": ("GoalState", "GoalStateOperationReply", False, False),
    "PushGoalStatesStream": ("GoalStateV2", "GoalStateOperationReply", True, True),
    "RequestGoalStates": ("HostRequest", "HostRequestReply", False, False),
    "PushGoalstates": ("NeighborRulesRequest", "GoalStateOperationReply", False, False),
}

SCALARS = {
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BOOL: "bool",
}


def _pool_message(name: str) -> Descriptor:
    """A message of the package by its path inside it (`SubnetConfiguration.Gateway`)."""
    return goalstate_pb2.DESCRIPTOR.pool.FindMessageTypeByName(f"{PACKAGE}.{name}")


def _pool_enum(name: str) -> EnumDescriptor:
    """An enum of the package by its path inside it."""
    return goalstate_pb2.DESCRIPTOR.pool.FindEnumTypeByName(f"{PACKAGE}.{name}")


def _local(full_name: str) -> str:
    """A type's name inside the package; a type of another package keeps its full name."""
    return full_name.removeprefix(f"{PACKAGE}.")


def _bare_type(field: FieldDescriptor) -> str:
    """A field's type without its label: the scalar's name, or the message's or enum's name."""
    if field.message_type is not None:
        return _local(field.message_type.full_name)
    if field.enum_type is not None:
        return _local(field.enum_type.full_name)
    return SCALARS.get(field.type, f"type {field.type}")


def _spelled(field: FieldDescriptor) -> str:
    """A field's type as a .proto spells it: `uint32`, `repeated PortState`, `map<string, VpcState>`."""
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
        return f"map<{_bare_type(key)}, {_bare_type(value)}>"
    return f"repeated {_bare_type(field)}" if field.is_repeated else _bare_type(field)


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_message_fields_are_alcors(name: str) -> None:
    message = _pool_message(name)
    found = [(field.name, field.number, _spelled(field)) for field in message.fields]
    assert sorted(found, key=lambda row: row[1]) == FIELDS[name]


@pytest.mark.parametrize("name", sorted(ENUMS))
def test_enum_values_are_alcors(name: str) -> None:
    enum = _pool_enum(name)
    assert {value.name: value.number for value in enum.values} == ENUMS[name]


@pytest.mark.parametrize("file_name", sorted(FILES))
def test_each_type_sits_in_alcors_file(file_name: str) -> None:
    proto = goalstate_pb2.DESCRIPTOR.pool.FindFileByName(f"alcor/schema/{file_name}")
    assert proto.package == PACKAGE
    written = descriptor_pb2.FileDescriptorProto()
    proto.CopyToProto(written)
    assert written.syntax == "proto3"
    defined = sorted([*proto.message_types_by_name, *proto.enum_types_by_name])
    assert defined == sorted(FILES[file_name])


def test_gateway_extra_info_is_a_oneof() -> None:
    config = gateway_pb2.GatewayConfiguration.DESCRIPTOR
    assert [field.name for field in config.oneofs_by_name["extra_info"].fields] == ["zeta_info", "arion_info"]
    gateway = gateway_pb2.GatewayConfiguration(zeta_info=gateway_pb2.GatewayConfiguration.zeta())
    gateway.arion_info.vni = 7
    assert gateway.WhichOneof("extra_info") == "arion_info"


def test_goal_state_provisioner_methods() -> None:
    service = goalstateprovisioner_pb2.DESCRIPTOR.services_by_name["GoalStateProvisioner"]
    assert service.full_name == "alcor.schema.GoalStateProvisioner"
    found = {
        method.name: (
            _local(method.input_type.full_name),
            _local(method.output_type.full_name),
            method.client_streaming,
            method.server_streaming,
        )
        for method in service.methods
    }
    assert found == METHODS


def test_subscribe_info_provisioner_method() -> None:
    service = subscribeinfoprovisioner_pb2.DESCRIPTOR.services_by_name["SubscribeInfoProvisioner"]
    method = service.methods_by_name["PushNodeSubscribeInfo"]
    assert (_local(method.input_type.full_name), _local(method.output_type.full_name)) == (
        "NodeSubscribeInfo",
        "SubscribeOperationReply",
    )
    assert not (method.client_streaming or method.server_streaming)
    reply = subscribeinfoprovisioner_pb2.SubscribeOperationReply.DESCRIPTOR
    assert [(field.name, field.number) for field in reply.fields] == [("operationStatus", 1)]


def _goal_state() -> goalstate_pb2.GoalStateV2:
    """One port's goal state as Alcor's NCM sends it to the port's host: port, subnet, VPC, neighbour."""
    port_id, subnet_id, vpc_id = "7d1c3b5e-90aa-4c43-9f59-7a2d1c0e4b11", "subnet-1", "vpc-1"
    state = goalstate_pb2.GoalStateV2(format_version=102)
    state.host_resources["10.213.43.187"].resources.extend(
        [
            goalstate_pb2.ResourceIdType(type=common_pb2.PORT, id=port_id),
            goalstate_pb2.ResourceIdType(type=common_pb2.NEIGHBOR, id=f"L2/{port_id}"),
        ]
    )
    state.vpc_states[vpc_id].CopyFrom(
        vpc_pb2.VpcState(
            operation_type=common_pb2.INFO,
            configuration=vpc_pb2.VpcConfiguration(revision_number=1, id=vpc_id, cidr="10.0.0.0/16"),
        )
    )
    state.subnet_states[subnet_id].CopyFrom(
        subnet_pb2.SubnetState(
            operation_type=common_pb2.INFO,
            configuration=subnet_pb2.SubnetConfiguration(
                revision_number=1,
                id=subnet_id,
                network_type=common_pb2.VXLAN,
                vpc_id=vpc_id,
                cidr="10.0.1.0/24",
                # Beyond 32 bits: the subnet's tunnel_id is a uint64, unlike the VPC's.
                tunnel_id=2**32 + 21,
                gateway=subnet_pb2.SubnetConfiguration.Gateway(
                    ip_address="10.0.1.1", mac_address="aa:bb:cc:01:01:01"
                ),
            ),
        )
    )
    port_config = port_pb2.PortConfiguration(
        revision_number=1,
        id=port_id,
        update_type=common_pb2.FULL,
        vpc_id=vpc_id,
        device_id="vm-1",
        device_owner="compute:nova",
        mac_address="6c:dd:ee:00:00:40",
        admin_state_up=True,
        fixed_ips=[port_pb2.PortConfiguration.FixedIp(subnet_id=subnet_id, ip_address="10.0.1.2")],
    )
    state.port_states[port_id].CopyFrom(
        port_pb2.PortState(operation_type=common_pb2.CREATE, configuration=port_config)
    )
    state.neighbor_states[f"L2/{port_id}"].CopyFrom(
        neighbor_pb2.NeighborState(
            operation_type=common_pb2.UPDATE,
            configuration=neighbor_pb2.NeighborConfiguration(
                revision_number=1,
                id=port_id,
                vpc_id=vpc_id,
                mac_address="6c:dd:ee:00:00:40",
                host_ip_address="10.213.43.187",
                fixed_ips=[
                    neighbor_pb2.NeighborConfiguration.FixedIp(
                        neighbor_type=neighbor_pb2.L2, subnet_id=subnet_id, ip_address="10.0.1.2"
                    )
                ],
            ),
        )
    )
    return state


def test_goal_state_v2_round_trip() -> None:
    sent = _goal_state()
    received = goalstate_pb2.GoalStateV2.FromString(sent.SerializeToString())
    assert received == sent
    port_id = "7d1c3b5e-90aa-4c43-9f59-7a2d1c0e4b11"
    port = received.port_states[port_id]
    assert port.operation_type == common_pb2.CREATE
    assert port.configuration.fixed_ips[0].subnet_id == "subnet-1"
    assert received.subnet_states["subnet-1"].configuration.tunnel_id == 2**32 + 21
    neighbor = received.neighbor_states[f"L2/{port_id}"].configuration
    assert (neighbor.id, neighbor.host_ip_address) == (port_id, "10.213.43.187")
    refs = received.host_resources["10.213.43.187"].resources
    assert [ref.id for ref in refs] == [port_id, f"L2/{port_id}"]


def test_wire_bytes_carry_alcors_tags() -> None:
    # Bytes as any protobuf runtime writes them for Alcor's tags: (tag << 3 | wire type), then the value.
    assert subnet_pb2.SubnetConfiguration(tunnel_id=21).SerializeToString() == b"\x48\x15"
    assert port_pb2.PortState(operation_type=common_pb2.CREATE).SerializeToString() == b"\x08\x01"
    assert vpc_pb2.VpcConfiguration(gateway_ids=["g"]).SerializeToString() == b"\x4a\x01g"
    reply = goalstateprovisioner_pb2.GoalStateOperationReply(message_total_operation_time=5)
    assert reply.SerializeToString() == b"\x18\x05"
    entry = goalstate_pb2.GoalStateV2(port_states={"p": port_pb2.PortState()}).SerializeToString()
    # Field 5, length-delimited: a map entry whose key (1) is "p" and whose value (2) is empty.
    assert entry == b"\x2a\x05\x0a\x01p\x12\x00"


class _OneReplyProvisioner(goalstateprovisioner_pb2_grpc.GoalStateProvisionerServicer):
    """Answers each push with one status per port, as ACA does; the on-demand and Arion methods are not
    served by an agent."""

    async def PushNetworkResourceStates(
        self, request: goalstate_pb2.GoalState, context: grpc.aio.ServicerContext[Any, Any]
    ) -> goalstateprovisioner_pb2.GoalStateOperationReply:
        """One SUCCESS per port of a V1 goal state."""
        return _reply(state.configuration.id for state in request.port_states)

    async def PushGoalStatesStream(
        self,
        request_iterator: AsyncIterator[goalstate_pb2.GoalStateV2],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[goalstateprovisioner_pb2.GoalStateOperationReply]:
        """Read one GoalStateV2, answer it, end the call."""
        async for request in request_iterator:
            yield _reply(state.configuration.id for state in request.port_states.values())
            return

    async def RequestGoalStates(
        self, request: goalstateprovisioner_pb2.HostRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> goalstateprovisioner_pb2.HostRequestReply:
        """Not an agent's method."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "served by Alcor's NCM")

    async def PushGoalstates(
        self,
        request: goalstateprovisioner_pb2.NeighborRulesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> goalstateprovisioner_pb2.GoalStateOperationReply:
        """Not an agent's method."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "served by Arion's master")


def _reply(port_ids: Iterable[str]) -> goalstateprovisioner_pb2.GoalStateOperationReply:
    """A reply with one PORT SUCCESS per id."""
    status = goalstateprovisioner_pb2.GoalStateOperationReply.GoalStateOperationStatus
    return goalstateprovisioner_pb2.GoalStateOperationReply(
        operation_statuses=[
            status(
                resource_id=port_id,
                resource_type=common_pb2.PORT,
                operation_type=common_pb2.CREATE,
                operation_status=common_pb2.SUCCESS,
            )
            for port_id in port_ids
        ]
    )


async def test_methods_answer_on_alcors_grpc_paths(grpc_server: StartServer) -> None:
    servicer = _OneReplyProvisioner()
    address = await grpc_server(
        [
            ServiceRegistration(
                "alcor.schema.GoalStateProvisioner",
                lambda server: goalstateprovisioner_pb2_grpc.add_GoalStateProvisionerServicer_to_server(
                    servicer, server
                ),
            )
        ]
    )
    reply_type = goalstateprovisioner_pb2.GoalStateOperationReply
    port_id = "7d1c3b5e-90aa-4c43-9f59-7a2d1c0e4b11"
    async with grpc.aio.insecure_channel(address) as channel:
        # The paths spelled out, as Alcor's Java clients call them, not through our generated stub.
        stream = channel.stream_stream(
            "/alcor.schema.GoalStateProvisioner/PushGoalStatesStream",
            request_serializer=goalstate_pb2.GoalStateV2.SerializeToString,
            response_deserializer=reply_type.FromString,
        )
        call = stream(None)
        await call.write(_goal_state())
        # No half-close: the server ends the call after one reply, as NCM relies on.
        replies = [reply async for reply in call]
        assert [[s.resource_id for s in reply.operation_statuses] for reply in replies] == [[port_id]]
        assert await call.code() == grpc.StatusCode.OK

        unary = channel.unary_unary(
            "/alcor.schema.GoalStateProvisioner/PushNetworkResourceStates",
            request_serializer=goalstate_pb2.GoalState.SerializeToString,
            response_deserializer=reply_type.FromString,
        )
        v1 = goalstate_pb2.GoalState(
            port_states=[port_pb2.PortState(configuration=port_pb2.PortConfiguration(id=port_id))]
        )
        reply = await unary(v1)
        assert [status.resource_id for status in reply.operation_statuses] == [port_id]

        stub = goalstateprovisioner_pb2_grpc.GoalStateProvisionerStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.RequestGoalStates(goalstateprovisioner_pb2.HostRequest())
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
