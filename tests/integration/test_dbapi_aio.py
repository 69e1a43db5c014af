"""``dbgateway.dbapi.aio`` against a real gateway: the same transaction rules
as the sync driver over the asyncio client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from dbgateway import dbapi
from dbgateway.dbapi import aio
from tests.integration.transactions_support import open_transactions
from tests.support import ServerProcess, unique_name

TABLE = unique_name("aio")


@pytest.fixture
async def table(server: ServerProcess) -> AsyncIterator[str]:
    conn = await aio.connect(server.address, database="pg", autocommit=True)
    cur = conn.cursor()
    await cur.execute(f"CREATE TABLE {TABLE} (id SERIAL PRIMARY KEY, body TEXT UNIQUE)")
    yield TABLE
    await cur.execute(f"DROP TABLE {TABLE}")
    await conn.close()


async def _bodies(server: ServerProcess) -> list[str]:
    conn = await aio.connect(server.address, database="pg", autocommit=True)
    try:
        cur = conn.cursor()
        await cur.execute(f"SELECT body FROM {TABLE} ORDER BY body")
        return [row[0] for row in await cur.fetchall()]
    finally:
        await conn.close()


async def test_commit_rollback_and_close(server: ServerProcess, table: str) -> None:
    conn = await aio.connect(server.address, database="pg")
    cur = conn.cursor()
    await cur.execute(f"INSERT INTO {table} (body) VALUES ($1)", ["kept"])
    assert conn.in_transaction
    assert await _bodies(server) == []
    await conn.commit()
    await cur.execute(f"INSERT INTO {table} (body) VALUES ($1)", ["rolled back"])
    await conn.rollback()
    await cur.execute(f"INSERT INTO {table} (body) VALUES ($1)", ["closed"])
    await conn.close()
    assert await _bodies(server) == ["kept"]


async def test_errors_keep_the_transaction_usable_after_a_savepoint(
    server: ServerProcess, table: str
) -> None:
    conn = await aio.connect(server.address, database="pg")
    cur = conn.cursor()
    await cur.execute(f"INSERT INTO {table} (body) VALUES ($1)", ["a"])
    await cur.execute("SAVEPOINT s")
    with pytest.raises(dbapi.IntegrityError) as caught:
        await cur.execute(f"INSERT INTO {table} (body) VALUES ($1)", ["a"])
    assert caught.value.sqlstate == "23505"
    await cur.execute("ROLLBACK TO SAVEPOINT s")
    await cur.execute(f"INSERT INTO {table} (body) VALUES ($1)", ["b"])
    await conn.commit()
    await conn.close()
    assert await _bodies(server) == ["a", "b"]


async def test_stream_cursor_and_executemany(server: ServerProcess, table: str) -> None:
    conn = await aio.connect(server.address, database="pg", autocommit=True)
    cur = conn.cursor()
    await cur.executemany(f"INSERT INTO {table} (body) VALUES ($1)", [[str(i)] for i in range(5)])
    streamed = conn.cursor(stream=True)
    await streamed.execute(f"SELECT body FROM {table} ORDER BY body")
    assert await streamed.fetchmany(2) == [("0",), ("1",)]
    assert [row async for row in streamed] == [("2",), ("3",), ("4",)]
    await conn.close()


async def test_a_dropped_connection_rolls_back_on_its_event_loop(
    server: ServerProcess, table: str, postgres_dsn: str
) -> None:
    conn = await aio.connect(server.address, database="pg")
    await conn.cursor().execute(f"INSERT INTO {table} (body) VALUES ($1)", ["dropped"])
    # (pg_fetch runs its own event loop: in a thread.)
    assert await asyncio.to_thread(open_transactions, "pg", postgres_dsn) == 1
    conn.drop()
    for _ in range(100):
        if await asyncio.to_thread(open_transactions, "pg", postgres_dsn) == 0:
            break
        await asyncio.sleep(0.1)
    assert await asyncio.to_thread(open_transactions, "pg", postgres_dsn) == 0
    assert await _bodies(server) == []
    await conn.client.close()
