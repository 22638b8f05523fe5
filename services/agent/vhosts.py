"""The emulated hosts an agent serves, as the topology service described them (merak.vhostsfile)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from merak import netns, vhostsfile
from merak.errors import InvalidArgument, NotFound
from merak.vhostsfile import Vhost

__all__ = ["Vhost", "VhostSet"]


@dataclass(frozen=True, slots=True)
class VhostSet:
    """Every vhost of this agent, by name."""

    topology_id: str
    dataplane: str  # "real" or "fake"
    vhosts: dict[str, Vhost]

    @classmethod
    def load(cls, path: Path) -> VhostSet:
        """Read the file the topology service wrote."""
        document = vhostsfile.read(path)
        return cls(document.topology_id, document.dataplane, {v.name: v for v in document.vhosts})

    @classmethod
    def standalone(cls, name: str = "local") -> VhostSet:
        """An agent started by hand (or by `merak up`): one fake vhost, nothing in the kernel."""
        return cls("", "fake", {name: Vhost(name, 0, "", f"standalone-{name}", "", 0, "", "")})

    def missing_namespaces(self) -> list[str]:
        """Namespaces of the vhosts that do not exist (ask only when their plane touches the kernel)."""
        return [v.netns for v in self.vhosts.values() if not netns.exists(v.netns)]

    def get(self, name: str, field: str = "vhost") -> Vhost:
        """The vhost called `name`; with a single vhost, an empty name means that one."""
        if not name and len(self.vhosts) == 1:
            return next(iter(self.vhosts.values()))
        if not name:
            raise InvalidArgument(field, f"required: this agent serves {len(self.vhosts)} vhosts")
        vhost = self.vhosts.get(name)
        if vhost is None:
            raise NotFound(f"{field}: this agent does not serve vhost {name!r}")
        return vhost
