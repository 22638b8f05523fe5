"""Host prerequisites: sized from the lab, raised and never lowered, every change logged."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from merak import host


def _proc(root: Path, values: dict[str, int]) -> Path:
    for name, value in values.items():
        path = host.sysctl_path(name, root)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{value}\n")
    return root


def _defaults() -> dict[str, int]:
    return {
        **dict(zip(host.NEIGH_THRESH, host.NEIGH_DEFAULTS, strict=True)),
        host.NETNS_LIMIT: 96_365,
        host.PID_MAX: 32_768,
    }


def test_needed_values_keep_the_kernel_ratio_and_grow_with_the_lab() -> None:
    demo = host.needed_values(host.lab_namespaces(vhosts=5, vms=50))
    one, two, three = (demo[name] for name in host.NEIGH_THRESH)
    # 66 namespaces: 2 x 66² = 8,712 neighbour entries, rounded up to a power of two.
    assert (one, two, three) == (2048, 8192, 16384)
    assert demo[host.NETNS_LIMIT] == 256
    small = host.needed_values(0)
    assert [small[name] for name in host.NEIGH_THRESH] == [128, 512, 1024]  # never below the defaults
    huge = host.needed_values(host.lab_namespaces(vhosts=100, vms=10_000))
    assert huge[host.NEIGH_THRESH[2]] == host.NEIGH_CAP
    sizes = [host.needed_values(n)[host.NEIGH_THRESH[2]] for n in range(0, 2000, 7)]
    assert sizes == sorted(sizes)


def test_raise_sysctls_raises_only_what_is_lower(tmp_path: Path) -> None:
    values = {**_defaults(), host.NEIGH_THRESH[2]: 100_000}  # someone set thresh3 higher by hand
    root = _proc(tmp_path / "sys", values)
    sizing = host.raise_sysctls(host.needed_values(66), root=root, lock_file=tmp_path / "lock")
    assert {c.name: (c.before, c.after) for c in sizing.changes} == {
        host.NEIGH_THRESH[0]: (128, 2048),
        host.NEIGH_THRESH[1]: (512, 8192),
    }
    assert sizing.shortfalls == ()
    assert host.read_sysctl(host.NEIGH_THRESH[2], root) == 100_000  # never lowered
    assert host.read_sysctl(host.NEIGH_THRESH[0], root) == 2048
    again = host.raise_sysctls(host.needed_values(66), root=root, lock_file=tmp_path / "lock")
    assert again.changes == () and again.shortfalls == ()


def test_what_cannot_be_raised_is_reported_not_raised(tmp_path: Path) -> None:
    values = _defaults()
    del values[host.NEIGH_THRESH[0]]  # as in a container's network namespace: not visible
    root = _proc(tmp_path / "sys", values)
    unwritable = host.sysctl_path(host.NEIGH_THRESH[1], root)
    unwritable.unlink()
    unwritable.symlink_to("/proc/sys/kernel/cap_last_cap")  # a small integer that even root cannot write
    sizing = host.raise_sysctls(host.needed_values(66), root=root, lock_file=tmp_path / "lock")
    reasons = {s.name: s.reason for s in sizing.shortfalls}
    assert reasons[host.NEIGH_THRESH[0]] == "not visible in this network namespace"
    assert reasons[host.NEIGH_THRESH[1]] in ("Permission denied", "Operation not permitted")
    assert [c.name for c in sizing.changes] == [host.NEIGH_THRESH[2]]


def test_tuner_logs_each_change_once_and_counts_the_namespaces(tmp_path: Path) -> None:
    root = _proc(tmp_path / "sys", _defaults())
    netns_dir = tmp_path / "netns"
    netns_dir.mkdir()
    for k in range(60):
        (netns_dir / f"ns{k}").touch()
    tuner = host.HostTuner(root=root, lock_file=tmp_path / "lock", netns_dir=netns_dir)
    try:
        with capture_logs() as logs:
            sizing = tuner.ensure_for_new(6, reason="test")
            assert tuner.ensure_for_new(6, reason="test") == host.Sizing()  # already sized for 66
        raised = [e for e in logs if e["event"] == "host_setting_raised"]
        assert {e["setting"]: e["after"] for e in raised} == {
            host.NEIGH_THRESH[0]: 2048,
            host.NEIGH_THRESH[1]: 8192,
            host.NEIGH_THRESH[2]: 16384,
        }
        assert all(e["namespaces"] == 66 and e["reason"] == "test" for e in raised)
        assert len(sizing.changes) == 3
    finally:
        tuner.close()


def test_tuner_warns_once_about_what_it_cannot_raise(tmp_path: Path) -> None:
    values = _defaults()
    del values[host.NEIGH_THRESH[2]]
    root = _proc(tmp_path / "sys", values)
    tuner = host.HostTuner(root=root, lock_file=tmp_path / "lock", netns_dir=tmp_path)
    try:
        with capture_logs() as logs:
            tuner.ensure(100, reason="test")
            tuner.ensure(200, reason="test")
        warnings = [e for e in logs if e["event"] == "host_setting_too_low"]
        assert len(warnings) == 1 and warnings[0]["setting"] == host.NEIGH_THRESH[2]
        assert "sysctl -w net.ipv4.neigh.default.gc_thresh3=" in warnings[0]["fix"]
    finally:
        tuner.close()


@pytest.mark.parametrize(("value", "expected"), [(0, 1), (1, 1), (2, 2), (3, 4), (8712, 16384)])
def test_pow2ceil(value: int, expected: int) -> None:
    assert host.pow2ceil(value) == expected


def test_reserve_ports_adds_to_what_is_reserved_and_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "net" / "ipv4" / "ip_local_reserved_ports"
    path.parent.mkdir(parents=True)
    path.write_text("8080,40050-40051\n")
    new, why = host.reserve_ports([40050, 40052, 40053, 9000], root=tmp_path, lock_file=tmp_path / "lock")
    assert (new, why) == ([9000, 40052, 40053], "")
    assert path.read_text() == "8080,9000,40050-40053\n"
    assert host.reserve_ports([40051], root=tmp_path, lock_file=tmp_path / "lock") == ([], "")
    assert host.parse_port_list(" 1-3 ,5\n") == {1, 2, 3, 5}
    missing = host.reserve_ports([1], root=tmp_path / "nothing", lock_file=tmp_path / "lock")
    assert missing[0] == [] and missing[1]


def test_release_ports_takes_back_only_what_it_names(tmp_path: Path) -> None:
    path = tmp_path / "net" / "ipv4" / "ip_local_reserved_ports"
    path.parent.mkdir(parents=True)
    path.write_text("8080,40050-40053\n")
    released = host.release_ports([40051, 40052, 7], root=tmp_path, lock_file=tmp_path / "lock")
    assert released == ([40051, 40052], "")
    assert path.read_text() == "8080,40050,40053\n"
    gone, why = host.release_ports([1], root=tmp_path / "nothing", lock_file=tmp_path / "lock")
    assert gone == [] and why
