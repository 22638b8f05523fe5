"""`merak down` says a failed call in short words (#28): its code and details, never the RpcError's repr."""

from __future__ import annotations

import grpc
import pytest

from merak.errors import rpc_error_text
from merak.v1 import topology_pb2, topology_pb2_grpc
from merak_tools.localstack import LabsLeft, delete_labs, free_port


def test_a_topology_service_that_does_not_answer_is_said_in_short_words() -> None:
    lines: list[str] = []
    with grpc.insecure_channel(f"127.0.0.1:{free_port()}") as channel:  # nothing listens there
        stub = topology_pb2_grpc.MerakTopologyServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListTopologies(topology_pb2.ListTopologiesRequest(), timeout=10)
        assert repr(caught.value).startswith("<_InactiveRpcError")  # what `merak down` printed before
        text = rpc_error_text(caught.value)
        assert text.startswith("UNAVAILABLE: ") and "<_" not in text and len(text) < 300, text

        deleted, failed = delete_labs(stub, lines.append)

    assert deleted == []
    assert len(failed) == 1 and failed[0].startswith("the topology service did not list them (UNAVAILABLE: ")
    message = str(LabsLeft(failed, ["scenario", "topology", "redis"]))
    assert message.startswith("could not delete every lab: the topology service did not list them (")
    assert "InactiveRpcError" not in message and "debug_error_string" not in message
    assert len(message) < 400, message


def test_a_bare_rpc_error_is_said_without_a_status() -> None:
    assert rpc_error_text(grpc.RpcError()) == "the call failed"
