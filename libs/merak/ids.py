"""The one rule for the ids clients give (topology, network config, compute config, scenario):
they become Redis keys, workflow ids and namespace names, so they are short and plain."""

from __future__ import annotations

import re

from merak.errors import InvalidArgument

MAX_ID = 64
_ID = re.compile(r"[A-Za-z0-9._-]+")


def check_id(field: str, value: str) -> str:
    """`value` when it is 1-64 of [A-Za-z0-9._-]; else InvalidArgument naming `field`."""
    if not value:
        raise InvalidArgument(field, "required")
    if len(value) > MAX_ID:
        raise InvalidArgument(field, f"at most {MAX_ID} characters, got {len(value)}")
    if not _ID.fullmatch(value):
        raise InvalidArgument(field, f"only letters, digits, '.', '_' and '-' allowed: {value[:MAX_ID]!r}")
    return value
