"""Fake hosts of a single batch go to the activities in groups (a million fake VMs would otherwise be
10,000 activities); every other host keeps its batches."""

from __future__ import annotations

from services.compute.contracts import HostBatches
from services.compute.workflows import fake_groups


def test_fake_single_batch_hosts_are_grouped_up_to_the_limit() -> None:
    hosts = [HostBatches(f"vhost-{i}", 1, 250, 100, fake=True) for i in range(25)]
    groups, alone = fake_groups(hosts, 1_000)
    assert [len(g) for g in groups] == [10, 10, 5]
    assert [h for g in groups for h in g] == [h.host for h in hosts]  # each once, in order
    assert alone == []


def test_real_and_multi_batch_hosts_are_left_alone() -> None:
    real = HostBatches("real-0", 1, 250, 100)
    big = HostBatches("fake-big", 3, 250, 600, fake=True)
    small = [HostBatches(f"fake-{i}", 1, 250, 250, fake=True) for i in range(5)]
    groups, alone = fake_groups([real, small[0], big, *small[1:]], 1_000)
    assert alone == [real, big]
    assert groups == [["fake-0", "fake-1", "fake-2", "fake-3"], ["fake-4"]]


def test_a_host_larger_than_the_limit_is_a_group_of_its_own() -> None:
    hosts = [HostBatches(f"vhost-{i}", 1, 250, 200, fake=True) for i in range(3)]
    groups, _ = fake_groups(hosts, 150)
    assert groups == [["vhost-0"], ["vhost-1"], ["vhost-2"]]


def test_a_plan_without_counts_counts_full_batches() -> None:
    # A plan from before the counts were recorded: each host's batch counts as full (250).
    hosts = [HostBatches(f"vhost-{i}", 1, 250, fake=True) for i in range(5)]
    groups, _ = fake_groups(hosts, 1_000)
    assert [len(g) for g in groups] == [4, 1]
