"""`python -m bench [name …] [--results FILE] [--smoke]`: run the benchmarks (all by default), then print
one table of every row they measured and write it, with the machine, to a results file.

`python -m bench million` is the compute benchmark's million alone (10,000 fake hosts x 100 VMs);
`python -m bench readme [FILE …]` regenerates the README's performance table from results files.
Flags other than these go to every benchmark named. `--smoke` runs each at a tiny size of its own, to
check that it runs: its figures say nothing of the targets.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import agent_bench, alcor_bench, compute_bench, machine, ovn_bench, readme, results, topology_bench
from bench.results import Outcome, Row

BENCHMARKS: dict[str, Callable[[list[str]], Outcome]] = {
    "topology": topology_bench.main,
    "agent": agent_bench.main,
    "compute": compute_bench.main,
    "alcor": alcor_bench.main,
    "ovn": ovn_bench.main,
    "million": compute_bench.million,
}
# The million is part of compute: `python -m bench` runs it once.
ALL = ["topology", "agent", "compute", "alcor", "ovn"]
# Each benchmark at a tiny size (a minute or so each), before the flags given, which may change them.
SMOKE: dict[str, list[str]] = {
    "topology": ["--vhosts", "8", "--mininet-fanout", "2"],
    "agent": ["--vms", "20", "--batch", "10"],
    "compute": ["--real-hosts", "2", "--memory-hosts", "2", "--fake-hosts", "20", "--vms", "5",
                "--churn-hosts", "0"],
    "alcor": ["--hosts", "5", "--vms", "10", "--latency-hosts", "5", "--latency-vms", "2",
              "--latency-rps", "20"],
    "ovn": ["--hosts", "3", "--vms", "4", "--subnets", "2", "--real", "2", "2", "--no-density",
            "--json", str(Path(tempfile.gettempdir()) / "bench-ovn-smoke.json")],
    "million": ["--fake-hosts", "20", "--vms", "5"],
}  # fmt: skip


def results_path(names: list[str], smoke: bool) -> Path:
    """Where the results go unless --results says: the million alone and a smoke run have their own."""
    if smoke:
        return Path("bench-smoke.json")
    return Path("bench-million.json" if names == ["million"] else "bench-results.json")


def run_all(names: list[str], rest: list[str], smoke: bool = False) -> tuple[int, list[Row], dict[str, Any]]:
    """Run the benchmarks in turn; a benchmark that raises fails alone and the others still run."""
    status = 0
    rows: list[Row] = []
    ran: dict[str, dict[str, Any]] = {}
    for name in names:
        started, error = time.monotonic(), ""
        try:
            outcome = BENCHMARKS[name]([*SMOKE[name], *rest] if smoke else rest)
        except SystemExit as exc:  # its flags refused (or --help): the others still run
            outcome, error = Outcome(exc.code if isinstance(exc.code, int) else 1), "refused its arguments"
        except Exception as exc:  # one benchmark's crash must not lose the others' results
            traceback.print_exc()
            outcome, error = Outcome(1), f"{type(exc).__name__}: {exc}"
        status |= outcome.status
        rows += outcome.rows
        ran[name] = {"status": outcome.status, "seconds": round(time.monotonic() - started)}
        if error:
            ran[name]["error"] = error
    return status, rows, ran


def main(argv: list[str] | None = None) -> int:
    """Run the named benchmarks, or regenerate the README's table (`readme`)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["readme"]:
        return readme.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names", nargs="*", choices=[*BENCHMARKS, []], help="benchmarks to run (default: all but million)"
    )
    parser.add_argument("--results", type=Path, help="the results file (default: bench-results.json; "
                        "bench-million.json for the million alone)")  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="each at a tiny size, to check that it runs")
    args, rest = parser.parse_known_args(argv)
    names: list[str] = args.names or ALL
    path: Path = args.results or results_path(names, args.smoke)
    described = machine.describe()
    with machine.OtherLoad() as load:
        status, rows, ran = run_all(names, rest, args.smoke)
    described["other_load"] = load.summary()
    print()
    if not rows:
        print(f"no row measured; {path} left as it was")
        return status or 1
    print(f"benchmark results, {machine.sentence(described)}:")
    for line in results.text_table(results.ordered(rows)):
        print(f"  {line}")
    results.write(path, results.document(rows, described, ran, ["python", "-m", "bench", *argv]))
    print(f"results written to {path} (`python -m bench readme {path}` puts them in the README)")
    return status


if __name__ == "__main__":
    sys.exit(main())
