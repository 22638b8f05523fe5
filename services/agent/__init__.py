"""The agent service: the VMs and VPCs of the vhosts it serves, on a real or a fake data plane.

The process: `__main__` (settings, logging), `config` (AgentSettings), `app` (composition root),
`metrics`. The gRPC surface: `server` (the thin servicer) hands each call to `vms` (CreateVms,
DeleteVms, ListVms), `overlay` (SetVpcPeers), `pings` (Ping, TestHandler) or `ports` (Merak's
PortHandler and its batch, with the Alcor clients of `alcor`); `convert` turns requests into models,
every bad value an error naming its field; `vhost_planes` keeps each served vhost's plane, lock and
the threads kernel work runs on. The data: `vhosts` (what this agent serves), `models` (frozen
specs and results), `validation` (the rules both planes follow). The planes: `planes` (the registry,
`planes.real`, `planes.fake`) and the kernel helpers only the real plane loads: `kernel` (pyroute2
sockets and link reads), `netlink_bulk` (neighbour and FDB entries in bulk), `icmp` (ping from a VM).
"""
