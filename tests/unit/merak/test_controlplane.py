"""The operator's list of control-plane endpoints (MERAK_CONTROL_PLANE_ALLOW): its entries, and what
it lets a request name."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from merak.config import ServiceSettings
from merak.controlplane import ControlPlaneAllow
from merak.errors import InvalidArgument
from merak_tools.alcor_standin import ALCOR_NODEPORTS
from merak_tools.localstack import StackSettings, components, ovn_central
from merak_tools.localstack.controlplane import stack_control_plane

ALLOW = ControlPlaneAllow.parse(
    "127.0.0.1:30001-30008, 10.0.0.0/24:6641, [::1]:6642, [fd00::/64]:80, Alcor.Example.Internal:30006,"
    "unix:/run/ovn/ovnnb_db.sock"
)


@pytest.mark.parametrize(
    ("host", "port", "allowed"),
    [
        ("127.0.0.1", 30001, True),
        ("127.0.0.1", 30008, True),
        ("127.0.0.1", 30009, False),
        ("127.0.0.1", 6379, False),
        ("127.0.0.2", 30001, False),
        ("10.0.0.200", 6641, True),
        ("10.0.1.1", 6641, False),
        ("::1", 6642, True),
        ("fd00::5", 80, True),
        ("alcor.example.internal", 30006, True),
        ("alcor.example.internal.", 30006, True),
        ("alcor.example.internal", 30001, False),
        ("localhost", 30001, False),  # a name is allowed only as listed: never resolved to an address
        ("2130706433", 30001, False),  # 127.0.0.1 in another spelling, which the resolver would take
    ],
)
def test_hosts_and_ports(host: str, port: int, allowed: bool) -> None:
    assert ALLOW.allows(host, port) is allowed


def test_urls_are_checked_by_host_and_port_and_refusals_name_the_field() -> None:
    ALLOW.check_url("config.alcor_url", "http://127.0.0.1:30006/pm")
    ALLOW.check_url("f", "http://[fd00::1]/")  # no port: the scheme's
    with pytest.raises(InvalidArgument) as caught:
        ALLOW.check_url("config.alcor_url", "http://127.0.0.1:6379/pm")
    assert str(caught.value) == (
        "config.alcor_url: 127.0.0.1:6379 is not an allowed control-plane endpoint "
        "(MERAK_CONTROL_PLANE_ALLOW)"
    )
    with pytest.raises(InvalidArgument, match=r"^f: \[::2\]:443 is not an allowed"):
        ALLOW.check_url("f", "https://[::2]/")
    with pytest.raises(InvalidArgument, match=r"^f: 'file:///etc/passwd' is not an http"):
        ALLOW.check_url("f", "file:///etc/passwd")


def test_ovsdb_remotes_unix_sockets_only_as_listed() -> None:
    ALLOW.check_ovsdb("config.ovn_nb", "unix:/run/ovn/ovnnb_db.sock")
    ALLOW.check_ovsdb("config.ovn_nb", "tcp:10.0.0.7:6641")
    ALLOW.check_ovsdb("config.ovn_sb", "ssl:[::1]:6642")
    for remote in ("unix:/run/docker.sock", "tcp:10.0.0.7:6642", "tcp:127.0.0.1:6379"):
        with pytest.raises(InvalidArgument, match="is not an allowed control-plane endpoint"):
            ALLOW.check_ovsdb("config.ovn_nb", remote)
    with pytest.raises(InvalidArgument, match="is not an OVSDB remote"):
        ALLOW.check_ovsdb("config.ovn_nb", "tcp:host.example:6641")


def test_nothing_listed_allows_nothing() -> None:
    assert not ControlPlaneAllow.parse("").allows("127.0.0.1", 30006)
    assert ControlPlaneAllow.parse("").including("127.0.0.1:30006").allows("127.0.0.1", 30006)


@pytest.mark.parametrize(
    "entry", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:9-1", "127.0.0.1:x", "::1:6641", "[nope]:1", "a b:1",
              "unix:relative.sock", "10.0.0.0/33:1"],
)  # fmt: skip
def test_a_bad_entry_fails_the_settings(entry: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="control_plane_allow"):
        ServiceSettings(control_plane_allow=f"127.0.0.1:30006,{entry}")


def test_the_local_stack_allows_the_standin_its_own_ovn_and_what_the_operator_adds(tmp_path: Path) -> None:
    settings = StackSettings(state_dir=tmp_path, port_offset=3000, control_plane_allow="10.0.0.5:30001-30008")
    for component in components(settings, ovn=True):
        if component.name in ("network", "compute", "topology"):
            assert component.env["MERAK_CONTROL_PLANE_ALLOW"] == stack_control_plane(settings)
    allow = ControlPlaneAllow.parse(stack_control_plane(settings))
    central = ovn_central(settings)
    for kind in ("nb", "sb"):
        allow.check_ovsdb("config.ovn_nb", central.remote(kind))
        allow.check_ovsdb("config.ovn_nb", f"tcp:127.0.0.1:{settings.ovn_port(kind)}")
    assert all(allow.allows("127.0.0.1", port) for port in ALCOR_NODEPORTS.values())
    assert allow.allows("10.0.0.5", 30008)
    for host, port in (("127.0.0.1", 30004), ("127.0.0.1", settings.redis_port), ("10.0.0.6", 30001)):
        assert not allow.allows(host, port)
    assert not ControlPlaneAllow.parse(stack_control_plane(StackSettings(state_dir=tmp_path))).allows(
        "10.0.0.5", 30001
    )
