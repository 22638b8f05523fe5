"""Where each emulated host of a local lab serves Alcor's host-agent API (GoalStateProvisioner, :50001):
a loopback address of its own, 127.K.H.L, reachable from this machine's namespace, where Alcor (or the
stand-in) runs. K is a block the lab holds among every lab on this machine, whichever stack made it (a
file per block under a machine-wide directory names the run directory that holds it); H.L is the vhost's
position + 1. The port is ACA's: Alcor's NCM reaches every host at 50001 whatever the node registered.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from merak.errors import ResourceExhausted
from merak.logs import get_logger
from services.topology.backends.vhosts import ACA_PORT

log = get_logger(__name__)

CLAIMS = Path("/run/merak/goalstate-blocks")
BLOCKS = range(16, 255)  # 127.0-15.x.x left alone (127.0.0.1, 127.0.1.1 of /etc/hosts, ...)
MAX_VHOSTS = 65_534
_MINE = "goalstate-block"


def address(block: int, index: int) -> str:
    """The loopback address:port of the index-th vhost of the lab holding `block` ("" past the block's
    MAX_VHOSTS: that vhost serves no goal states)."""
    host = index + 1
    if host > MAX_VHOSTS:
        return ""
    return f"127.{block}.{host >> 8}.{host & 255}:{ACA_PORT}"


def claim(run_dir: Path, topology_id: str, claims: Path = CLAIMS) -> int:
    """The block of the lab in `run_dir`: the one it holds, or a free one now held (a block whose holder's
    run directory is gone is free). ResourceExhausted when every block is held."""
    held = block_of(run_dir)
    if held is not None:
        return held
    claims.mkdir(parents=True, exist_ok=True)
    start = zlib.crc32(topology_id.encode())
    for step in range(len(BLOCKS)):
        block = BLOCKS[(start + step) % len(BLOCKS)]
        if _take(claims / str(block), run_dir):
            (run_dir / _MINE).write_text(f"{block}\n")
            log.info("goalstate_block_claimed", topology_id=topology_id, block=f"127.{block}.0.0/16")
            return block
    raise ResourceExhausted(
        f"every loopback block for the hosts' goal-state servers is held ({len(BLOCKS)} labs on this machine)"
    )


def _take(path: Path, run_dir: Path) -> bool:
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = path.read_text().strip()
            except FileNotFoundError:
                continue  # released meanwhile: try again
            if holder == str(run_dir):
                return True
            if holder and Path(holder).is_dir():
                return False
            path.unlink(missing_ok=True)  # its lab is gone without releasing it
            continue
        with os.fdopen(fd, "w") as out:
            out.write(f"{run_dir}\n")
        return True
    return False


def block_of(run_dir: Path) -> int | None:
    """The block the lab in `run_dir` holds, or None."""
    try:
        return int((run_dir / _MINE).read_text())
    except (FileNotFoundError, ValueError):
        return None


def release(run_dir: Path, claims: Path = CLAIMS) -> None:
    """The lab in `run_dir` is gone: its block is free again (when it still holds it)."""
    block = block_of(run_dir)
    if block is None:
        return
    path = claims / str(block)
    try:
        if path.read_text().strip() == str(run_dir):
            path.unlink(missing_ok=True)
    except FileNotFoundError:
        pass
