"""What a request asked for that is left out, the way Merak left it out, and said so.

Merak's own clients (its teste2e, its Postman collections) send placeholders: a router whose subnet is
`"string"`, a security-group rule made of `"string"`, control-plane gateway IPs `["string"]`, vnodes and
vlinks with a TREE. Merak ignored them; so do Merak's APIs here (REST, and the Merak v1 gRPC handlers of
topology and network), but never silently: each entry left out is a warning naming the field, returned
in the reply, logged, and kept with the scenario. The scenario service's own gRPC API refuses the same
entries when a config is stored (`Skips(strict=True)`): there a placeholder is INVALID_ARGUMENT.
"""

from __future__ import annotations

from merak.errors import InvalidArgument


class Skips:
    """Collects warnings: `field: problem; outcome`. Strict, the first one is an InvalidArgument instead."""

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self.warnings: list[str] = []

    def skip(self, field: str, problem: str, outcome: str = "skipped") -> None:
        """An entry that cannot be honoured and that Merak ignored: left out, with a warning."""
        if self.strict:
            raise InvalidArgument(field, problem)
        self.warnings.append(f"{field}: {problem}; {outcome}")

    def note(self, field: str, what: str) -> None:
        """A value the request left out, filled in (or a setting not emulated): never an error."""
        self.warnings.append(f"{field}: {what}")

    def __bool__(self) -> bool:
        return bool(self.warnings)
