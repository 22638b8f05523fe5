"""Bounds on what clients give: ids (topology, network config, compute config, scenario) become
Redis keys, workflow ids and namespace names, so they are short and plain; a ping's waits are
bounded so that one test cannot hold an agent's workers for an hour."""

from __future__ import annotations

import re

from merak.errors import InvalidArgument

MAX_ID = 64
_ID = re.compile(r"[A-Za-z0-9._-]+")
# The ids of network objects (VPCs, subnets, security groups, routers), ours or a control plane's (Alcor's
# UUIDs): they travel to the agents, which name kernel objects after them.
OBJECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
OBJECT_ID_FORM = "1-128 of A-Z, a-z, 0-9, '.', '_', ':', '-', from a letter or digit"


def check_id(field: str, value: str) -> str:
    """`value` when it is 1-64 of [A-Za-z0-9._-]; else InvalidArgument naming `field`."""
    if not value:
        raise InvalidArgument(field, "required")
    if len(value) > MAX_ID:
        raise InvalidArgument(field, f"at most {MAX_ID} characters, got {len(value)}")
    if not _ID.fullmatch(value):
        raise InvalidArgument(field, f"only letters, digits, '.', '_' and '-' allowed: {value[:MAX_ID]!r}")
    return value


# A ping waits at most this long for each reply, and retries a silent destination at most this long.
MAX_PING_TIMEOUT_SECONDS = 30.0
MAX_PING_RETRY_SECONDS = 120.0


def check_ping_waits(timeout: float, retry: float, prefix: str = "") -> None:
    """InvalidArgument unless 0 <= timeout <= 30 and 0 <= retry <= 120 (seconds; 0: the default)."""
    for name, value, most in (
        ("timeout_seconds", timeout, MAX_PING_TIMEOUT_SECONDS),
        ("retry_seconds", retry, MAX_PING_RETRY_SECONDS),
    ):
        if not 0 <= value <= most:  # NaN fails too
            raise InvalidArgument(f"{prefix}{name}", f"must be between 0 and {most:.0f}, got {value}")
