"""A private local stack for a benchmark: its own state directory and ports, as `merak up` makes one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from merak.localstack import LocalStack, StackSettings
from merak.testing import free_port


def private_stack(prefix: str, base_offset: int) -> tuple[LocalStack, StackSettings]:
    """A stack (not started) in a fresh /tmp directory, its gRPC ports shifted from `base_offset`."""
    settings = StackSettings(
        state_dir=Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp")),
        port_offset=base_offset + (os.getpid() % 400) * 10,
        redis_port=free_port(),
        temporal_port=free_port(),
        temporal_ui_port=free_port(),
    )
    return LocalStack(settings, out=lambda _line: None), settings


def teste2e_argv(settings: StackSettings, report: str) -> list[str]:
    """teste2e's arguments that point it at the stack, its report in the stack's state directory."""
    return [
        "--scenario-address", f"localhost:{settings.grpc_port('scenario')}",
        "--topology-address", f"localhost:{settings.grpc_port('topology')}",
        "--report", str(settings.state_dir / report),
    ]  # fmt: skip
