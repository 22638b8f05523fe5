"""Optional TLS and mutual TLS on the gRPC servers and clients (merak.tls), with certificates a
throwaway CA made by openssl for this test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from merak.grpcclient import health_serving, open_channel
from merak.grpcserver import GrpcServer
from merak.tls import ENV_CA, ENV_CERT, ENV_CLIENT_AUTH, ENV_KEY, TlsFiles
from services.agent.server import AgentServicer, registration
from services.agent.vhosts import VhostSet

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _signed(directory: Path, name: str, subject: str, extensions: str) -> None:
    key, csr, ext = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.ext"
    ext.write_text(extensions + "\n")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", subject)
    ca, ca_key, cert = directory / "ca.pem", directory / "ca.key", directory / f"{name}.pem"
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(cert), "-days", "1", "-extfile", str(ext))  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(directory / "ca.key"), "-out", str(directory / "ca.pem"), "-days", "1",
             "-subj", "/CN=merak-test-ca")  # fmt: skip
    _signed(directory, "server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1")
    _signed(directory, "client", "/CN=merak-client", "extendedKeyUsage=clientAuth")
    return directory


def _use(monkeypatch: pytest.MonkeyPatch, pki: Path, name: str, *, client_auth: bool = False) -> None:
    monkeypatch.setenv(ENV_CERT, str(pki / f"{name}.pem"))
    monkeypatch.setenv(ENV_KEY, str(pki / f"{name}.key"))
    monkeypatch.setenv(ENV_CA, str(pki / "ca.pem"))
    monkeypatch.setenv(ENV_CLIENT_AUTH, "1" if client_auth else "")


async def _serve(monkeypatch: pytest.MonkeyPatch, pki: Path, *, client_auth: bool) -> GrpcServer:
    _use(monkeypatch, pki, "server", client_auth=client_auth)
    server = GrpcServer(
        "127.0.0.1:0", [registration(AgentServicer(VhostSet.standalone()))], CollectorRegistry()
    )
    await server.start()
    return server


async def _check(channel: grpc.aio.Channel) -> grpc.StatusCode:
    try:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_tls_server_talks_to_tls_clients_only(monkeypatch: pytest.MonkeyPatch, pki: Path) -> None:
    server = await _serve(monkeypatch, pki, client_auth=False)
    try:
        address = f"localhost:{server.port}"
        assert await health_serving(address)  # the product's own clients follow the environment
        async with open_channel(address) as channel:
            assert await _check(channel) == grpc.StatusCode.OK
        async with grpc.aio.insecure_channel(address) as plaintext:
            assert await _check(plaintext) == grpc.StatusCode.UNAVAILABLE
        other_ca = grpc.ssl_channel_credentials(root_certificates=(pki / "client.pem").read_bytes())
        async with grpc.aio.secure_channel(address, other_ca) as untrusting:
            assert await _check(untrusting) == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


async def test_mutual_tls_requires_a_client_certificate_of_the_ca(
    monkeypatch: pytest.MonkeyPatch, pki: Path
) -> None:
    server = await _serve(monkeypatch, pki, client_auth=True)
    try:
        address = f"localhost:{server.port}"
        ca = (pki / "ca.pem").read_bytes()
        async with grpc.aio.secure_channel(
            address, grpc.ssl_channel_credentials(root_certificates=ca)
        ) as anonymous:
            assert await _check(anonymous) == grpc.StatusCode.UNAVAILABLE
        _use(monkeypatch, pki, "client")
        async with open_channel(address) as channel:
            assert await _check(channel) == grpc.StatusCode.OK
    finally:
        await server.stop(0)


def test_settings_are_checked_at_start(tmp_path: Path) -> None:
    assert TlsFiles.from_env({}) is None
    with pytest.raises(ValueError, match="go together"):
        TlsFiles.from_env({ENV_CERT: str(tmp_path / "x.pem")})
    with pytest.raises(ValueError, match="needs MERAK_TLS_CA"):
        (tmp_path / "c.pem").write_text("x")
        TlsFiles.from_env(
            {ENV_CERT: str(tmp_path / "c.pem"), ENV_KEY: str(tmp_path / "c.pem"), ENV_CLIENT_AUTH: "1"}
        )
    with pytest.raises(FileNotFoundError):
        TlsFiles.from_env({ENV_CA: str(tmp_path / "missing.pem")})
