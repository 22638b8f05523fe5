"""A VM record's JSON is the dataclass's fields in order, and reads back as the same record."""

from __future__ import annotations

import json
from dataclasses import asdict

from merak.v1 import common_pb2
from services.compute.store.records import VmRecord


def test_a_vm_record_writes_its_fields_in_order_and_reads_back() -> None:
    record = VmRecord(
        id="h1.v0-0-3", name="v0-0-3", host="h1", vpc="vpc-1", subnet="sn-1", project="p", tenant="t",
        cidr="10.0.0.0/24", gw="10.0.0.1", sgs=["sg-1", "sg-2"], ip="10.0.0.5", mac="02:00:00:00:00:05",
        prefix=24, vni=42, status=common_pb2.DONE, error='quote " and \\u00e9',
    )  # fmt: skip
    raw = record.to_json()
    assert raw == json.dumps(asdict(record), separators=(",", ":"))
    assert list(json.loads(raw)) == list(asdict(record))
    assert VmRecord.from_json(raw) == record


def test_a_stored_record_keeps_its_own_fields_and_names_its_subnets_template() -> None:
    record = VmRecord(
        id="h1.v0-0-3", name="v0-0-3", host="h1", vpc="vpc-1", subnet="sn-1", project="p", tenant="t",
        cidr="10.0.0.0/24", gw="10.0.0.1", sgs=["sg-1"], ip="10.0.0.5", mac="02:00:00:00:00:05",
        prefix=24, vni=42, gmac="02:00:00:00:00:01", status=common_pb2.ERROR, error="boom",
    )  # fmt: skip
    raw, name, template = record.stored()
    assert json.loads(raw) == {
        "t": name, "name": "v0-0-3", "status": common_pb2.ERROR, "ip": "10.0.0.5",
        "mac": "02:00:00:00:00:05", "error": "boom",
    }  # fmt: skip
    assert len(raw) < len(record.to_json()) / 2
    back = VmRecord.from_stored(raw, "h1", {name: json.loads(template)})
    assert back == record
    # A neighbour of the same subnet names the same template; another subnet another one.
    neighbour = VmRecord(**{**asdict(record), "name": "v0-0-4", "id": "h1.v0-0-4", "ip": "10.0.0.6"})
    assert neighbour.stored()[1:] == (name, template)
    other = VmRecord(**{**asdict(record), "subnet": "sn-2", "cidr": "10.0.1.0/24"})
    assert other.stored()[1] != name
    # An id that is not <host>.<name> (a churn's newborn, say) is kept; records share no list.
    odd = VmRecord(**{**asdict(record), "id": "elsewhere"})
    raw, name, template = odd.stored()
    templates = {name: json.loads(template)}
    first, second = (VmRecord.from_stored(raw, "h1", templates) for _ in range(2))
    assert first == odd and first.sgs is not second.sgs
    # A whole record, as written before templates, still reads.
    assert VmRecord.from_stored(record.to_json(), "h1", {}) == record
