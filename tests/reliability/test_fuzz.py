"""Every gRPC method of every service, fed messages Hypothesis draws from the protos' own descriptors:
each answers an expected code (never INTERNAL, UNKNOWN or a hang), and a request that fails leaves
no state behind (the Redis keyspace is unchanged).

Strings mix plain text with the shapes that broke things before (a newline in an id, a 2,000-
character id, paths, addresses); numbers include their type's edges; enums include values no
client knows; counts that would build a real lab are kept small, or absurd (which must be refused).
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import redis
from google.protobuf import descriptor as pd
from google.protobuf import message_factory
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from alcor.schema import goalstateprovisioner_pb2
from merak import netns
from merak.grpcclient import CHANNEL_OPTIONS
from merak.grpcserver import GrpcServer, ServiceRegistration
from merak.v1 import agent_pb2, compute_pb2, network_pb2, scenario_pb2, topology_pb2
from services.agent.goalstate.provisioner import GoalStateProvisionerServicer
from services.agent.goalstate.provisioner import registration as goalstate_registration
from services.agent.server import AgentServicer, registration
from services.agent.vhosts import VhostSet
from services.topology.backends.local import NS_PREFIX
from tests.stack import ServiceStack
from tests.support.plugin import StartServer

pytestmark = [pytest.mark.root, pytest.mark.slow]

EXPECTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.OUT_OF_RANGE,
}
CALL_TIMEOUT = 20.0
# A stream's first message, or its status, is due as a unary call's reply is: every stream answers at
# once (a watch with where things stand, then goes on until what it watches ends; Alcor's push with
# its one reply). Only the first message is read; a stream with neither in time hangs.
FIRST_MESSAGE_TIMEOUT = CALL_TIMEOUT
# Each run draws twice: from a fixed seed (the same messages every run) and from a fresh one (new
# messages every run; a failure prints it, and MERAK_FUZZ_SEED=<it> draws the same again).
FIXED_SEED = 20261206
FRESH_SEED = int(os.environ.get("MERAK_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
# 60 in CI (~10 s); MERAK_FUZZ_EXAMPLES=1000 digs deeper by hand.
EXAMPLES_PER_METHOD = int(os.environ.get("MERAK_FUZZ_EXAMPLES", "60"))
# Counts that build kernel objects: small, or far beyond any limit.
COUNT_FIELDS = {
    "number_of_vhosts", "number_of_racks", "vhost_per_rack", "vhosts_per_rack", "ports_per_vswitch",
    "number_vms", "number_of_vms", "num_of_vm", "number_of_vm_per_vpc", "number_of_compute_nodes",
    "number_of_vpcs", "number_of_subnet_per_vpc", "number_of_security_groups", "number_of_subnets",
    "vms_per_host", "max_pairs", "number_of_control_plane_gateways", "page_size",
}  # fmt: skip
TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["", "a", "lab-1", "x" * 2000, "nc\nid", "../../etc/passwd", "10.0.0.1", "10.0.0.0/8", "300.1.1.1",
         "02:00:00:00:00:01", "unix:///tmp/x.sock", "http://127.0.0.1:1/", "CREATE", "real", "fake",
         "native", "alcor", "local", "kubernetes", "vhost-0", "\x00", "é"]
    ),
)  # fmt: skip

_INT_RANGES = {
    pd.FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    pd.FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    pd.FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    pd.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    pd.FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    pd.FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    pd.FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    pd.FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    pd.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    pd.FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _scalar(field: pd.FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == pd.FieldDescriptor.TYPE_STRING:
        return TEXT
    if kind == pd.FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=16)
    if kind == pd.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (pd.FieldDescriptor.TYPE_DOUBLE, pd.FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=32 if kind == pd.FieldDescriptor.TYPE_FLOAT else 64)
    if kind == pd.FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(-3, 40))
    low, high = _INT_RANGES[kind]
    if field.name in COUNT_FIELDS:
        return st.one_of(st.integers(max(low, 0), 3), st.sampled_from([high, min(high, 10**8)]))
    return st.one_of(st.integers(max(low, -2), min(high, 300)), st.sampled_from([low, high, 0, 1]))


def messages(descriptor: pd.Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of type `descriptor`: any subset of its fields set, nested messages two levels deep."""
    cls = message_factory.GetMessageClass(descriptor)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.type == pd.FieldDescriptor.TYPE_MESSAGE:
            nested = field.message_type
            assert nested is not None
            if nested.GetOptions().map_entry or depth >= 2:
                continue
            value: st.SearchStrategy[Any] = messages(nested, depth + 1)
        else:
            value = _scalar(field)
        if field.is_repeated:
            value = st.lists(value, max_size=3)
        fields[field.name] = value

    def build(values: dict[str, Any]) -> Message:
        message = cls()
        for name, value in values.items():
            target = getattr(message, name)
            if isinstance(value, list):
                target.extend(value)
            elif isinstance(value, Message):
                target.CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    return st.fixed_dictionaries({}, optional=fields).map(build)


