"""The compute Temporal worker as its own process: `python -m services.compute.worker` (built in app.py)."""

from __future__ import annotations

from merak.service import main_for
from services.compute.app import run_worker_process
from services.compute.config import ComputeSettings


def main() -> None:
    """Console script `merak-compute-worker`."""
    main_for("compute-worker", ComputeSettings, run_worker_process)


if __name__ == "__main__":
    main()
