"""The dbgateway dialects in SQLAlchemy Core: values round-trip exactly as
SQLAlchemy's native driver for the engine returns them, isolation levels
become transaction options (never a session SET), stream_results / yield_per
read through StreamQuery, and pandas reads and writes through them."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import create_async_engine

from dbgateway import dbapi
from tests.integration.sqlalchemy_support import ENGINES, gateway_url, native_url
from tests.support import ServerProcess, unique_name

SUFFIX = unique_name("core")


def _values_table(metadata: sa.MetaData, engine: str) -> sa.Table:
    columns = [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("amount", sa.Numeric(20, 6)),
        sa.Column("ratio", sa.Float),
        sa.Column("at", sa.DateTime(timezone=True)),
        sa.Column("naive", sa.DateTime),
        sa.Column("day", sa.Date),
        sa.Column("doc", sa.JSON),
        sa.Column("key", sa.Uuid),
        sa.Column("blob", sa.LargeBinary),
        sa.Column("text", sa.String(40)),
        sa.Column("flag", sa.Boolean),
    ]
    if engine == "postgresql":
        columns.append(sa.Column("tags", postgresql.ARRAY(sa.Integer)))
    return sa.Table(f"{SUFFIX}_values", metadata, *columns)


ROW: dict[str, Any] = {
    "id": 1,
    "amount": decimal.Decimal("12345678901234.123456"),
    "ratio": 0.1,
    "at": dt.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=dt.UTC),
    "naive": dt.datetime(2024, 2, 29, 12, 30, 15, 654321),
    "day": dt.date(1999, 12, 31),
    "doc": {"a": [1, 2.5, None, "é"], "b": {"c": True}},
    "key": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "blob": bytes(range(256)),
    "text": "snow ☃ and ünïcode",
    "flag": True,
}


@pytest.fixture(scope="module", params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def engine(server: ServerProcess, engine_name: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(gateway_url(server, engine_name))
    yield eng
    eng.dispose()


async def _read_native(url: str, table: sa.Table) -> sa.Row[Any]:
    if url.startswith("postgresql"):
        eng = create_async_engine(url)
        try:
            async with eng.connect() as conn:
                return (await conn.execute(sa.select(table))).one()
        finally:
            await eng.dispose()
    native = sa.create_engine(url)
    try:
        with native.connect() as conn:
            return conn.execute(sa.select(table)).one()
    finally:
        native.dispose()


async def test_values_round_trip_as_the_native_driver_returns_them(
    engine: sa.Engine, server: ServerProcess, postgres_dsn: str, mysql_dsn: str
) -> None:
    name = engine.dialect.name
    metadata = sa.MetaData()
    table = _values_table(metadata, name)
    row = dict(ROW, **({"tags": [3, 1, 2]} if name == "postgresql" else {}))
    metadata.create_all(engine)
    try:
        with engine.begin() as conn:
            conn.execute(table.insert(), row)
        with engine.connect() as conn:
            through_gateway = conn.execute(sa.select(table)).one()
        native = await _read_native(native_url(server, name, postgres_dsn, mysql_dsn), table)
        assert through_gateway._asdict() == native._asdict()
        # SQLite keeps NUMERIC as REAL: pysqlite reads it back rounded too.
        exact = {"amount"} if name != "sqlite" else set()
        exact |= {"naive", "day", "doc", "key", "blob", "text", "flag", "ratio", "tags"}
        if name != "mysql":  # MySQL DATETIME keeps no fractional seconds
            assert through_gateway.naive == row["naive"]
        if name == "postgresql":
            assert through_gateway.at == row["at"]  # an instant, with its time zone
        for column in exact - {"naive"}:
            if column in row:
                assert getattr(through_gateway, column) == row[column], column
    finally:
        metadata.drop_all(engine)


def test_isolation_levels_become_transaction_options(engine: sa.Engine) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite has one isolation level (SERIALIZABLE) and AUTOCOMMIT")
    query = {
        "postgresql": "SHOW transaction_isolation",
        "mysql": "SELECT @@tx_isolation",
    }[engine.dialect.name]
    seen = {}
    for level in ("READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"):
        with engine.connect().execution_options(isolation_level=level) as conn:
            assert conn.get_isolation_level() == level
            if engine.dialect.name == "postgresql":
                seen[level] = conn.exec_driver_sql(query).scalar()
    if engine.dialect.name == "postgresql":
        assert seen == {
            "READ COMMITTED": "read committed",
            "REPEATABLE READ": "repeatable read",
            "SERIALIZABLE": "serializable",
        }
    # The pooled connection went back with no session setting left behind.
    with engine.connect() as conn:
        assert conn.get_isolation_level() == engine.dialect.default_isolation_level


def test_mysql_isolation_level_reaches_innodb(server: ServerProcess) -> None:
    eng = sa.create_engine(gateway_url(server, "mysql"), isolation_level="SERIALIZABLE")
    table = unique_name("iso")
    try:
        with eng.begin() as conn:
            conn.exec_driver_sql(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
        with eng.connect() as conn:
            # SERIALIZABLE turns plain reads into locking reads: the
            # transaction holds a lock on what it read.
            conn.exec_driver_sql(f"SELECT * FROM {table}").all()
            locks = conn.exec_driver_sql(
                "SELECT count(*) FROM information_schema.innodb_trx "
                "WHERE trx_mysql_thread_id = CONNECTION_ID() AND trx_lock_structs > 0"
            ).scalar()
            assert locks == 1
    finally:
        with eng.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        eng.dispose()


def test_autocommit_runs_each_statement_alone(engine: sa.Engine) -> None:
    table = unique_name("auto")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)")
        try:
            conn.exec_driver_sql(f"INSERT INTO {table} (id) VALUES (1)")
            conn.rollback()  # nothing to roll back: the INSERT committed on its own
            assert conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar() == 1
        finally:
            conn.exec_driver_sql(f"DROP TABLE {table}")


def test_session_statements_sqlalchemy_sends_on_connect_never_reach_the_gateway(
    engine: sa.Engine, server: ServerProcess
) -> None:
    fresh = sa.create_engine(engine.url, pool_pre_ping=True)
    before = server.log().count("UNSUPPORTED_STATEMENT")
    with fresh.connect() as conn:
        assert conn.scalar(sa.text("SELECT 1")) == 1
        assert fresh.dialect.server_version_info
    fresh.dispose()
    assert server.log().count("UNSUPPORTED_STATEMENT") == before


def _streamed(server: ServerProcess) -> int:
    """StreamQuery calls in the gateway's access log."""
    return sum(
        "dbgateway.access:" in line and "method=StreamQuery" in line
        for line in server.log().splitlines()
    )


