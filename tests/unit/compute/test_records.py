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
