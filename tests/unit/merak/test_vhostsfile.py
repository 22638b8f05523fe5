"""The vhosts file an agent reads: what is written is what is read, its keys stay, bad input is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from merak import vhostsfile
from merak.vhostsfile import Vhost, VhostsFile, VhostsFileError

VHOST = Vhost(
    "vhost-0", 0, "mk-abc123-vhost-0", "mk-abc123-0", "10.200.0.2", 16, "vh0-eth1", "02:ab:c1:00:00:00"
)
DOCUMENT = VhostsFile(
    "lab-1", "abc123", "real", (VHOST, Vhost("vhost-1", 1, "", "mk-abc123-1", "", 0, "", ""))
)


def test_what_is_written_is_read(tmp_path: Path) -> None:
    path = tmp_path / "agent-0.json"
    vhostsfile.write(path, DOCUMENT)
    assert vhostsfile.read(path) == DOCUMENT
    assert vhostsfile.loads(vhostsfile.dumps(DOCUMENT)) == DOCUMENT
    assert DOCUMENT.names == ("vhost-0", "vhost-1")


def test_the_keys_are_the_contract_with_the_agent() -> None:
    raw = json.loads(vhostsfile.dumps(DOCUMENT))
    assert list(raw) == ["topology_id", "short_id", "dataplane", "vhosts"]
    assert list(raw["vhosts"][0]) == [
        "name", "index", "netns", "vm_ns_prefix", "datapath_ip", "prefix_len", "nic", "mac",
        "goalstate_address",
    ]  # fmt: skip
    assert raw["vhosts"][0]["prefix_len"] == 16


def test_a_goalstate_address_is_optional_and_checked() -> None:
    raw = json.loads(vhostsfile.dumps(DOCUMENT))
    del raw["vhosts"][0]["goalstate_address"]  # a file written before the key existed
    assert vhostsfile.loads(json.dumps(raw)).vhosts[0].goalstate_address == ""
    raw["vhosts"][0]["goalstate_address"] = "127.16.0.1:50001"
    assert vhostsfile.loads(json.dumps(raw)).vhosts[0].goalstate_address == "127.16.0.1:50001"
    for bad in ("127.16.0.1", "localhost:50001", "127.16.0.256:50001", "127.16.0.1:50001;x"):
        raw["vhosts"][0]["goalstate_address"] = bad
        with pytest.raises(VhostsFileError, match="goalstate_address"):
            vhostsfile.loads(json.dumps(raw))


def _with(**changes: Any) -> str:
    raw = json.loads(vhostsfile.dumps(DOCUMENT))
    raw["vhosts"][0].update(changes)
    return json.dumps(raw)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "not JSON"),
        ("[]", "an object is required"),
        (json.dumps({"topology_id": "x", "short_id": "y", "dataplane": "real"}), "vhosts: a list"),
        (json.dumps({"short_id": "y", "dataplane": "real", "vhosts": []}), "topology_id must be a str"),
        (_with(index="0"), "index must be a int"),
        (_with(prefix_len=True), "prefix_len must be a int"),
        (_with(name="../etc"), "vhost name"),
        (_with(name=""), "vhost name"),
        (_with(netns="a b"), "not a namespace name"),
        (_with(vm_ns_prefix=""), "not a namespace name prefix"),
        (_with(prefix_len=33), "not 0-32"),
        (_with(nic="eth0/1"), "not an interface name"),
        (_with(mac="02:AB:C1:00:00:00"), "not a lowercase MAC"),
        (_with(index=-1), "negative"),
        (_with(name="vhost-1"), "listed twice"),
    ],
)
def test_a_malformed_file_is_refused_saying_why(text: str, problem: str) -> None:
    with pytest.raises(VhostsFileError, match=problem):
        vhostsfile.loads(text)


def test_a_bad_document_is_refused_before_it_is_written() -> None:
    with pytest.raises(VhostsFileError, match="dataplane: required"):
        VhostsFile("lab-1", "abc123", "", ())
    with pytest.raises(VhostsFileError, match="vhost name"):
        Vhost("-x", 0, "", "p", "", 0, "", "")


def test_reading_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agent-3.json"
    path.write_text("{}")
    with pytest.raises(VhostsFileError, match=str(path)):
        vhostsfile.read(path)
    with pytest.raises(OSError):
        vhostsfile.read(tmp_path / "missing.json")
