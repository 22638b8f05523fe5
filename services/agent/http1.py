"""HTTP/1.1 to one server over kept-alive connections, each exchange timed at the socket.

The agent calls Alcor's port manager to measure it: a call's time is what Alcor and the way there and back
took, from the request handed to the socket to the answer's last byte read from it, taken in the protocol's
callbacks. The wait for a free connection, the building of the request and what the caller does with the
answer are the emulator's, not the control plane's, and are not in it. A general client (aiohttp) spent
about 130 us of CPU a request and, on Python 3.11, wrote a request's body from a task of its own, behind
the other requests of its burst; this one spends about 50 us and writes a request at once.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

# The longest status line and headers taken from a server.
MAX_HEAD = 64 * 1024
# An idle connection older than this is closed rather than used: servers drop idle connections after
# their own keep-alive timeout (Tomcat's default is 20 s), and a request written as one is dropped fails.
KEEPALIVE = 15.0

SocketFactory = Callable[[int, int, int], socket.socket]
NUMERIC = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
_ACCEPT = b"Accept: application/json"
_JSON = b"Content-Type: application/json"


class BadResponse(Exception):
    """The server's answer is not HTTP/1.x as this client reads it."""


class Disconnected(ConnectionError):
    """The connection closed before the whole answer came."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A server's answer: its status and body, and the exchange's time at the socket (seconds)."""

    status: int
    body: bytes
    seconds: float


_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_EOF, _DONE = range(8)


class ResponseParser:
    """One HTTP/1.x response, fed as it arrives: its status, its body (by Content-Length, chunked, or up
    to the connection's end) and whether the connection may carry another request after it."""

    def __init__(self, method: str) -> None:
        self._buffer = bytearray()
        self._state = _HEAD
        self._bodiless = method == "HEAD"
        self._remaining = 0
        self.status = 0
        self.body = bytearray()
        self.keep_alive = True

    @property
    def done(self) -> bool:
        """The whole response was read."""
        return self._state == _DONE

    def feed(self, data: bytes) -> bool:
        """Take the bytes that came; whether the response is complete (bytes past it end keep-alive)."""
        buffer = self._buffer
        buffer += data
        while True:
            state = self._state
            if state == _HEAD:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD:
                        raise BadResponse(f"no end of headers in {MAX_HEAD} bytes")
                    return False
                head = bytes(buffer[:end])
                del buffer[: end + 4]
                self._head(head)
            elif state in (_LENGTH, _CHUNK_DATA):
                taken = buffer[: self._remaining]
                self.body += taken
                del buffer[: len(taken)]
                self._remaining -= len(taken)
                if self._remaining:
                    return False
                self._state = _DONE if state == _LENGTH else _CHUNK_END
            elif state == _CHUNK_END:
                if len(buffer) < 2:
                    return False
                if buffer[:2] != b"\r\n":
                    raise BadResponse("a chunk does not end with CRLF")
                del buffer[:2]
                self._state = _CHUNK_SIZE
            elif state in (_CHUNK_SIZE, _TRAILERS):
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD:
                        raise BadResponse("a chunk size or trailer line too long")
                    return False
                line = bytes(buffer[:end])
                del buffer[: end + 2]
                if state == _TRAILERS:
                    if not line:
                        self._state = _DONE
                    continue
                try:
                    size = int(line.partition(b";")[0].strip(), 16)
                except ValueError:
                    raise BadResponse("a chunk size that is not hexadecimal") from None
                if size < 0:
                    raise BadResponse("a negative chunk size")
                self._remaining = size
                self._state = _CHUNK_DATA if size else _TRAILERS
            elif state == _UNTIL_EOF:
                self.body += buffer
                buffer.clear()
                return False
            else:  # _DONE
                if buffer:
                    self.keep_alive = False  # more than was asked for: the connection cannot be trusted
                return True

    def end_of_stream(self) -> bool:
        """The server closed its side: whether that completes the response (a body read up to the end)."""
        if self._state == _UNTIL_EOF:
            self._state = _DONE
        return self._state == _DONE

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise BadResponse("not an HTTP/1.x status line")
        status = int(code)
        if status == 101:
            raise BadResponse("a protocol switch that was not asked for")
        if status < 200:  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            return
        lengths: set[bytes] = set()
        codings: list[bytes] = []
        connection: list[bytes] = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise BadResponse("a header line without a name and a colon")
            name = name.lower()
            if name == b"content-length":
                lengths.add(value.strip())
            elif name == b"transfer-encoding":
                codings += [c.strip().lower() for c in value.split(b",")]
            elif name == b"connection":
                connection += [c.strip().lower() for c in value.split(b",")]
        self.status = status
        self.keep_alive = (
            b"close" not in connection if version == b"HTTP/1.1" else b"keep-alive" in connection
        )
        if self._bodiless or status in (204, 304):
            self._state = _DONE
        elif codings:
            if codings[-1] == b"chunked":
                self._state = _CHUNK_SIZE
            else:  # a body that ends with the connection
                self._state, self.keep_alive = _UNTIL_EOF, False
        elif lengths:
            if len(lengths) > 1 or not next(iter(lengths)).isdigit():
                raise BadResponse("a Content-Length that is not one number")
            self._remaining = int(next(iter(lengths)))
            self._state = _LENGTH if self._remaining else _DONE
        else:
            self._state, self.keep_alive = _UNTIL_EOF, False


