"""The scenario service's Prometheus metrics, registered on the registry its composition root builds."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

from merak.metrics import RPC_LATENCY_BUCKETS
from merak.v1 import scenario_pb2


@dataclass(frozen=True, slots=True)
class ScenarioMetrics:
    """Actions and their durations, and the pairs connectivity tests tried."""

    actions: Counter
    action_seconds: Histogram
    test_pairs: Counter
    # Merak's REST API, by route template (never ids), method and status code.
    http_requests: Counter
    http_seconds: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ScenarioMetrics:
        """Register the metrics on `registry`."""
        return cls(
            actions=Counter(
                "merak_scenario_actions_total",
                "Scenario actions, by service, action and outcome (ok, or the gRPC status code).",
                ["service", "action", "outcome"],
                registry=registry,
            ),
            action_seconds=Histogram(
                "merak_scenario_action_seconds",
                "Time to run a scenario action, waiting for the service it calls.",
                ["service", "action"],
                buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
                registry=registry,
            ),
            test_pairs=Counter(
                "merak_scenario_test_pairs_total",
                "Pairs tried by connectivity tests, by kind (connectivity, isolation) and result.",
                ["kind", "result"],
                registry=registry,
            ),
            http_requests=Counter(
                "merak_http_requests_total",
                "REST requests, by method, route and status code.",
                ["method", "route", "code"],
                registry=registry,
            ),
            http_seconds=Histogram(
                "merak_http_request_seconds",
                "Time to answer a REST request, by method and route.",
                ["method", "route"],
                buckets=RPC_LATENCY_BUCKETS,
                registry=registry,
            ),
        )

    def record_test(self, report: scenario_pb2.TestReport) -> None:
        """Count a connectivity test's pairs."""
        self.test_pairs.labels("connectivity", "passed").inc(report.passed)
        self.test_pairs.labels("connectivity", "failed").inc(report.failed)
        self.test_pairs.labels("isolation", "held").inc(report.isolation_held)
        self.test_pairs.labels("isolation", "violated").inc(report.isolation_violated)
