"""Domain errors, each tied to the gRPC status code it becomes at the API boundary."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import grpc


class MerakError(Exception):
    """Base of every error a service raises on purpose; carries its gRPC status code."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(MerakError):
    """Bad input. The message names the offending field: `field: what is wrong`."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFound(MerakError):
    """The named entity does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(MerakError):
    """An entity with that id exists with a different specification."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(MerakError):
    """The entity is in the wrong state for the request."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(MerakError):
    """A pool ran out (addresses, ports, names)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(MerakError):
    """A dependency (Redis, Temporal, another service, Alcor) cannot be reached."""

    code = grpc.StatusCode.UNAVAILABLE


class Unimplemented(MerakError):
    """The operation is part of the API but not built (yet)."""

    code = grpc.StatusCode.UNIMPLEMENTED


class DeadlineExceeded(MerakError):
    """Work did not finish within its deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


# What a callee's status code becomes when its caller answers its own caller (`from_rpc_error`).
# The callee's own answers about the request (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION,
# ALREADY_EXISTS, RESOURCE_EXHAUSTED, OUT_OF_RANGE, UNIMPLEMENTED, ABORTED, ...) pass as they are: a
# client that retries them gets the same answer again. What says the callee was not reached or did not
# answer in time (the call's transport) becomes UNAVAILABLE: the same request may succeed later. A
# callee's INTERNAL stays INTERNAL (it failed on this request and logged why; calling that UNAVAILABLE
# would have clients retry a bug), and UNKNOWN, which our servers never send (an exception escaped a
# handler that is not ours, or the grpc library could not tell), is INTERNAL too. A callee that crashes
# mid-call breaks the connection, which its client sees as UNAVAILABLE: a crash is UNAVAILABLE.
TRANSPORT_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


def passed_code(callee_code: grpc.StatusCode) -> grpc.StatusCode:
    """The code our caller gets for a call to another service that ended with `callee_code`."""
    if callee_code in TRANSPORT_CODES:
        return grpc.StatusCode.UNAVAILABLE
    if callee_code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.OK):  # OK never ends a failed call
        return grpc.StatusCode.INTERNAL
    return callee_code


class ServiceError(MerakError):
    """A call to another service failed: the callee's code (transport failures as UNAVAILABLE) and its
    words, after the callee's name ("network service: config.netconfig_id: ...")."""

    def __init__(self, callee: str, callee_code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{callee}: {details or callee_code.name}")
        self.callee = callee
        self.callee_code = callee_code  # what the callee (or the transport) said: DEADLINE_EXCEEDED...
        self.details = details
        self.code = passed_code(callee_code)

    def described(self) -> str:
        """The message with the callee's code, for where no status code travels with it (a workflow's
        failure, a ping's reason)."""
        return f"{self.message} ({self.callee_code.name})"


def from_rpc_error(exc: grpc.aio.AioRpcError, callee: str, address: str = "") -> ServiceError:
    """The error a failed call to another service becomes (the one way a service maps another's error):
    `callee` names it ("network service", "agent of vhost 'vhost-1'"), and a transport failure says
    where it was called (`address`), since that is what the operator checks."""
    code, details = exc.code(), exc.details() or ""
    if code in TRANSPORT_CODES and address:
        callee = f"{callee} at {address}"
    return ServiceError(callee, code, details)


def rpc_error_text(exc: grpc.RpcError) -> str:
    """A failed call as a person reads it, "UNAVAILABLE: failed to connect to all addresses; …", for
    a command line or a report (the error's repr is hundreds of characters of debug text)."""
    try:
        code, details = exc.code(), exc.details()
    except AttributeError:  # a bare RpcError, with no status: there is nothing more to say
        return "the call failed"
    text = " ".join((details or "").split())
    return f"{code.name}: {text}" if text else code.name


def enum_name(enum: Any, value: int) -> str:
    """The name of an enum value for a message, e.g. "CREATE"; an unknown number (off the wire, from a
    newer client) as "unknown value 42", so that naming a bad value never fails itself."""
    try:
        name: str = enum.Name(value)
    except ValueError:
        return f"unknown value {int(value)}"
    return name


# Alcor's error code as it names it (Spring's `message` holding the exception's name, e.g.
# "SecurityGroupRequired"): letters only, a capital first, at most this long.
_ERROR_CODE = re.compile(r"[A-Z][A-Za-z]{1,79}")
# How much of a remote error reply's body a log line keeps (the caller never sees any of it).
LOGGED_BODY = 200


def remote_error_code(body: bytes) -> str:
    """Alcor's own error code in an error reply (its JSON `message`, when that is one CamelCase word
    such as "SecurityGroupRequired"), else "". Nothing else of a remote reply is repeated to our
    caller: a listener at a wrong URL may answer with anything, secrets too."""
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    value = data.get("message") if isinstance(data, dict) else None
    if isinstance(value, str) and _ERROR_CODE.fullmatch(value):
        return value
    return ""


def logged_body(body: bytes) -> str:
    """At most LOGGED_BODY characters of a remote reply's body, for our own logs."""
    return body[:LOGGED_BODY].decode("utf-8", "replace")


MAX_DETAILS = 1000


def _bounded(message: str) -> str:
    """A status message of at most ~1,000 characters: errors quote what they were given, and a
    client's 2,000-character id should not come back whole in every reply."""
    if len(message) <= MAX_DETAILS:
        return message
    return f"{message[:MAX_DETAILS]}… ({len(message):,} characters)"


def _is_redis_unavailable(exc: BaseException) -> bool:
    """`exc` is Redis's connection or timeout error. Redis is looked for among the modules loaded, not
    imported: a process without a Redis client (an agent) cannot have one of its errors, and starts
    ~0.05 s sooner without the library."""
    redis_errors = sys.modules.get("redis.exceptions")
    if redis_errors is None:
        return False
    return isinstance(exc, (redis_errors.ConnectionError, redis_errors.TimeoutError))


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and message an exception becomes at the API boundary."""
    if isinstance(exc, MerakError):
        return exc.code, _bounded(exc.message)
    if isinstance(exc, NotImplementedError):
        return grpc.StatusCode.UNIMPLEMENTED, str(exc) or "not implemented"
    if _is_redis_unavailable(exc):
        # The service's state store is down or restarting: a retry later succeeds.
        return grpc.StatusCode.UNAVAILABLE, f"redis (the state store) is unavailable: {exc}"
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"


# Codes a retry cannot fix: the same request fails the same way. A workflow turns a call that ended
# with one of them into a non-retryable failure; every other code (UNAVAILABLE, DEADLINE_EXCEEDED,
# INTERNAL, ...) is retried with backoff.
PERMANENT_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


def is_permanent(code: grpc.StatusCode) -> bool:
    """True when retrying a call that failed with `code` cannot succeed (Temporal: non-retryable)."""
    return code in PERMANENT_CODES
