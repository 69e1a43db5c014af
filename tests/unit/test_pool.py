"""The engine-neutral pool's rules, against fake driver connections (pure logic)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from dbgateway_server.backends.base import DriverConnection
from dbgateway_server.config import PoolSettings
from dbgateway_server.errors import GatewayError, Reason
from dbgateway_server.pool import ConnectionPool


class FakeConnection(DriverConnection):
    def __init__(self, number: int) -> None:
        self.number = number
        self.closed = False
        self.transaction = False
        self.rollback_fails = False
        self.ping_fails = False
        self.pings = 0
        self.rollbacks = 0

    async def query(self, sql, params, *, max_rows):  # pragma: no cover - unused
        raise NotImplementedError

    async def execute(self, sql, params):  # pragma: no cover - unused
        raise NotImplementedError

    async def execute_many(self, sql, param_sets):  # pragma: no cover - unused
        raise NotImplementedError

    def stream(self, sql, params):  # pragma: no cover - unused
        raise NotImplementedError

    async def begin(self, mode) -> None:
        self.transaction = True

    async def commit(self) -> None:
        self.transaction = False

    async def rollback(self) -> None:
        self.rollbacks += 1
        if self.rollback_fails:
            raise GatewayError(Reason.DATABASE_UNAVAILABLE, "gone")
        self.transaction = False

    def in_transaction(self) -> bool:
        return self.transaction

    def is_closed(self) -> bool:
        return self.closed

    async def ping(self, limit: float) -> None:
        self.pings += 1
        if self.ping_fails:
            raise GatewayError(Reason.DATABASE_UNAVAILABLE, "dead")

    async def close(self) -> None:
        self.closed = True

    def terminate(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_pool(
    clock: Clock | None = None, **settings
) -> tuple[ConnectionPool, list[FakeConnection]]:
    opened: list[FakeConnection] = []

    async def connect() -> FakeConnection:
        conn = FakeConnection(len(opened) + 1)
        opened.append(conn)
        return conn

    defaults = {"min_size": 0, "max_size": 2, "acquire_timeout": 1.0}
    defaults.update(settings)
    pool = ConnectionPool("t", connect, PoolSettings(**defaults), clock=clock or Clock())
    return pool, opened


async def test_connections_open_lazily_up_to_max_size_and_are_reused():
    pool, opened = make_pool(max_size=2)
    async with pool.connection(1) as a, pool.connection(1) as b:
        assert a is not b
        assert pool.stats().in_use == 2
    assert len(opened) == 2
    async with pool.connection(1) as c:
        assert c in opened
    await pool.settled()
    stats = pool.stats()
    assert (stats.size, stats.idle, stats.in_use, stats.created_total, stats.acquired_total) == (
        2,
        2,
        0,
        2,
        3,
    )


async def test_a_waiter_gets_the_next_released_connection():
    pool, opened = make_pool(max_size=1)
    got = []

    async def second() -> None:
        async with pool.connection(1) as conn:
            got.append(conn)

    async with pool.connection(1) as first:
        task = asyncio.create_task(second())
        await asyncio.sleep(0.01)
        assert pool.stats().waiting == 1
    await task
    assert got == [first]
    assert len(opened) == 1


async def test_waiting_past_the_budget_is_pool_exhausted():
    pool, _ = make_pool(max_size=1)
    async with pool.connection(1):
        with pytest.raises(GatewayError) as info:
            async with pool.connection(0.05):
                pass
    assert info.value.reason is Reason.POOL_EXHAUSTED
    assert info.value.retry_after is not None
    assert pool.stats().acquire_timeouts_total == 1
    assert pool.stats().waiting == 0


async def test_more_than_max_waiting_callers_are_refused_at_once():
    pool, _ = make_pool(max_size=1, max_waiting=1)
    async with pool.connection(1):
        waiter = asyncio.create_task(pool.connection(5).__aenter__())
        await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(GatewayError) as info:
            async with pool.connection(5):
                pass
        assert loop.time() - started < 1
        assert info.value.reason is Reason.POOL_EXHAUSTED
        waiter.cancel()


async def test_a_connection_left_in_a_transaction_is_rolled_back_before_reuse():
    pool, opened = make_pool(max_size=1)
    async with pool.connection(1) as conn:
        await conn.begin(None)
    await pool.settled()
    assert opened[0].rollbacks == 1
    assert not opened[0].in_transaction()
    async with pool.connection(1) as again:
        assert again is opened[0]


async def test_a_connection_that_cannot_be_rolled_back_is_discarded():
    pool, opened = make_pool(max_size=1)
    async with pool.connection(1) as conn:
        await conn.begin(None)
        conn.rollback_fails = True
    await pool.settled()
    assert opened[0].closed
    async with pool.connection(1) as fresh:
        assert fresh is opened[1]
    assert pool.stats().closed_total == 1


async def test_an_infrastructure_failure_discards_the_connection():
    pool, opened = make_pool()
    with pytest.raises(GatewayError):
        async with pool.connection(1):
            raise GatewayError(Reason.DATABASE_UNAVAILABLE, "connection lost")
    await pool.settled()
    assert opened[0].closed
    with pytest.raises(GatewayError):
        async with pool.connection(1):
            raise GatewayError(Reason.SQL_ERROR, "syntax")
    await pool.settled()
    assert not opened[1].closed  # a SQL error leaves the connection usable
    assert pool.stats().idle == 1


async def test_an_interrupted_connection_is_kept_only_when_the_driver_can_settle_it():
    pool, opened = make_pool()
    with pytest.raises(TimeoutError):
        async with pool.connection(1):
            raise TimeoutError
    await pool.settled()
    assert not opened[0].closed
    FakeConnection.reusable_after_interrupt = False
    try:
        with pytest.raises(TimeoutError):
            async with pool.connection(1):
                raise TimeoutError
        await pool.settled()
        assert opened[0].closed
    finally:
        FakeConnection.reusable_after_interrupt = True


async def test_dead_and_old_idle_connections_are_replaced_before_use():
    clock = Clock()
    pool, opened = make_pool(clock, max_size=1, max_lifetime=60, validate_after_idle=10)
    async with pool.connection(1):
        pass
    opened[0].closed = True  # died while idle
    async with pool.connection(1) as conn:
        assert conn is opened[1]
    clock.now += 61  # past max_lifetime
    async with pool.connection(1) as conn:
        assert conn is opened[2]


async def test_a_connection_idle_past_the_threshold_is_validated_first():
    clock = Clock()
    pool, opened = make_pool(clock, max_size=1, validate_after_idle=10)
    async with pool.connection(1):
        pass
    await pool.settled()
    clock.now += 5
    async with pool.connection(1):
        pass
    await pool.settled()
    assert opened[0].pings == 0  # recently used: no extra round trip
    clock.now += 11
    opened[0].ping_fails = True
    async with pool.connection(1) as conn:
        assert conn is opened[1]
    await pool.settled()
    assert opened[0].pings == 1
    assert opened[0].closed


async def test_min_size_connections_are_opened_at_start():
    pool, opened = make_pool(min_size=2, max_size=4)
    await pool.start()
    try:
        assert len(opened) == 2
        assert pool.stats().idle == 2
    finally:
        await pool.close()
    assert all(c.closed for c in opened)


async def test_closing_fails_waiters_with_unavailable():
    pool, _ = make_pool(max_size=1)
    async with pool.connection(1):
        waiter = asyncio.create_task(pool.connection(5).__aenter__())
        await asyncio.sleep(0.01)
        await pool.close(grace=0.1)
        with pytest.raises(GatewayError) as info:
            await waiter
    assert info.value.reason is Reason.DATABASE_UNAVAILABLE


async def test_a_failed_connect_frees_its_slot():
    attempts = []

    async def connect():
        attempts.append(1)
        raise GatewayError(Reason.DATABASE_UNAVAILABLE, "refused")

    pool = ConnectionPool("t", connect, PoolSettings(min_size=0, max_size=1))
    for _ in range(3):
        with pytest.raises(GatewayError):
            async with pool.connection(1):
                pass
    assert len(attempts) == 3
    assert pool.stats().size == 0


async def test_no_connection_is_ever_handed_to_two_callers_at_once():
    pool, opened = make_pool(max_size=3, acquire_timeout=5)
    in_use: set[int] = set()
    overlaps = []

    async def caller(i: int) -> None:
        async with pool.connection(5) as conn:
            if conn.number in in_use:
                overlaps.append(conn.number)
            in_use.add(conn.number)
            await asyncio.sleep(0.001 * (i % 3))
            in_use.discard(conn.number)

    await asyncio.gather(*(caller(i) for i in range(300)))
    assert overlaps == []
    assert len(opened) == 3
    stats = pool.stats()
    assert (stats.idle, stats.in_use, stats.waiting, stats.size) == (3, 0, 0, 3)


async def test_a_waiter_that_gives_up_passes_a_late_connection_on():
    pool, opened = make_pool(max_size=1)
    async with pool.connection(1):
        impatient = asyncio.create_task(pool.connection(5).__aenter__())
        await asyncio.sleep(0.01)
        impatient.cancel()
        with pytest.raises(asyncio.CancelledError):
            await impatient
    await pool.settled()
    assert pool.stats().idle == 1
    async with pool.connection(0.1) as conn:
        assert conn is opened[0]


async def test_pool_errors_are_marked_not_sent():
    pool, _ = make_pool(max_size=1, max_waiting=0)
    async with pool.connection(1):
        with pytest.raises(GatewayError) as info:
            async with pool.connection(1):
                pass
    assert info.value.reason is Reason.POOL_EXHAUSTED
    assert not info.value.sent  # nothing reached the database: safe to retry anything


async def test_opening_a_connection_never_outlasts_the_wait():
    async def slow_connect() -> DriverConnection:
        await asyncio.sleep(5)
        raise AssertionError("unreachable")

    pool = ConnectionPool("t", slow_connect, PoolSettings(min_size=0))

    async def use() -> None:
        async with pool.connection(0.1):
            pass

    with pytest.raises(GatewayError) as info:
        await asyncio.wait_for(use(), 2)
    assert info.value.reason is Reason.STATEMENT_TIMEOUT
    assert not info.value.sent
    assert pool.stats().size == 0


async def test_every_release_resets_the_connection_and_a_failed_reset_discards_it(caplog):
    caplog.set_level(logging.INFO, logger="dbgateway_server.pool")
    pool, opened = make_pool(max_size=1)
    resets: list[int] = []

    async def reset() -> None:
        resets.append(1)
        if len(resets) == 2:
            raise GatewayError(Reason.DATABASE_UNAVAILABLE, "gone mid-reset")

    async with pool.connection(1) as conn:
        conn.reset = reset  # type: ignore[method-assign]
    await pool.settled()
    assert resets == [1]
    assert pool.stats().idle == 1
    async with pool.connection(1) as again:
        assert again is opened[0]
    await pool.settled()
    assert opened[0].closed
    assert "discarded a connection: its reset failed (gone mid-reset)" in caplog.text


async def test_a_caller_is_answered_before_its_connection_is_reset_and_no_one_gets_it_half_reset():
    pool, opened = make_pool(max_size=1)
    resetting = asyncio.Event()
    finish = asyncio.Event()

    async def slow_reset() -> None:
        resetting.set()
        await finish.wait()

    async with pool.connection(1) as conn:
        conn.reset = slow_reset  # type: ignore[method-assign]
    # The block is over (the caller can answer) while the reset runs.
    await resetting.wait()
    assert pool.stats().in_use == 1  # not handed out half reset
    nxt = asyncio.create_task(pool.connection(5).__aenter__())
    await asyncio.sleep(0.01)
    assert not nxt.done()  # the next caller waits for the reset
    finish.set()
    assert await nxt is opened[0]


async def test_a_call_right_after_another_waits_for_its_connection_reset_instead_of_opening_one():
    pool, opened = make_pool(max_size=4)
    for _ in range(5):
        async with pool.connection(1):
            pass  # no settled(): the next checkout comes while the reset runs
    await pool.settled()
    assert len(opened) == 1
    assert pool.stats().created_total == 1


async def test_a_connection_its_engine_already_reset_goes_back_without_another_reset():
    pool, opened = make_pool(max_size=1)
    resets: list[int] = []

    async def reset() -> None:
        resets.append(1)

    async with pool.connection(1) as conn:
        conn.reset = reset  # type: ignore[method-assign]
        conn.is_reset = lambda: True  # type: ignore[method-assign]  # reset behind its statement
    # Back at once, in the caller's own release: idle before any task could run.
    assert pool.stats().idle == 1
    async with pool.connection(1) as again:
        assert again is opened[0]
        again.is_reset = lambda: False  # type: ignore[method-assign]  # this call left state
    await pool.settled()
    assert resets == [1]
    assert pool.stats().idle == 1


async def test_an_already_reset_connection_is_still_discarded_when_its_call_broke_it():
    pool, opened = make_pool(max_size=1)
    checkout = pool.connection(1)
    conn = await checkout.__aenter__()
    conn.is_reset = lambda: True  # type: ignore[method-assign]
    lost = GatewayError(Reason.DATABASE_UNAVAILABLE, "lost mid-call")
    await checkout.__aexit__(GatewayError, lost, None)
    await pool.settled()
    assert opened[0].closed
    assert pool.stats().size == 0
