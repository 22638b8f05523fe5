"""Scenario configs → topology, network and compute requests (merak-reference §2.4, without its quirks)."""

from __future__ import annotations

import pytest

from merak.errors import InvalidArgument
from merak.skips import Skips
from merak.v1 import common_pb2, compute_pb2, network_pb2, scenario_pb2, topology_pb2
from services.scenario import translate, validate
from services.scenario.models import COMPUTE_CONFIG

SERVICES = scenario_pb2.ServiceConfig(
    id="svc",
    services=[
        scenario_pb2.Service(name="alcorIp", cmd="alcorIp", url="10.0.0.5", where_to_run="NETWORK"),
        scenario_pb2.Service(name="init", cmd="curl", where_to_run="INIT"),
        scenario_pb2.Service(name="aca-cmd", cmd="aca", parameters=["-d"], where_to_run="agent"),
        scenario_pb2.Service(name="compute-thing", cmd="x", where_to_run="COMPUTE"),
    ],
)


def test_topology_carries_vlinks_services_and_merak_names() -> None:
    config = scenario_pb2.TopologyConfig(
        id="topo-1",
        name="Top1",
        type=topology_pb2.TREE,
        number_of_vhosts=5,
        number_of_racks=2,
        vhosts_per_rack=5,
        ports_per_vswitch=5,
        data_plane_cidr="10.200.0.0/16",
        number_of_control_plane_gateways=1,
        control_plane_gateway_ips=["10.0.0.1"],
        images=[scenario_pb2.Image(id="image-1", name="ACA", registry="meraksim/merak-agent:dev")],
        vlinks=[scenario_pb2.VLink(name="l1", src="a", dst="b")],
        dataplane="fake",
    )
    request = translate.topology(config, SERVICES, common_pb2.CREATE)
    message = request.config
    assert request.operation_type == common_pb2.CREATE
    assert (message.topology_id, message.vhost_per_rack, message.number_of_gateways) == ("topo-1", 5, 1)
    assert list(message.gateway_ips) == ["10.0.0.1"] and message.dataplane == "fake"
    assert [(v.src, v.dst) for v in message.vlinks] == [("a", "b")]
    assert [s.name for s in message.services] == ["aca-cmd"]
    assert message.images[0].registry == "meraksim/merak-agent:dev"
    assert len(message.request_id) == 32 and message.format_version == 1


def test_network_keeps_security_group_owner_and_rule_direction() -> None:
    config = scenario_pb2.NetworkConfig(
        id="net-1",
        plugin="native",
        vpcs=[
            scenario_pb2.VpcInfo(
                vpc_cidr="10.1.0.0/16",
                tenant_id="t",
                project_id="p",
                subnet_info=[scenario_pb2.SubnetInfo(subnet_cidr="10.1.0.0/16", subnet_gateway="10.1.0.1")],
            )
        ],
        security_groups=[
            scenario_pb2.SecurityGroup(
                name="sg-1",
                tenant_id="t",
                project_id="p",
                rules=[scenario_pb2.SecurityGroupRule(direction="egress", protocol="tcp")],
            )
        ],
    )
    nodes = [common_pb2.InternalComputeInfo(name="vhost-0", datapath_ip="10.200.0.1")]
    request = translate.network(config, SERVICES, nodes, common_pb2.CREATE)
    message = request.config
    assert message.netconfig_id == "net-1" and message.plugin == "native"
    assert [s.cmd for s in message.services] == ["alcorIp"]
    assert [c.name for c in message.computes] == ["vhost-0"]
    group = message.network.security_groups[0]
    assert (group.tenant_id, group.project_id, group.rules[0].direction) == ("t", "p", "egress")
    assert message.network.vpcs[0].subnets[0].subnet_gw == "10.1.0.1"
    assert message.block_prefix == 0
    config.block_prefix = 25  # per-host address blocks: the overlay routed by block
    assert translate.network(config, SERVICES, nodes, common_pb2.CREATE).config.block_prefix == 25


