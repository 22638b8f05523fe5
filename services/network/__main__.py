"""`python -m services.network`: run the network service."""

from __future__ import annotations

from merak.service import main_for
from services.network.app import run
from services.network.config import NetworkSettings


def main() -> None:
    """Console script `merak-network`."""
    main_for("network", NetworkSettings, run)


if __name__ == "__main__":
    main()
