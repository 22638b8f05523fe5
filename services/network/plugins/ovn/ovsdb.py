"""Connections to OVN's databases through ovsdbapp: an IDL replica per remote, kept in sync by its own
thread; transactions and reads run off the event loop (ovsdbapp blocks). Errors become the service's:
an unreachable database or one that does not answer in time is UNAVAILABLE naming its remote, a failed
transaction FAILED_PRECONDITION naming the error by kind (the database's own text goes to our log only:
whatever answers at a remote may say anything).

NB: the replica of the tables the plugin writes (its IDL tells the port watch when a watched port goes
`up`). SB: only Port_Binding's port and chassis, and Chassis' names, to say which chassis bound a port.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import queue
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

from ovs import jsonrpc, poller, stream
from ovs import timeval as ovs_time
from ovsdbapp import exceptions as ovsdbapp_errors
from ovsdbapp.backend.ovs_idl import connection, idlutils, transaction
from ovsdbapp.schema.ovn_northbound import impl_idl

from merak.errors import LOGGED_BODY, FailedPrecondition, Unavailable
from merak.logs import get_logger
from merak.ovs import ovsdb_error_kind
from services.network.plugins.ovn.watch import PortWatch

log = get_logger(__name__)

NB_TABLES = (
    "Logical_Router",
    "Logical_Router_Port",
    "Logical_Switch",
    "Logical_Switch_Port",
    "Port_Group",
    "ACL",
)


def fetch_schema(remote: str, schema: str, timeout: float) -> Any:
    """The schema `schema` as the server at `remote` has it (ovsdbapp's own fetch waits forever)."""
    deadline = ovs_time.msec() + int(timeout * 1000)
    error, strm = stream.Stream.open_block(stream.Stream.open(remote), int(timeout * 1000))
    if error:
        raise ConnectionError(_strerror(error))
    rpc = jsonrpc.Connection(strm)
    try:
        request = jsonrpc.Message.create_request("get_schema", [schema])
        error = rpc.send(request)
        while not error:
            error, reply = rpc.recv()
            if error == errno.EAGAIN:
                if ovs_time.msec() > deadline:
                    raise TimeoutError(f"no schema within {timeout:g} s")
                rpc.run()
                wait = poller.Poller()
                rpc.wait(wait)
                rpc.recv_wait(wait)
                wait.timer_wait_until(deadline)
                wait.block()
                error = 0
                continue
            if error:
                break
            if reply.id == request.id:
                if reply.error:
                    log.warning("ovsdb_error_reply", remote=remote, operation="get_schema",
                                error=str(reply.error)[:LOGGED_BODY])  # fmt: skip
                    raise ConnectionError(f"the server has no {schema} database")
                return reply.result
        raise ConnectionError(_strerror(error))
    finally:
        rpc.close()


def _strerror(error: int) -> str:
    return os.strerror(error) if error > 0 else f"error {error}"


OVSDB_ERROR = "OVSDB Error: "


def error_kind(exc: BaseException) -> str:
    """What went wrong, in words that are not the database's: the OVSDB error's name when ovsdbapp quotes
    one of the protocol's ("constraint violation"), else the exception's class."""
    text = str(exc)
    if not isinstance(exc, RuntimeError) or not text.startswith(OVSDB_ERROR):
        return type(exc).__name__
    try:
        return ovsdb_error_kind(json.loads(text.removeprefix(OVSDB_ERROR)))
    except ValueError:
        return "an error reply"


@contextmanager
def database_errors(what: str, remote: str, timeout: float, operation: str) -> Iterator[None]:
    """ovsdbapp's errors as the service's, naming the database and the operation; what the database
    said is logged (its first characters), never repeated to our caller."""
    try:
        yield
    except ovsdbapp_errors.TimeoutException:
        raise Unavailable(f"{what} {remote} did not answer in time (timeout {timeout:g} s)") from None
    except ovsdbapp_errors.OvsdbConnectionUnavailable as exc:
        cause = exc.__cause__ or exc
        _logged(what, remote, operation, cause)
        raise Unavailable(f"{what} {remote} is unreachable ({operation}: {error_kind(cause)})") from None
    except (ConnectionError, TimeoutError) as exc:  # our words (fetch_schema's) or the OS's
        raise Unavailable(f"{what} {remote} is unreachable: {exc}") from None
    except RuntimeError as exc:
        _logged(what, remote, operation, exc)
        raise FailedPrecondition(f"{what} {remote}: the {operation} failed ({error_kind(exc)})") from None


def _logged(what: str, remote: str, operation: str, exc: BaseException) -> None:
    log.warning(
        "ovsdb_error", database=what, remote=remote, operation=operation, kind=error_kind(exc),
        error=str(exc)[:LOGGED_BODY],
    )  # fmt: skip


class _Transaction(transaction.Transaction):  # type: ignore[misc]  # ovsdbapp has no type hints
    """An ovsdbapp transaction whose caller waits for its outcome.

    ovsdbapp's caller stops waiting `timeout` after queueing it, while the IDL's thread gives up `timeout`
    after it starts on it: a transaction queued behind a slow one could commit after its caller was told
    it failed (and had undone its side, e.g. given the addresses back). Here the caller waits for the
    thread's answer, with a margin for the queue.
    """

    def commit(self) -> Any:
        self.ovsdb_connection.queue_txn(self)
        try:
            result = self.results.get(timeout=2 * self.timeout + 5)
        except queue.Empty as exc:
            raise ovsdbapp_errors.TimeoutException(
                commands=self.commands, timeout=self.timeout, cause="no outcome from the IDL's thread"
            ) from exc
        if isinstance(result, idlutils.ExceptionResult):
            raise result.ex
        return result


class _NbApi(impl_idl.OvnNbApiIdlImpl):  # type: ignore[misc]  # ovsdbapp has no type hints
    """The typed NB API over one connection (ovsdbapp keeps one per class otherwise: one per remote here)."""

    @property
    def ovsdb_connection(self) -> Any:
        return self._merak_connection

    @ovsdb_connection.setter
    def ovsdb_connection(self, value: Any) -> None:
        self._merak_connection = value


class _NbIdl(connection.OvsdbIdl):  # type: ignore[misc]  # ovsdbapp has no type hints
    """The NB replica; tells the watch when one of its ports goes `up` (runs in the IDL's thread)."""

    def __init__(self, remote: str, helper: Any, watch: PortWatch) -> None:
        super().__init__(remote, helper)
        self.watch = watch

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        if event == "delete" or row._table.name != "Logical_Switch_Port":
            return
        if event == "update" and not hasattr(updates, "up"):
            return
        if list(row.up) == [True]:
            self.watch.post_up(row.name)


class NbClient:
    """One OVN northbound database: the typed API, its connection and the port watch."""

    def __init__(self, remote: str, api: Any, watch: PortWatch, timeout: float) -> None:
        self.remote = remote
        self.api = api
        self.watch = watch
        self.timeout = timeout

    @classmethod
    async def open(cls, remote: str, watch: PortWatch, timeout: float) -> NbClient:
        """Connect and load the replica; UNAVAILABLE when the database cannot be reached in time."""

        def connect() -> Any:
            helper = idlutils.create_schema_helper(fetch_schema(remote, "OVN_Northbound", timeout))
            for table in NB_TABLES:
                helper.register_table(table)
            return _NbApi(connection.Connection(_NbIdl(remote, helper, watch), timeout))

        with database_errors("OVN northbound database", remote, timeout, "connection"):
            api = await asyncio.to_thread(connect)
        log.info("ovn_nb_connected", remote=remote)
        return cls(remote, api, watch, timeout)

    async def transact(self, *commands: Any) -> float:
        """Run the commands in one transaction; returns when it committed (time.monotonic())."""

        def commit() -> float:
            txn = _Transaction(
                self.api, self.api.ovsdb_connection, self.timeout, check_error=True, log_errors=False
            )
            for cmd in commands:
                txn.add(cmd)
            txn.commit()
            return time.monotonic()

        with database_errors("OVN northbound database", self.remote, self.timeout, "transaction"):
            return await asyncio.to_thread(commit)

    async def read(self, command: Any) -> Any:
        """The result of a read-only command, from the replica."""
        with database_errors("OVN northbound database", self.remote, self.timeout, "read"):
            return await asyncio.to_thread(command.execute, check_error=True, log_errors=False)

    async def close(self) -> None:
        """Stop the IDL's thread."""
        await asyncio.to_thread(self.api.ovsdb_connection.stop, 5)


class SbClient:
    """One OVN southbound database, read for the chassis that bound ports."""

    def __init__(self, remote: str, conn: Any) -> None:
        self.remote = remote
        self.conn = conn

    @classmethod
    async def open(cls, remote: str, timeout: float) -> SbClient:
        """Connect and load the (small) replica; UNAVAILABLE when the database cannot be reached."""

        def connect() -> Any:
            helper = idlutils.create_schema_helper(fetch_schema(remote, "OVN_Southbound", timeout))
            helper.register_columns("Port_Binding", ["logical_port", "chassis"])
            helper.register_columns("Chassis", ["name"])
            conn = connection.Connection(connection.OvsdbIdl(remote, helper), timeout)
            conn.start()
            return conn

        with database_errors("OVN southbound database", remote, timeout, "connection"):
            conn = await asyncio.to_thread(connect)
        return cls(remote, conn)

    async def chassis(self, port_names: Collection[str]) -> dict[str, str]:
        """The chassis (system-id) each of these logical ports is bound to, where it is."""

        wanted = set(port_names)

        def read() -> dict[str, str]:
            found: dict[str, str] = {}
            with self.conn.lock:
                for binding in self.conn.idl.tables["Port_Binding"].rows.values():
                    if binding.logical_port in wanted and binding.chassis:
                        found[binding.logical_port] = binding.chassis[0].name
            return found

        return await asyncio.to_thread(read)

    async def close(self) -> None:
        """Stop the IDL's thread."""
        await asyncio.to_thread(self.conn.stop, 5)
