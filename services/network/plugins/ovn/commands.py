"""ovsdbapp commands of the ovn plugin that the typed API lacks: a batch of VM ports made or kept in one
step, the rows of a network config removed by their external_ids, and the ports' state read from the
replica. Each runs inside an ovsdbapp transaction (or, read-only, under the connection's lock)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from ovsdbapp.backend.ovs_idl import command, idlutils

from services.network.plugins.ovn import names

_LSP = "Logical_Switch_Port"
# The tables whose rows the plugin makes at the top; the rest (ports, router ports, ACLs) hang off them
# and go with them.
ROOT_TABLES = ("Logical_Router", "Logical_Switch", "Port_Group")


@dataclass(frozen=True, slots=True)
class VmPort:
    """A VM's logical switch port as it should be."""

    name: str
    switch: str
    address: str
    groups: tuple[str, ...]
    external_ids: dict[str, str]


def _find(api: Any, table: str, name: str) -> Any:
    return idlutils.row_by_value(api.idl, table, "name", name, None)


def _ours(row: Any, netconfig_id: str) -> bool:
    return bool(row.external_ids.get(names.NETCONFIG) == netconfig_id)


class EnsurePorts(command.BaseCommand):  # type: ignore[misc]  # ovsdbapp has no type hints
    """Each port made in its switch, or kept (columns set again when they differ), and a member of
    exactly its groups among `config_groups`; the result is the names made by this command."""

    def __init__(
        self, api: Any, netconfig_id: str, ports: Sequence[VmPort], config_groups: Collection[str]
    ) -> None:
        super().__init__(api)
        self.netconfig_id = netconfig_id
        self.ports = ports
        self.config_groups = config_groups

    def _row(self, table: str, name: str, cache: dict[str, Any]) -> Any:
        row = cache.get(name)
        if row is None:
            row = _find(self.api, table, name)
            if row is None:
                raise RuntimeError(f"{table} {name} does not exist")
            cache[name] = row
        return row

    def run_idl(self, txn: Any) -> None:
        switches: dict[str, Any] = {}
        groups: dict[str, Any] = {}
        made: list[str] = []
        for port in self.ports:
            switch = self._row("Logical_Switch", port.switch, switches)
            row = _find(self.api, _LSP, port.name)
            if row is None:
                row = txn.insert(self.api.tables[_LSP])
                row.name = port.name
                row.addresses = row.port_security = [port.address]
                row.external_ids = port.external_ids
                switch.addvalue("ports", row)
                made.append(port.name)
            elif not _ours(row, self.netconfig_id):
                raise RuntimeError(f"logical switch port {port.name} belongs to another network config")
            else:
                if list(row.addresses) != [port.address] or list(row.port_security) != [port.address]:
                    row.addresses = row.port_security = [port.address]
                if dict(row.external_ids) != port.external_ids:
                    row.external_ids = port.external_ids
                for name in self.config_groups:
                    group = self._row("Port_Group", name, groups)
                    if name not in port.groups and row in group.ports:
                        group.delvalue("ports", row)
            for name in port.groups:
                self._row("Port_Group", name, groups).addvalue("ports", row)
        self.result = made


class DeletePorts(command.BaseCommand):  # type: ignore[misc]  # ovsdbapp has no type hints
    """The config's VM ports of these names removed from their switches; the result is the names removed."""

    def __init__(self, api: Any, netconfig_id: str, port_names: Sequence[str]) -> None:
        super().__init__(api)
        self.netconfig_id = netconfig_id
        self.port_names = port_names

    def run_idl(self, txn: Any) -> None:
        removed: list[str] = []
        for name in self.port_names:
            row = _find(self.api, _LSP, name)
            if row is None or not _ours(row, self.netconfig_id):
                continue
            switch = _find(
                self.api, "Logical_Switch", names.switch(self.netconfig_id, row.external_ids[names.SUBNET])
            )
            if switch is not None:
                switch.delvalue("ports", row)
            row.delete()
            removed.append(name)
        self.result = removed


class DeleteOwned(command.BaseCommand):  # type: ignore[misc]  # ovsdbapp has no type hints
    """The config's routers, switches and port groups removed (with what hangs off them): all of them,
    or those named in `rows`, and the router ports named in `router_ports` from their routers. The result
    is the number of the config's VM ports that went with them."""

    def __init__(
        self,
        api: Any,
        netconfig_id: str,
        rows: Collection[str] | None = None,
        router_ports: Collection[str] = (),
    ) -> None:
        super().__init__(api)
        self.netconfig_id = netconfig_id
        self.rows = rows
        self.router_ports = router_ports

    def run_idl(self, txn: Any) -> None:
        vm_ports = 0
        for table in ROOT_TABLES:
            for row in list(self.api.tables[table].rows.values()):
                if not _ours(row, self.netconfig_id) or (self.rows is not None and row.name not in self.rows):
                    continue
                if table == "Logical_Switch":
                    vm_ports += sum(1 for port in row.ports if names.VM in port.external_ids)
                row.delete()
        for name in self.router_ports:
            port = _find(self.api, "Logical_Router_Port", name)
            if port is None or not _ours(port, self.netconfig_id):
                continue
            for router in self.api.tables["Logical_Router"].rows.values():
                if port in router.ports:
                    router.delvalue("ports", port)
            port.delete()
        self.result = vm_ports


class PortStates(command.ReadOnlyCommand):  # type: ignore[misc]  # ovsdbapp has no type hints
    """Per port name of the config: whether it is `up` (absent: the config has no such port)."""

    def __init__(self, api: Any, netconfig_id: str, port_names: Sequence[str]) -> None:
        super().__init__(api)
        self.netconfig_id = netconfig_id
        self.port_names = port_names

    def run_idl(self, txn: Any) -> None:
        states: dict[str, bool] = {}
        for name in self.port_names:
            row = _find(self.api, _LSP, name)
            if row is not None and _ours(row, self.netconfig_id):
                states[name] = list(row.up) == [True]
        self.result = states
