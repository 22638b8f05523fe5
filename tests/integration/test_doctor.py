"""`merak doctor` on this machine, and `merak up`'s preflight: checks, refusal, the settings it raises."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from merak import host, netns
from merak_tools import cli, doctor
from merak_tools.localstack import LocalStack, StackError, StackSettings

pytestmark = pytest.mark.root


@pytest.fixture
def settings() -> Iterator[StackSettings]:
    state = Path(tempfile.mkdtemp(prefix="mkd", dir="/tmp"))
    yield StackSettings(state_dir=state)
    shutil.rmtree(state, ignore_errors=True)


def test_doctor_probes_the_kernel_for_real_and_leaves_nothing() -> None:
    before = set(netns.list_names("mkdoctor-"))
    checks = {c.name: c for c in doctor.run_checks()}
    assert set(netns.list_names("mkdoctor-")) == before
    # What this product cannot work without is present here; the optional ones say what they are for.
    for name in ("root", "network namespaces", "veth", "bridge", "vxlan", "redis-server", "temporal"):
        assert checks[name].status == "ok", checks[name]
    for name in ("tbf", "netem", "nftables", "vrf"):
        assert checks[name].status in ("ok", "info", "warn") and checks[name].needed == "optional"
    areas = {"system", "kernel", "sysctl", "limit", "binary", "ovn", "memory"}
    assert {c.area for c in checks.values()} == areas
    assert doctor.failures(list(checks.values())) == []


def test_doctor_sizes_sysctls_for_the_planned_lab(kernel_defaults: dict[str, int]) -> None:
    small = {c.name: c for c in doctor.run_checks(doctor.Plan(vhosts=1, vms=0), probe_kernel=False)}
    assert small[host.NEIGH_THRESH[2]].status == "ok"  # 4 namespaces fit the kernel defaults
    demo = {c.name: c for c in doctor.run_checks(doctor.Plan(), probe_kernel=False)}
    row = demo[host.NEIGH_THRESH[2]]
    assert (row.status, row.current, row.needed) == ("raise", "1024", "16384")


def test_doctor_json_and_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["doctor", "--json", "--vhosts", "100", "--vms", "10000"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["plan"] == {"vhosts": 100, "vms": 10000, "vpcs": 1}
    rows = {c["name"]: c for c in report["checks"]}
    assert rows[host.NEIGH_THRESH[2]]["needed"] == str(host.NEIGH_CAP)


def test_up_prints_what_it_raised(settings: StackSettings, kernel_defaults: dict[str, int]) -> None:
    lines: list[str] = []
    sizing = LocalStack(settings, out=lines.append).preflight()
    assert {c.name: (c.before, c.after) for c in sizing.changes} == {
        host.NEIGH_THRESH[0]: (128, 2048),
        host.NEIGH_THRESH[1]: (512, 8192),
        host.NEIGH_THRESH[2]: (1024, 16384),
    }
    assert host.read_sysctl(host.NEIGH_THRESH[2]) == 16384
    assert (
        "host: raised net.ipv4.neigh.default.gc_thresh3 1024 -> 16384 "
        "(sized for a lab of 5 vhosts, 50 VMs, 1 VPC(s); bigger labs raise it further)"
    ) in lines
    # Already big enough: nothing to say, and a value set higher by hand stays.
    host.sysctl_path(host.NEIGH_THRESH[2]).write_text("50000\n")
    lines.clear()
    assert LocalStack(settings, out=lines.append).preflight().changes == ()
    assert host.read_sysctl(host.NEIGH_THRESH[2]) == 50000
    assert not [line for line in lines if line.startswith("host:")]


def test_up_refuses_on_a_hard_failure(settings: StackSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    # redis-server cannot be uninstalled for a test; the refusal is what is checked here.
    missing = doctor.Check("binary", "redis-server", "fail", "missing", "required", "every service's store")
    monkeypatch.setattr("merak_tools.localstack.stack.run_checks", lambda _plan: [missing])
    stack = LocalStack(settings, out=lambda _line: None)
    with pytest.raises(StackError, match="this machine cannot run the stack: redis-server: missing"):
        stack.up()
    assert not (settings.state_dir / "run").exists()  # nothing was started
