"""What compute's results are built from (services/compute/results.py): running aggregates kept as the
control plane's calls and the VMs' ready times are recorded, and a uniform sample of each for the
percentiles; during a churn, the population and when its newborns became ready.

GetResults reads small things whatever the run's size: the aggregates are exact (requests, codes,
errors, extremes, VMs ready, the counts per 100 ms of the series), the latency histograms too, and the
percentiles come from at most SAMPLE_CAP samples per kind, a uniform reservoir of everything recorded
(Vitter's algorithm R; the whole record while it is smaller). Recomputing from every VM's record took
4 s at a million VMs, and past 600 s on a busy machine.

Keys (under `merak:compute:cfg:<id>:`): `calls`, `ready` (the samples: lists), `calls:n`, `ready:n` (how
many were recorded), `agg:calls` (hash: "plugin|operation|code|<code>" -> calls, "…|max" -> slowest
seconds, "…|first", "…|last" -> when the first and the last were made), `agg:ready` (hash: "max" ->
latest ready offset), `series:ready`, `series:errors` (hash: 100 ms interval -> VMs ready, failed calls),
`hist:calls` (hash: "plugin|operation|bucket" -> calls) and `hist:ready` (hash: bucket -> VMs), the
buckets of results.HISTOGRAM_BOUNDS_MS; `population`, `born` (lists of samples). The aggregates live as
long as the samples they count: when those are gone (an UPDATE starts afresh: store.vms drops `calls`
and `ready`), the next record restarts them."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from merak.callstats import SUCCESS_CODES
from merak.v1 import common_pb2
from services.compute.results import (
    SERIES_RESOLUTION_MS,
    Aggregates,
    OperationTotals,
    histogram_bucket,
    interval_of,
)
from services.compute.store.keys import ConfigStore

# Samples kept per compute config and kind (calls, VM ready times) for the percentiles: ~40 bytes each.
SAMPLE_CAP = 50_000
# Every key of an operation's results above: an UPDATE drops them all (store.vms), its results start afresh.
OPERATION_KEYS = (
    "calls", "ready", "calls:n", "ready:n", "agg:calls", "agg:ready", "series:ready", "series:errors",
    "hist:calls", "hist:ready",
)  # fmt: skip
# Population and churn newborn samples kept per compute config.
RESULT_SAMPLES = 2_000_000

# KEYS[1]: the samples (a list); KEYS[2]: how many were recorded; KEYS[3…]: what counts them, dropped
# when the samples are new (an UPDATE dropped them). ARGV[1]: the cap; then pairs (sample, a uniform
# number in [0, 1) drawn by the caller): algorithm R, in one step, so concurrent records stay uniform.
_RESERVOIR = """
if redis.call('exists', KEYS[1]) == 0 then
  for i = 2, #KEYS do redis.call('del', KEYS[i]) end
end
local cap = tonumber(ARGV[1])
local n = tonumber(redis.call('get', KEYS[2]) or '0')
for i = 2, #ARGV, 2 do
  n = n + 1
  if n <= cap then
    redis.call('rpush', KEYS[1], ARGV[i])
  else
    local j = math.floor(tonumber(ARGV[i + 1]) * n)
    if j < cap then redis.call('lset', KEYS[1], j, ARGV[i]) end
  end
end
redis.call('set', KEYS[2], n)
return n
"""
# KEYS[1]: a hash; ARGV: triples (field, "max" or "min", value): the field keeps the extreme.
_EXTREMES = """
for i = 1, #ARGV, 3 do
  local now = tonumber(redis.call('hget', KEYS[1], ARGV[i]))
  local value = tonumber(ARGV[i + 2])
  local higher = ARGV[i + 1] == 'max'
  if not now or (higher and value > now) or (not higher and value < now) then
    redis.call('hset', KEYS[1], ARGV[i], ARGV[i + 2])
  end
