"""Pool bookkeeping with fake connections (no database)."""

from __future__ import annotations

import asyncio

import pytest

from dbgateway_server.backends.base import DriverConnection
from dbgateway_server.config import PoolSettings
from dbgateway_server.errors import GatewayError, Reason
from dbgateway_server.pool import ConnectionPool


class FakeConnection(DriverConnection):
    def __init__(self) -> None:
        self.closed = False
        self.alive = True

    async def query(self, sql, params, *, max_rows):  # pragma: no cover - unused
        raise NotImplementedError

    async def execute(self, sql, params):  # pragma: no cover - unused
        raise NotImplementedError

    async def begin(self, mode):  # pragma: no cover - unused
        raise NotImplementedError

    async def commit(self):  # pragma: no cover - unused
        raise NotImplementedError

    async def rollback(self):  # pragma: no cover - unused
        raise NotImplementedError

    def in_transaction(self):
        return False

    def is_closed(self):
        return self.closed

    async def ping(self, limit):
        if not self.alive:
            raise GatewayError(Reason.DATABASE_UNAVAILABLE, "gone")

    async def close(self):
        self.closed = True

    def terminate(self):
        self.closed = True


def pool(**settings) -> tuple[ConnectionPool, list[FakeConnection]]:
    opened: list[FakeConnection] = []

    async def connect() -> DriverConnection:
        conn = FakeConnection()
        opened.append(conn)
        return conn

    return ConnectionPool("t", connect, PoolSettings(**settings)), opened


async def test_a_connection_handed_to_a_waiter_belongs_to_that_waiter_alone():
    p, _ = pool(min_size=0, max_size=1)
    holders: list[DriverConnection] = []
    release_first = asyncio.Event()

    async def user(hold: asyncio.Event | None) -> None:
        async with p.connection(5) as conn:
            assert conn not in holders, "connection handed to two callers at once"
            holders.append(conn)
            if hold is not None:
                await hold.wait()
            await asyncio.sleep(0.01)
            holders.remove(conn)

    first = asyncio.create_task(user(release_first))
    await asyncio.sleep(0.01)
    others = [asyncio.create_task(user(None)) for _ in range(3)]
    await asyncio.sleep(0.01)
    release_first.set()
    await asyncio.gather(first, *others)
    assert p.stats().in_use == 0
    assert p.stats().idle == 1


async def test_a_dead_idle_connection_is_replaced_before_use():
    p, opened = pool(min_size=1, max_size=2)
    await p.start()
    opened[0].closed = True
    async with p.connection(1) as conn:
        assert conn is opened[1]
    assert p.stats().dead_on_checkout_total == 1
    await p.close()


async def test_a_connection_failing_validation_is_replaced_before_use():
    p, opened = pool(min_size=1, max_size=2, validate_after_idle=0.001)
    await p.start()
    opened[0].alive = False
    await asyncio.sleep(0.01)
    async with p.connection(1) as conn:
        assert conn is opened[1]
    assert p.stats().dead_on_checkout_total == 1
    await p.close()


async def test_pool_errors_are_marked_not_sent():
    p, _ = pool(min_size=0, max_size=1, max_waiting=0)
    async with p.connection(1):
        with pytest.raises(GatewayError) as info:
            async with p.connection(1):
                pass
    assert info.value.reason is Reason.POOL_EXHAUSTED
    assert not info.value.sent


async def test_opening_a_connection_never_outlasts_the_wait():
    async def slow_connect() -> DriverConnection:
        await asyncio.sleep(5)
        raise AssertionError("unreachable")

    p = ConnectionPool("t", slow_connect, PoolSettings(min_size=0))

    async def use() -> None:
        async with p.connection(0.1):
            pass

    with pytest.raises(GatewayError) as info:
        await asyncio.wait_for(use(), 2)
    assert info.value.reason is Reason.STATEMENT_TIMEOUT
    assert not info.value.sent
    assert p.stats().size == 0
