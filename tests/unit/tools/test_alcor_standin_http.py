"""The stand-in's HTTP/1.1 server: requests read however they come (length, chunked, 100 Continue,
pipelined), answered in order, the connection kept or closed as asked, and what is not HTTP refused."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator

import pytest

from merak_tools.alcor_standin import FakeAlcor
from merak_tools.alcor_standin.http import BadRequest, RequestReader

VPC = json.dumps({"network": {"id": "v1", "name": "v", "cidr": "10.0.0.0/16"}}).encode()


def read_all(data: bytes, cut: int = 0) -> list[tuple[str, str, bytes, bool]]:
    """The requests in `data`, fed in two pieces cut at `cut` (whole when 0)."""
    reader = RequestReader()
    found = []
    for piece in [data[:cut], data[cut:]] if cut else [data]:
        reader.feed(piece)
        while (request := reader.next(0.0)) is not None:
            found.append((request.method, request.target, request.body, request.keep_alive))
    return found


def test_requests_cut_anywhere_read_the_same() -> None:
    data = (
        b'POST /project/p/vpcs HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\n\r\n{"a":1}'
        b"PUT /project/p/ports/x?q=1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'3;ext\r\n{"b\r\n4\r\n":2}\r\n0\r\nX-T: t\r\n\r\n'
        b"DELETE /project/p/ports/x HTTP/1.0\r\n\r\n"
    )
    expected = [
        ("POST", "/project/p/vpcs", b'{"a":1}', True),
        ("PUT", "/project/p/ports/x?q=1", b'{"b":2}', True),
        ("DELETE", "/project/p/ports/x", b"", False),
    ]
    for cut in range(len(data)):
        assert read_all(data, cut) == expected


def test_100_continue_is_asked_for_a_body_not_yet_sent() -> None:
    reader = RequestReader()
    reader.feed(b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert reader.next(0.0) is None and reader.continue_wanted
    reader.feed(b"{}")
    request = reader.next(0.0)
    assert request is not None and request.body == b"{}" and not reader.continue_wanted


@pytest.mark.parametrize(
    "data",
    [
        b"GET /x\r\n\r\n",
        b"GET /x SPDY/3\r\n\r\n",
        b"GET /x HTTP/1.1\r\nno colon\r\n\r\n",
        b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_what_is_not_http_is_refused(data: bytes) -> None:
    with pytest.raises(BadRequest):
        read_all(data)


@pytest.fixture
def alcor() -> Iterator[FakeAlcor]:
    fake = FakeAlcor(southbound=False, latency=0.01)
    try:
        yield fake
    finally:
        fake.stop()


def exchange(alcor: FakeAlcor, data: bytes) -> bytes:
    """Send `data` on one connection; everything that comes back until the server closes it."""
    with socket.create_connection(("127.0.0.1", alcor.port_of("")), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_pipelined_requests_are_answered_in_order_then_the_connection_closed(alcor: FakeAlcor) -> None:
    answer = exchange(
        alcor,
        b"POST /project/p/vpcs HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(VPC), VPC)
        + b"GET /project/p/vpcs/v1 HTTP/1.1\r\n\r\n"
        + b"GET /project/p/ports/nope HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    heads = re.findall(rb"HTTP/1\.1 \d{3} [^\r]*", answer)
    assert heads == [b"HTTP/1.1 201 Created", b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found"]
    assert answer.count(b"Connection: close") == 1
    assert [(r.method, r.path) for r in alcor.state.requests] == [
        ("POST", "/project/p/vpcs"),
        ("GET", "/project/p/vpcs/v1"),
        ("GET", "/project/p/ports/nope"),
    ]
    assert all(held >= 0.01 for *_, held in alcor.state.times)


def test_a_body_that_is_not_json_and_a_request_that_is_not_http(alcor: FakeAlcor) -> None:
    answer = exchange(
        alcor, b"POST /project/p/vpcs HTTP/1.1\r\nContent-Length: 1\r\nConnection: close\r\n\r\n{"
    )
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["message"] == "JSON parse error"
    assert exchange(alcor, b"hello\r\n\r\n").startswith(b"HTTP/1.1 400 Bad Request\r\n")
