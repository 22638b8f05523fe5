"""Open vSwitch and OVN from the Debian packages: where their programs and schemas are, database files,
the form of an OVSDB remote, and what OVN's central processes run with.

Shared by the local stack (OVN central), the network service (the `ovn` plugin's remotes), the agents
(a chassis in every emulated host) and doctor. Programs are run with argument lists, never a shell.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from merak.errors import LOGGED_BODY, InvalidArgument

# What the Debian packages ovn-central, ovn-host, openvswitch-switch and openvswitch-common install.
PROGRAMS = {
    "ovsdb-server": "openvswitch-switch",
    "ovsdb-tool": "openvswitch-common",
    "ovs-vswitchd": "openvswitch-switch",
    "ovs-vsctl": "openvswitch-switch",
    "ovs-appctl": "openvswitch-common",
    "ovn-northd": "ovn-central",
    "ovn-controller": "ovn-host",
    "ovn-nbctl": "ovn-common",
    "ovsdb-client": "openvswitch-common",
}
SCHEMAS = {
    "vswitch": Path("/usr/share/openvswitch/vswitch.ovsschema"),
    "nb": Path("/usr/share/ovn/ovn-nb.ovsschema"),
    "sb": Path("/usr/share/ovn/ovn-sb.ovsschema"),
}
# What an emulated host's chassis says of itself in its directory (written by its agent, read by the
# topology service): {"system_id": ..., "sb_remote": ...}.
CHASSIS_FILE = "chassis.json"
# OVN's own ports for the NB and SB databases (the stack adds its port offset).
NB_PORT = 6641
SB_PORT = 6642

# The error names an OVSDB server answers with (RFC 7047's, and ovsdb-server's own): one of these may be
# repeated to our caller as what went wrong; an error's details never are (they may quote anything).
OVSDB_ERRORS = frozenset(
    {
        "referential integrity violation",
        "constraint violation",
        "resources exhausted",
        "I/O error",
        "duplicate uuid-name",
        "domain error",
        "range error",
        "timed out",
        "not supported",
        "aborted",
        "not owner",
        "not allowed",
        "permission error",
        "unknown database",
        "unknown method",
        "syntax error",
        "internal error",
        "not leader",
    }
)
_REMOTE = re.compile(r"^(?P<kind>tcp|ssl):(?P<host>[0-9.]+|\[[0-9a-fA-F:.]+\]):(?P<port>[0-9]{1,5})$")
_UNIX = re.compile(r"^unix:(?P<path>/[A-Za-z0-9._/@+-]{1,200})$")


def program(name: str) -> str:
    """The absolute path of an OVS/OVN program (FileNotFoundError naming its package when absent)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (Debian package {PROGRAMS.get(name, '?')})")
    return found


def missing() -> list[str]:
    """The OVS/OVN programs and schemas this machine lacks ("" list: OVN can run here)."""
    gone = [f"{name} ({package})" for name, package in PROGRAMS.items() if _which(name) is None]
    gone += [str(path) for path in SCHEMAS.values() if not path.exists()]
    return gone


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def check_remote(field: str, remote: str) -> str:
    """An OVSDB remote as the `ovn` plugin accepts it: unix:/abs/path, tcp:IP:PORT or ssl:IP:PORT (an
    address, not a name); anything else is INVALID_ARGUMENT naming `field`."""
    if _UNIX.match(remote):
        return remote
    match = _REMOTE.match(remote)
    if match is None:
        raise InvalidArgument(
            field, f"{remote[:120]!r} is not an OVSDB remote (unix:/path, tcp:IP:PORT or ssl:IP:PORT)"
        )
    try:
        ipaddress.ip_address(match["host"].strip("[]"))
    except ValueError:
        raise InvalidArgument(field, f"{match['host']!r} is not an IP address") from None
    if not 1 <= int(match["port"]) <= 65535:
        raise InvalidArgument(field, f"port {match['port']} is out of range")
    return remote


class OvsdbError(ValueError):
    """An OVSDB server's error reply, or an answer that is not OVSDB's. `kind` may be shown to our caller
    (an error name of the protocol's, or our words); the text quotes the server: for our logs only, and
    at most its first LOGGED_BODY characters."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text[:LOGGED_BODY])
        self.kind = kind


def ovsdb_error_kind(error: object) -> str:
    """The name of an OVSDB error object (`{"error": "constraint violation", "details": ...}`) when it
    is one of the protocol's, else "an error reply"."""
    name = error.get("error") if isinstance(error, dict) else None
    return name if isinstance(name, str) and name in OVSDB_ERRORS else "an error reply"


def select_column(remote: str, database: str, table: str, column: str, timeout: float = 1.0) -> list[object]:
    """The values of one column of every row of `table` (select_rows)."""
    return [row.get(column) for row in select_rows(remote, database, table, (column,), timeout)]


