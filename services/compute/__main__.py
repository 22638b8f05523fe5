"""`python -m services.compute`: run the compute service."""

from __future__ import annotations

from merak.service import main_for
from services.compute.app import run
from services.compute.config import ComputeSettings


def main() -> None:
    """Console script `merak-compute`."""
    main_for("compute", ComputeSettings, run)


if __name__ == "__main__":
    main()
