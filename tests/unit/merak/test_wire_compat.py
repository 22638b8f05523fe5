"""Wire compatibility with Merak v1: a client generated from Merak's own .proto files can talk to us.

The reference schema is transcribed by hand from /work/shared/merak-reference.md §1 (not copied from the
Merak repository) and loaded into a private descriptor pool, because its package names are ours too.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import cast

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, unknown_fields
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    FileDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import Message

from merak.v1 import agent_pb2, common_pb2, compute_pb2, network_pb2, ntest_pb2, topology_pb2

# A field is (name, number, type); the type is written as in merak-reference §1: "string", "uint32",
# "repeated string", "OperationType", "ntest.TestType", ... Unqualified type names resolve like protoc does:
# own package first, then the imported files.
RefField = tuple[str, int, str]


@dataclass
class RefFile:
    """One Merak v1 .proto file as transcribed from merak-reference §1."""

    deps: list[str] = field(default_factory=list)
    enums: dict[str, dict[str, int]] = field(default_factory=dict)
    messages: dict[str, list[RefField]] = field(default_factory=dict)
    # service -> rpc -> (input type, output type)
    services: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)


S, U, RS = "string", "uint32", "repeated string"

# Keys are package names; the order is a valid import order (a file comes after the files it imports).
# Laid out like the spec's compact proto text so the two can be compared line by line.
# fmt: off
REF: dict[str, RefFile] = {
    "common": RefFile(
        enums={
            "OperationType": {"INFO": 0, "CREATE": 1, "UPDATE": 2, "DELETE": 3, "PRECREATE": 4},
            "MessageType": {"FULL": 0, "DELTA": 1},
            "ReturnCode": {"OK": 0, "FAILED": 1},
            "Status": {
                "NONE": 0, "DEPLOYING": 1, "READY": 2, "DELETING": 3, "UPDATING": 4, "ERROR": 5, "DONE": 6,
            },
        },
        messages={
            "ReturnMessage": [("return_code", 1, "ReturnCode"), ("return_message", 2, S)],
            "InternalServiceInfo": [
                ("operation_type", 1, "OperationType"), ("id", 2, S), ("name", 3, S), ("cmd", 4, S),
                ("url", 5, S), ("parameters", 6, RS), ("return_code", 7, "repeated uint32"),
                ("return_string", 8, RS), ("when_to_run", 9, S), ("where_to_run", 10, S),
            ],
            "InternalHostInfo": [("ip", 1, S), ("routing_rules", 2, RS), ("status", 3, "Status")],
            "InternalComputeInfo": [
                ("operation_type", 1, "OperationType"), ("id", 2, S), ("name", 3, S), ("datapath_ip", 4, S),
                ("mac", 5, S), ("veth", 6, S), ("container_ip", 7, S), ("status", 8, "Status"),
                ("hostname", 9, S),
            ],
            "InternalSubnetInfo": [
                ("subnet_id", 1, S), ("subnet_cidr", 2, S), ("subnet_gw", 3, S), ("number_vms", 4, U),
            ],
            "InternalVpcInfo": [
                ("vpc_id", 1, S), ("tenant_id", 2, S), ("project_id", 3, S), ("vpc_cidr", 4, S),
                ("subnets", 5, "repeated InternalSubnetInfo"),
            ],
        },
    ),
    "ntest": RefFile(
        deps=["common"],
        enums={
            "TestStatus": {"NONE": 0, "RUNNING": 1, "PASSED": 2, "FAILED": 3},
            "TestType": {"PINGALL": 0},
        },
        messages={
            "InternalTestConfiguration": [("test_type", 1, "TestType")],
            "InternalTestInfo": [
                ("id", 1, S), ("test_type", 2, "TestType"), ("hosts", 3, "repeated InternalVMHost"),
            ],
            "InternalVMHost": [("name", 1, S), ("ip", 2, S), ("vms", 3, "repeated InternalVMTestInfo")],
            "InternalVMTestInfo": [("name", 1, S), ("id", 2, S), ("ip", 3, S), ("results", 4, "TestStatus")],
            "ReturnTestMessage": [
                ("return_code", 1, "ReturnCode"), ("return_message", 2, S),
                ("results", 3, "InternalTestInfo"),
            ],
        },
        services={
            "MeraknTestService": {"TestHandler": ("InternalTestConfiguration", "ReturnTestMessage")},
        },
    ),
    "topology": RefFile(
        deps=["common"],
        enums={
            "TopologyType": {"SINGLE": 0, "LINEAR": 1, "TREE": 2, "REVERSED": 3, "MESH": 4, "CUSTOM": 5},
            "VNodeType": {"VHOST": 0, "VSWITCH": 1, "VGATEWAY": 2, "VROUTER": 3},
        },
        messages={
            "InternalVNicInfo": [
                ("operation_type", 1, "OperationType"), ("id", 2, S), ("name", 3, S), ("ip", 4, S),
            ],
            "InternalVNodeInfo": [
                ("operation_type", 1, "OperationType"), ("id", 2, S), ("name", 3, S),
                ("type", 4, "VNodeType"), ("vnics", 5, "repeated InternalVNicInfo"),
            ],
            "InternalVLinkInfo": [
                ("operation_type", 1, "OperationType"), ("id", 2, S), ("name", 3, S), ("src", 4, S),
                ("dst", 5, S),
            ],
            "InternalTopologyImage": [
                ("operation_type", 1, "OperationType"), ("id", 2, S), ("name", 3, S),
                ("type", 4, "VNodeType"), ("registry", 5, S), ("cmd", 6, RS), ("args", 7, RS),
            ],
            "InternalTopologyConfiguration": [
                ("format_version", 1, U), ("revision_number", 2, U), ("request_id", 3, S),
                ("message_type", 4, "MessageType"), ("topology_id", 5, S), ("name", 6, S),
                ("topology_type", 7, "TopologyType"), ("number_of_vhosts", 8, U), ("number_of_racks", 9, U),
                ("vhost_per_rack", 10, U), ("ports_per_vswitch", 11, U), ("data_plane_cidr", 12, S),
                ("number_of_gateways", 13, U), ("gateway_ips", 14, RS),
                ("images", 15, "repeated InternalTopologyImage"),
                ("vnodes", 16, "repeated InternalVNodeInfo"), ("vlinks", 17, "repeated InternalVLinkInfo"),
                ("services", 18, "repeated InternalServiceInfo"),
                ("extra_info", 19, "InternalTopologyExtraInfo"),
            ],
            "InternalTopologyInfo": [
                ("operation_type", 1, "OperationType"), ("config", 2, "InternalTopologyConfiguration"),
            ],
            "InternalTopologyExtraInfo": [("info", 1, S)],
            "ReturnTopologyMessage": [
                ("return_code", 1, "ReturnCode"), ("return_message", 2, S),
                ("compute_nodes", 3, "repeated InternalComputeInfo"),
                ("hosts", 4, "repeated InternalHostInfo"),
            ],
        },
        services={
            "MerakTopologyService": {
                "TopologyHandler": ("InternalTopologyInfo", "ReturnTopologyMessage"),
                "TestHandler": ("InternalTopologyInfo", "ReturnTopologyMessage"),
            },
        },
    ),
    "network": RefFile(
        deps=["common"],
        messages={
            "InternalSecurityGroupRulelnfo": [
                ("operation_type", 1, "OperationType"), ("id", 2, S), ("name", 3, S), ("description", 4, S),
                ("ethertype", 5, S), ("direction", 6, S), ("protocol", 7, S), ("port_range", 8, S),
                ("remote_group_id", 9, S), ("remote_ip_prefix", 10, S),
            ],
            "InternalRouterInfo": [
                ("operation_type", 1, "OperationType"), ("id", 2, S), ("name", 3, S), ("subnets", 4, RS),
            ],
            "InternalGatewayInfo": [
                ("operation_type", 1, "OperationType"), ("id", 2, S), ("name", 3, S), ("ips", 4, RS),
            ],
            "InternalSecurityGroupInfo": [
                ("operation_type", 1, "OperationType"), ("id", 2, S), ("name", 3, S), ("tenant_id", 4, S),
                ("project_id", 5, S), ("rules", 6, "repeated InternalSecurityGroupRulelnfo"),
                ("apply_to", 7, RS),
            ],
            "InternalNetworkInfo": [
                ("operation_type", 1, "OperationType"), ("id", 2, S), ("name", 3, S),
                ("number_of_vpcs", 4, U), ("number_of_subnet_per_vpc", 5, U),
                ("vpcs", 6, "repeated InternalVpcInfo"), ("number_of_security_groups", 7, U),
                ("routers", 8, "repeated InternalRouterInfo"),
                ("gateways", 9, "repeated InternalGatewayInfo"),
                ("security_groups", 10, "repeated InternalSecurityGroupInfo"),
            ],
            "InternalStorageInfo": [("info", 1, S)],
            "InternalNetConfigExtraInfo": [("info", 1, S)],
            "InternalNetConfigConfiguration": [
                ("format_version", 1, U), ("revision_number", 2, U), ("request_id", 3, S),
                ("netconfig_id", 4, S), ("message_type", 5, "MessageType"),
                ("services", 6, "repeated InternalServiceInfo"),
                ("computes", 7, "repeated InternalComputeInfo"), ("network", 8, "InternalNetworkInfo"),
                ("storage", 9, "InternalStorageInfo"), ("extra_info", 10, "InternalNetConfigExtraInfo"),
            ],
            "InternalNetConfigInfo": [
                ("operation_type", 1, "OperationType"), ("config", 2, "InternalNetConfigConfiguration"),
            ],
            "ReturnNetworkMessage": [
                ("return_code", 1, "ReturnCode"), ("return_message", 2, S),
                ("vpcs", 3, "repeated InternalVpcInfo"), ("security_group_ids", 4, RS),
            ],
        },
        services={
            "MerakNetworkService": {"NetConfigHandler": ("InternalNetConfigInfo", "ReturnNetworkMessage")},
        },
    ),
    "compute": RefFile(
        deps=["common"],
        enums={
            "VMDeployType": {"ASSIGN": 0, "UNIFORM": 1, "SKEW": 2, "RANDOM": 3},
            "VMScheduleType": {"SEQUENTIAL": 0, "RPS": 1, "RANDOM_SCHEDULE": 2},
        },
        messages={
            "InternalVMPod": [
                ("operation_type", 1, "OperationType"), ("pod_ip", 2, S), ("num_of_vm", 3, U),
                ("subnets", 4, RS),
            ],
            "InternalVMDeployInfo": [
                ("operation_type", 1, "OperationType"), ("deploy_type", 2, "VMDeployType"),
                ("vpcs", 3, "repeated InternalVpcInfo"), ("secgroups", 4, RS),
                ("scheduler", 5, "VMScheduleType"), ("deploy_method", 6, "repeated InternalVMPod"),
            ],
            "InternalComputeConfiguration": [
                ("format_version", 1, U), ("revision_number", 2, U), ("request_id", 3, S),
                ("compute_config_id", 4, S), ("message_type", 5, "MessageType"),
                ("pods", 6, "repeated InternalComputeInfo"), ("vm_deploy", 7, "InternalVMDeployInfo"),
                ("services", 8, "repeated InternalServiceInfo"),
                ("extra_info", 9, "InternalComputeExtraInfo"),
            ],
            "InternalComputeConfigInfo": [
                ("operation_type", 1, "OperationType"), ("config", 2, "InternalComputeConfiguration"),
            ],
            "InternalComputeExtraInfo": [("info", 1, S)],
            "InternalVMInfo": [
                ("id", 1, S), ("name", 2, S), ("ip", 3, S), ("vpc_id", 4, S), ("subnet_id", 5, S),
                ("security_group_id", 6, S), ("default_gateway", 7, S), ("host", 8, S), ("remote_id", 9, S),
                ("status", 10, "Status"),
            ],
            "ReturnComputeMessage": [
                ("return_code", 1, "ReturnCode"), ("return_message", 2, S),
                ("vms", 3, "repeated InternalVMInfo"),
            ],
        },
        services={
            "MerakComputeService": {"ComputeHandler": ("InternalComputeConfigInfo", "ReturnComputeMessage")},
        },
    ),
    "agent": RefFile(
        deps=["common", "ntest"],
        enums={
            "CreateStage": {"MINIMAL": 0, "BATCH": 1},
        },
        messages={
            # Merak leaves field 14 unused.
            "InternalPortConfig": [
                ("operation_type", 1, "OperationType"), ("id", 2, S), ("name", 3, S), ("vpcid", 4, S),
                ("tenantid", 5, S), ("projectid", 6, S), ("subnetid", 7, S), ("gw", 8, S), ("sg", 9, S),
                ("cidr", 10, S), ("hostname", 11, S), ("remoteid", 12, S), ("deviceid", 13, S), ("ip", 15, S),
                ("mac", 16, S),
            ],
            "ReturnPortInfo": [
                ("id", 1, S), ("ip", 2, S), ("remoteid", 3, S), ("deviceid", 4, S), ("mac", 5, S),
                ("status", 6, "Status"),
            ],
            "AgentReturnInfo": [
                ("return_code", 1, "ReturnCode"), ("return_message", 2, S), ("port", 3, "ReturnPortInfo"),
            ],
            "InternalTestTargetConfig": [("src", 1, S), ("dest", 2, RS), ("test_type", 3, "ntest.TestType")],
            "AgentReturnTestInfo": [
                ("return_code", 1, "ReturnCode"), ("return_message", 2, S),
                ("results", 3, "ntest.TestStatus"),
            ],
            "BulkPorts": [("tapnames", 1, RS)],
        },
        services={
            "MerakAgentService": {
                "PortHandler": ("InternalPortConfig", "AgentReturnInfo"),
                "TestHandler": ("InternalTestTargetConfig", "AgentReturnTestInfo"),
                "BulkPortAdd": ("BulkPorts", "AgentReturnInfo"),
            },
        },
    ),
}
# fmt: on

# Numbers below this are Merak's; ours may only add fields from here on.
FIRST_NEW_FIELD = 100

_FDP = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"string": _FDP.TYPE_STRING, "uint32": _FDP.TYPE_UINT32}
_TYPE_NAMES = {int(number): name for name, number in _FDP.Type.items()}

OUR_FILES: dict[str, FileDescriptor] = {
    module.DESCRIPTOR.package: module.DESCRIPTOR
    for module in (common_pb2, ntest_pb2, topology_pb2, network_pb2, compute_pb2, agent_pb2)
}


def _resolve(ref: dict[str, RefFile], package: str, type_name: str) -> tuple[str, bool]:
    """Full name of a reference type and whether it is an enum, resolved from inside `package`."""
    if "." in type_name:
        qualifier, _, name = type_name.rpartition(".")
        candidates = [(qualifier, name)]
    else:
        candidates = [(pkg, type_name) for pkg in [package, *ref[package].deps]]
    for pkg, name in candidates:
        if pkg != package and pkg not in ref[package].deps:
            raise LookupError(f"{package} uses {type_name} without importing {pkg}")
        if name in ref[pkg].enums:
            return f"{pkg}.{name}", True
        if name in ref[pkg].messages:
            return f"{pkg}.{name}", False
    raise LookupError(f"{package}: unknown type {type_name}")


def build_file(ref: dict[str, RefFile], package: str) -> descriptor_pb2.FileDescriptorProto:
    """FileDescriptorProto for one transcribed reference file."""
    spec = ref[package]
    fdp = descriptor_pb2.FileDescriptorProto(
        name=f"ref/{package}.proto",
        package=package,
        syntax="proto3",
        dependency=[f"ref/{dep}.proto" for dep in spec.deps],
    )
    for enum_name, values in spec.enums.items():
        enum = fdp.enum_type.add(name=enum_name)
        for value_name, number in values.items():
            enum.value.add(name=value_name, number=number)
    for message_name, fields in spec.messages.items():
        message = fdp.message_type.add(name=message_name)
        for field_name, number, type_spec in fields:
            repeated, _, type_name = type_spec.rpartition(" ")
            fd = message.field.add(
                name=field_name, number=number, label=_FDP.LABEL_REPEATED if repeated else _FDP.LABEL_OPTIONAL
            )
            if type_name in _SCALARS:
                fd.type = _SCALARS[type_name]
            else:
                full_name, is_enum = _resolve(ref, package, type_name)
                fd.type = _FDP.TYPE_ENUM if is_enum else _FDP.TYPE_MESSAGE
                fd.type_name = f".{full_name}"
    for service_name, rpcs in spec.services.items():
        service = fdp.service.add(name=service_name)
        for rpc_name, (input_type, output_type) in rpcs.items():
            service.method.add(
                name=rpc_name,
                input_type=f".{_resolve(ref, package, input_type)[0]}",
                output_type=f".{_resolve(ref, package, output_type)[0]}",
            )
    return fdp


def build_pool(ref: dict[str, RefFile]) -> descriptor_pool.DescriptorPool:
    """A fresh pool holding the reference files (ours own the same package names in the default pool)."""
    pool = descriptor_pool.DescriptorPool()
    for package in ref:
        pool.Add(build_file(ref, package))
    return pool


def names(ref: dict[str, RefFile], kind: str) -> list[str]:
    """Full names of the reference messages, enums or services."""
    return [f"{pkg}.{name}" for pkg, spec in ref.items() for name in getattr(spec, kind)]


REF_POOL = build_pool(REF)
REF_MESSAGES = names(REF, "messages")
REF_ENUMS = names(REF, "enums")
REF_SERVICES = names(REF, "services")


def our_message(full_name: str) -> Descriptor | None:
    """Our descriptor for a message full name, if we have one."""
    package, _, name = full_name.rpartition(".")
    our_file = OUR_FILES.get(package)
    return None if our_file is None else our_file.message_types_by_name.get(name)


def _type_name(fd: FieldDescriptor) -> str:
    if fd.message_type is not None:
        return fd.message_type.full_name
    if fd.enum_type is not None:
        return fd.enum_type.full_name
    return ""


def schema_problems(ref: Descriptor) -> list[str]:
    """How our message with the same full name disagrees with a reference message on the wire."""
    ours = our_message(ref.full_name)
    if ours is None:
        return [f"{ref.full_name}: no such message in ours"]
    problems: list[str] = []
    for rfd in ref.fields:
        where = f"{ref.full_name}.{rfd.name} = {rfd.number}"
        ofd = ours.fields_by_number.get(rfd.number)
        if ofd is None:
            problems.append(f"{where}: no field with this number in ours")
            continue
        if ofd.name != rfd.name:
            problems.append(f"{where}: ours is named {ofd.name}")
        if ofd.type != rfd.type:
            problems.append(f"{where}: type {_TYPE_NAMES[rfd.type]}, ours {_TYPE_NAMES[ofd.type]}")
        if ofd.is_repeated != rfd.is_repeated:
            problems.append(f"{where}: repeated {rfd.is_repeated}, ours {ofd.is_repeated}")
        if _type_name(ofd) != _type_name(rfd):
            problems.append(f"{where}: type {_type_name(rfd)}, ours {_type_name(ofd)}")
    for ofd in ours.fields:
        if ofd.number not in ref.fields_by_number and ofd.number < FIRST_NEW_FIELD:
            problems.append(f"{ref.full_name}.{ofd.name} = {ofd.number}: new field below {FIRST_NEW_FIELD}")
    return problems


def enum_problems(ref: EnumDescriptor) -> list[str]:
    """Reference enum values (name -> number) that our enum lacks or numbers differently."""
    package, _, name = ref.full_name.rpartition(".")
    ours = OUR_FILES[package].enum_types_by_name.get(name) if package in OUR_FILES else None
    if ours is None:
        return [f"{ref.full_name}: no such enum in ours"]
    problems: list[str] = []
    for value in ref.values:
        our_value = ours.values_by_name.get(value.name)
        if our_value is None or our_value.number != value.number:
            got = None if our_value is None else our_value.number
            problems.append(f"{ref.full_name}.{value.name} = {value.number}: ours {got}")
    return problems


def service_problems(ref: ServiceDescriptor) -> list[str]:
    """Reference RPCs that our service lacks or declares with other request/response types."""
    package, _, name = ref.full_name.rpartition(".")
    ours = OUR_FILES[package].services_by_name.get(name) if package in OUR_FILES else None
    if ours is None:
        return [f"{ref.full_name}: no such service in ours"]
    problems: list[str] = []
    for method in ref.methods:
        our_method = ours.methods_by_name.get(method.name)
        want = (method.input_type.full_name, method.output_type.full_name, False, False)
        got = (
            None
            if our_method is None
            else (
                our_method.input_type.full_name,
                our_method.output_type.full_name,
                our_method.client_streaming,
                our_method.server_streaming,
            )
        )
        if got != want:
            problems.append(f"{ref.full_name}/{method.name}: want {want}, ours {got}")
    return problems


def _value(fd: FieldDescriptor, n: int) -> object:
    if fd.type in (_FDP.TYPE_STRING, _FDP.TYPE_BYTES):
        text = f"{fd.name}-{n}"
        return text if fd.type == _FDP.TYPE_STRING else text.encode()
    if fd.type == _FDP.TYPE_BOOL:
        return True
    if fd.type in (_FDP.TYPE_FLOAT, _FDP.TYPE_DOUBLE):
        return n + 0.5
    if fd.enum_type is not None:
        # Zero is the default and never reaches the wire; ntest.TestType has nothing else.
        non_zero = sorted(v.number for v in fd.enum_type.values if v.number != 0) or [0]
        return non_zero[n % len(non_zero)]
    return n


def _descriptor(message: Message) -> Descriptor:
    # The stubs type DESCRIPTOR as a union with upb's twin class, which has the same API.
    return cast(Descriptor, message.DESCRIPTOR)


def fill(message: Message, counter: Iterator[int]) -> Message:
    """Set every field (recursively, 2 items per repeated field) to a distinct non-default value."""
    for fd in _descriptor(message).fields:
        container = getattr(message, fd.name)
        if fd.message_type is not None:
            for item in [container.add(), container.add()] if fd.is_repeated else [container]:
                fill(item, counter)
        elif fd.is_repeated:
            container.extend([_value(fd, next(counter)), _value(fd, next(counter))])
        else:
            setattr(message, fd.name, _value(fd, next(counter)))
    return message


def _unknown_numbers(message: Message) -> list[int]:
    unknown = unknown_fields.UnknownFieldSet(message)
    return [unknown[i].field_number for i in range(len(unknown))]


def value_problems(ref: Message, ours: Message, where: str = "") -> list[str]:
    """Where `ours` lost or changed a value of `ref` (fields matched by number) or holds unknown fields."""
    where = where or _descriptor(ref).full_name
    problems: list[str] = []
    if unknown := _unknown_numbers(ours):
        problems.append(f"{where}: unknown fields {unknown} in ours")
    for rfd in _descriptor(ref).fields:
        at = f"{where}.{rfd.name}"
        ofd = _descriptor(ours).fields_by_number.get(rfd.number)
        if ofd is None:
            problems.append(f"{at}: field {rfd.number} missing in ours")
            continue
        ref_value, our_value = getattr(ref, rfd.name), getattr(ours, ofd.name)
        if rfd.message_type is None:
            if rfd.is_repeated:
                ref_value, our_value = list(ref_value), list(our_value)
            if ref_value != our_value:
                problems.append(f"{at}: {ref_value!r}, ours {our_value!r}")
            continue
        if (
            not rfd.is_repeated
            and ofd.message_type is not None
            and ref.HasField(rfd.name) != ours.HasField(ofd.name)
        ):
            problems.append(f"{at}: set {ref.HasField(rfd.name)}, ours {ours.HasField(ofd.name)}")
        ref_items = list(ref_value) if rfd.is_repeated else [ref_value]
        our_items = list(our_value) if ofd.is_repeated else [our_value]
        if len(ref_items) != len(our_items) or not all(isinstance(m, Message) for m in our_items):
            problems.append(f"{at}: {len(ref_items)} messages, ours {our_items!r}")
            continue
        for i, (ref_item, our_item) in enumerate(zip(ref_items, our_items, strict=True)):
            problems += value_problems(ref_item, our_item, f"{at}[{i}]" if rfd.is_repeated else at)
    return problems


def round_trip_problems(pool: descriptor_pool.DescriptorPool, full_name: str) -> list[str]:
    """Send a fully set reference message to ours and back; report whatever did not survive."""
    ref_class = message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))
    our_descriptor = our_message(full_name)
    if our_descriptor is None:
        return [f"{full_name}: no such message in ours"]
    sent = fill(ref_class(), itertools.count(1))
    wire = sent.SerializeToString(deterministic=True)
    received = message_factory.GetMessageClass(our_descriptor).FromString(wire)
    problems = value_problems(sent, received)
    answer = received.SerializeToString(deterministic=True)
    if ref_class.FromString(answer) != sent:
        problems.append(f"{full_name}: reference parse of our bytes differs from what was sent")
    if answer != wire:
        problems.append(f"{full_name}: our bytes differ from the reference's")
    return problems


def _has_new_fields(descriptor: Descriptor, seen: frozenset[str] = frozenset()) -> bool:
    if descriptor.full_name in seen:
        return False
    return any(
        fd.number >= FIRST_NEW_FIELD
        or (fd.message_type is not None and _has_new_fields(fd.message_type, seen | {descriptor.full_name}))
        for fd in descriptor.fields
    )


MESSAGES_WITH_NEW_FIELDS = [
    name for name in REF_MESSAGES if (ours := our_message(name)) is not None and _has_new_fields(ours)
]


def test_transcription_covers_all_of_section_1() -> None:
    """The transcription holds every message, enum, service and RPC of merak-reference §1.1-1.6."""
    assert list(REF) == ["common", "ntest", "topology", "network", "compute", "agent"]
    assert len(REF_MESSAGES) == 42
    assert len(REF_ENUMS) == 11
    assert len(REF_SERVICES) == 5
    assert sum(len(rpcs) for spec in REF.values() for rpcs in spec.services.values()) == 8
    assert "network.InternalSecurityGroupRulelnfo" in REF_MESSAGES
    # Otherwise the new-field test below would be parametrized over nothing.
    assert "common.InternalComputeInfo" in MESSAGES_WITH_NEW_FIELDS


@pytest.mark.parametrize("full_name", REF_MESSAGES)
def test_message_schema_matches(full_name: str) -> None:
    """Our message has every reference field with the same number, name, type and label."""
    assert schema_problems(REF_POOL.FindMessageTypeByName(full_name)) == []


@pytest.mark.parametrize("full_name", REF_ENUMS)
def test_enum_values_match(full_name: str) -> None:
    """Our enum has every reference value with the same number."""
    assert enum_problems(REF_POOL.FindEnumTypeByName(full_name)) == []


@pytest.mark.parametrize("full_name", REF_SERVICES)
def test_service_rpcs_match(full_name: str) -> None:
    """Our service has every reference RPC, unary, with the same request and response types."""
    assert service_problems(REF_POOL.FindServiceByName(full_name)) == []


@pytest.mark.parametrize("full_name", REF_MESSAGES)
def test_reference_message_round_trips_through_ours(full_name: str) -> None:
    """A fully set reference message parses into ours intact and comes back byte for byte."""
    assert round_trip_problems(REF_POOL, full_name) == []


@pytest.mark.parametrize("full_name", MESSAGES_WITH_NEW_FIELDS)
def test_reference_skips_our_new_fields(full_name: str) -> None:
    """A Merak peer parses our messages (new fields set) with its known fields intact."""
    our_descriptor = our_message(full_name)
    assert our_descriptor is not None
    ref_class = message_factory.GetMessageClass(REF_POOL.FindMessageTypeByName(full_name))
    sent = fill(message_factory.GetMessageClass(our_descriptor)(), itertools.count(1))
    received = ref_class.FromString(sent.SerializeToString())
    assert value_problems(received, sent) == []
    # Merak (Go) keeps unknown fields too, so a Merak component relaying our message does not strip them.
    assert type(sent).FromString(received.SerializeToString()) == sent


def _rename_field_number(ref: dict[str, RefFile]) -> str:
    fields = ref["common"].messages["InternalComputeInfo"]
    fields[fields.index(("hostname", 9, S))] = ("hostname", 10, S)
    return "common.InternalComputeInfo"


def _change_field_type(ref: dict[str, RefFile]) -> str:
    fields = ref["common"].messages["InternalSubnetInfo"]
    fields[fields.index(("number_vms", 4, U))] = ("number_vms", 4, S)
    return "common.InternalSubnetInfo"


def _drop_repeated(ref: dict[str, RefFile]) -> str:
    fields = ref["agent"].messages["BulkPorts"]
    fields[fields.index(("tapnames", 1, RS))] = ("tapnames", 1, S)
    return "agent.BulkPorts"


def _change_message_type(ref: dict[str, RefFile]) -> str:
    fields = ref["topology"].messages["ReturnTopologyMessage"]
    index = fields.index(("hosts", 4, "repeated InternalHostInfo"))
    fields[index] = ("hosts", 4, "repeated InternalComputeInfo")
    return "topology.ReturnTopologyMessage"


def _fix_typo(ref: dict[str, RefFile]) -> str:
    # The tempting "fix" of Merak's typo: names are not on the wire, but the full name must still match.
    network = ref["network"]
    network.messages["InternalSecurityGroupRuleInfo"] = network.messages.pop("InternalSecurityGroupRulelnfo")
    fields = network.messages["InternalSecurityGroupInfo"]
    index = fields.index(("rules", 6, "repeated InternalSecurityGroupRulelnfo"))
    fields[index] = ("rules", 6, "repeated InternalSecurityGroupRuleInfo")
    return "network.InternalSecurityGroupRuleInfo"


def _renumber_enum_value(ref: dict[str, RefFile]) -> str:
    ref["common"].enums["Status"]["DONE"] = 7
    return "common.Status"


def _change_rpc_output(ref: dict[str, RefFile]) -> str:
    ref["agent"].services["MerakAgentService"]["BulkPortAdd"] = ("BulkPorts", "AgentReturnTestInfo")
    return "agent.MerakAgentService"


FIELD_MUTATIONS: dict[str, Callable[[dict[str, RefFile]], str]] = {
    "wrong-number": _rename_field_number,
    "wrong-type": _change_field_type,
    "not-repeated": _drop_repeated,
    "wrong-message-type": _change_message_type,
    "typo-fixed": _fix_typo,
}


@pytest.mark.parametrize("mutation", FIELD_MUTATIONS)
def test_checker_reports_mismatched_message(mutation: str) -> None:
    """A deliberately wrong reference message is reported by the schema and the wire checks."""
    ref = copy.deepcopy(REF)
    full_name = FIELD_MUTATIONS[mutation](ref)
    pool = build_pool(ref)
    assert schema_problems(pool.FindMessageTypeByName(full_name)) != []
    assert round_trip_problems(pool, full_name) != []


def test_checker_reports_mismatched_enum_and_rpc() -> None:
    """A deliberately wrong enum value and RPC signature are reported."""
    ref = copy.deepcopy(REF)
    enum_name, service_name = _renumber_enum_value(ref), _change_rpc_output(ref)
    pool = build_pool(ref)
    assert enum_problems(pool.FindEnumTypeByName(enum_name)) == ["common.Status.DONE = 7: ours 6"]
    assert len(service_problems(pool.FindServiceByName(service_name))) == 1


def test_value_checker_reports_changed_and_unknown_fields() -> None:
    """value_problems sees a changed value and a field that only landed in unknown fields."""
    ref_class = message_factory.GetMessageClass(REF_POOL.FindMessageTypeByName("common.InternalComputeInfo"))
    sent = fill(ref_class(), itertools.count(1))
    ours = common_pb2.InternalComputeInfo.FromString(sent.SerializeToString())
    ours.hostname = "someone-else"
    assert value_problems(sent, ours) == [
        "common.InternalComputeInfo.hostname: 'hostname-9', ours 'someone-else'"
    ]
    ours.MergeFromString(b"\xc8\x3e\x01")  # field 1001, varint 1: unknown to ours
    assert any("unknown fields [1001]" in problem for problem in value_problems(sent, ours))
