"""call.Timeout: asyncio.timeout's behaviour on one shared loop timer (no database)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from dbgateway_server.call import Timeout, _timers


async def case_a_block_past_its_deadline_is_cancelled_then_and_raises_timeout_error():
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        async with Timeout(0.05) as timeout:
            await asyncio.sleep(10)
    assert timeout.expired()
    assert 0.04 <= loop.time() - started < 1.0
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def case_a_block_that_finishes_in_time_is_left_alone_and_forgotten():
    async with Timeout(5) as timeout:
        await asyncio.sleep(0)
    assert not timeout.expired()
    assert not _timers(asyncio.get_running_loop())._live
    async with Timeout(None):  # no limit
        await asyncio.sleep(0.01)


async def case_many_blocks_each_end_at_their_own_deadline_whatever_the_order_they_began():
    loop = asyncio.get_running_loop()
    started = loop.time()
    ended: dict[float, float] = {}

    async def block(delay: float) -> None:
        try:
            async with Timeout(delay):
                await asyncio.sleep(10)
        except TimeoutError:
            ended[delay] = loop.time() - started

    # The later ones first: each sooner deadline moves the one loop timer.
    delays = [0.3, 0.2, 0.05, 0.15, 0.1, 0.25]
    await asyncio.gather(*(block(d) for d in delays))
    assert sorted(ended) == sorted(delays)
    for delay, after in ended.items():
        assert delay - 0.01 <= after < delay + 0.5
    assert sorted(delays, key=ended.__getitem__) == sorted(delays)
    assert not _timers(loop)._live


async def case_a_deadline_already_passed_cancels_at_the_next_await():
    with pytest.raises(TimeoutError):
        async with Timeout(-1):
            await asyncio.sleep(1)


async def case_a_cancel_from_elsewhere_stays_a_cancel_and_the_deadline_does_not_follow_it():
    async def victim() -> None:
        async with Timeout(0.2):
            await asyncio.sleep(10)

    task = asyncio.get_running_loop().create_task(victim())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not _timers(asyncio.get_running_loop())._live


async def case_nested_blocks_the_outer_deadline_is_the_outer_blocks_timeout():
    seen: dict[str, bool] = {}

    async def nested() -> None:
        async with Timeout(0.05) as outer:
            try:
                async with Timeout(5) as inner:
                    await asyncio.sleep(10)
            finally:
                # The inner block saw the outer one's cancel pass through it.
                seen.update(outer=outer.expired(), inner=inner.expired())

    with pytest.raises(TimeoutError):
        await nested()
    assert seen == {"outer": True, "inner": False}


async def case_an_outer_asyncio_timeout_and_an_inner_one_due_together_surface_once():
    async def both() -> None:
        async with asyncio.timeout(0.05), Timeout(0.05):
            await asyncio.sleep(10)

    with pytest.raises(TimeoutError):
        await both()
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


CASES = {name: case for name, case in dict(globals()).items() if name.startswith("case_")}


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
@pytest.mark.parametrize("case", list(CASES))
def test_shared_timeouts(case: str, run: Callable[[Coroutine[Any, Any, None]], None]) -> None:
    """Each case on both loops: the server runs on uvloop, whose timers count
    in milliseconds."""
    run(CASES[case]())
