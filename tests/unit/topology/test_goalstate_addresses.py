"""The loopback blocks local labs hold for their hosts' goal-state servers: one lab, one block, across
stacks on one machine; released with the lab; a block whose lab vanished is taken over."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from merak.errors import ResourceExhausted
from services.topology.backends.local import goalstate_addresses as ga


def test_each_vhost_gets_an_address_of_the_labs_block_on_acas_port() -> None:
    assert ga.address(16, 0) == "127.16.0.1:50001"
    assert ga.address(16, 254) == "127.16.0.255:50001"
    assert ga.address(200, 255) == "127.200.1.0:50001"
    assert ga.address(16, ga.MAX_VHOSTS - 1) == "127.16.255.254:50001"
    assert ga.address(16, ga.MAX_VHOSTS) == ""  # past the block: no goal-state server


def test_labs_hold_distinct_blocks_until_released(tmp_path: Path) -> None:
    claims = tmp_path / "claims"
    labs = [tmp_path / f"lab{i}" for i in range(3)]
    for lab in labs:
        lab.mkdir()
    # The same topology id in two stacks (two run directories): two blocks all the same.
    first = ga.claim(labs[0], "t1", claims)
    second = ga.claim(labs[1], "t1", claims)
    assert first != second
    assert ga.claim(labs[0], "t1", claims) == first  # held: the same again (a restarted service)
    ga.release(labs[0], claims)
    assert not (claims / str(first)).exists()
    assert (claims / str(second)).read_text().strip() == str(labs[1])
    # A lab whose run directory vanished without releasing: its block is free for the next.
    shutil.rmtree(labs[1])
    assert ga.claim(labs[2], "t1", claims) in (first, second)


def test_every_block_held_is_refused(tmp_path: Path) -> None:
    claims = tmp_path / "claims"
    claims.mkdir()
    holder = tmp_path / "holder"
    holder.mkdir()
    for block in ga.BLOCKS:
        (claims / str(block)).write_text(f"{holder}\n")
    lab = tmp_path / "lab"
    lab.mkdir()
    with pytest.raises(ResourceExhausted, match="every loopback block"):
        ga.claim(lab, "t1", claims)
