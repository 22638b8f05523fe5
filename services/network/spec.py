"""A network config request turned into a validated NetworkSpec; every error names its field. No I/O."""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from merak.errors import InvalidArgument, ResourceExhausted
from merak.ids import check_id
from merak.ovs import check_remote
from merak.skips import Skips
from merak.v1 import common_pb2, network_pb2
from services.network.models import (
    NetworkSpec,
    Node,
    RouterSpec,
    SubnetSpec,
    VpcSpec,
)
from services.network.spec_groups import NETWORK, Ids, security_groups

# The plugin that makes a network config in Alcor (its registry name), and Merak's service entry that
# names the Alcor host; a config with that entry and no plugin goes to Alcor, as Merak's did.
ALCOR_PLUGIN = "alcor"
ALCOR_SERVICE_CMD = "alcorIp"
ALCOR_SERVICE_WHERE = "NETWORK"
DEFAULT_PLUGIN = "native"
OVN_PLUGIN = "ovn"

# A subnet's bitmap has one bit per address: /8 is 2 MiB, the largest we keep. /30 leaves one VM address.
MIN_SUBNET_PREFIX = 8
MAX_SUBNET_PREFIX = 30
# Host blocks (config.block_prefix) of at most /29: 8 addresses, one byte of the subnet's bitmap, and
# every block keeps room for VMs whichever block holds the network, gateway and broadcast addresses.
MAX_BLOCK_PREFIX = 29
# What one network config may ask for, checked before any loop over it: VPCs, subnets (all VPCs
# together) and the addresses of all its subnets (their bitmaps: 2^26 addresses = 8 MiB in Redis, four
# /8 subnets; a million VMs need one /12).
MAX_VPCS = 1024
MAX_SUBNETS = 16_384
MAX_ADDRESSES = 1 << 26

_NETWORK = NETWORK


