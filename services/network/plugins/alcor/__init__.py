"""The alcor plugin: REST calls to Alcor (client), the JSON they carry (messages), what to make (plugin)."""

from services.network.plugins.alcor.client import AlcorPorts
from services.network.plugins.alcor.plugin import AlcorPlugin

__all__ = ["AlcorPlugin", "AlcorPorts"]
