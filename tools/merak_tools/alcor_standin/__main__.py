"""`python -m merak_tools.alcor_standin`: serve a fake Alcor until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import signal
import threading

from merak_tools import alcor_standin
from merak_tools.alcor_standin.server import ALCOR_NODEPORTS, ALCOR_SERVICES, FakeAlcor


def main(argv: list[str] | None = None) -> int:
    """Serve a fake Alcor on the ports the command line names until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m merak_tools.alcor_standin", description=alcor_standin.__doc__
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="one port for every service (default: free)")
    parser.add_argument(
        "--nodeports", action="store_true", help="one port per service, Alcor's NodePorts (30001-30008)"
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added before every answer")
    args = parser.parse_args(argv)
    if args.nodeports:
        alcor = FakeAlcor(
            ALCOR_SERVICES, host=args.host, ports=ALCOR_NODEPORTS, latency=args.latency_ms / 1000
        )
        where = ", ".join(f"{s} {alcor.port_of(s)}" for s in ALCOR_SERVICES)
        print(f"fake Alcor on {args.host}: {where}", flush=True)
    else:
        alcor = FakeAlcor(host=args.host, ports={"": args.port}, latency=args.latency_ms / 1000)
        print(f"fake Alcor on {alcor.url}", flush=True)
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    stopped.wait()
    alcor.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
