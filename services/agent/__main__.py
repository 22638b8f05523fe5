"""`python -m services.agent`: run the agent service."""

from __future__ import annotations

from merak.service import main_for
from services.agent.app import run
from services.agent.config import AgentSettings


def main() -> None:
    """Console script `merak-agent`."""
    main_for("agent", AgentSettings, run)


if __name__ == "__main__":
    main()
