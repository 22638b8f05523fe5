"""Pair sampling of the connectivity test: all pairs, seeded samples, cross-host first, isolation pairs."""

from __future__ import annotations

import ipaddress

import pytest

from merak.errors import InvalidArgument
from merak.stats import percentile
from merak.v1 import agent_pb2, scenario_pb2
from services.scenario.pingall import Vm, VmTable, sample_pairs


def lab(hosts: int, per_host: int, vpcs: int = 1, *, same_ips: bool = False) -> list[Vm]:
    """VMs spread over hosts; VM k of a host is in VPC k % vpcs."""
    vms = []
    for h in range(hosts):
        for k in range(per_host):
            vpc = k % vpcs
            ip = f"10.1.{h}.{k // vpcs + 2}" if same_ips else f"10.{vpc + 1}.{h}.{k + 2}"
            vms.append(Vm(f"vhost-{h}", f"v{k}", ip, f"vpc-{vpc}", f"unix:///x/{h}"))
    return vms


def test_every_pair_of_the_teste2e_lab() -> None:
    vms = lab(5, 10)
    sample = sample_pairs(vms, 0, 0, 10_000)
    assert sample.connectivity_total == 50 * 49 and len(sample.connectivity) == 2450
    assert len(set(sample.connectivity)) == 2450 and all(s != d for s, d in sample.connectivity)
    assert sample.isolation == [] and sample.isolation_total == 0


def test_a_sample_is_seeded_prefers_cross_host_pairs_and_keeps_some_isolation_pairs() -> None:
    vms = lab(4, 10, vpcs=2)
    first = sample_pairs(vms, 100, 42, 10_000)
    assert first == sample_pairs(vms, 100, 42, 10_000)
    assert first != sample_pairs(vms, 100, 43, 10_000)
    assert len(first.connectivity) + len(first.isolation) == 100
    assert len(set(first.connectivity)) == len(first.connectivity)
    assert all(vms[s].vpc_id == vms[d].vpc_id for s, d in first.connectivity)
    assert all(vms[s].vpc_id != vms[d].vpc_id for s, d in first.isolation)
    assert all(vms[s].vhost != vms[d].vhost for s, d in first.connectivity)  # enough cross-host pairs exist
    # Half of all pairs cross VPCs here, so about half of the sample does.
    assert 40 <= len(first.isolation) <= 60


def test_same_host_pairs_fill_in_when_cross_host_ones_run_out() -> None:
    vms = lab(2, 3)
    sample = sample_pairs(vms, 25, 1, 10_000)  # 30 pairs, 18 across hosts
    assert len(sample.connectivity) == 25
    assert sum(1 for s, d in sample.connectivity if vms[s].vhost != vms[d].vhost) == 18


def test_isolation_pairs_skip_addresses_that_also_exist_in_the_source_vpc() -> None:
    vms = lab(2, 4, vpcs=2, same_ips=True)  # both VPCs use the same addresses
    sample = sample_pairs(vms, 0, 0, 10_000)
    assert sample.isolation == []
    assert sample.isolation_total > 0


def test_too_many_pairs_without_a_sample_size_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        sample_pairs(lab(10, 10), 0, 0, 1000)
    assert caught.value.field == "max_pairs"


def test_percentiles_by_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 90), percentile(values, 99)) == (50.0, 90.0, 99.0)
    assert percentile([], 50) == 0.0 and percentile([3.0], 99) == 3.0


def test_a_hundred_thousand_vms_count_their_pairs_in_64_bits() -> None:
    # 10^10 pairs: beyond 32 bits; the sample is drawn without listing them.
    vms = [
        Vm(
            f"vhost-{i // 100}",
            f"v{i % 100}",
            str(ipaddress.IPv4Address(0x0A000002 + i)),
            "vpc-0",
            "unix:///x",
        )
        for i in range(100_000)
    ]
    sample = sample_pairs(vms, 1000, 7, 10_000)
    assert sample.connectivity_total == 100_000 * 99_999 and len(sample.connectivity) == 1000
    report = scenario_pb2.TestReport(pairs_total=sample.connectivity_total, pairs_tried=1000)
    assert scenario_pb2.TestReport.FromString(report.SerializeToString()).pairs_total == 9_999_900_000


def table_of(vms: list[Vm], without_address: int = 0) -> VmTable:
    """The VMs as the connectivity test keeps them: one table per vhost, joined in order."""
    table = VmTable()
    for vhost in dict.fromkeys(vm.vhost for vm in vms):
        mine = [vm for vm in vms if vm.vhost == vhost]
        listed = [agent_pb2.VmInfo(name=vm.name, ip=vm.ip, vpc_id=vm.vpc_id) for vm in mine]
        listed += [agent_pb2.VmInfo(name=f"bare-{i}") for i in range(without_address)]
        part = VmTable()
        part.add(vhost, mine[0].endpoint, listed)
        table.extend(part)
    return table


def test_the_vm_table_gives_back_the_vms_it_was_given_and_samples_alike() -> None:
    vms = lab(4, 10, vpcs=3)
    vms[5] = Vm(
        vms[5].vhost, vms[5].name, "10.01.0.7", vms[5].vpc_id, vms[5].endpoint
    )  # not as inet_ntoa writes it
    table = table_of(vms, without_address=2)
    assert list(table) == vms and len(table) == 40 and table.unaddressed == 8
    assert table[-1] == vms[-1] and table[2:4] == vms[2:4]
    assert list(table.columns()) == [(vm.vhost, vm.vpc_id) for vm in vms]
    # The same pairs as from the list, for the same seed.
    assert sample_pairs(table, 100, 7, 10_000) == sample_pairs(vms, 100, 7, 10_000)
    assert sample_pairs(table, 0, 0, 10_000) == sample_pairs(vms, 0, 0, 10_000)
