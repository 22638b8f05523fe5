"""A client retries UNAVAILABLE (a service or its Redis restarting) within its deadline, and only that."""

from __future__ import annotations

import grpc
import pytest

from merak.grpcclient import retry_unavailable


def _error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), code.name, "")


class Flaky:
    """Fails with `codes` in turn, then answers "ok"; records the time left it was given."""

    def __init__(self, *codes: grpc.StatusCode) -> None:
        self.codes = list(codes)
        self.lefts: list[float] = []

    async def __call__(self, left: float) -> str:
        self.lefts.append(left)
        if self.codes:
            raise _error(self.codes.pop(0))
        return "ok"


async def test_unavailable_is_tried_again_with_less_time_left() -> None:
    call = Flaky(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE)
    seen: list[float] = []
    answer = await retry_unavailable(
        call, timeout=10, first_wait=0.01, on_retry=lambda _e, wait: seen.append(wait)
    )
    assert answer == "ok"
    assert seen == [0.01, 0.02]
    assert len(call.lefts) == 3 and call.lefts[0] > call.lefts[1] > call.lefts[2]


async def test_other_codes_are_not_retried() -> None:
    call = Flaky(grpc.StatusCode.INVALID_ARGUMENT)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await retry_unavailable(call, timeout=10, first_wait=0.01)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and len(call.lefts) == 1


async def test_it_gives_up_when_the_deadline_would_pass() -> None:
    call = Flaky(*[grpc.StatusCode.UNAVAILABLE] * 100)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await retry_unavailable(call, timeout=0.2, first_wait=0.05, longest_wait=0.05)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert 2 <= len(call.lefts) <= 5
