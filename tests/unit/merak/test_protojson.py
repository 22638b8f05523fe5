"""Reports as JSON: protojson, with 64-bit counts as numbers (protojson writes them as strings)."""

from __future__ import annotations

import json

from google.protobuf import json_format

from merak import protojson
from merak.v1 import compute_pb2, scenario_pb2


def test_64_bit_counts_stay_numbers_at_any_depth() -> None:
    report = scenario_pb2.TestReport(pairs_total=9_999_900_000, passed=1000, vhosts=3, rtt_p50_ms=0.5)
    report.failures.add(src_vm="v1", rtt_ms=1.0)
    assert json_format.MessageToDict(report)["pairsTotal"] == "9999900000"  # what protojson does
    data = protojson.to_dict(report)
    assert (data["pairs_total"], data["passed"], data["vhosts"]) == (9_999_900_000, 1000, 3)
    assert data["failures"] == [{"src_vm": "v1", "rtt_ms": 1.0}]
    progress = compute_pb2.ComputeProgress(total=1_000_000, done=5)
    progress.hosts.add(host="vhost-0", total=100)
    assert protojson.to_dict(progress) == {
        "total": 1_000_000,
        "done": 5,
        "hosts": [{"host": "vhost-0", "total": 100}],
    }
    assert json.loads(json.dumps(data)) == data


def test_maps_of_counts() -> None:
    results = compute_pb2.ComputeResults(vms=10)
    results.operations.add(operation="create_port", requests=10, codes={"201": 10})
    data = protojson.to_dict(results)
    assert data["operations"][0]["codes"] == {"201": 10} and data["operations"][0]["requests"] == 10