end
return 0
"""


class ResultSamples(ConfigStore):
    """A config's results as they are recorded: aggregates, histograms and samples (the module's
    docstring); times are seconds since the operation started."""

    sample_cap = SAMPLE_CAP

    async def record(
        self,
        config_id: str,
        plugin: str,
        calls: Sequence[tuple[str, str, float, float]],
        ready: Sequence[float] = (),
    ) -> None:
        """Count the control plane's calls (operation, code, seconds, at) and VM ready offsets into the
        aggregates and histograms, and into the samples."""
        if not calls and not ready:
            return
        # Everything from the values as the samples keep them (to the microsecond and millisecond), so
        # that counts and samples agree to the digit.
        calls = [(op, code, round(sec, 6), round(at, 3)) for op, code, sec, at in calls]
        ready = [round(at, 3) for at in ready]
        key = self.config_key
        draw = random.random
        async with self.redis.pipeline(transaction=True) as pipe:
            if calls:
                aggregates, series = key(config_id, "agg:calls"), key(config_id, "series:errors")
                hist = key(config_id, "hist:calls")
                samples = [f"{plugin}|{op}|{code}|{sec:.6f}|{at:.3f}" for op, code, sec, at in calls]
                sampled = (key(config_id, "calls"), key(config_id, "calls:n"), hist, aggregates, series)
                pipe.eval(
                    _RESERVOIR, 5, *sampled, self.sample_cap, *[v for one in samples for v in (one, draw())]
                )
                for field_name, count in Counter(
                    f"{plugin}|{op}|{histogram_bucket(sec)}" for op, _, sec, _ in calls
                ).items():
                    pipe.hincrby(hist, field_name, count)
                codes = Counter(f"{plugin}|{op}|code|{code}" for op, code, _, _ in calls)
                for field_name, count in codes.items():
                    pipe.hincrby(aggregates, field_name, count)
                extremes: list[str | float] = []
                for op in {op for op, _, _, _ in calls}:
                    mine = [(sec, at) for o, _, sec, at in calls if o == op]
                    extremes += [
                        f"{plugin}|{op}|max", "max", max(sec for sec, _ in mine),
                        f"{plugin}|{op}|first", "min", min(at for _, at in mine),
                        f"{plugin}|{op}|last", "max", max(at for _, at in mine),
                    ]  # fmt: skip
                pipe.eval(_EXTREMES, 1, aggregates, *extremes)
                failures = [at for _, code, _, at in calls if code not in SUCCESS_CODES]
                failed = Counter(interval_of(at, SERIES_RESOLUTION_MS) for at in failures)
                for interval, count in failed.items():
                    pipe.hincrby(series, str(interval), count)
            if ready:
                aggregates, series = key(config_id, "agg:ready"), key(config_id, "series:ready")
                hist = key(config_id, "hist:ready")
                sampled = (key(config_id, "ready"), key(config_id, "ready:n"), hist, aggregates, series)
                offsets = [f"{at:.3f}" for at in ready]
                pipe.eval(
                    _RESERVOIR, 5, *sampled, self.sample_cap, *[v for one in offsets for v in (one, draw())]
                )
                for bucket, count in Counter(histogram_bucket(at) for at in ready).items():
                    pipe.hincrby(hist, str(bucket), count)
                pipe.eval(_EXTREMES, 1, aggregates, "max", "max", max(ready))
                for interval, count in Counter(interval_of(at, SERIES_RESOLUTION_MS) for at in ready).items():
                    pipe.hincrby(series, str(interval), count)
            await pipe.execute()

    async def aggregates(self, config_id: str) -> Aggregates:
        """The running aggregates of the config's results."""
        key = self.config_key
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(key(config_id, "agg:calls"))
            pipe.get(key(config_id, "calls:n"))
            pipe.get(key(config_id, "ready:n"))
            pipe.hget(key(config_id, "agg:ready"), "max")
            pipe.hgetall(key(config_id, "series:ready"))
            pipe.hgetall(key(config_id, "series:errors"))
            raw_calls, calls_n, ready_n, ready_max, ready_series, error_series = await pipe.execute()
        found = Aggregates(
            calls_recorded=int(calls_n or 0),
            ready_count=int(ready_n or 0),
            ready_max=float(ready_max or 0.0),
            ready_series={int(k): int(v) for k, v in ready_series.items()},
            error_series={int(k): int(v) for k, v in error_series.items()},
        )
        for raw_field, value in raw_calls.items():
            plugin, operation, rest = str(raw_field).split("|", 2)
            totals = found.operations.setdefault((plugin, operation), OperationTotals())
            if rest.startswith("code|"):
                totals.codes[rest[len("code|") :]] = int(value)
            elif rest == "max":
                totals.max_seconds = float(value)
            elif rest == "first":
                totals.first_at = float(value)
            elif rest == "last":
                totals.last_at = float(value)
        return found

    async def calls_and_ready(self, config_id: str) -> tuple[list[str], list[float]]:
        """The sampled calls ("plugin|operation|code|seconds|at") and VM ready offsets: every one while
        fewer than `sample_cap` were recorded, else a uniform sample of that many."""
        calls = [str(c) for c in await self.redis.lrange(self.config_key(config_id, "calls"), 0, -1)]
        ready = [float(r) for r in await self.redis.lrange(self.config_key(config_id, "ready"), 0, -1)]
        return calls, ready

    async def histograms(
        self, config_id: str
    ) -> tuple[dict[tuple[str, str], dict[int, int]], dict[int, int]]:
        """The calls per histogram bucket of each (plugin, operation), and the VMs per bucket of their
        time to ready: small hashes, whatever the number of calls."""
        calls: dict[tuple[str, str], dict[int, int]] = {}
        for field, count in (await self.hash_of(self.config_key(config_id, "hist:calls"))).items():
            plugin, operation, bucket = field.rsplit("|", 2)
            calls.setdefault((plugin, operation), {})[int(bucket)] = int(count)
        raw = await self.hash_of(self.config_key(config_id, "hist:ready"))
        return calls, {int(bucket): int(count) for bucket, count in raw.items()}

    async def record_born(self, config_id: str, offsets: Sequence[float]) -> None:
        """When churn newborns became ready: VMs ready per second counts them; time to VM ready (of the
        operation's own VMs) does not."""
        if offsets:
            key = self.config_key(config_id, "born")
            await self.redis.rpush(key, *[f"{at:.3f}" for at in offsets])
            await self.redis.ltrim(key, -RESULT_SAMPLES, -1)

    async def born_offsets(self, config_id: str) -> list[float]:
        """What record_born kept."""
        return [float(r) for r in await self.redis.lrange(self.config_key(config_id, "born"), 0, -1)]

    async def sample_population(self, config_id: str, at: float) -> int:
        """Record how many VMs are alive (DONE) now; returns it."""
        alive = int(await self.redis.hget(self.config_key(config_id, "counts"), str(common_pb2.DONE)) or 0)
        key = self.config_key(config_id, "population")
        await self.redis.rpush(key, f"{at:.3f}|{alive}")
        await self.redis.ltrim(key, -RESULT_SAMPLES, -1)
        return alive

    async def population(self, config_id: str) -> list[tuple[float, int]]:
        """The population samples (at, VMs alive)."""
        samples = []
        for raw in await self.redis.lrange(self.config_key(config_id, "population"), 0, -1):
            at, _, value = str(raw).partition("|")
            samples.append((float(at), int(value)))
        return samples
