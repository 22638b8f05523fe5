"""The `MERAK_*` variables the processes read, from their Settings classes (catches typos in deployments)."""

from __future__ import annotations

from pydantic_settings import BaseSettings

from services.agent.config import AgentSettings
from services.compute.config import ComputeSettings
from services.network.config import NetworkSettings
from services.scenario.config import ScenarioSettings
from services.topology.config import TopologySettings

SETTINGS: tuple[type[BaseSettings], ...] = (
    AgentSettings,
    ComputeSettings,
    NetworkSettings,
    ScenarioSettings,
    TopologySettings,
)


def known_variables() -> set[str]:
    """Every MERAK_* variable some process reads."""
    return {f"MERAK_{name.upper()}" for settings in SETTINGS for name in settings.model_fields}


def unknown(variables: dict[str, str] | list[str]) -> list[str]:
    """The MERAK_* names no process reads."""
    known = known_variables()
    return sorted(name for name in variables if name.startswith("MERAK_") and name not in known)
