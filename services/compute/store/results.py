"""The samples compute's results are built from (services/compute/results.py): the control plane's calls,
when VMs became ready, and during a churn the population and when its newborns became ready."""

from __future__ import annotations

from collections.abc import Sequence

from merak.v1 import common_pb2
from services.compute.store.keys import ConfigStore

# Samples kept per compute config for its results (calls, VM ready times): ~40 bytes each.
RESULT_SAMPLES = 2_000_000


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
        """Keep the control plane's calls (operation, code, seconds, at) and VM ready offsets."""
        if not calls and not ready:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            if calls:
                key = self.config_key(config_id, "calls")
                pipe.rpush(key, *[f"{plugin}|{op}|{code}|{sec:.6f}|{at:.3f}" for op, code, sec, at in calls])
                pipe.ltrim(key, -RESULT_SAMPLES, -1)
            if ready:
                key = self.config_key(config_id, "ready")
                pipe.rpush(key, *[f"{at:.3f}" for at in ready])
                pipe.ltrim(key, -RESULT_SAMPLES, -1)
            await pipe.execute()

    async def calls_and_ready(self, config_id: str) -> tuple[list[str], list[float]]:
        """The kept calls ("plugin|operation|code|seconds|at") and VM ready offsets."""
        calls = [str(c) for c in await self.redis.lrange(self.config_key(config_id, "calls"), 0, -1)]
        ready = [float(r) for r in await self.redis.lrange(self.config_key(config_id, "ready"), 0, -1)]
        return calls, ready

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
