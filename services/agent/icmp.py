"""ICMP echo from inside a namespace to many destinations at once, through one raw socket."""

from __future__ import annotations

import secrets
import select
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from merak import netns
from services.agent.models import PingResult
from services.agent.validation import check_ipv4

ICMP_ECHO_REPLY = 0
ICMP_DEST_UNREACH = 3
ICMP_ECHO_REQUEST = 8
ICMP_TIME_EXCEEDED = 11


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMP echo request with its checksum."""
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    checksum = _checksum(header + payload)
    return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, checksum, ident, seq) + payload


@dataclass(slots=True)
class _Probe:
    """The state of pinging one destination."""

    dest: str
    sent: int = 0
    next_send: float = 0.0
    last_send: float = 0.0
    rtts: list[float] = field(default_factory=list)
    error: str = ""


def ping_from(
    ns: str,
    dests: Sequence[str],
    *,
    timeout: float = 1.0,
    count: int = 1,
    retries: int = 0,
    interval: float = 0.2,
    size: int = 56,
) -> list[PingResult]:
    """ICMP echo from inside namespace `ns` to every dest in parallel, through one raw socket."""
    # Each dest gets up to `count + retries` requests, `interval` seconds apart, until `count`
    # replies arrived (ok); it fails once the requests are used up and `timeout` has passed since
    # the last one. A reply to any earlier request counts, so a port that starts passing late is
    # caught without a blind sleep. A request the kernel refuses to send (no route) is not waited for.
    addresses = [str(check_ipv4("dest", d)) for d in dests]
    if count < 1 or retries < 0 or timeout <= 0 or interval < 0 or not 0 <= size <= 65000:
        raise ValueError(
            f"ping: need count >= 1, retries >= 0, timeout > 0, interval >= 0, 0 <= size <= 65000; "
            f"got {count}, {retries}, {timeout}, {interval}, {size}"
        )
    attempts = count + retries
    probes = {address: _Probe(address) for address in addresses}
    with netns.entered(ns):
        # The socket belongs to the namespace it was opened in, whatever the thread does next.
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    with sock:
        sock.setblocking(False)
        ident = secrets.randbits(16)
        payload = bytes(i & 0xFF for i in range(size))
        outstanding: dict[int, tuple[_Probe, float]] = {}
        seq = 0
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        while True:
            now = time.monotonic()
            waits: list[float] = []
            for probe in probes.values():
                if len(probe.rtts) >= count:
                    continue
                if probe.sent < attempts and now >= probe.next_send:
                    seq = (seq + 1) & 0xFFFF
                    probe.sent += 1
                    probe.last_send = now
                    probe.next_send = now + interval
                    try:
                        sock.sendto(_echo_request(ident, seq, payload), (probe.dest, 0))
                        outstanding[seq] = (probe, now)
                    except OSError as exc:
                        probe.error = exc.strerror or str(exc)
                        probe.last_send = now - timeout  # nothing left to wait for from this one
                if probe.sent < attempts:
                    waits.append(probe.next_send)
                elif now < probe.last_send + timeout:
                    waits.append(probe.last_send + timeout)
            if not waits:
                break
            delay = max(0.0, min(waits) - time.monotonic())
            if poller.poll(delay * 1000.0):
                _drain(sock, ident, outstanding)
    results: list[PingResult] = []
    for address in addresses:
        probe = probes[address]
        rtt = round(sum(probe.rtts) / len(probe.rtts), 3) if probe.rtts else None
        if len(probe.rtts) >= count:
            results.append(PingResult(address, ok=True, rtt_ms=rtt))
            continue
        error = probe.error or f"no reply within {timeout}s of the last of {probe.sent} requests"
        if probe.rtts:
            error = f"{len(probe.rtts)} of {count} replies; {error}"
        results.append(PingResult(address, ok=False, rtt_ms=rtt, error=error))
    return results


def _drain(sock: socket.socket, ident: int, outstanding: dict[int, tuple[_Probe, float]]) -> None:
    """Read every datagram waiting on the raw socket and credit replies and errors to their probes."""
    while True:
        try:
            packet, (source, _) = sock.recvfrom(65535)
        except BlockingIOError:
            return
        received = time.monotonic()
        ihl = (packet[0] & 0x0F) * 4
        icmp = packet[ihl:]
        if len(icmp) < 8:
            continue
        kind, code = icmp[0], icmp[1]
        if kind == ICMP_ECHO_REPLY:
            _, _, _, reply_id, reply_seq = struct.unpack("!BBHHH", icmp[:8])
            entry = outstanding.get(reply_seq)
            if reply_id == ident and entry is not None and entry[0].dest == source:
                probe, sent_at = entry
                del outstanding[reply_seq]
                probe.rtts.append((received - sent_at) * 1000.0)
        elif kind in (ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED) and len(icmp) >= 8 + 20 + 8:
            # The error quotes our request: its IP header, then the first 8 bytes of the echo.
            inner = icmp[8:]
            inner_ihl = (inner[0] & 0x0F) * 4
            quoted = inner[inner_ihl : inner_ihl + 8]
            if len(quoted) < 8:
                continue
            q_type, _, _, q_id, q_seq = struct.unpack("!BBHHH", quoted)
            entry = outstanding.get(q_seq)
            if q_type == ICMP_ECHO_REQUEST and q_id == ident and entry is not None:
                what = "destination unreachable" if kind == ICMP_DEST_UNREACH else "time exceeded"
                entry[0].error = f"{what} (code {code}) from {source}"
