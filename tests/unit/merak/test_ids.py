"""Client ids become Redis keys, workflow ids and namespace names: one rule, checked at every door."""

from __future__ import annotations

import pytest

from merak.errors import InvalidArgument
from merak.ids import check_id, check_ping_waits


@pytest.mark.parametrize("good", ["a", "lab-1", "905b84b6-5d1f-4c3e-9b1a-3f7d1e0c2a11", "x" * 64, "v1.2_3"])
def test_plain_ids_pass(good: str) -> None:
    assert check_id("config.topology_id", good) == good


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("", "required"),
        ("x" * 65, "at most 64"),
        ("x" * 2000, "at most 64"),  # left 9 Redis keys nobody could delete
        ("nc\nid", "only letters"),  # a newline in netconfig_id was accepted
        ("a b", "only letters"),
        ("a/b", "only letters"),
        ("é", "only letters"),
    ],
)
def test_other_ids_are_refused_naming_the_field(bad: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_id("config.netconfig_id", bad)
    assert caught.value.message.startswith("config.netconfig_id") and why in caught.value.message
    assert len(caught.value.message) < 200  # a 2,000-character id is not echoed whole


@pytest.mark.parametrize(
    ("timeout", "retry", "field"),
    [(3600.0, 0.0, "timeout_seconds"), (-1.0, 0.0, "timeout_seconds"), (1.0, 121.0, "retry_seconds"),
     (float("nan"), 0.0, "timeout_seconds")],
)  # fmt: skip
def test_ping_waits_are_bounded(timeout: float, retry: float, field: str) -> None:
    # One RunTest with timeout_seconds 3600 held both agents' workers for an hour.
    with pytest.raises(InvalidArgument) as caught:
        check_ping_waits(timeout, retry)
    assert caught.value.field == field


def test_ping_waits_in_bounds_pass() -> None:
    check_ping_waits(0.0, 0.0)
    check_ping_waits(30.0, 120.0)
