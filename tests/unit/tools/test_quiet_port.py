"""A private stack's Redis and Temporal ports lie below the kernel's source ports and the stacks' service
ports, free now, and never twice in one process (a port from the source range could be one of the same
stack's service ports, or be taken by a client connection before it is bound)."""

from __future__ import annotations

import socket

import pytest

from merak_tools.localstack import quiet_port


def test_quiet_ports_are_below_the_source_ports_distinct_and_bindable() -> None:
    ports = [quiet_port() for _ in range(20)]
    assert len(set(ports)) == 20
    assert all(20_000 <= port < 32_000 for port in ports)
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


def test_a_held_port_is_not_answered() -> None:
    # A range whose only port is held has nothing to give.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        held.listen()
        with pytest.raises(RuntimeError, match="no free TCP port"):
            quiet_port(port, port + 1)
