"""The deploy types put the right number of VMs on the right hosts, reproducibly."""

from __future__ import annotations

import pytest

from merak.capacity import GIB, MachineRoom, chassis_bytes, real_vms_bytes
from merak.errors import InvalidArgument, ResourceExhausted
from merak.v1 import common_pb2, compute_pb2
from services.compute.admission import check_capacity
from services.compute.inventory import check_machine_room, count, counted, hosts_from_pods, place, plan


def config(
    deploy_type: compute_pb2.VMDeployType.ValueType, hosts: int = 5, per_host: int = 10, seed: int = 0
) -> compute_pb2.InternalComputeConfiguration:
    """Merak's teste2e compute config: 1 VPC, 1 subnet, `per_host` VMs per host."""
    cfg = compute_pb2.InternalComputeConfiguration(compute_config_id="c1", seed=seed)
    for i in range(hosts):
        cfg.pods.append(
            common_pb2.InternalComputeInfo(name=f"vhost-{i}", agent_endpoint=f"unix:///x/{i}.sock")
        )
    cfg.vm_deploy.deploy_type = deploy_type
    vpc = cfg.vm_deploy.vpcs.add(vpc_id="vpc-1", project_id="123456789", tenant_id="123456789")
    vpc.subnets.add(subnet_id="sn-1", subnet_cidr="10.1.0.0/16", subnet_gw="10.1.0.1", number_vms=per_host)
    return cfg


def counts(cfg: compute_pb2.InternalComputeConfiguration) -> dict[str, int]:
    planned = plan(cfg, hosts_from_pods(cfg.pods))
    return {host: len(vms) for host, vms in planned.items()}


def test_uniform_is_merak_teste2e() -> None:
    cfg = config(compute_pb2.UNIFORM)
    planned = plan(cfg, hosts_from_pods(cfg.pods))
    assert {h: len(v) for h, v in planned.items()} == {f"vhost-{i}": 10 for i in range(5)}
    assert [vm.name for vm in planned["vhost-0"]][:3] == ["v0-0-0", "v0-0-1", "v0-0-2"]
    ids = [vm.vm_id for vms in planned.values() for vm in vms]
    assert len(set(ids)) == 50  # unambiguous for any count, unlike Merak's v<vpc><subnet><index>


def test_skew_keeps_the_total_and_is_skewed_and_reproducible() -> None:
    first = counts(config(compute_pb2.SKEW, hosts=10, per_host=100, seed=7))
    assert sum(first.values()) == 1000
    assert max(first.values()) > 2 * 100  # the top host carries far more than a uniform share
    assert counts(config(compute_pb2.SKEW, hosts=10, per_host=100, seed=7)) == first
    assert counts(config(compute_pb2.SKEW, hosts=10, per_host=100, seed=8)) != first


def test_random_keeps_the_total_and_follows_its_seed() -> None:
    first = counts(config(compute_pb2.RANDOM, hosts=10, per_host=50, seed=1))
    assert sum(first.values()) == 500
    assert counts(config(compute_pb2.RANDOM, hosts=10, per_host=50, seed=1)) == first
    assert counts(config(compute_pb2.RANDOM, hosts=10, per_host=50, seed=2)) != first


def test_assign_takes_explicit_counts_per_host() -> None:
    cfg = config(compute_pb2.ASSIGN, hosts=3)
    for i, n in enumerate((4, 0, 7)):
        cfg.vm_deploy.deploy_method.add(pod_ip=f"vhost-{i}", num_of_vm=n)
    assert counts(cfg) == {"vhost-0": 4, "vhost-1": 0, "vhost-2": 7}


def test_assign_counts_must_match_hosts() -> None:
    cfg = config(compute_pb2.ASSIGN, hosts=3)
    cfg.vm_deploy.deploy_method.add(pod_ip="vhost-0", num_of_vm=4)
    with pytest.raises(InvalidArgument) as caught:
        counts(cfg)
    assert caught.value.field == "config.vm_deploy.deploy_method"


