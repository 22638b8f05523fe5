"""`python -m services.scenario`: run the scenario service."""

from __future__ import annotations

from merak.service import main_for
from services.scenario.app import run
from services.scenario.config import ScenarioSettings


def main() -> None:
    """Console script `merak-scenario`."""
    main_for("scenario", ScenarioSettings, run)


if __name__ == "__main__":
    main()
