"""The pool's hand-over logic, with a stand-in connection (no database needed)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from dbgateway.v1 import value_pb2
from dbgateway_server.backends.base import DriverConnection, ExecResult, ResultSet, TransactionMode
from dbgateway_server.config import PoolSettings
from dbgateway_server.pool import ConnectionPool


class StandInConnection(DriverConnection):
    """Just enough of a connection for the pool to hand it around."""

    async def query(
        self, sql: str, params: Sequence[value_pb2.Value], *, max_rows: int
    ) -> ResultSet:
        raise NotImplementedError

    async def execute(self, sql: str, params: Sequence[value_pb2.Value]) -> ExecResult:
        raise NotImplementedError

    async def execute_many(
        self, sql: str, param_sets: Sequence[Sequence[value_pb2.Value]]
    ) -> int | None:
        raise NotImplementedError

    async def begin(self, mode: TransactionMode) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...

    def in_transaction(self) -> bool:
        return False

    def is_closed(self) -> bool:
        return False

    async def ping(self, limit: float) -> None: ...

    async def close(self) -> None: ...

    def terminate(self) -> None: ...


async def test_a_connection_handed_to_a_waiter_is_held_by_that_waiter_alone():
    async def connect() -> DriverConnection:
        return StandInConnection()

    pool = ConnectionPool("t", connect, PoolSettings(min_size=0, max_size=1))
    holders: list[DriverConnection] = []
    overlap = False

    async def use() -> None:
        nonlocal overlap
        async with pool.connection(5) as conn:
            if conn in holders:
                overlap = True
            holders.append(conn)
            await asyncio.sleep(0.01)
            holders.remove(conn)

    await asyncio.gather(*(use() for _ in range(5)))
    assert not overlap
    assert pool.stats().size == 1
    assert pool.stats().idle == 1
    await pool.close()
