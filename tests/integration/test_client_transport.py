"""How the clients carry calls: a Session stream by default, unary calls on
request or against a server without Session; an AsyncClient made outside any
event loop; and waits the server asks for, which are logged, bounded by the
deadline, and skipped by ``fail_fast`` clients."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

import dbgateway
from tests.integration.test_client_api import scripted  # noqa: F401 - a fixture


def test_a_server_without_session_is_served_by_unary_calls(scripted, caplog):  # noqa: F811
    service, address = scripted(failures=0)
    with caplog.at_level(logging.INFO, logger="dbgateway.client"):
        with dbgateway.Client(address, timeout=10) as db:
            assert db.transport == "session"
            db.query("SELECT 1")
            assert db.transport == "unary"
            db.execute("SELECT 1")

        async def run() -> str:
            async with dbgateway.AsyncClient(address, timeout=10) as adb:
                await adb.query("SELECT 1")
                return adb.transport

        assert asyncio.run(run()) == "unary"
    assert len(service.calls) == 3
    assert "has no Session RPC; using unary calls" in caplog.text


def test_transport_unary_makes_one_rpc_per_call(server):
    seen = len(server.log().splitlines())
    with dbgateway.Client(server.address, timeout=10, transport="unary") as db:
        assert db.query("SELECT 41 + 1 AS n", database="lite").scalar() == 42
    # The access line is written once the answer has gone out: wait for it.
    deadline = time.monotonic() + 10
    lines: list[str] = []
    while not lines and time.monotonic() < deadline:
        lines = [
            line
            for line in server.log().splitlines()[seen:]
            if "method=Query" in line and "database=lite" in line
        ]
        time.sleep(0.02)
    assert len(lines) == 1, lines
    assert "transport=unary" in lines[0]
    with pytest.raises(ValueError, match="transport must be one of session, unary"):
        dbgateway.Client(server.address, transport="http")


def test_a_wait_the_server_asks_for_is_logged(scripted, caplog):  # noqa: F811
    _, address = scripted(failures=4, retry_after=0.3)
    with (
        caplog.at_level(logging.WARNING, logger="dbgateway.client"),
        dbgateway.Client(address, timeout=10) as db,
    ):
        db.query("SELECT 1")
    (record,) = [r for r in caplog.records if r.name == "dbgateway.client"]
    assert "CIRCUIT_OPEN" in record.getMessage()
    assert "the server asked to retry in 0.3s" in record.getMessage()


def test_fail_fast_raises_at_once_instead_of_sleeping_out_retry_info(scripted):  # noqa: F811
    service, address = scripted(failures=10, retry_after=5.0)
    started = time.monotonic()
    with (
        dbgateway.Client(address, timeout=30, fail_fast=True) as db,
        pytest.raises(dbgateway.Unavailable) as info,
    ):
        db.execute("INSERT INTO t VALUES (1)")
    assert time.monotonic() - started < 1.0
    assert info.value.reason == "CIRCUIT_OPEN"
    assert info.value.retry_after == 5.0
    assert len(service.calls) == 1


def test_a_module_level_async_client_works_under_asyncio_run_twice(server):
    # Made outside any event loop, as a module-level client is.
    db = dbgateway.AsyncClient(server.address, timeout=10)

    async def use() -> int:
        return int((await db.query("SELECT 7 AS n", database="lite")).scalar())

    assert asyncio.run(use()) == 7
    assert asyncio.run(use()) == 7

    async def close() -> None:
        await db.close()

    asyncio.run(close())
