"""The local stack: Redis, the Temporal dev server, OVN central and every service as processes on this
machine.

`settings` says where it lives and which ports it takes, `components` what it starts, `stack` how it
comes up, goes down and reports its status.
"""

from merak_tools.localstack.components import (
    OVN_COMPONENTS,
    SUPERVISOR,
    Component,
    components,
    http_ok,
    jsonrpc,
    ovn_central,
    ovn_off_reason,
    redis_healthy,
)
from merak_tools.localstack.settings import (
    SERVICES,
    StackSettings,
    default_workers,
    endpoints,
    free_port,
    port_in_use,
    quiet_port,
)
from merak_tools.localstack.stack import (
    ComponentState,
    LabsLeft,
    LocalStack,
    StackError,
    code_fingerprint,
    delete_labs,
)

__all__ = [
    "OVN_COMPONENTS",
    "SERVICES",
    "SUPERVISOR",
    "Component",
    "ComponentState",
    "LabsLeft",
    "LocalStack",
    "StackError",
    "StackSettings",
    "code_fingerprint",
    "components",
    "default_workers",
    "delete_labs",
    "endpoints",
    "free_port",
    "http_ok",
    "jsonrpc",
    "ovn_central",
    "ovn_off_reason",
    "port_in_use",
    "quiet_port",
    "redis_healthy",
]
