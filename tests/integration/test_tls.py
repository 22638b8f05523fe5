"""Optional TLS and mutual TLS on the gRPC servers and clients (merak.tls) and on the REST API, with
certificates a throwaway CA made by openssl for this test."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from merak.grpcclient import health_serving, open_channel
from merak.grpcserver import GrpcServer
from merak.tls import ENV_CA, ENV_CERT, ENV_CLIENT_AUTH, ENV_KEY, TlsFiles
from merak_tools.teste2e.rest import rest_client
from services.agent.server import AgentServicer, registration
from services.agent.vhosts import VhostSet
from services.scenario import app as scenario_app
from services.scenario.config import ScenarioSettings
from tests.support.plugin import ServeBuilt

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
NOWHERE = "127.0.0.1:1"


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


async def _serve_rest(serve_built: ServeBuilt, redis_url: str) -> str:
    """The scenario service alone, its REST API on the TLS files of the environment: its https URL."""
    built = await scenario_app.build(
        ScenarioSettings(
            host="127.0.0.1", grpc_port=0, rest_port=0, redis_url=redis_url, call_timeout=2,
            topology_address=NOWHERE, network_address=NOWHERE, compute_address=NOWHERE,
        )
    )  # fmt: skip
    await serve_built(built)
    return f"https://localhost:{built.listeners['rest'].rsplit(':', 1)[1]}"


async def _get(url: str, verify: ssl.SSLContext | bool) -> int:
    async with httpx.AsyncClient(verify=verify, timeout=5) as client:
        return (await client.get(url + "/api/topologies")).status_code


async def test_rest_api_over_tls(
    monkeypatch: pytest.MonkeyPatch, pki: Path, serve_built: ServeBuilt, redis_url: str
) -> None:
    _use(monkeypatch, pki, "server")
    url = await _serve_rest(serve_built, redis_url)
    assert await _get(url, ssl.create_default_context(cafile=pki / "ca.pem")) == 200
    async with rest_client(url, 5) as client:  # the tools' client verifies it with MERAK_TLS_CA
        assert (await client.get("/api")).status_code == 200
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        await _get(url, True)  # a client that does not trust the CA
    with pytest.raises(httpx.TransportError):
        await _get(url.replace("https://", "http://"), False)  # plaintext HTTP gets no answer


async def test_rest_api_over_mutual_tls_refuses_a_client_without_a_certificate(
    monkeypatch: pytest.MonkeyPatch, pki: Path, serve_built: ServeBuilt, redis_url: str, tmp_path: Path
) -> None:
    _use(monkeypatch, pki, "server", client_auth=True)
    url = await _serve_rest(serve_built, redis_url)
    with pytest.raises(httpx.TransportError):
        await _get(url, ssl.create_default_context(cafile=pki / "ca.pem"))
    # A certificate the CA did not sign (self-signed).
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(tmp_path / "stranger.key"), "-out", str(tmp_path / "stranger.pem"), "-days", "1",
             "-subj", "/CN=merak-stranger")  # fmt: skip
    stranger = ssl.create_default_context(cafile=pki / "ca.pem")
    stranger.load_cert_chain(tmp_path / "stranger.pem", tmp_path / "stranger.key")
    with pytest.raises(httpx.TransportError):
        await _get(url, stranger)
    _use(monkeypatch, pki, "client")
    tls = TlsFiles.current()
    assert tls is not None
    assert await _get(url, tls.client_ssl_context()) == 200
