"""Settings shared by every process, read from `MERAK_*` environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from merak.controlplane import ControlPlaneAllow

LogFormat = Literal["auto", "json", "console"]

# Default ports (gRPC, metrics) of every service; one table so the stack, the services and
# the README agree.
GRPC_PORTS: dict[str, int] = {
    "scenario": 40050,
    "compute": 40051,
    "topology": 40052,
    "network": 40053,
    "agent": 40054,
}
METRICS_PORTS: dict[str, int] = {
    "scenario": 9050,
    "compute": 9051,
    "topology": 9052,
    "network": 9053,
    "agent": 9054,
    "compute-worker": 9055,
}
# Merak's REST scenario manager (the scenario service serves it beside its gRPC API).
REST_PORT = 3000
REDIS_PORT = 40059
TEMPORAL_PORT = 7233
TEMPORAL_UI_PORT = 8233
TEMPORAL_NAMESPACE = "merak"


def default_state_dir() -> Path:
    """Where the local stack keeps data, logs, pid files and sockets."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "merak"


class CommonSettings(BaseSettings):
    """Settings every Merak process understands."""

    model_config = SettingsConfigDict(env_prefix="MERAK_", extra="ignore")

    log_level: str = "INFO"
    log_format: LogFormat = "auto"
    state_dir: Path = Field(default_factory=default_state_dir)
    # Seconds that in-flight RPCs get to finish after SIGTERM.
    shutdown_grace: float = 5.0
    # The control-plane endpoints (Alcor URLs, OVN databases) a request may make a service reach:
    # `MERAK_CONTROL_PLANE_ALLOW`, comma-separated `HOST:PORTS` / `CIDR:PORTS` / `unix:/path` entries
    # (merak.controlplane); empty: none. The local stack adds its own OVN and the Alcor stand-in's ports.
    control_plane_allow: str = ""

    @field_validator("control_plane_allow")
    @classmethod
    def _allow_list(cls, value: str) -> str:
        """Refuse a list with a bad entry when the process starts, not at its first request."""
        ControlPlaneAllow.parse(value)
        return value

    def control_plane(self) -> ControlPlaneAllow:
        """The allowed control-plane endpoints."""
        return ControlPlaneAllow.parse(self.control_plane_allow)


class ServiceSettings(CommonSettings):
    """Settings of a gRPC service process."""

    host: str = "0.0.0.0"
    grpc_port: int = 0
    # A gRPC listen address that overrides host/port, e.g. "unix:///run/merak/agent.sock".
    listen: str = ""
    metrics_port: int = 0
    metrics_host: str = "0.0.0.0"
    redis_url: str = f"redis://127.0.0.1:{REDIS_PORT}/0"
    temporal_address: str = f"127.0.0.1:{TEMPORAL_PORT}"
    temporal_namespace: str = TEMPORAL_NAMESPACE

    def listen_address(self) -> str:
        """The address gRPC binds to."""
        return self.listen or f"{self.host}:{self.grpc_port}"
