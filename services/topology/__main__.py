"""`python -m services.topology`: run the topology service."""

from __future__ import annotations

from merak.service import main_for
from services.topology.app import run
from services.topology.config import TopologySettings


def main() -> None:
    """Console script `merak-topology`."""
    main_for("topology", TopologySettings, run)


if __name__ == "__main__":
    main()
