"""The stand-in's HTTP/1.1 server: a request is taken when its last byte is read off the socket, and
answered from loop callbacks (no task per request) when its time comes.

The time a request is held is measured from that read to its answer's write, at the socket as the
agent's client measures its calls: a benchmark that takes the server's hold from the agent's measurement
then leaves the way there and back, and not the server's own queue of requests to read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Protocol

from merak.logs import get_logger

log = get_logger(__name__)

# The longest request line and headers, and the largest body, taken from a client.
MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024


class BadRequest(Exception):
    """A request this server cannot read; answered 400 (or `status`) and the connection closed."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class Request:
    """One request as read: method, target (path and query as sent), body, and when its last byte came."""

    method: str
    target: str
    body: bytes
    arrived: float  # time.perf_counter()
    keep_alive: bool


@dataclass(frozen=True, slots=True)
class Answer:
    """What to write back: a status and a JSON body; `written` is told when it was written."""

    status: int
    body: bytes
    written: Callable[[float], None] | None = None


class Responder(Protocol):
    """What a listener answers, and when."""

    def due(self, request: Request) -> float:
        """When to answer (time.perf_counter(); now or before: at once)."""

    def answer(self, request: Request) -> Answer:
        """The answer, made when it is due."""


# Calls a function at a deadline (time.perf_counter()).
Scheduler = Callable[[float, Callable[[], None]], None]


def answer_bytes(status: int, body: bytes, *, head_only: bool, close: bool) -> bytes:
    """An HTTP/1.1 response: a JSON body with its length (none for 1xx, 204 and 304)."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {status} {reason}".encode()]
    bodiless = status < 200 or status in (204, 304)
    if not bodiless:
        lines += [b"Content-Type: application/json", b"Content-Length: %d" % len(body)]
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if bodiless or head_only else body)


class RequestReader:
    """Requests as their bytes come (Content-Length or chunked bodies), in order."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.continue_wanted = False  # the request being read asked for 100 Continue before its body

    def feed(self, data: bytes) -> None:
        """Take the bytes that came."""
        self._buffer += data
        if len(self._buffer) > MAX_HEAD + MAX_BODY:
            raise BadRequest("request too large", 413)

    def next(self, arrived: float) -> Request | None:
        """The next whole request (stamped `arrived`), or None until more bytes come."""
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD:
                raise BadRequest("request head too long", 431)
            return None
        lines = bytes(buffer[:end]).split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1.") or not parts[0].isalpha():
            raise BadRequest("not an HTTP/1.x request line")
        method, target, version = parts[0].decode(), parts[1].decode("latin-1"), parts[2]
        headers: dict[bytes, list[bytes]] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise BadRequest("a header line without a name and a colon")
            headers.setdefault(name.lower(), []).append(value.strip())
        connection = [t.strip().lower() for v in headers.get(b"connection", []) for t in v.split(b",")]
        keep_alive = b"close" not in connection if version == b"HTTP/1.1" else b"keep-alive" in connection
        start = end + 4
        codings = [t.strip().lower() for v in headers.get(b"transfer-encoding", []) for t in v.split(b",")]
        if codings:
            if codings[-1] != b"chunked":
                raise BadRequest("a request body must be chunked or have a Content-Length", 411)
            decoded = _dechunk(buffer, start)
            if decoded is None:
                self.continue_wanted = _expects_continue(headers)
                return None
            body, start = decoded
        else:
            lengths = set(headers.get(b"content-length", [b"0"]))
            length = next(iter(lengths))
            if len(lengths) > 1 or not length.isdigit():
                raise BadRequest("a Content-Length that is not one number")
            if int(length) > MAX_BODY:
                raise BadRequest("request body too large", 413)
            if len(buffer) < start + int(length):
                self.continue_wanted = _expects_continue(headers)
                return None
            body = bytes(buffer[start : start + int(length)])
            start += int(length)
        del buffer[:start]
        self.continue_wanted = False
        return Request(method, target, body, arrived, keep_alive)


def _expects_continue(headers: dict[bytes, list[bytes]]) -> bool:
    return any(v.lower() == b"100-continue" for v in headers.get(b"expect", []))


def _dechunk(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    """A chunked body from `start`: the body and where it ends (trailers read), or None if cut short."""
    body = bytearray()
    at = start
    while True:
        end = buffer.find(b"\r\n", at)
        if end < 0:
            return None
        try:
            size = int(bytes(buffer[at:end]).partition(b";")[0].strip(), 16)
        except ValueError:
            raise BadRequest("a chunk size that is not hexadecimal") from None
        at = end + 2
        if size == 0:
            break
        if len(buffer) < at + size + 2:
            return None
        if buffer[at + size : at + size + 2] != b"\r\n":
            raise BadRequest("a chunk does not end with CRLF")
        body += buffer[at : at + size]
        at += size + 2
        if len(body) > MAX_BODY:
            raise BadRequest("request body too large", 413)
    while True:  # trailers, up to an empty line
        end = buffer.find(b"\r\n", at)
        if end < 0:
            return None
        line_empty = end == at
        at = end + 2
        if line_empty:
            return bytes(body), at


class Connection(asyncio.Protocol):
    """One client connection: its requests answered in order, each when its answer's time has come."""

    def __init__(self, responder: Responder, schedule: Scheduler, connections: set[Connection]) -> None:
        self._responder = responder
        self._schedule = schedule
        self._connections = connections
        self._reader = RequestReader()
        self._transport: asyncio.Transport | None = None
        self._busy = False  # a request is being held: later ones wait (answers go in order)
        self._continued = False  # 100 Continue was sent for the request being read
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._connections.discard(self)

    def data_received(self, data: bytes) -> None:
        arrived = time.perf_counter()
        try:
            self._reader.feed(data)
        except BadRequest as exc:
            self._refuse(exc)
            return
        self._take(arrived)

    def _take(self, arrived: float) -> None:
        """Answer the next whole request, unless one is held."""
        if self._busy or self._closing:
            return
        try:
            request = self._reader.next(arrived)
        except BadRequest as exc:
            self._refuse(exc)
            return
        if request is None:
            if self._reader.continue_wanted and not self._continued and self._transport is not None:
                self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self._continued = True
            return
        self._busy, self._continued = True, False
        due = self._responder.due(request)
        if due > time.perf_counter():
            self._schedule(due, lambda: self._write(request))
        else:
            self._write(request)

    def _write(self, request: Request) -> None:
        """Answer `request` (its time has come), then take the next one that came meanwhile (pipelined)."""
        self._busy = False
        if self._closing or self._transport is None:
            return
        try:
            answer = self._responder.answer(request)
        except Exception:  # a bug of the stand-in's: the client gets a 500, not a hung connection
            log.exception("alcor_standin_answer_crashed", method=request.method, target=request.target[:200])
            answer = Answer(500, b"")
        close = not request.keep_alive
        head_only = request.method == "HEAD"
        self._transport.write(answer_bytes(answer.status, answer.body, head_only=head_only, close=close))
        if answer.written is not None:
            answer.written(time.perf_counter())
        if close:
            self.close()
        else:
            self._take(time.perf_counter())

    def _refuse(self, exc: BadRequest) -> None:
        if self._transport is not None and not self._closing:
            self._transport.write(answer_bytes(exc.status, b"", head_only=False, close=True))
        self.close()

    def close(self) -> None:
        """Close the connection (an answer still held is not written)."""
        self._closing = True
        if self._transport is not None:
            self._transport.close()
