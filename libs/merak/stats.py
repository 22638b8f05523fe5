"""Statistics every report of the product computes the same way: nearest-rank percentiles."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(ordered: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (`pct` in 0..100) of an ascending sequence; 0 when it is empty."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True, slots=True)
class Summary:
    """Count, p50, p90, p95, p99 and maximum of a set of values (in the values' unit)."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float
    p95: float = 0.0

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        """The summary of `values`, in any order (zeros when there are none)."""
        ordered = sorted(values)
        return cls(
            count=len(ordered),
            p50=percentile(ordered, 50),
            p90=percentile(ordered, 90),
            p99=percentile(ordered, 99),
            max=ordered[-1] if ordered else 0.0,
            p95=percentile(ordered, 95),
        )
