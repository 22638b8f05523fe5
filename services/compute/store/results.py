"""The samples compute's results are built from (services/compute/results.py): the control plane's calls,
when VMs became ready, and during a churn the population and when its newborns became ready; and the
latency histograms, counted as the calls and ready times are recorded.

Keys (under `merak:compute:cfg:<id>:`): `calls`, `ready`, `population`, `born` (lists of samples);
`hist:calls` (hash: "plugin|operation|bucket" -> calls) and `hist:ready` (hash: bucket -> VMs), the
buckets of results.HISTOGRAM_BOUNDS_MS. A histogram lives as long as the list it counts: when that list
is gone (an UPDATE starts afresh: store.vms drops `calls` and `ready`), the next record restarts it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from merak.v1 import common_pb2
from services.compute.results import histogram_bucket
from services.compute.store.keys import ConfigStore

# Samples kept per compute config for its results (calls, VM ready times): ~40 bytes each.
RESULT_SAMPLES = 2_000_000

# KEYS[1]: a list of samples; KEYS[2]: its histogram. In the transaction that appends to the list, so
# a histogram never outlives the samples it counted (nor mixes in the ones of an operation before).
_RESTART_IF_NEW = "if redis.call('exists', KEYS[1]) == 0 then redis.call('del', KEYS[2]) end return 0"


class ResultSamples(ConfigStore):
    """The newest RESULT_SAMPLES of each kind, per compute config; times are seconds since the
    operation started."""

    async def record(
        self,
        config_id: str,
        plugin: str,
        calls: Sequence[tuple[str, str, float, float]],
        ready: Sequence[float] = (),
    ) -> None:
        """Keep the control plane's calls (operation, code, seconds, at) and VM ready offsets, and count
        them into their histograms."""
        if not calls and not ready:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            if calls:
                key, hist = self.config_key(config_id, "calls"), self.config_key(config_id, "hist:calls")
                pipe.eval(_RESTART_IF_NEW, 2, key, hist)
                pipe.rpush(key, *[f"{plugin}|{op}|{code}|{sec:.6f}|{at:.3f}" for op, code, sec, at in calls])
                pipe.ltrim(key, -RESULT_SAMPLES, -1)
                counts = Counter(f"{plugin}|{op}|{histogram_bucket(sec)}" for op, _, sec, _ in calls)
                for field, count in counts.items():
                    pipe.hincrby(hist, field, count)
            if ready:
                key, hist = self.config_key(config_id, "ready"), self.config_key(config_id, "hist:ready")
                pipe.eval(_RESTART_IF_NEW, 2, key, hist)
                pipe.rpush(key, *[f"{at:.3f}" for at in ready])
                pipe.ltrim(key, -RESULT_SAMPLES, -1)
                for bucket, count in Counter(histogram_bucket(at) for at in ready).items():
                    pipe.hincrby(hist, str(bucket), count)
            await pipe.execute()

    async def calls_and_ready(self, config_id: str) -> tuple[list[str], list[float]]:
        """The kept calls ("plugin|operation|code|seconds|at") and VM ready offsets."""
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