def _deployed_network(subnets_per_vpc: tuple[int, ...]) -> network_pb2.ReturnNetworkMessage:
    reply = network_pb2.ReturnNetworkMessage(security_group_ids=["sg-a"], plugin="native")
    for v, count in enumerate(subnets_per_vpc):
        vpc = reply.vpcs.add(vpc_id=f"vpc-{v}", vpc_cidr=f"10.{v + 1}.0.0/16", tenant_id="t", project_id="p")
        for s in range(count):
            vpc.subnets.add(
                subnet_id=f"sub-{v}-{s}", subnet_cidr=f"10.{v + 1}.{s}.0/24", subnet_gw=f"10.{v + 1}.{s}.1"
            )
    return reply


NODES = [common_pb2.InternalComputeInfo(name=f"vhost-{i}", agent_endpoint=f"unix:///x/{i}") for i in range(5)]


def _compute(
    config: scenario_pb2.ComputeConfig, subnets: tuple[int, ...] = (1,), skips: Skips | None = None
) -> compute_pb2.InternalComputeConfigInfo:
    return translate.compute(
        config,
        service_config=SERVICES,
        scenario_id="scn",
        network_config=scenario_pb2.NetworkConfig(id="net-1"),
        nodes=NODES,
        deployed_network=_deployed_network(subnets),
        skips=skips,
    )


def test_compute_uniform_spreads_vms_per_vpc_over_nodes_and_subnets() -> None:
    config = scenario_pb2.ComputeConfig(
        id="cmp-1",
        number_of_compute_nodes=5,
        number_of_vm_per_vpc=50,
        vm_deploy_type=compute_pb2.UNIFORM,
        scheduler=compute_pb2.SEQUENTIAL,
        seed=7,
    )
    message = _compute(config).config
    assert (message.compute_config_id, message.netconfig_id, message.scenario_id) == ("cmp-1", "net-1", "scn")
    assert message.plugin == "native" and message.seed == 7
    assert [p.name for p in message.pods] == [f"vhost-{i}" for i in range(5)]
    assert list(message.vm_deploy.secgroups) == ["sg-a"]
    assert message.vm_deploy.vpcs[0].subnets[0].number_vms == 10  # 50 / 5 / 1, as teste2e
    assert message.vm_deploy.vpcs[0].subnets[0].subnet_id == "sub-0-0"
    assert [s.name for s in message.services] == ["aca-cmd", "compute-thing"]

    two = _compute(scenario_pb2.ComputeConfig(id="c", number_of_vm_per_vpc=40), subnets=(2, 2)).config
    assert [s.number_vms for v in two.vm_deploy.vpcs for s in v.subnets] == [4, 4, 4, 4]  # 40 / 5 / 2


def test_compute_zero_vms_per_subnet_is_invalid_and_names_the_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        _compute(
            scenario_pb2.ComputeConfig(id="c", number_of_vm_per_vpc=9, vm_deploy_type=compute_pb2.UNIFORM),
            (2,),
        )
    assert caught.value.field == "number_of_vm_per_vpc"


def test_compute_nodes_zero_means_all_and_a_number_within_the_topology_takes_the_first() -> None:
    skips = Skips()
    message = _compute(scenario_pb2.ComputeConfig(id="c", number_of_vm_per_vpc=10), skips=skips).config
    assert len(message.pods) == 5 and message.vm_deploy.vpcs[0].subnets[0].number_vms == 2
    three = _compute(
        scenario_pb2.ComputeConfig(id="c", number_of_compute_nodes=3, number_of_vm_per_vpc=9), skips=skips
    ).config
    assert [p.name for p in three.pods] == ["vhost-0", "vhost-1", "vhost-2"]
    assert skips.warnings == []


