"""Optional TLS on every gRPC server and client over TCP, set by the environment of each process:

- `MERAK_TLS_CERT`, `MERAK_TLS_KEY`: this process's certificate chain and key (PEM files). A server
  presents them; a client presents them too when the servers ask for client certificates.
- `MERAK_TLS_CA`: the CA bundle (PEM) that signed the servers' certificates (clients verify them) and,
  with mutual TLS, the clients' ones (servers verify them).
- `MERAK_TLS_CLIENT_AUTH=1`: servers require a client certificate signed by that CA (mTLS).

The scenario service's REST API is served with the same files (HTTPS; a client certificate required
under mTLS), and the tools that call it verify it with the same CA.

Unset (the default), everything is plaintext, as Merak's services were. Unix-socket endpoints (the
agents of the local backend) stay plaintext: only this machine's root can reach them.
"""

from __future__ import annotations

import contextlib
import functools
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

ENV_CERT, ENV_KEY, ENV_CA, ENV_CLIENT_AUTH = (
    "MERAK_TLS_CERT",
    "MERAK_TLS_KEY",
    "MERAK_TLS_CA",
    "MERAK_TLS_CLIENT_AUTH",
)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM contents read once: this process's certificate and key, the CA, whether mTLS is required."""

    cert: bytes | None
    key: bytes | None
    ca: bytes | None
    client_auth: bool

    @classmethod
    def current(cls) -> TlsFiles | None:
        """This process's TLS: the files its environment names, read once — again only when the
        environment or a file changes (a certificate renewed in place, as a mounted Secret is)."""
        env = os.environ
        paths = (env.get(ENV_CERT, ""), env.get(ENV_KEY, ""), env.get(ENV_CA, ""))
        return _read_once(*paths, env.get(ENV_CLIENT_AUTH, ""), tuple(_mtime(p) for p in paths))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> TlsFiles | None:
        """The files the environment names (None: TLS is off); a missing file is an error at start."""
        env = os.environ if environ is None else environ
        paths = {name: env.get(name, "") for name in (ENV_CERT, ENV_KEY, ENV_CA)}
        if not any(paths.values()):
            return None
        if bool(paths[ENV_CERT]) != bool(paths[ENV_KEY]):
            raise ValueError(f"{ENV_CERT} and {ENV_KEY} go together")
        read = {name: Path(path).read_bytes() if path else None for name, path in paths.items()}
        client_auth = env.get(ENV_CLIENT_AUTH, "").lower() in ("1", "true", "yes")
        if client_auth and not read[ENV_CA]:
            raise ValueError(f"{ENV_CLIENT_AUTH} needs {ENV_CA}: the CA that signs client certificates")
        return cls(read[ENV_CERT], read[ENV_KEY], read[ENV_CA], client_auth)

    def server_credentials(self) -> grpc.ServerCredentials:
        """What a server presents, and the client certificates it requires under mTLS."""
        if self.cert is None or self.key is None:
            raise ValueError(f"a TLS server needs {ENV_CERT} and {ENV_KEY}")
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.ca, require_client_auth=self.client_auth
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """How a client verifies servers (the CA) and, when it has one, the certificate it presents."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )

    def server_ssl_context(self) -> ssl.SSLContext:
        """The same as `server_credentials`, for an HTTPS server (the REST API)."""
        if self.cert is None or self.key is None:
            raise ValueError(f"a TLS server needs {ENV_CERT} and {ENV_KEY}")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        _load_chain(context, self.cert, self.key)
        if self.ca is not None:
            context.load_verify_locations(cadata=self.ca.decode())
        if self.client_auth:
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def client_ssl_context(self) -> ssl.SSLContext:
        """The same as `channel_credentials`, for an HTTPS client: the CA (the system's without one)
        and this process's certificate when it has one."""
        context = ssl.create_default_context(cadata=self.ca.decode() if self.ca is not None else None)
        if self.cert is not None and self.key is not None:
            _load_chain(context, self.cert, self.key)
        return context


def _load_chain(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """`load_cert_chain` from memory: it reads only files, so an anonymous one that never reaches a disk."""
    with _memory_file(cert + b"\n" + key) as path:
        context.load_cert_chain(path)


@contextlib.contextmanager
def _memory_file(data: bytes) -> Iterator[str]:
    fd = os.memfd_create("merak-tls", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns if path else 0
    except OSError:
        return -1  # missing: from_env says which


@functools.lru_cache(maxsize=4)
def _read_once(cert: str, key: str, ca: str, client_auth: str, _mtimes: tuple[int, ...]) -> TlsFiles | None:
    return TlsFiles.from_env({ENV_CERT: cert, ENV_KEY: key, ENV_CA: ca, ENV_CLIENT_AUTH: client_auth})


def is_tcp(address: str) -> bool:
    """TLS applies to TCP endpoints, not to unix sockets."""
    return not address.startswith("unix:")
