"""`merak doctor` on Open vSwitch and OVN: present or which pieces are missing, what that disables, and
never a failure of the whole doctor."""

from __future__ import annotations

import pytest

from merak import ovs
from merak_tools import doctor
from tests.support.ovn import skip_without_ovn


def _rows() -> dict[str, doctor.Check]:
    return {c.name: c for c in doctor.ovn_checks()}


def test_present_here_with_their_versions() -> None:
    skip_without_ovn()
    rows = _rows()
    assert set(rows) == {"openvswitch", "ovn"}
    for row in rows.values():
        assert (row.area, row.status, row.needed) == ("ovn", "ok", "optional")
        assert row.current.startswith("present, ") and row.current[-1].isdigit(), row
        assert "`ovn` network plugin" in row.meaning


def test_missing_ovn_says_what_and_what_it_disables_without_failing(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = ["ovn-northd (ovn-central)", "ovn-controller (ovn-host)", "/usr/share/ovn/ovn-nb.ovsschema"]
    monkeypatch.setattr(ovs, "missing", lambda: gone)
    rows = _rows()
    ovn = rows["ovn"]
    assert ovn.status == "warn"
    assert ovn.current == "missing: " + ", ".join(gone)
    for lost in ("`ovn` network plugin", "OVN central in `merak up`", "OVN chassis in every emulated host"):
        assert lost in ovn.meaning
    assert "make install" in ovn.meaning
    # Open vSwitch is there but nothing uses it without OVN.
    assert rows["openvswitch"].status == "ok" and "unused" in rows["openvswitch"].meaning
    assert doctor.failures(list(rows.values())) == []


def test_missing_open_vswitch_is_named_on_its_own_row(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = ["ovs-vswitchd (openvswitch-switch)", "/usr/share/openvswitch/vswitch.ovsschema"]
    monkeypatch.setattr(ovs, "missing", lambda: gone)
    ovs_row = _rows()["openvswitch"]
    assert (ovs_row.status, ovs_row.current) == ("warn", "missing: " + ", ".join(gone))
    rows = _rows()
    assert rows["ovn"].status == "ok"
    everything = doctor.run_checks(probe_kernel=False)
    assert [c.name for c in everything if c.area == "ovn"] == ["openvswitch", "ovn"]
    assert not [c for c in doctor.failures(everything) if c.area == "ovn"]
