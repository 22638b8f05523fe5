"""A failed call to another service keeps the callee's code, its words after its name; only a failure of
the call itself becomes UNAVAILABLE (merak.errors.from_rpc_error)."""

from __future__ import annotations

import grpc
import pytest

from merak.errors import ServiceError, from_rpc_error, status_for

CALLEES_WORDS = [
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INTERNAL,
]
TRANSPORT = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED]


def _error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, "")


@pytest.mark.parametrize("code", CALLEES_WORDS, ids=lambda c: c.name)
def test_the_callees_answer_passes_as_it_is_after_its_name(code: grpc.StatusCode) -> None:
    error = from_rpc_error(
        _error(code, "config.netconfig_id: only letters"), "network service", "127.0.0.1:1"
    )
    assert isinstance(error, ServiceError)
    assert (error.code, error.callee_code) == (code, code)
    # The callee's name, then its words: no code name repeated, no address (it was reached).
    assert error.message == "network service: config.netconfig_id: only letters"
    assert error.details == "config.netconfig_id: only letters" and error.callee == "network service"
    assert status_for(error) == (code, "network service: config.netconfig_id: only letters")


@pytest.mark.parametrize("code", TRANSPORT, ids=lambda c: c.name)
def test_a_failure_of_the_call_is_unavailable_and_says_where(code: grpc.StatusCode) -> None:
    error = from_rpc_error(_error(code, "failed to connect"), "topology service", "127.0.0.1:1")
    assert (error.code, error.callee_code) == (grpc.StatusCode.UNAVAILABLE, code)
    assert error.message == "topology service at 127.0.0.1:1: failed to connect"


def test_unknown_is_internal_and_empty_details_name_the_code() -> None:
    error = from_rpc_error(_error(grpc.StatusCode.UNKNOWN, ""), "agent of vhost 'vhost-1'")
    assert (error.code, error.callee_code) == (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
    assert error.message == "agent of vhost 'vhost-1': UNKNOWN"


def test_described_carries_the_callees_code_where_no_status_does() -> None:
    error = from_rpc_error(
        _error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), "agent", "unix:///a"
    )
    assert error.described() == "agent at unix:///a: Deadline Exceeded (DEADLINE_EXCEEDED)"