@dataclass
class Target:
    address: str
    service: pd.ServiceDescriptor


def _methods(targets: list[Target]) -> list[tuple[Target, pd.MethodDescriptor]]:
    return [(t, m) for t in targets for m in t.service.methods]


def _keys(client: redis.Redis) -> set[bytes]:
    return set(client.scan_iter(count=1000))


SHORT_KEY = b"merak:topology:short:"


def fuzz_method(
    target: Target,
    method: pd.MethodDescriptor,
    redis_url: str,
    shorts: set[str] | None = None,
    drawn_from: int = FIXED_SEED,
    *,
    examples: int = EXAMPLES_PER_METHOD,
    first_message_timeout: float = FIRST_MESSAGE_TIMEOUT,
) -> list[str]:
    """Call `method` with `examples` messages drawn from the seed `drawn_from`, from this (non-event-
    loop) thread; the problems found, each naming the seed."""
    request_cls = message_factory.GetMessageClass(method.input_type)
    reply_cls = message_factory.GetMessageClass(method.output_type)
    path = f"/{target.service.full_name}/{method.name}"
    problems: list[str] = []
    client = redis.Redis.from_url(redis_url)
    with grpc.insecure_channel(target.address, options=list(CHANNEL_OPTIONS)) as channel:
        call: Callable[..., Any]
        if method.client_streaming:  # Alcor's PushGoalStatesStream: one message, as NCM sends
            streams = channel.stream_stream(
                path,
                request_serializer=request_cls.SerializeToString,
                response_deserializer=reply_cls.FromString,
            )
            call = lambda request, timeout: streams(iter([request]), timeout=timeout)  # noqa: E731
        elif method.server_streaming:
            call = channel.unary_stream(
                path,
                request_serializer=request_cls.SerializeToString,
                response_deserializer=reply_cls.FromString,
            )
        else:
            call = channel.unary_unary(
                path,
                request_serializer=request_cls.SerializeToString,
                response_deserializer=reply_cls.FromString,
            )

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @seed(drawn_from)
        @given(messages(method.input_type))
        def run(request: Message) -> None:
            before = _keys(client)
            if shorts is not None:  # the topologies a drawn CREATE made (their namespaces' prefix)
                shorts.update(k[len(SHORT_KEY) :].decode() for k in before if k.startswith(SHORT_KEY))
            code = grpc.StatusCode.OK
            try:
                if method.server_streaming:
                    stream = call(request, timeout=first_message_timeout)
                    next(iter(stream), None)  # the first message, or the status of a stream with none
                    stream.cancel()  # read no further: a watch goes on until what it watches ends
                else:
                    call(request, timeout=CALL_TIMEOUT)
            except grpc.RpcError as exc:
                code = exc.code()
                details = exc.details() or ""
                if method.server_streaming and code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    details = f"no message and no status within {first_message_timeout:g} s (a hang)"
                if code not in EXPECTED and len(problems) < 50:
                    problems.append(
                        f"{path}: {code.name} {details[:200]!r} for {str(request)[:300]!r} "
                        f"(seed {drawn_from}: MERAK_FUZZ_SEED={drawn_from})"
                    )
                if len(details) > 2000:
                    problems.append(f"{path}: a {len(details)}-character error message")
            if code not in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
                left = _keys(client) - before
                if left:
                    problems.append(f"{path}: {code.name} left keys {sorted(left)[:5]}")

        run()
    client.close()
    return problems