def test_more_compute_nodes_than_vhosts_puts_vms_on_all_with_merak_s_division_and_says_so() -> None:
    # Merak's Postman collections ask for 50 compute nodes on a topology of 20.
    skips = Skips()
    message = _compute(
        scenario_pb2.ComputeConfig(id="c", number_of_compute_nodes=6, number_of_vm_per_vpc=60),
        subnets=(2,),
        skips=skips,
    ).config
    assert [p.name for p in message.pods] == [f"vhost-{i}" for i in range(5)]
    # 60 VMs per VPC / 6 compute nodes / 2 subnets: 5 per subnet on each of the 5 vhosts (Merak's division).
    assert [s.number_vms for s in message.vm_deploy.vpcs[0].subnets] == [5, 5]
    assert skips.warnings == [
        "number_of_compute_nodes: 6 compute nodes asked for, but the topology has 5 vhosts; "
        "VMs go on all 5, number_of_vm_per_vpc / 6 on each (as Merak)"
    ]
    # The division by what was asked can leave none per node: still refused, naming the field.
    with pytest.raises(InvalidArgument) as caught:
        _compute(scenario_pb2.ComputeConfig(id="c", number_of_compute_nodes=50, number_of_vm_per_vpc=40))
    assert caught.value.field == "number_of_vm_per_vpc"
    # Strict, it is refused; with ASSIGN (one entry per compute node) it is refused however checked.
    with pytest.raises(InvalidArgument) as caught:
        _compute(
            scenario_pb2.ComputeConfig(id="c", number_of_compute_nodes=6, number_of_vm_per_vpc=60),
            skips=Skips(strict=True),
        )
    assert caught.value.field == "number_of_compute_nodes"
    with pytest.raises(InvalidArgument) as caught:
        _compute(
            scenario_pb2.ComputeConfig(
                id="c", number_of_compute_nodes=6, vm_deploy_type=compute_pb2.ASSIGN, vms_per_host=[1] * 6
            ),
            skips=Skips(),
        )
    assert caught.value.field == "number_of_compute_nodes"


def test_compute_assign_gives_one_deploy_method_per_vhost() -> None:
    config = scenario_pb2.ComputeConfig(
        id="c", vm_deploy_type=compute_pb2.ASSIGN, vms_per_host=[1, 2, 3, 4, 5]
    )
    deploy = _compute(config).config.vm_deploy
    assert deploy.deploy_type == compute_pb2.ASSIGN
    assert [(m.pod_ip, m.num_of_vm) for m in deploy.deploy_method] == [
        (f"vhost-{i}", i + 1) for i in range(5)
    ]
    assert deploy.vpcs[0].subnets[0].subnet_id == "sub-0-0"
    with pytest.raises(InvalidArgument) as caught:
        _compute(scenario_pb2.ComputeConfig(id="c", vm_deploy_type=compute_pb2.ASSIGN, vms_per_host=[1, 2]))
    assert caught.value.field == "vms_per_host"


def test_summary_strings_are_merak_s() -> None:
    counts = translate.counts([common_pb2.READY] * 3 + [common_pb2.DEPLOYING, common_pb2.NONE])
    assert translate.summary("DEPLOY", "Topology", counts) == (
        "DEPLOY on Topology got - DONE: 0, READY: 3, DEPLOYING: 1, DELETING: 0, ERROR: 0, Others: 1"
    )
    # teste2e reads the READY count this way.
    assert int(translate.summary("CHECK", "Topology", counts).split(",")[1].split(":")[1]) == 3
    assert translate.network_summary("DEPLOY") == "DEPLOY on Network done"