def test_assign_names_unknown_hosts_and_subnets() -> None:
    cfg = config(compute_pb2.ASSIGN, hosts=1)
    cfg.vm_deploy.deploy_method.add(pod_ip="vhost-9", num_of_vm=1)
    with pytest.raises(InvalidArgument) as caught:
        counts(cfg)
    assert caught.value.field == "config.vm_deploy.deploy_method[0].pod_ip"
    cfg.vm_deploy.deploy_method[0].pod_ip = "vhost-0"
    cfg.vm_deploy.deploy_method[0].subnets.append("sn-404")
    with pytest.raises(InvalidArgument) as caught:
        counts(cfg)
    assert caught.value.field == "config.vm_deploy.deploy_method[0].subnets[0]"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda c: c.vm_deploy.vpcs[0].subnets[0].__setattr__("number_vms", 0), "config.vm_deploy.vpcs"),
        (lambda c: c.vm_deploy.ClearField("vpcs"), "config.vm_deploy.vpcs"),
        (lambda c: c.vm_deploy.vpcs[0].__setattr__("vpc_id", ""), "config.vm_deploy.vpcs[0].vpc_id"),
        (lambda c: c.ClearField("pods"), "config.pods"),
        (lambda c: c.pods[1].__setattr__("name", "vhost-0"), "config.pods[1].name"),
    ],
)
def test_bad_input_names_the_field(change: object, field: str) -> None:
    cfg = config(compute_pb2.UNIFORM)
    change(cfg)  # type: ignore[operator]
    with pytest.raises(InvalidArgument) as caught:
        plan(cfg, hosts_from_pods(cfg.pods))
    assert caught.value.field == field


def test_a_real_vhost_takes_no_more_vms_per_vpc_than_its_bridge_has_ports() -> None:
    cfg = config(compute_pb2.UNIFORM, hosts=2, per_host=1022)
    assert counts(cfg) == {"vhost-0": 1022, "vhost-1": 1022}
    cfg = config(compute_pb2.UNIFORM, hosts=2, per_host=200_000)  # accepted, then failed at VM 1,023
    with pytest.raises(ResourceExhausted, match="1022 fit"):
        plan(cfg, hosts_from_pods(cfg.pods))
    # The fake dataplane has no bridge: any count.
    for pod in cfg.pods:
        pod.dataplane = "fake"
    assert counts(cfg) == {"vhost-0": 200_000, "vhost-1": 200_000}


def test_the_size_is_refused_before_any_vm_is_placed() -> None:
    # 2 x 10^7 VMs placed one by one (RANDOM) blocked the service for seconds before the refusal.
    cfg = config(compute_pb2.RANDOM, hosts=1000, per_host=20_000)
    with pytest.raises(ResourceExhausted, match="at most 10,000,000 per deployment"):
        plan(cfg, hosts_from_pods(cfg.pods))