async def _short_keys(redis_url: str) -> list[str]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return [str(k) for k in client.scan_iter(match="merak:topology:short:*")]
    finally:
        client.close()


async def _agent_server() -> GrpcServer:
    servicer = AgentServicer(VhostSet.standalone())
    alcor = goalstate_registration(GoalStateProvisionerServicer(servicer.goalstates.pick))
    server = GrpcServer("127.0.0.1:0", [registration(servicer), alcor], CollectorRegistry())
    await server.start()
    return server


async def test_every_method_answers_only_expected_codes_and_a_failure_leaves_nothing(
    temporal_services: ServiceStack, redis_url: str
) -> None:
    stack = temporal_services
    await stack.topology(max_agents=1)
    await stack.network()
    await stack.compute()
    await stack.scenario()
    agent = await _agent_server()
    shorts: set[str] = set()
    try:
        services = {
            "scenario": (scenario_pb2, "MerakScenarioService"),
            "topology": (topology_pb2, "MerakTopologyService"),
            "network": (network_pb2, "MerakNetworkService"),
            "compute": (compute_pb2, "MerakComputeService"),
        }
        targets = [
            Target(stack.addresses[name], module.DESCRIPTOR.services_by_name[service])
            for name, (module, service) in services.items()
        ]
        targets.append(
            Target(f"127.0.0.1:{agent.port}", agent_pb2.DESCRIPTOR.services_by_name["MerakAgentService"])
        )
        alcor = goalstateprovisioner_pb2.DESCRIPTOR.services_by_name["GoalStateProvisioner"]
        targets.append(Target(f"127.0.0.1:{agent.port}", alcor))
        problems: list[str] = []
        for drawn_from in (FIXED_SEED, FRESH_SEED):
            for target, method in _methods(targets):
                problems += await asyncio.to_thread(
                    fuzz_method, target, method, redis_url, shorts, drawn_from
                )
        assert problems == [], "\n".join(problems)
    finally:
        await agent.stop(0)
    # What valid drawn configs built is deleted with the stack (ServiceStack.close), or was by a drawn
    # DELETE: no namespace of any topology the fuzz made is left (other tests' are not looked at).
    shorts.update(k.removeprefix("merak:topology:short:") for k in await _short_keys(redis_url))
    await stack.close()
    assert [n for short in shorts for n in netns.list_names(f"{NS_PREFIX}-{short}-")] == []
    assert threading.active_count() < 200


async def test_a_stream_that_sends_nothing_in_time_is_a_hang(
    grpc_server: StartServer, redis_url: str
) -> None:
    # A watch that neither said where things stand nor ended used to pass once read to its deadline.
    released = asyncio.Event()

    async def silent(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
        await released.wait()
        yield b""

    service = compute_pb2.DESCRIPTOR.services_by_name["MerakComputeService"]
    handler = grpc.method_handlers_generic_handler(
        service.full_name, {"WatchProgress": grpc.unary_stream_rpc_method_handler(silent)}
    )
    address = await grpc_server(
        [ServiceRegistration(service.full_name, lambda server: server.add_generic_rpc_handlers((handler,)))]
    )
    try:
        problems = await asyncio.to_thread(
            fuzz_method,
            Target(address, service),
            service.methods_by_name["WatchProgress"],
            redis_url,
            examples=2,
            first_message_timeout=0.5,
        )
    finally:
        released.set()
    assert len(problems) == 2, problems
    assert all(
        p.startswith(
            f"/{service.full_name}/WatchProgress: DEADLINE_EXCEEDED "
            "'no message and no status within 0.5 s (a hang)'"
        )
        for p in problems
    ), problems


def test_the_strategy_draws_nested_and_repeated_fields() -> None:
    seen: set[str] = set()

    @settings(max_examples=60, deadline=None, database=None)
    @given(messages(scenario_pb2.ComputeConfig.DESCRIPTOR))
    def collect(message: Message) -> None:
        seen.update(field.name for field, _ in message.ListFields())

    collect()
    assert {"vpc_info", "vm_deploy_type", "id"} <= seen