@dataclass(frozen=True, slots=True)
class AlcorUrl:
    """The Alcor address of a network config: a host, and a port when every service answers on one."""

    scheme: str
    host: str
    port: int | None
    path: str

    def base(self, port: int) -> str:
        """The base URL of the service on `port`, unless the URL fixed a port of its own."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port or port}{self.path}"


def parse_alcor_url(url: str, field: str = "config.services.url") -> AlcorUrl:
    """`10.0.0.5` (Merak's form), `10.0.0.5:9009` or `http://host[:port][/path]`."""
    text = url.strip()
    parts = urlsplit(text if "://" in text else f"http://{text}")
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidArgument(field, f"{url!r} has a bad port: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(field, f"{url!r} is not an Alcor host (e.g. 10.0.0.5 or http://10.0.0.5:9009)")
    return AlcorUrl(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))


def alcor_service(config: network_pb2.InternalNetConfigConfiguration) -> tuple[str, str]:
    """The Alcor host a config names (Merak's `alcorIp` service entry) and that entry's field; "" if none."""
    for i, service in enumerate(config.services):
        if (
            service.cmd == ALCOR_SERVICE_CMD
            and service.where_to_run.strip().upper() == ALCOR_SERVICE_WHERE
            and service.url.strip()
        ):
            return service.url.strip(), f"config.services[{i}].url"
    return "", ""


def resolve_plugin(config: network_pb2.InternalNetConfigConfiguration) -> tuple[str, str]:
    """The plugin of a network config and its Alcor URL ("" unless the plugin is alcor)."""
    alcor_url, url_field = alcor_service(config)
    plugin = config.plugin.strip().lower() or (ALCOR_PLUGIN if alcor_url else DEFAULT_PLUGIN)
    if plugin != ALCOR_PLUGIN:
        return plugin, ""
    if not alcor_url:
        raise InvalidArgument(
            "config.services",
            "the alcor plugin needs the Alcor host: a service with cmd 'alcorIp', "
            "where_to_run 'NETWORK' and the host as url",
        )
    parse_alcor_url(alcor_url, url_field)
    return plugin, alcor_url


def _ovn_remotes(config: network_pb2.InternalNetConfigConfiguration, plugin: str) -> tuple[str, str]:
    """The existing OVN a config names (ovn plugin only), each an OVSDB remote; "" for the stack's own."""
    remotes = []
    for name in ("ovn_nb", "ovn_sb"):
        value = getattr(config, name).strip()
        if value and plugin != OVN_PLUGIN:
            raise InvalidArgument(f"config.{name}", f"only the ovn plugin uses OVN (the plugin is {plugin})")
        remotes.append(check_remote(f"config.{name}", value) if value else "")
    return remotes[0], remotes[1]


def spec_from_proto(
    config: network_pb2.InternalNetConfigConfiguration, skips: Skips | None = None
) -> NetworkSpec:
    """Validate a network config; raises InvalidArgument naming the first bad field.

    What Merak ignored (a router entry naming no subnet, a security-group rule of placeholders, gateways)
    is left out with a warning in `skips`; a VPC without a CIDR gets the smallest one holding its subnets.
    """
    skips = Skips() if skips is None else skips
    netconfig_id = check_id("config.netconfig_id", config.netconfig_id)
    plugin, alcor_url = resolve_plugin(config)
    network = config.network
    if not network.vpcs:
        raise InvalidArgument(f"{_NETWORK}.vpcs", "at least one VPC is required")
    _bounded(network)
    first = network.vpcs[0]
    ids = Ids(skips)
    vpcs = tuple(
        _vpc(f"{_NETWORK}.vpcs[{i}]", vpc, first.tenant_id, first.project_id, ids, skips=skips)
        for i, vpc in enumerate(network.vpcs)
    )
    groups = security_groups(network.security_groups, vpcs[0], ids, skips)
    routers = _routers(network.routers, vpcs, ids, skips)
    if network.gateways:
        skips.skip(
            f"{_NETWORK}.gateways",
            f"{len(network.gateways)} gateway(s): not emulated (Merak's network did not make them)",
            "ignored",
        )
    nodes = _nodes(config.computes)
    ovn_nb, ovn_sb = _ovn_remotes(config, plugin)
    url_field = alcor_service(config)[1] if alcor_url else "config.services"
    block_prefix = _block_prefix(config.block_prefix, plugin, vpcs)
    return NetworkSpec(
        netconfig_id,
        plugin,
        alcor_url,
        vpcs,
        groups,
        routers,
        nodes,
        ovn_nb,
        ovn_sb,
        url_field,
        block_prefix=block_prefix,
    )


def _block_prefix(value: int, plugin: str, vpcs: Sequence[VpcSpec]) -> int:
    """The host block prefix length (0: off): native plugin only, and no subnet smaller than a block."""
    field = "config.block_prefix"
    if value == 0:
        return 0
    if plugin != DEFAULT_PLUGIN:
        raise InvalidArgument(
            field, f"only the {DEFAULT_PLUGIN} plugin gives hosts address blocks (the plugin is {plugin})"
        )
    if not MIN_SUBNET_PREFIX <= value <= MAX_BLOCK_PREFIX:
        raise InvalidArgument(
            field, f"/{value}: a block is /{MIN_SUBNET_PREFIX} to /{MAX_BLOCK_PREFIX} (0: no host blocks)"
        )
    for i, vpc in enumerate(vpcs):
        for j, subnet in enumerate(vpc.subnets):
            length = ipaddress.IPv4Network(subnet.cidr).prefixlen
            if length > value:
                raise InvalidArgument(
                    field,
                    f"/{value} blocks do not fit in {_NETWORK}.vpcs[{i}].subnets[{j}] ({subnet.cidr}); "
                    f"use /{length} or longer blocks, or a larger subnet",
                )
    return value


def _bounded(network: network_pb2.InternalNetworkInfo) -> None:
    """The config's VPCs, subnets and addresses within MAX_VPCS, MAX_SUBNETS and MAX_ADDRESSES
    (RESOURCE_EXHAUSTED naming the field), before anything loops over them."""
    if len(network.vpcs) > MAX_VPCS:
        raise ResourceExhausted(
            f"{_NETWORK}.vpcs: {len(network.vpcs)} VPCs; at most {MAX_VPCS} per network config"
        )
    subnets = sum(len(vpc.subnets) for vpc in network.vpcs)
    if subnets > MAX_SUBNETS:
        raise ResourceExhausted(
            f"{_NETWORK}.vpcs[].subnets: {subnets} subnets; at most {MAX_SUBNETS} per network config"
        )
    addresses = 0
    for i, vpc in enumerate(network.vpcs):
        for j, subnet in enumerate(vpc.subnets):
            _address, _, length = subnet.subnet_cidr.strip().partition("/")
            if length.isdigit() and int(length) <= 32:
                addresses += 1 << (32 - max(int(length), MIN_SUBNET_PREFIX))
            if addresses > MAX_ADDRESSES:
                raise ResourceExhausted(
                    f"{_NETWORK}.vpcs[{i}].subnets[{j}].subnet_cidr: the config's subnets would hold more "
                    f"than {MAX_ADDRESSES:,} addresses; use smaller subnets"
                )


def _network(field: str, text: str, skips: Skips | None = None) -> ipaddress.IPv4Network:
    """A CIDR; with `skips`, one with host bits set (Merak's Postman: 10.0.1.0/20) means its network."""
    value = text.strip()
    if "/" not in value:
        raise InvalidArgument(field, f"{text!r} is not a CIDR (expected a.b.c.d/len)")
    try:
        network = ipaddress.ip_network(value, strict=skips is None)
    except ValueError as exc:
        raise InvalidArgument(field, f"{text!r} is not a valid CIDR: {exc}") from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise InvalidArgument(field, f"{text!r}: only IPv4 is supported")
    if skips is not None and str(network) != value:
        skips.note(field, f"{text!r} has host bits set; {network} is used")
    return network


def _vpc(
    field: str, vpc: common_pb2.InternalVpcInfo, tenant: str, project: str, ids: Ids, *, skips: Skips
) -> VpcSpec:
    cidr = (
        _network(f"{field}.vpc_cidr", vpc.vpc_cidr, skips)
        if vpc.vpc_cidr.strip()
        else _vpc_cidr_of_subnets(field, vpc, skips)
    )
    if cidr.prefixlen > MAX_SUBNET_PREFIX:
        raise InvalidArgument(f"{field}.vpc_cidr", f"{cidr} is too small for a subnet (at most /30)")
    vpc_id = ids.claim("vpc", vpc.vpc_id, f"{field}.vpc_id")
    networks: list[ipaddress.IPv4Network] = []
    for j, subnet in enumerate(vpc.subnets):
        sfield = f"{field}.subnets[{j}]"
        network = _network(f"{sfield}.subnet_cidr", subnet.subnet_cidr, skips)
        if not network.subnet_of(cidr):
            raise InvalidArgument(f"{sfield}.subnet_cidr", f"{network} is outside the VPC CIDR {cidr}")
        if not MIN_SUBNET_PREFIX <= network.prefixlen <= MAX_SUBNET_PREFIX:
            raise InvalidArgument(
                f"{sfield}.subnet_cidr",
                f"{network}: the prefix length must be between /{MIN_SUBNET_PREFIX} and /{MAX_SUBNET_PREFIX}",
            )
        networks.append(network)
    _no_overlap(field, networks)
    subnets = [
        SubnetSpec(
            id=ids.claim("subnet", subnet.subnet_id, f"{field}.subnets[{j}].subnet_id"),
            cidr=str(network),
            gateway=_gateway(f"{field}.subnets[{j}].subnet_gw", subnet.subnet_gw, network),
            number_vms=subnet.number_vms,
        )
        for j, (subnet, network) in enumerate(zip(vpc.subnets, networks, strict=True))
    ]
    return VpcSpec(
        id=vpc_id,
        tenant_id=vpc.tenant_id.strip() or tenant.strip(),
        project_id=vpc.project_id.strip() or project.strip(),
        cidr=str(cidr),
        subnets=tuple(subnets),
    )


def _no_overlap(field: str, networks: Sequence[ipaddress.IPv4Network]) -> None:
    """No two subnets of a VPC overlap (sorted by address: n log n, not every pair)."""
    order = sorted(range(len(networks)), key=lambda k: (networks[k].network_address, networks[k].prefixlen))
    for before, after in itertools.pairwise(order):
        if networks[after].overlaps(networks[before]):
            first, second = sorted((before, after))
            raise InvalidArgument(
                f"{field}.subnets[{second}].subnet_cidr",
                f"{networks[second]} overlaps subnets[{first}] ({networks[first]})",
            )


def _vpc_cidr_of_subnets(field: str, vpc: common_pb2.InternalVpcInfo, skips: Skips) -> ipaddress.IPv4Network:
    """Merak's clients leave a VPC's CIDR out (its Postman collections): the smallest network that holds
    the VPC's subnets stands for it."""
    if not vpc.subnets:
        raise InvalidArgument(f"{field}.vpc_cidr", "required when the VPC has no subnets (e.g. 10.1.0.0/16)")
    networks = [
        # The subnets' own checks (and notes) come next.
        _network(f"{field}.subnets[{j}].subnet_cidr", s.subnet_cidr, Skips())
        for j, s in enumerate(vpc.subnets)
    ]
    cidr = networks[0]
    while not all(n.subnet_of(cidr) for n in networks):
        cidr = cidr.supernet()
    skips.note(f"{field}.vpc_cidr", f"not given; {cidr}, the smallest network holding its subnets, is used")
    return cidr


def _gateway(field: str, text: str, network: ipaddress.IPv4Network) -> str:
    if not text.strip():
        return str(network.network_address + 1)
    try:
        gateway = ipaddress.IPv4Address(text.strip())
    except ValueError:
        raise InvalidArgument(field, f"{text!r} is not an IPv4 address") from None
    if gateway not in network or gateway in (network.network_address, network.broadcast_address):
        raise InvalidArgument(field, f"{gateway} is not a host address of {network}")
    return str(gateway)


def _routers(
    routers: Sequence[network_pb2.InternalRouterInfo], vpcs: tuple[VpcSpec, ...], ids: Ids, skips: Skips
) -> tuple[RouterSpec, ...]:
    specs: list[RouterSpec] = []
    attached: dict[tuple[int, int], int] = {}
    for r, router in enumerate(routers):
        field = f"{_NETWORK}.routers[{r}]"
        router_id = ids.claim("router", router.id, f"{field}.id")
        # Merak looked each entry up by CIDR and went on without the ones it did not find.
        candidates = []
        for k, entry in enumerate(router.subnets):
            try:
                candidates.append((k, _subnet_matches(f"{field}.subnets[{k}]", entry, vpcs)))
            except InvalidArgument as exc:
                skips.skip(exc.field, exc.problem)
        if not candidates:
            skips.skip(
                field,
                "joins no subnet of this config (give subnet ids, CIDRs or gateway IPs)",
                "router skipped",
            )
            continue
        common = set.intersection(*({v for v, _ in c} for _k, c in candidates))
        if not common:
            named = sorted({v for _k, c in candidates for v, _ in c})
            raise InvalidArgument(
                f"{field}.subnets",
                f"names subnets of {' and '.join(f'vpcs[{v}]' for v in named)}; "
                "a router joins the subnets of one VPC",
            )
        if len(common) > 1:
            raise InvalidArgument(
                f"{field}.subnets",
                f"matches subnets in {' and '.join(f'vpcs[{v}]' for v in sorted(common))}; "
                "name the subnets by id",
            )
        vpc = common.pop()
        chosen: list[int] = []
        for k, matches in candidates:
            subnet = next(s for v, s in matches if v == vpc)
            if subnet in chosen:
                raise InvalidArgument(f"{field}.subnets[{k}]", "names a subnet this router already joins")
            holder = attached.setdefault((vpc, subnet), r)
            if holder != r:
                raise InvalidArgument(
                    f"{field}.subnets[{k}]", f"vpcs[{vpc}].subnets[{subnet}] already joins routers[{holder}]"
                )
            chosen.append(subnet)
        specs.append(RouterSpec(router_id, router.name.strip(), vpc, tuple(chosen)))
    return tuple(specs)


def _subnet_matches(field: str, entry: str, vpcs: tuple[VpcSpec, ...]) -> list[tuple[int, int]]:
    """Subnets an entry of `router.subnets` can mean: Merak put CIDRs or gateway IPs there; ids work too."""
    text = entry.strip()
    cidr = ""
    if "/" in text:
        try:
            cidr = str(ipaddress.ip_network(text, strict=False))
        except ValueError:
            cidr = ""
    matches = [
        (v, s)
        for v, vpc in enumerate(vpcs)
        for s, subnet in enumerate(vpc.subnets)
        if (text and text in (subnet.id, subnet.gateway, subnet.cidr)) or (cidr and cidr == subnet.cidr)
    ]
    if not matches:
        raise InvalidArgument(
            field, f"{entry!r} names no subnet of this config (give its id, CIDR or gateway IP)"
        )
    return matches


def _nodes(computes: Sequence[common_pb2.InternalComputeInfo]) -> tuple[Node, ...]:
    nodes: list[Node] = []
    seen: dict[str, int] = {}
    for i, compute in enumerate(computes):
        field = f"config.computes[{i}]"
        node_id = compute.id.strip() or compute.name.strip()
        if not node_id:
            raise InvalidArgument(f"{field}.id", "required (or a name)")
        holder = seen.setdefault(node_id, i)
        if holder != i:
            raise InvalidArgument(f"{field}.id", f"{node_id!r} is already the id of computes[{holder}]")
        for name in ("datapath_ip", "container_ip"):
            value = getattr(compute, name).strip()
            if value:
                try:
                    ipaddress.IPv4Address(value)
                except ValueError:
                    raise InvalidArgument(f"{field}.{name}", f"{value!r} is not an IPv4 address") from None
        nodes.append(
            Node(
                id=node_id,
                name=compute.name.strip() or node_id,
                datapath_ip=compute.datapath_ip.strip(),
                container_ip=compute.container_ip.strip(),
                mac=compute.mac.strip(),
                veth=compute.veth.strip(),
                hostname=compute.hostname.strip(),
            )
        )
    return tuple(nodes)


def check_extends(old: NetworkSpec, new: NetworkSpec) -> None:
    """UPDATE only adds: everything of `old` is in `new`, unchanged and at the same place."""
    if (old.plugin, old.alcor_url) != (new.plugin, new.alcor_url):
        raise InvalidArgument("config.plugin", "UPDATE cannot change the plugin or the Alcor host")
    if (old.ovn_nb, old.ovn_sb) != (new.ovn_nb, new.ovn_sb):
        raise InvalidArgument("config.ovn_nb", "UPDATE cannot change the OVN databases")
    if old.block_prefix != new.block_prefix:
        raise InvalidArgument(
            "config.block_prefix",
            f"UPDATE cannot change the block prefix (it is {old.block_prefix}; 0: no host blocks)",
        )
    _prefix(f"{_NETWORK}.vpcs", old.vpcs, new.vpcs, nested=True)
    _prefix(f"{_NETWORK}.security_groups", old.security_groups, new.security_groups)
    _prefix(f"{_NETWORK}.routers", old.routers, new.routers)
    _prefix("config.computes", old.nodes, new.nodes)


def _prefix(field: str, old: Sequence[object], new: Sequence[object], *, nested: bool = False) -> None:
    if len(new) < len(old):
        raise InvalidArgument(field, f"UPDATE cannot remove items ({len(old)} exist, {len(new)} sent)")
    for i, (was, sent) in enumerate(zip(old, new, strict=False)):
        before, after = was, sent
        if nested and isinstance(was, VpcSpec) and isinstance(sent, VpcSpec):
            _prefix(f"{field}[{i}].subnets", was.subnets, sent.subnets)
            before, after = replace(was, subnets=()), replace(sent, subnets=())
        if before != after:
            raise InvalidArgument(
                f"{field}[{i}]",
                "UPDATE cannot change what exists; it adds VPCs, subnets, security groups, routers and nodes",
            )
