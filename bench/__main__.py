"""`python -m bench [name …]`: run the benchmarks (all by default)."""

from __future__ import annotations

import argparse
import sys

from bench import agent_bench, alcor_bench, compute_bench, ovn_bench, topology_bench

BENCHMARKS = {
    "topology": topology_bench.main,
    "agent": agent_bench.main,
    "compute": compute_bench.main,
    "alcor": alcor_bench.main,
    "ovn": ovn_bench.main,
}


def main(argv: list[str] | None = None) -> int:
    """Run the named benchmarks."""
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument(
        "names", nargs="*", choices=[*BENCHMARKS, []], help="benchmarks to run (default: all)"
    )
    args, rest = parser.parse_known_args(argv)
    status = 0
    for name in args.names or list(BENCHMARKS):
        status |= BENCHMARKS[name](rest)
    return status


if __name__ == "__main__":
    sys.exit(main())
