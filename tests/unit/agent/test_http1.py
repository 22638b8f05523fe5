"""The agent's HTTP/1.1 client: responses read however they are cut, kept-alive connections, failures by
kind, and a clock that covers the exchange."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from services.agent.http1 import BadResponse, Disconnected, Http1Pool, ResponseParser

OK = b'HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"id":"p"}\n'
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b'4;ext=1\r\n{"id\r\n7\r\n":"p"}\n\r\n0\r\nX-Trailer: t\r\n\r\n'
)


def parsed(response: bytes, cut: int = 0, method: str = "POST") -> ResponseParser:
    """`response` fed in two pieces, cut at `cut` (whole when 0); it must be complete."""
    parser = ResponseParser(method)
    pieces = [response[:cut], response[cut:]] if cut else [response]
    assert [parser.feed(piece) for piece in pieces][-1] is True
    return parser


@pytest.mark.parametrize("response", [OK, CHUNKED], ids=["length", "chunked"])
def test_a_response_cut_anywhere_reads_the_same(response: bytes) -> None:
    for cut in range(1, len(response)):
        parser = parsed(response, cut)
        assert (parser.status in (200, 201), bytes(parser.body), parser.keep_alive) == (
            True,
            b'{"id":"p"}\n',
            True,
        )


def test_an_interim_answer_is_passed_over() -> None:
    parser = parsed(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    assert (parser.status, bytes(parser.body)) == (201, b'{"id":"p"}\n')


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0", False),
        (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0", True),
    ],
)
def test_keep_alive_as_the_version_and_connection_header_say(head: bytes, keep_alive: bool) -> None:
    assert parsed(head + b"\r\n\r\n").keep_alive is keep_alive


def test_a_body_without_length_ends_with_the_connection() -> None:
    parser = ResponseParser("GET")
    assert parser.feed(b"HTTP/1.1 200 OK\r\n\r\nall of ") is False
    assert parser.feed(b"it") is False
    assert parser.end_of_stream() is True
    assert (bytes(parser.body), parser.keep_alive) == (b"all of it", False)


def test_no_body_after_204_or_head() -> None:
    assert bytes(parsed(b"HTTP/1.1 204 No Content\r\n\r\n").body) == b""
    assert bytes(parsed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", method="HEAD").body) == b""


def test_bytes_past_the_response_end_keep_alive() -> None:
    parser = ResponseParser("GET")
    assert parser.feed(OK + b"HTTP/1.1") is True
    assert parser.keep_alive is False


@pytest.mark.parametrize(
    "response",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
    ],
)
def test_what_is_not_http_is_refused(response: bytes) -> None:
    with pytest.raises(BadResponse):
        ResponseParser("GET").feed(response)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def server(handle: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A server on a free port: its URL, and the connections it accepted (counted)."""
    accepted: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            await handle(reader, writer)
        finally:
            writer.close()

    listening = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", accepted
    finally:
        listening.close()
        await listening.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """A request's head and body (by Content-Length); None at the connection's end."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    return head + await reader.readexactly(length)


async def echo_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer every request of the connection with its own request line and body."""
    while (request := await read_request(reader)) is not None:
        line, _, rest = request.partition(b"\r\n")
        body = line + b"|" + rest.partition(b"\r\n\r\n")[2]
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


async def test_requests_share_kept_alive_connections_up_to_the_limit() -> None:
    async with server(echo_forever) as (url, accepted):
        pool = Http1Pool(url + "/base", connections=4, timeout=10.0)
        try:
            first = await pool.request("POST", "/ports", b'{"a":1}')
            assert (first.status, first.body) == (200, b'POST /base/ports HTTP/1.1|{"a":1}')
            again = await pool.request("GET", "/ports/p")
            assert again.body == b"GET /base/ports/p HTTP/1.1|"
            assert len(accepted) == 1
            answers = await asyncio.gather(*(pool.request("PUT", f"/ports/{i}", b"{}") for i in range(10)))
            assert [a.body for a in answers] == [
                f"PUT /base/ports/{i} HTTP/1.1|{{}}".encode() for i in range(10)
            ]
            assert len(accepted) <= 4
        finally:
            await pool.close()


async def test_a_connection_the_server_closes_is_not_used_again() -> None:
    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")

    async with server(answer_once) as (url, accepted):
        pool = Http1Pool(url, connections=2, timeout=10.0)
        try:
            assert [(await pool.request("DELETE", "/p")).status for _ in range(3)] == [204, 204, 204]
            assert len(accepted) == 3
        finally:
            await pool.close()


async def test_failures_by_kind() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async def say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up

    async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")

    async with server(hang_up) as (url, _):
        with pytest.raises(Disconnected):
            await Http1Pool(url, connections=1, timeout=10.0).request("GET", "/")
    async with server(say_nothing) as (url, _):
        with pytest.raises(TimeoutError):
            await Http1Pool(url, connections=1, timeout=0.05).request("GET", "/")
    async with server(not_http) as (url, _):
        with pytest.raises(BadResponse):
            await Http1Pool(url, connections=1, timeout=10.0).request("GET", "/")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # bound, never listening: refused
        port = unused.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):
            await Http1Pool(f"http://127.0.0.1:{port}", connections=1, timeout=10.0).request("GET", "/")


async def test_the_clock_covers_the_exchange() -> None:
    arrived = asyncio.Event()
    release = asyncio.Event()
    held: list[float] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        start = time.perf_counter()
        arrived.set()
        await release.wait()
        held.append(time.perf_counter() - start)
        writer.write(OK)
        await writer.drain()

    async with server(hold) as (url, _):
        pool = Http1Pool(url, connections=1, timeout=10.0)
        try:
            answer = asyncio.create_task(pool.request("POST", "/ports", b"{}"))
            await arrived.wait()
            release.set()
            timed = (await answer).seconds
        finally:
            await pool.close()
    # From before the server had the request to after its answer was written: at least what it held.
    assert timed >= held[0] > 0
