"""Settings of the network service (`MERAK_*` environment variables or --flags)."""

from __future__ import annotations

from pydantic import ValidationInfo, field_validator

from merak.config import GRPC_PORTS, METRICS_PORTS, ServiceSettings
from merak.errors import InvalidArgument
from merak.ovs import check_remote


class NetworkSettings(ServiceSettings):
    """Settings of the network service."""

    grpc_port: int = GRPC_PORTS["network"]
    metrics_port: int = METRICS_PORTS["network"]
    # The VNI pool of the native plugin, shared by every network config of this service.
    vni_min: int = 4096
    vni_max: int = 2**24 - 1
    # Alcor's NodePorts, used when a network config names its Alcor host without a port
    # (as Merak's `alcorIp` entry does). A URL with a port sends every call there (Alcor's API
    # gateway, or a single fake in tests).
    alcor_vpc_port: int = 30001
    alcor_subnet_port: int = 30002
    alcor_router_port: int = 30003
    alcor_node_port: int = 30007
    alcor_sg_port: int = 30008
    # Merak's HTTP timeout for Alcor calls, in seconds.
    alcor_timeout: float = 20.0
    # The gRPC port of Alcor's agent (ACA) on each registered node, as Merak registered it.
    alcor_aca_port: int = 50001
    # The ovn plugin: the stack's OVN central (MERAK_OVN_NB / MERAK_OVN_SB, set by the local stack), used
    # by network configs that name no OVN of their own. Empty: no OVN in this stack.
    ovn_nb: str = ""
    ovn_sb: str = ""
    # How long an NB transaction (or the first connection to an NB) may take before it is UNAVAILABLE.
    ovn_timeout: float = 30.0

    @field_validator("ovn_nb", "ovn_sb")
    @classmethod
    def _remote(cls, value: str, info: ValidationInfo) -> str:
        """An OVSDB remote (unix:/path, tcp:IP:PORT or ssl:IP:PORT), or empty."""
        value = value.strip()
        if not value:
            return ""
        try:
            return check_remote(f"MERAK_{str(info.field_name).upper()}", value)
        except InvalidArgument as exc:
            raise ValueError(str(exc)) from None
