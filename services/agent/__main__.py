"""`python -m services.agent`: run the agent service."""

from __future__ import annotations

import sys

from merak.service import main_for
from services.agent.app import run
from services.agent.config import AgentSettings


def main() -> None:
    """Console script `merak-agent`."""
    # The agent times the calls it makes to the control plane on its event loop; a worker thread doing
    # kernel work may keep the interpreter up to the switch interval (5 ms by default) before the
    # loop reads an answer that has arrived. 1 ms bounds what that adds to a measured latency.
    sys.setswitchinterval(0.001)
    main_for("agent", AgentSettings, run)


if __name__ == "__main__":
    main()
