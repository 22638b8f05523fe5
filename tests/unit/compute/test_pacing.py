"""The RPS schedule: batches start when the VMs before them have had their share of the rate."""

from __future__ import annotations

import pytest

from services.compute.contracts import HostBatches
from services.compute.workflows import start_offsets


def test_offsets_follow_the_vms_each_batch_really_holds() -> None:
    # 10 VMs per host in batches of 250: each batch holds 10 VMs, so at 200 VMs/s one starts every
    # 50 ms (counting the configured batch size would wait 1.25 s between them).
    hosts = [HostBatches(f"vhost-{i}", 1, 250, 10) for i in range(4)]
    assert start_offsets([(h, 0) for h in hosts], 200.0) == pytest.approx([0.0, 0.05, 0.1, 0.15])


def test_a_short_last_batch_counts_what_it_holds() -> None:
    host = HostBatches("vhost-0", 3, 250, 600)  # 250 + 250 + 100
    assert [host.size_of(b) for b in range(3)] == [250, 250, 100]
    other = HostBatches("vhost-1", 1, 250, 250)
    jobs = [(host, 0), (host, 1), (host, 2), (other, 0)]
    assert start_offsets(jobs, 100.0) == pytest.approx([0.0, 2.5, 5.0, 6.0])


def test_a_plan_without_vm_counts_counts_full_batches() -> None:
    # A plan written before the count was recorded (a workflow in flight across an upgrade).
    host = HostBatches("vhost-0", 2, 50)
    assert start_offsets([(host, 0), (host, 1)], 50.0) == pytest.approx([0.0, 1.0])