@pytest.mark.parametrize("how", ["stream_results", "yield_per"])
def test_streaming_reads_go_through_stream_query(
    engine: sa.Engine, server: ServerProcess, how: str
) -> None:
    # 10,000 rows from a cross join of digits: the same statement on every engine.
    numbers = (
        "WITH d(v) AS (SELECT 0 UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 "
        "UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 "
        "UNION ALL SELECT 8 UNION ALL SELECT 9) "
        "SELECT a.v * 1000 + b.v * 100 + c.v * 10 + e.v + 1 AS x FROM d a, d b, d c, d e"
    )
    before = _streamed(server)
    with engine.connect() as conn:
        if how == "stream_results":
            result = conn.execution_options(stream_results=True).exec_driver_sql(numbers)
        else:
            result = conn.execution_options(yield_per=500).exec_driver_sql(numbers)
        total = sum(row.x for row in result)
    assert total == sum(range(1, 10001))
    assert _streamed(server) == before + 1


async def test_async_engine_streams_and_commits(server: ServerProcess, engine_name: str) -> None:
    eng = create_async_engine(gateway_url(server, engine_name, asyncio=True))
    table = unique_name("async")
    try:
        async with eng.begin() as conn:
            await conn.exec_driver_sql(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)")
            await conn.execute(
                sa.text(f"INSERT INTO {table} (id) VALUES (:id)"), [{"id": i} for i in range(50)]
            )
        async with eng.connect() as conn:
            result = await conn.stream(sa.text(f"SELECT id FROM {table} ORDER BY id"))
            assert [row.id async for row in result] == list(range(50))
    finally:
        async with eng.begin() as conn:
            await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        await eng.dispose()


def test_pandas_to_sql_and_read_sql(engine: sa.Engine) -> None:
    table = unique_name("frame")
    frame = pd.DataFrame(
        {
            "name": ["ada", "brian", "grace"],
            "score": [1.5, 2.25, 3.0],
            "count": [1, 2, 3],
        }
    )
    try:
        written = frame.to_sql(table, engine, index=False)
        assert written in (3, -1, None)
        back = pd.read_sql(f"SELECT name, score, count FROM {table} ORDER BY name", engine)
        pd.testing.assert_frame_equal(back, frame, check_dtype=False)
        chunks = list(
            pd.read_sql(sa.text(f"SELECT name FROM {table} ORDER BY name"), engine, chunksize=2)
        )
        assert [len(c) for c in chunks] == [2, 1]
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")


def test_url_options_and_bad_urls(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(dbapi.InterfaceError, match="unknown URL option"):
        sa.create_engine(f"postgresql+dbgateway://{server.address}/pg?colour=blue").connect()
    monkeypatch.setenv("DBGATEWAY_TOKEN", "ignored-without-auth")
    eng = sa.create_engine(f"postgresql+dbgateway://{server.address}/pg?timeout=5")
    with eng.connect() as conn:
        assert conn.scalar(sa.text("SELECT 1")) == 1
    eng.dispose()
    unknown = sa.create_engine(f"postgresql+dbgateway://{server.address}/nope")
    with pytest.raises(sa.exc.ProgrammingError) as caught:
        unknown.connect().exec_driver_sql("SELECT 1")
    assert isinstance(caught.value.orig, dbapi.ProgrammingError)
    assert caught.value.orig.reason == "UNKNOWN_DATABASE"
    unknown.dispose()
