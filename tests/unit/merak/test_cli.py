"""The `merak` command line: options after `demo` reach teste2e unchanged, others are refused."""

from __future__ import annotations

import argparse

import pytest

from merak.faultspec import parse_link_fault, parse_partition, parse_scheduled_fault
from merak_tools import cli, teste2e
from merak_tools.localstack import StackSettings


def test_demo_passes_teste2e_options_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def fake_demo(_settings: StackSettings, extra: list[str]) -> int:
        seen.append(extra)
        return 0

    monkeypatch.setattr(cli, "cmd_demo", fake_demo)
    assert cli.main(["demo"]) == 0
    assert cli.main(["demo", "--keep"]) == 0
    assert cli.main(["demo", "--hosts", "3", "--keep", "--", "--vpcs", "1"]) == 0
    assert seen == [[], ["--keep"], ["--hosts", "3", "--keep", "--vpcs", "1"]]


def test_unknown_options_of_other_commands_are_refused() -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["status", "--bogus"])
    assert caught.value.code == 2


def test_teste2e_refuses_uneven_vm_counts() -> None:
    from merak_tools import teste2e  # noqa: PLC0415

    with pytest.raises(SystemExit):
        teste2e.parse(["--vms-per-host", "6", "--vpcs", "2", "--subnets", "2"])
    opts = teste2e.parse(["--vms-per-host", "8", "--vpcs", "2", "--subnets", "2"])
    assert (opts.vms_per_host, opts.vpcs, opts.subnets) == (8, 2, 2)


def test_teste2e_subnets_fit_their_vms() -> None:
    from merak_tools import teste2e  # noqa: PLC0415

    assert teste2e.subnet_plan(0, 1, 50) == [("10.1.0.0/16", "10.1.0.1")]
    assert teste2e.subnet_plan(1, 2, 10) == [("10.2.0.0/17", "10.2.0.1"), ("10.2.128.0/17", "10.2.128.1")]
    # A million VMs do not fit a /16: the VPC gets a /8 of its own.
    assert teste2e.subnet_plan(0, 1, 1_000_000) == [("20.0.0.0/8", "20.0.0.1")]
    with pytest.raises(teste2e.E2EError):
        teste2e.subnet_plan(0, 256, 70_000)


def test_teste2e_vpc_cidr_holds_its_subnets() -> None:
    import ipaddress  # noqa: PLC0415

    from merak_tools import teste2e  # noqa: PLC0415

    for hosts, per_host in ((5, 10), (10_000, 100)):
        opts = teste2e.parse(["--hosts", str(hosts), "--vms-per-host", str(per_host)])
        network = teste2e.build_configs(opts, "t")["network"]
        vpc = ipaddress.ip_network(network.vpcs[0].vpc_cidr)
        for subnet in network.vpcs[0].subnet_info:
            assert ipaddress.ip_network(subnet.subnet_cidr).subnet_of(vpc)  # type: ignore[arg-type]


def test_fault_specs_parse_into_the_api_messages() -> None:
    link = parse_link_fault("vhost-2:loss=5%,rate=10mbit,delay=20ms,jitter=5,down")
    assert (link.node, link.nic, link.down, link.loss_percent, link.rate_bps) == (
        "vhost-2",
        "",
        True,
        5,
        10**7,
    )
    assert (link.delay_ms, link.jitter_ms) == (20, 5)
    assert parse_link_fault("rack-1/r1-eth2:down").nic == "r1-eth2"
    assert parse_link_fault("vhost-0:rate=1.5Gbit/s").rate_bps == 1_500_000_000
    partition = parse_partition("vhost-0,vhost-1/vhost-2")
    assert (list(partition.side_a), list(partition.side_b)) == (["vhost-0", "vhost-1"], ["vhost-2"])
    for bad in ("vhost-0:loss=lots", "vhost-0:rate=fast", "vhost-0:explode"):
        with pytest.raises(argparse.ArgumentTypeError, match="use down"):
            parse_link_fault(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="split by /"):
        parse_partition("vhost-0,vhost-1")


def test_a_scheduled_fault_parses_from_teste2es_option_into_the_test_config() -> None:
    flap = parse_scheduled_fault("name=flap at=5 for=2s repeat=3 every=10 link=vhost-2:down")
    assert (flap.name, flap.at_seconds, flap.duration_seconds, flap.repeat, flap.every_seconds) == (
        "flap",
        5,
        2,
        3,
        10,
    )
    assert flap.link.node == "vhost-2" and flap.link.down
    crash = parse_scheduled_fault("at=45 crash=vhost-7")
    assert (crash.host.vhost, crash.host.state, crash.duration_seconds) == ("vhost-7", 1, 0)
    assert parse_scheduled_fault("at=1 partition=vhost-0/vhost-1").partition.side_b == ["vhost-1"]
    for bad, said in (
        ("at=5", "say what fails"),
        ("at=soon link=v:down", "not a number"),
        ("boom", "KEY=VALUE"),
    ):
        with pytest.raises(argparse.ArgumentTypeError, match=said):
            parse_scheduled_fault(bad)
    opts = teste2e.parse(["--fault", "at=1 for=2 link=vhost-1:loss=10", "--fault", "at=3 freeze=vhost-0"])
    test = teste2e.build_configs(opts, "t")["test"]
    assert [f.WhichOneof("fault") for f in test.fault_schedule] == ["link", "host"]