def select_rows(
    remote: str, database: str, table: str, columns: Sequence[str], timeout: float = 1.0
) -> list[dict[str, object]]:
    """`columns` of every row of `table`, read straight over OVSDB's JSON-RPC from a unix: or tcp:
    remote (one `transact` with a `select`; blocking, so call it from a worker thread). OSError (or
    TimeoutError) when the server cannot be reached or does not answer within `timeout`; OvsdbError (a
    ValueError) for an error reply or an answer that is not OVSDB's; ValueError for an ssl: remote."""
    if remote.startswith("unix:"):
        family, address = socket.AF_UNIX, remote.removeprefix("unix:")
        target: str | tuple[str, int] = address
    else:
        match = _REMOTE.match(remote)
        if match is None or match["kind"] != "tcp":
            raise ValueError(f"{remote[:120]!r}: only unix: and tcp: remotes are read directly")
        host = match["host"].strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        target = (host, int(match["port"]))
    request = {
        "method": "transact",
        "params": [database, {"op": "select", "table": table, "where": [], "columns": list(columns)}],
        "id": 0,
    }
    deadline = time.monotonic() + timeout
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(target)
        sock.sendall(json.dumps(request).encode())
        buffer = ""
        decoder = json.JSONDecoder()
        while True:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"{remote}: closed before it answered")
            buffer += chunk.decode()
            while buffer.strip():
                try:
                    message, end = decoder.raw_decode(buffer.lstrip())
                except json.JSONDecodeError:
                    break  # not all of it yet
                buffer = buffer.lstrip()[end:]
                if not isinstance(message, dict) or message.get("id") != 0:
                    continue  # a notification or an echo: not the answer
                return _selected(message)


def _selected(message: dict[str, Any]) -> list[dict[str, object]]:
    """The rows of a select's answer; OvsdbError when it is an error or not a select's answer."""
    error = message.get("error")
    if error is not None:
        raise OvsdbError(ovsdb_error_kind(error), json.dumps(error))
    result = message.get("result")
    first = result[0] if isinstance(result, list) and result else None
    if isinstance(first, dict) and "error" in first:
        raise OvsdbError(ovsdb_error_kind(first), json.dumps(first))
    rows = first.get("rows") if isinstance(first, dict) else None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise OvsdbError("not an OVSDB answer", json.dumps(message))
    return [dict(row) for row in rows]


def create_db(db: Path, schema: str) -> bool:
    """Create the database file `db` from a packaged schema ("vswitch", "nb" or "sb") unless it exists;
    True when it was created."""
    if db.exists():
        return False
    db.parent.mkdir(parents=True, exist_ok=True)
    partial = db.with_name(db.name + ".new")
    partial.unlink(missing_ok=True)
    subprocess.run(
        [program("ovsdb-tool"), "create", str(partial), str(SCHEMAS[schema])],
        check=True,
        capture_output=True,
        timeout=30,
    )
    os.replace(partial, db)
    return True


@dataclass(frozen=True, slots=True)
class Central:
    """OVN central's files under one directory: the NB and SB databases, their sockets and logs."""

    root: Path

    def db(self, kind: str) -> Path:
        """The database file of "nb" or "sb"."""
        return self.root / f"ovn{kind}_db.db"

    def socket(self, kind: str) -> Path:
        """The unix socket of "nb" or "sb"."""
        return self.root / f"ovn{kind}_db.sock"

    def remote(self, kind: str) -> str:
        """The unix remote of "nb" or "sb" (an absolute path: chassis in other namespaces use it)."""
        return f"unix:{self.socket(kind).absolute()}"

    def server_argv(self, kind: str, tcp: tuple[str, int] | None = None) -> tuple[str, ...]:
        """The NB or SB ovsdb-server in the foreground, on its unix socket (and `tcp` when given)."""
        name = "OVN_Northbound" if kind == "nb" else "OVN_Southbound"
        argv = [
            program("ovsdb-server"),
            str(self.db(kind)),
            f"--remote=punix:{self.socket(kind).absolute()}",
            f"--remote=db:{name},{'NB_Global' if kind == 'nb' else 'SB_Global'},connections",
            f"--unixctl={self.root.absolute() / f'ovn{kind}_db.ctl'}",
            f"--log-file={self.root.absolute() / f'ovsdb-server-{kind}.log'}",
            "-vconsole:off",
            "--no-chdir",
        ]
        if tcp is not None:
            argv.append(f"--remote=ptcp:{tcp[1]}:{tcp[0]}")
        return tuple(argv)

    def northd_argv(self) -> tuple[str, ...]:
        """ovn-northd in the foreground, between the two unix sockets."""
        return (
            program("ovn-northd"),
            f"--ovnnb-db={self.remote('nb')}",
            f"--ovnsb-db={self.remote('sb')}",
            f"--unixctl={self.root.absolute() / 'ovn-northd.ctl'}",
            f"--log-file={self.root.absolute() / 'ovn-northd.log'}",
            "-vconsole:off",
            "--no-chdir",
        )

    def prepare(self) -> None:
        """The directory and both databases (kept across restarts of the stack)."""
        self.root.mkdir(parents=True, exist_ok=True)
        create_db(self.db("nb"), "nb")
        create_db(self.db("sb"), "sb")

    @property
    def env(self) -> dict[str, str]:
        """The run directories the central processes use (pid and control files stay under root)."""
        root = str(self.root.absolute())
        return {"OVS_RUNDIR": root, "OVS_LOGDIR": root, "OVN_RUNDIR": root, "OVN_LOGDIR": root}
