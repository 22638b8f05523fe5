"""The local stack: Redis, the Temporal dev server and every service as processes on this machine.

`settings` says where it lives and which ports it takes, `components` what it starts, `stack` how it
comes up, goes down and reports its status.
"""

from merak_tools.localstack.components import SUPERVISOR, Component, components, http_ok, redis_healthy
from merak_tools.localstack.settings import (
    SERVICES,
    StackSettings,
    default_workers,
    endpoints,
    free_port,
    port_in_use,
)
from merak_tools.localstack.stack import ComponentState, LocalStack, StackError, code_fingerprint

__all__ = [
    "SERVICES",
    "SUPERVISOR",
    "Component",
    "ComponentState",
    "LocalStack",
    "StackError",
    "StackSettings",
    "code_fingerprint",
    "components",
    "default_workers",
    "endpoints",
    "free_port",
    "http_ok",
    "port_in_use",
    "redis_healthy",
]