def test_real_vms_this_machine_cannot_hold_are_refused_with_how_many_fit() -> None:
    cfg = config(compute_pb2.UNIFORM, hosts=200, per_host=100)  # 20,000 real VMs, unix-socket agents
    hosts = hosts_from_pods(cfg.pods)
    planned = count(cfg, hosts)
    need = real_vms_bytes(20_000, 200)
    check_machine_room(hosts, planned, MachineRoom(memory_bytes=need, namespaces=20_200))
    with pytest.raises(ResourceExhausted, match=r"20,000 real VMs .* about 10,000 fit"):
        check_machine_room(hosts, planned, MachineRoom(memory_bytes=need // 2, namespaces=10**6))
    with pytest.raises(ResourceExhausted, match="20,200 network namespaces"):
        check_machine_room(hosts, planned, MachineRoom(memory_bytes=100 * GIB, namespaces=20_199))
    check_machine_room(hosts, planned, None)  # /proc could not tell: nothing to go by


def test_only_real_vhosts_of_this_machine_count() -> None:
    cfg = config(compute_pb2.UNIFORM, hosts=4, per_host=100)
    cfg.pods[0].dataplane = "fake"
    cfg.pods[1].agent_endpoint = "10.0.0.7:40054"  # a pod of a cluster: its node's memory, not ours
    hosts = hosts_from_pods(cfg.pods)
    planned = count(cfg, hosts)
    room = MachineRoom(memory_bytes=real_vms_bytes(200, 2), namespaces=202)
    check_machine_room(hosts, planned, room)
    with pytest.raises(ResourceExhausted, match="200 real VMs"):
        check_machine_room(hosts, planned, MachineRoom(room.memory_bytes - 1, 202))


def test_ovn_chassis_count_fake_hosts_too_and_are_refused_naming_the_limit() -> None:
    cfg = config(compute_pb2.UNIFORM, hosts=20, per_host=50)
    for pod in cfg.pods:
        pod.dataplane = "fake"  # no kernel VMs: only the chassis cost memory
    hosts = hosts_from_pods(cfg.pods)
    planned = count(cfg, hosts)
    need = chassis_bytes(20, 1000)
    check_machine_room(hosts, planned, MachineRoom(memory_bytes=need, namespaces=0), chassis=True)
    check_machine_room(hosts, planned, MachineRoom(memory_bytes=0, namespaces=0))  # not ovn: no chassis
    with pytest.raises(ResourceExhausted, match=r"20 hosts become OVN chassis .* about 10 chassis fit"):
        check_machine_room(hosts, planned, MachineRoom(memory_bytes=need // 2, namespaces=0), chassis=True)


def test_sizes_are_refused_before_any_loop_over_the_vms() -> None:
    # #28: ASSIGN with num_of_vm = 10^8 looped over every VM (35.6 s on the event loop) before the refusal.
    cfg = config(compute_pb2.ASSIGN, hosts=3)
    for i, n in enumerate((4, 4_294_967_295, 7)):
        cfg.vm_deploy.deploy_method.add(pod_ip=f"vhost-{i}", num_of_vm=n)
    with pytest.raises(ResourceExhausted) as caught:
        counts(cfg)
    assert caught.value.message.startswith("config.vm_deploy.deploy_method[1].num_of_vm: 4,294,967,299 VMs")
    with pytest.raises(ResourceExhausted):
        counts(config(compute_pb2.RANDOM, hosts=1000, per_host=20_000))
    # Round-robin over the chosen subnets, counted rather than looped: 1,001 VMs over two subnets.
    cfg = config(compute_pb2.ASSIGN, hosts=1)
    cfg.vm_deploy.vpcs[0].subnets.add(subnet_id="sn-2", subnet_cidr="10.2.0.0/16", subnet_gw="10.2.0.1")
    cfg.vm_deploy.deploy_method.add(pod_ip="vhost-0", num_of_vm=1_001, subnets=["sn-1", "sn-2"])
    planned = plan(cfg, hosts_from_pods(cfg.pods))["vhost-0"]
    assert sum(1 for vm in planned if vm.subnet.subnet_id == "sn-1") == 501
    assert len(planned) == 1_001


def test_a_subnets_room_is_checked_on_the_counts_before_any_vm_is_built() -> None:
    # #28: 10^7 VMs were built (on the event loop) before a subnet too small for them was refused.
    cfg = config(compute_pb2.UNIFORM, hosts=1000, per_host=10_000)
    for pod in cfg.pods:
        pod.dataplane = "fake"
    subnet = cfg.vm_deploy.vpcs[0].subnets[0]
    subnet.capacity, subnet.allocated = 65_534, 4
    counts = count(cfg, hosts_from_pods(cfg.pods))
    with pytest.raises(InvalidArgument) as caught:
        check_capacity(cfg, counts)
    assert caught.value.field == "config.vm_deploy.vpcs[0].subnets[0]"
    assert caught.value.problem == ("10000000 VMs asked for, but subnet 10.1.0.0/16 has 65530 free addresses")
    # Addresses freed by VMs that go count as free.
    check_capacity(cfg, counts, {"sn-1": 10_000_000 - 65_530})


def test_the_vms_placed_are_the_counts() -> None:
    for kind in (compute_pb2.UNIFORM, compute_pb2.SKEW, compute_pb2.RANDOM):
        cfg = config(kind, hosts=7, per_host=30, seed=3)
        cfg.vm_deploy.vpcs[0].subnets.add(
            subnet_id="sn-2", subnet_cidr="10.2.0.0/16", subnet_gw="10.2.0.1", number_vms=5
        )
        hosts = hosts_from_pods(cfg.pods)
        counts = count(cfg, hosts)
        placed = place(hosts, counts)
        assert placed == plan(cfg, hosts)
        assert counted(placed) == {host: {r: n for r, n in per.items() if n} for host, per in counts.items()}


def test_a_routed_overlay_costs_per_pair_of_vhosts_not_per_remote_vm() -> None:
    # 40,000 VMs over 400 vhosts of one VPC: with a neighbour per remote VM on every vhost the overlay
    # alone is ~390 KiB a VM; routed by block (per-host address blocks) it is a few KiB.
    cfg = config(compute_pb2.UNIFORM, hosts=400, per_host=100)
    hosts = hosts_from_pods(cfg.pods)
    planned = count(cfg, hosts)
    bridged, routed = real_vms_bytes(40_000, 400), real_vms_bytes(40_000, 400, routed=True)
    assert bridged // 40_000 > 700 << 10 and routed // 40_000 < 370 << 10
    check_machine_room(hosts, planned, MachineRoom(memory_bytes=routed, namespaces=10**6), routed=True)
    with pytest.raises(ResourceExhausted, match="40,000 real VMs"):
        check_machine_room(hosts, planned, MachineRoom(memory_bytes=routed, namespaces=10**6))