class _Connection(asyncio.Protocol):
    """One connection: one exchange at a time, timed in the protocol's callbacks."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.open = True
        self.idle_since = 0.0
        self._parser: ResponseParser | None = None
        self._answer: asyncio.Future[Answer] | None = None
        self._sent_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def exchange(self, method: str, request: bytes) -> asyncio.Future[Answer]:
        """Write `request` now; the future answer."""
        assert self.transport is not None and self._answer is None
        if self.transport.is_closing():  # closed since it was picked: a write would go nowhere
            raise Disconnected("the connection closed before the request was written")
        self._parser = ResponseParser(method)
        self._answer = asyncio.get_running_loop().create_future()
        self._sent_at = time.perf_counter()
        self.transport.write(request)
        return self._answer

    def data_received(self, data: bytes) -> None:
        parser, answer = self._parser, self._answer
        if parser is None or answer is None or answer.done():
            self.close()  # bytes nobody asked for
            return
        try:
            complete = parser.feed(data)
        except BadResponse as exc:
            self._fail(exc)
            return
        if complete:
            self._finish(parser, answer)

    def eof_received(self) -> bool:
        parser, answer = self._parser, self._answer
        if parser is not None and answer is not None and not answer.done() and parser.end_of_stream():
            self._finish(parser, answer)
        self.open = False
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        why = f" ({exc})" if exc else ""
        self._fail(Disconnected(f"the server closed the connection before answering{why}"))

    def _finish(self, parser: ResponseParser, answer: asyncio.Future[Answer]) -> None:
        seconds = time.perf_counter() - self._sent_at
        self._parser = self._answer = None
        if not parser.keep_alive:
            self.close()
        answer.set_result(Answer(parser.status, bytes(parser.body), seconds))

    def _fail(self, exc: Exception) -> None:
        answer, self._parser, self._answer = self._answer, None, None
        self.close()
        if answer is not None and not answer.done():
            answer.set_exception(exc)

    def close(self) -> None:
        """Close the connection (a pending answer fails)."""
        self.open = False
        if self.transport is not None:
            self.transport.close()


class Http1Pool:
    """HTTP/1.1 requests to the server of `base_url`, over at most `connections` kept-alive connections
    (a request waits for a free one, untimed). Sockets come from `open_socket` (the agent makes them in
    the management namespace); names are resolved when a connection opens, never per request."""

    def __init__(
        self,
        base_url: str,
        *,
        connections: int,
        timeout: float,
        open_socket: SocketFactory = socket.socket,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self._open_socket = open_socket
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._host = parts.netloc.encode("idna")
        self._slots = asyncio.Semaphore(connections)
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()

    async def request(self, method: str, path: str, body: bytes | None = None) -> Answer:
        """One exchange; OSError (refused, reset, Disconnected), TimeoutError (connecting, or no whole
        answer within `timeout`) or BadResponse when none came."""
        lines = [f"{method} {self.prefix}{path} HTTP/1.1".encode(), b"Host: " + self._host, _ACCEPT]
        if body is not None:
            lines += [_JSON, b"Content-Length: %d" % len(body)]
        request = b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")
        async with self._slots:
            connection = self._idle_connection() or await self._connect()
            try:
                async with asyncio.timeout(self.timeout):
                    answer = await connection.exchange(method, request)
            except BaseException:
                self._drop(connection)  # an answer may still come on it: it cannot carry another request
                raise
            if connection.open:
                connection.idle_since = time.monotonic()
                self._idle.append(connection)
            else:
                self._all.discard(connection)
            return answer

    def _idle_connection(self) -> _Connection | None:
        """The connection used last that is still open and not idle for too long (others are closed)."""
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.open and now - connection.idle_since < KEEPALIVE:
                return connection
            self._drop(connection)
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.timeout):
            try:  # an address needs no lookup (and no thread)
                found = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM, flags=NUMERIC)
            except socket.gaierror:
                found = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            failure: OSError = OSError(f"no address for {self.host}")
            for family, kind, proto, _, address in found:
                sock = self._open_socket(family, kind, proto)
                try:
                    sock.setblocking(False)
                    await loop.sock_connect(sock, address)
                    named = self.host if self._ssl else None
                    _, connection = await loop.create_connection(
                        _Connection, sock=sock, ssl=self._ssl, server_hostname=named
                    )
                except OSError as exc:
                    sock.close()
                    failure = exc
                    continue
                except BaseException:
                    sock.close()
                    raise
                self._all.add(connection)
                return connection
            raise failure

    def _drop(self, connection: _Connection) -> None:
        connection.close()
        self._all.discard(connection)

    async def close(self) -> None:
        """Close every connection."""
        for connection in list(self._all):
            connection.close()
        self._all.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing
