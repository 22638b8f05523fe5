"""`python -m merak_tools.alcor_standin`: serve a fake Alcor until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import signal
import threading

from merak_tools import alcor_standin
from merak_tools.alcor_standin.server import ALCOR_NODEPORTS, ALCOR_SERVICES, FakeAlcor
from merak_tools.alcor_standin.southbound import PUSH_TIMEOUT


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in 0..1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's options."""
    parser = argparse.ArgumentParser(
        prog="python -m merak_tools.alcor_standin", description=alcor_standin.__doc__
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="one port for every service (default: free)")
    parser.add_argument(
        "--nodeports", action="store_true", help="one port per service, Alcor's NodePorts (30001-30008)"
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added before every answer")
    parser.add_argument(
        "--southbound",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="push goal states to the registered hosts' agents when ports are bound or deleted, as "
        "Alcor's DPM/NCM do (default on)",
    )
    parser.add_argument(
        "--push-delay", type=_seconds, default=0.0, metavar="SECONDS", help="waited before each push"
    )
    parser.add_argument(
        "--push-drop", type=_fraction, default=0.0, metavar="FRACTION",
        help="the fraction of pushes silently not sent (1 drops all)",
    )  # fmt: skip
    parser.add_argument(
        "--push-error", type=_fraction, default=0.0, metavar="FRACTION",
        help="the fraction of pushes sent without their ports' subnets (the host refuses the ports)",
    )  # fmt: skip
    parser.add_argument(
        "--push-timeout", type=_seconds, default=PUSH_TIMEOUT, metavar="SECONDS",
        help=f"how long a push may take, its reply included (default {PUSH_TIMEOUT:g})",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Serve a fake Alcor on the ports the command line names until SIGINT/SIGTERM."""
    args = parse(argv)
    pushes = {
        "southbound": args.southbound, "push_delay": args.push_delay, "push_drop": args.push_drop,
        "push_error": args.push_error, "push_timeout": args.push_timeout,
    }  # fmt: skip
    if args.nodeports:
        alcor = FakeAlcor(
            ALCOR_SERVICES, host=args.host, ports=ALCOR_NODEPORTS, latency=args.latency_ms / 1000, **pushes
        )
        where = ", ".join(f"{s} {alcor.port_of(s)}" for s in ALCOR_SERVICES)
        print(f"fake Alcor on {args.host}: {where}", flush=True)
    else:
        alcor = FakeAlcor(host=args.host, ports={"": args.port}, latency=args.latency_ms / 1000, **pushes)
        print(f"fake Alcor on {alcor.url}", flush=True)
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    stopped.wait()
    alcor.stop()
    with alcor.state.lock:
        counts = alcor.state.push_counts()
    print("goal states pushed: " + ", ".join(f"{kind} {n}" for kind, n in counts.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
