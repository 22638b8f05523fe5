"""Settings come from MERAK_* variables; logs are JSON off a TTY with stdlib loggers routed through."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from merak.config import GRPC_PORTS
from merak.logs import configure_logging, get_logger
from merak_tools.localstack import StackSettings, default_workers
from services.topology.config import TopologySettings


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert TopologySettings().grpc_port == GRPC_PORTS["topology"] == 40052
    monkeypatch.setenv("MERAK_GRPC_PORT", "41000")
    monkeypatch.setenv("MERAK_REDIS_URL", "redis://example:1/2")
    settings = TopologySettings()
    assert settings.grpc_port == 41000
    assert settings.redis_url == "redis://example:1/2"
    assert settings.listen_address() == "0.0.0.0:41000"


def test_json_logs_route_stdlib(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        configure_logging("INFO", "json", service="unit")
        get_logger("merak.test").info("thing_done", count=3)
        logging.getLogger("some.library").warning("plain %s", "stdlib")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert lines[0]["event"] == "thing_done"
    assert lines[0]["count"] == 3
    assert lines[0]["service"] == "unit"
    assert lines[0]["level"] == "info"
    assert lines[1]["event"] == "plain stdlib"
    assert lines[1]["logger"] == "some.library"
    assert lines[1]["level"] == "warning"


def test_compute_workers_half_the_cpus_each_with_its_metrics_port(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [default_workers(n) for n in (1, 2, 4, 8, 64)] == [1, 1, 2, 4, 8]
    monkeypatch.setenv("MERAK_COMPUTE_WORKERS", "3")
    settings = StackSettings(port_offset=100)
    assert settings.worker_names == ["compute-worker", "compute-worker-2", "compute-worker-3"]
    ports = [settings.metrics_port(name) for name in settings.worker_names]
    assert ports == [9155, 9156, 9157] and not set(ports) & {settings.metrics_port(s) for s in GRPC_PORTS}