def test_alcor_port_manager_comes_from_the_service_config_as_merak_found_it() -> None:
    def config(*services: scenario_pb2.Service) -> scenario_pb2.ServiceConfig:
        return scenario_pb2.ServiceConfig(services=list(services))

    alcor_ip = scenario_pb2.Service(name="alcorIp", cmd="alcorIp", url="10.0.0.5", where_to_run="NETWORK")
    aca = scenario_pb2.Service(
        name="aca-cmd", cmd="/aca", parameters=["-d", "-a 10.0.0.9", "-p 30014"], where_to_run="AGENT"
    )
    assert translate.alcor_port_manager(None) == ""
    assert translate.alcor_port_manager(config()) == ""
    assert translate.alcor_port_manager(config(alcor_ip)) == "http://10.0.0.5:30006"
    # ACA's -a names the host the agents talk to (Merak's RemoteServer): it wins.
    assert translate.alcor_port_manager(config(alcor_ip, aca)) == "http://10.0.0.9:30006"
    # An alcorIp URL with a port is one gateway for every Alcor service: used as it is.
    gateway = scenario_pb2.Service(cmd="alcorIp", url="http://alcor.lab:9009/api/", where_to_run="NETWORK")
    assert translate.alcor_port_manager(config(gateway)) == "http://alcor.lab:9009/api"
    with pytest.raises(InvalidArgument, match=r"^service_config.services\[0\].url: "):
        translate.alcor_port_manager(config(scenario_pb2.Service(cmd="alcorIp", url="ftp://x")))


def test_compute_carries_the_deployed_plugin_and_alcor_its_port_manager() -> None:
    def request(deployed: str, configured: str) -> compute_pb2.InternalComputeConfiguration:
        network = _deployed_network((1,))
        network.plugin = deployed
        alcor = scenario_pb2.ServiceConfig(
            services=[scenario_pb2.Service(cmd="alcorIp", url="10.0.0.5", where_to_run="NETWORK")]
        )
        return translate.compute(
            scenario_pb2.ComputeConfig(id="c", number_of_vm_per_vpc=50),
            service_config=alcor,
            scenario_id="scn",
            network_config=scenario_pb2.NetworkConfig(id="net-1", plugin=configured),
            nodes=NODES,
            deployed_network=network,
        ).config

    assert (request("alcor", "").plugin, request("alcor", "").alcor_url) == ("alcor", "http://10.0.0.5:30006")
    # The network service's word wins; the config's (any case) when it says none; native when neither does.
    assert (request("", "ALCOR").plugin, request("", "ALCOR").alcor_url) == ("alcor", "http://10.0.0.5:30006")
    assert (request("native", "alcor").plugin, request("native", "alcor").alcor_url) == ("native", "")
    assert (request("", "").plugin, request("", "").alcor_url) == ("native", "")
    # A plugin this service does not know is passed on as named, with no control plane.
    assert (request("other", "").plugin, request("other", "").alcor_url) == ("other", "")


def test_churn_runs_at_its_own_rate_or_at_the_rps_knob_and_is_checked() -> None:
    own = scenario_pb2.ComputeConfig(id="c", number_of_vm_per_vpc=50, churn_rate=20, churn_seconds=60)
    assert (_compute(own).config.churn_rate, _compute(own).config.churn_seconds) == (20, 60)
    rps = scenario_pb2.ComputeConfig(
        id="c", number_of_vm_per_vpc=50, scheduler=compute_pb2.RPS, rps=15, churn_seconds=30
    )
    assert _compute(rps).config.churn_rate == 15
    validate.validate(COMPUTE_CONFIG, rps)
    plain_rps = scenario_pb2.ComputeConfig(
        id="c", number_of_vm_per_vpc=50, scheduler=compute_pb2.RPS, rps=15
    )  # an RPS scheduler without churn is no churn
    validate.validate(COMPUTE_CONFIG, plain_rps)
    assert _compute(plain_rps).config.churn_rate == 0
    for bad, field in (
        (scenario_pb2.ComputeConfig(churn_seconds=30), "churn_seconds"),  # no rate
        (scenario_pb2.ComputeConfig(churn_rate=5), "churn_seconds"),  # no duration
        (scenario_pb2.ComputeConfig(churn_rate=float("nan"), churn_seconds=1), "churn_rate"),
        (scenario_pb2.ComputeConfig(churn_rate=1, churn_seconds=-1), "churn_seconds"),
    ):
        with pytest.raises(InvalidArgument) as caught:
            validate.validate(COMPUTE_CONFIG, bad)
        assert caught.value.field == field
