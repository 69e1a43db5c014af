"""The lean PostgreSQL path (backends/pg_wire.py), in process against a real
PostgreSQL, on both event loops the server may run (asyncio's and uvloop's,
whose transports the path borrows): a lone statement and the session reset
in one write, results identical to asyncpg's, no session state passed on,
errors as before, interrupted calls resynchronised, and no separate reset
round trip."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop

from dbgateway.v1 import value_pb2
from dbgateway_server.backends import postgres as postgres_backend
from dbgateway_server.backends.base import IsolationLevel, ResultLimits, TransactionMode
from dbgateway_server.backends.postgres import (
    RESET_STATEMENT_PREFIX,
    RESET_STATEMENTS,
    PostgresBackend,
    PostgresConnection,
)
from dbgateway_server.config import DatabaseConfig, Engine, PoolSettings
from dbgateway_server.errors import GatewayError
from dbgateway_server.pool import ConnectionPool
from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.postgres

V = value_pb2.Value
LIMITS = ResultLimits()


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Awaitable[Any]], Any]:
    def runner(coro: Awaitable[Any]) -> Any:
        if request.param == "uvloop":
            return uvloop.run(coro)  # type: ignore[arg-type]
        return asyncio.run(coro)  # type: ignore[arg-type]

    return runner


class Counting(PostgresConnection):
    """Counts the pool's separate resets."""

    resets = 0

    async def reset(self) -> None:
        Counting.resets += 1
        await super().reset()


def backend(dsn: str) -> PostgresBackend:
    return PostgresBackend(DatabaseConfig(name="pg", dsn=dsn, engine=Engine.POSTGRES))


async def connect(dsn: str) -> PostgresConnection:
    conn = await backend(dsn).connect()
    assert isinstance(conn, PostgresConnection)
    return conn


async def both_ways(conn: PostgresConnection, sql: str, params: list[value_pb2.Value]) -> Any:
    """The result through the lean path and through asyncpg's."""
    before = conn.lean_calls
    lean = await conn.query(sql, params, limits=LIMITS)
    assert conn.lean_calls == before + 1, "the lean path was not taken"
    assert conn.is_reset()
    conn._lean_ready = lambda: False  # type: ignore[method-assign]
    try:
        plain = await conn.query(sql, params, limits=LIMITS)
    finally:
        del conn._lean_ready
    await conn.reset()
    return lean, plain


EDGE_VALUES = [
    "SELECT v FROM (VALUES (0::int2), ('-32768'::int2), (32767::int2), (NULL)) AS t(v)",
    "SELECT v FROM (VALUES ('-2147483648'::int4), (2147483647::int4), (NULL)) AS t(v)",
    "SELECT v FROM (VALUES ('-9223372036854775808'::int8), (9223372036854775807::int8)) AS t(v)",
    "SELECT v FROM (VALUES ('NaN'::float4), ('Infinity'), ('-Infinity'), (1.17549435e-38),"
    " (3.4028235e38), (-0.0)) AS t(v)",
    "SELECT v FROM (VALUES ('NaN'::float8), ('Infinity'), ('-Infinity'), (5e-324),"
    " (1.7976931348623157e308), (0.1), (-0.0)) AS t(v)",
    "SELECT v FROM (VALUES (true), (false), (NULL::bool)) AS t(v)",
    "SELECT v FROM (VALUES (''::text), ('héllo wörld ☃ 𝄞'), (repeat('x', 100000))) AS t(v)",
    "SELECT 'ab'::bpchar(5), 'é'::varchar(3), 'pg_class'::name, 26::oid, 4294967295::oid",
    "SELECT v FROM (VALUES (''::bytea), ('\\x00ff10'::bytea), (NULL)) AS t(v)",
    "SELECT v FROM (VALUES (0::numeric), (1.500), ('NaN'), ('Infinity'), ('-Infinity'),"
    " (-0.000000000000000000001), (1e100), (123456789012345678901234567890.0987654321),"
    " (power(10::numeric, 1000) + 0.5)) AS t(v)",
    "SELECT v FROM (VALUES ('00000000-0000-0000-0000-000000000000'::uuid),"
    " ('ffffffff-ffff-ffff-ffff-ffffffffffff'), (NULL)) AS t(v)",
    "SELECT v FROM (VALUES ('infinity'::date), ('-infinity'), ('0001-01-01'), ('9999-12-30'),"
    " ('2000-01-01'), ('1999-12-31'), ('2024-02-29')) AS t(v)",
    "SELECT v FROM (VALUES ('infinity'::timestamp), ('-infinity'), ('0001-01-01 00:00:00'),"
    " ('9999-12-31 23:59:59.999998'), ('1999-12-31 23:59:59.999999'),"
    " ('2000-01-01 00:00:00.000001')) AS t(v)",
    "SELECT v FROM (VALUES ('infinity'::timestamptz), ('-infinity'),"
    " ('1969-07-20 20:17:40.5+00'), ('2038-01-19 03:14:08+05:30'),"
    " ('1999-12-31 23:59:59.999999+00')) AS t(v)",
    'SELECT \'{"a": [1, 2.50, "☃"]}\'::json, \'{"b": {"c": null}, "a": 1e3}\'::jsonb,'
    " 'null'::jsonb",
    "SELECT v FROM (VALUES ('1 year 2 mons 3 days 04:05:06.789'::interval),"
    " ('-178000000 years'), ('-1 day +1 microsecond'), ('0')) AS t(v)",
    # Many rows, and rows larger than one read from the socket.
    "SELECT g, repeat('y', g % 3000) FROM generate_series(1, 3000) AS g",
    "SELECT repeat('z', 5000000), 1::int4",
]


@pytest.mark.parametrize("sql", EDGE_VALUES)
def test_results_equal_asyncpgs(run, postgres_dsn, sql):
    async def body() -> None:
        conn = await connect(postgres_dsn)
        try:
            lean, plain = await both_ways(conn, sql, [])
            assert lean.columns == plain.columns
            assert lean.rows == plain.rows
            assert lean.rows
        finally:
            await conn.close()

    run(body())


def test_parameters_bind_as_asyncpg_binds_them(run, postgres_dsn):
    sql = (
        "SELECT $1::int2, $2::int4, $3::int8, $4::float4, $5::float8, $6::bool, $7::text,"
        " $8::varchar, $9::bytea, $10::numeric, $11::uuid, $12::date, $13::timestamp,"
        " $14::timestamptz, $15::json, $16::jsonb, $17::interval, $18::int4, $19::numeric,"
        " $20::date, $21::timestamp, $22::timestamptz, $23::numeric"
    )
    params = [
        V(int_value=-7),
        V(int_value=2**31 - 1),
        V(int_value=-(2**63)),
        V(double_value=1.1),
        V(double_value=float("nan")),
        V(bool_value=False),
        V(string_value="ünï ☃ 𝄞"),
        V(string_value=""),
        V(bytes_value=b"\x00\x01\xff"),
        V(decimal_value="-12345678901234567890.123450"),
        V(uuid_value=str(uuid.uuid4())),
        V(date_value="1999-12-31"),
        V(datetime_value="2000-01-01T00:00:00.000001"),
        V(timestamp_value={"seconds": -1, "nanos": 999999000}),
        V(json_value='{"k": [1, 2]}'),
        V(json_value='{"k": "☃"}'),
        V(interval_value={"months": -1, "days": 40, "microseconds": 1}),
        V(null_value="NULL_VALUE"),
        V(decimal_value="NaN"),
        V(date_value="infinity"),
        V(datetime_value="-infinity"),
        V(datetime_value="infinity"),
        V(decimal_value="1E-30"),
    ]

    async def body() -> None:
        conn = await connect(postgres_dsn)
        try:
            lean, plain = await both_ways(conn, sql, params)
            assert lean.rows == plain.rows
        finally:
            await conn.close()

    run(body())


@pytest.mark.parametrize(
    "sql", ["SELECT '10000-01-01'::date", "SELECT '200000-01-01 00:00'::timestamp"]
)
def test_a_value_python_cannot_hold_fails_as_with_asyncpg(run, postgres_dsn, sql):
    async def body() -> None:
        conn = await connect(postgres_dsn)
        try:
            failures = []
            for lean in (True, False):
                if not lean:
                    conn._lean_ready = lambda: False  # type: ignore[method-assign]
                with pytest.raises(Exception) as info:  # noqa: PT011 - whatever asyncpg raises
                    await conn.query(sql, [], limits=LIMITS)
                failures.append((type(info.value), str(info.value)))
            assert failures[0] == failures[1]
            assert conn.lean_calls == 1
            assert (await conn.query("SELECT 1", [], limits=LIMITS)).rows
        finally:
            await conn.close()

    run(body())


def test_a_value_the_lean_path_does_not_encode_goes_through_asyncpg(run, postgres_dsn):
    async def body() -> None:
        conn = await connect(postgres_dsn)
        try:
            # An int8 parameter given as a string: asyncpg's refusal, as before.
            with pytest.raises(GatewayError) as info:
                await conn.query("SELECT $1::int8", [V(string_value="12")], limits=LIMITS)
            assert info.value.reason.value == "INVALID_PARAMETER"
            assert conn.lean_calls == 0
            # A type outside the set: asyncpg runs it, the pool resets after it.
            result = await conn.query("SELECT '1.1.1.1'::inet", [], limits=LIMITS)
            assert result.rows
            assert conn.lean_calls == 0
            assert not conn.is_reset()
        finally:
            await conn.close()

    run(body())


def test_a_schema_change_under_a_cached_statement_is_retried_as_before(run, postgres_dsn):
    async def body() -> None:
        conn = await connect(postgres_dsn)
        raw = conn._conn
        try:
            await raw.execute("CREATE TABLE lean_s (a int4); INSERT INTO lean_s VALUES (1)")
            first = await conn.query("SELECT * FROM lean_s", [], limits=LIMITS)
            assert [c.name for c in first.columns] == ["a"]
            await raw.execute("ALTER TABLE lean_s ADD COLUMN b text DEFAULT 'x'")
            # PostgreSQL refuses the cached plan (its result type changed):
            # asyncpg's cache is dropped, the statement prepared again.
            again = await conn.query("SELECT * FROM lean_s", [], limits=LIMITS)
            assert [c.name for c in again.columns] == ["a", "b"]
            assert again.rows[0].values[1].string_value == "x"
            assert conn.lean_calls == 3
            assert conn.is_reset()
        finally:
            await raw.execute("DROP TABLE IF EXISTS lean_s")
            await conn.close()

    run(body())


def test_statements_asyncpg_evicts_from_its_cache_are_prepared_again(run, postgres_dsn):
    """A repeated statement runs from the description the connection kept,
    without asyncpg's prepare; once asyncpg's cache evicted (and closed) that
    statement, the next call prepares it again instead of binding a name
    PostgreSQL no longer has."""

    async def body() -> None:
        conn = await connect(postgres_dsn)
        raw = conn._conn
        raw._stmt_cache.set_max_size(2)
        try:
            sqls = [f"SELECT $1::int4 + {k}" for k in range(3)]
            for rounds in range(4):
                for k, sql in enumerate(sqls):
                    result = await conn.query(sql, [V(int_value=rounds)], limits=LIMITS)
                    assert result.rows[0].values[0].int_value == rounds + k
            assert conn.lean_calls == 12
            assert conn.is_reset()
            # Only what asyncpg still has prepared is named on the server
            # (beside the reset's own statements).
            rows = await raw.fetch("SELECT name FROM pg_prepared_statements")
            names = {r["name"] for r in rows if not r["name"].startswith(RESET_STATEMENT_PREFIX)}
            assert len(names) <= 3
        finally:
            await conn.close()

    run(body())


def test_the_parameter_count_is_checked_on_a_repeated_statement_too(run, postgres_dsn):
    async def body() -> None:
        conn = await connect(postgres_dsn)
        try:
            sql = "SELECT $1::int4"
            assert (await conn.query(sql, [V(int_value=1)], limits=LIMITS)).rows
            with pytest.raises(GatewayError) as caught:
                await conn.query(sql, [V(int_value=1), V(int_value=2)], limits=LIMITS)
            assert "takes 1 parameter(s), 2 given" in str(caught.value)
            assert (await conn.query(sql, [V(int_value=3)], limits=LIMITS)).rows[0].values[
                0
            ].int_value == 3
        finally:
            await conn.close()

    run(body())


def test_a_connection_whose_reset_cannot_be_prepared_is_closed_and_the_error_raised(
    run, postgres_dsn, monkeypatch
):
    """Opening a connection fails with the server's error when the reset's
    statements cannot be prepared on it, and the link it opened is closed
    rather than left to the garbage collector."""
    opened: list[Any] = []
    real_open = PostgresBackend._open

    async def recording_open(self: PostgresBackend, application_name: str) -> Any:
        conn = await real_open(self, application_name)
        opened.append(conn)
        return conn

    monkeypatch.setattr(PostgresBackend, "_open", recording_open)
    monkeypatch.setattr(
        postgres_backend, "RESET_STATEMENTS", (*RESET_STATEMENTS[:-1], "SELECT no_such_fn()")
    )

    async def body() -> None:
        with pytest.raises(GatewayError) as raised:
            await backend(postgres_dsn).connect()
        assert "no_such_fn" in raised.value.message
        assert len(opened) == 1
        assert opened[0].is_closed()

    run(body())


def test_a_reset_prepare_cut_off_closes_its_connection(run, postgres_dsn):
    """Preparing the reset's statements is one exchange on asyncpg's socket;
    a caller cancelled in the middle of it leaves a link whose answers nobody
    will read, so the connection is closed (the pool then replaces it)
    rather than handed to the next caller mid-protocol."""

    async def body() -> None:
        with FaultProxy("127.0.0.1", 5432) as proxy:
            conn = await connect(proxy.dsn(postgres_dsn))
            try:
                proxy.latency(0.3)
                preparing = asyncio.ensure_future(conn.prepare_reset())
                await asyncio.sleep(0.1)  # written, its answer not back yet
                preparing.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await preparing
                assert conn.is_closed()
            finally:
                await conn.close()

    run(body())


def test_the_reset_runs_its_prepared_statements_and_recovers_when_a_caller_drops_them(
    run, postgres_dsn
):
    """The reset behind a statement runs statements prepared on the
    connection. A caller that deallocates one gets the pool's own reset
    after its call (its session state is still gone for the next caller),
    and the next call prepares the reset's statements again."""

    async def body() -> None:
        conn = await connect(postgres_dsn)
        raw = conn._conn

        async def ours() -> list[str]:
            rows = await raw.fetch("SELECT name FROM pg_prepared_statements ORDER BY name")
            return [r["name"] for r in rows if r["name"].startswith(RESET_STATEMENT_PREFIX)]

        async def pooled(sql: str) -> Any:
            # As the pool does after every call: its own reset unless fresh.
            result = await conn.execute(sql, [])
            if not conn.is_reset():
                await conn.reset()
            return result

        try:
            prepared = await ours()
            assert len(prepared) == 6
            await pooled("SELECT set_config('search_path', 'nowhere', false)")
            assert conn.is_reset()
            await pooled("SELECT set_config('TimeZone', 'Asia/Tokyo', false)")
            await pooled(f"DEALLOCATE {prepared[2]}")
            assert prepared[2] not in await ours()
            setting = await conn.query(
                "SELECT current_setting('search_path'), current_setting('TimeZone')",
                [],
                limits=LIMITS,
            )
            assert conn.is_reset()
            path, zone = (v.string_value for v in setting.rows[0].values)
            assert path != "nowhere"
            assert zone != "Asia/Tokyo"
            again = await ours()
            assert len(again) >= 6
            assert set(again) - set(prepared)  # prepared again, under new names
            assert conn.lean_calls == 4
        finally:
            await conn.close()

    run(body())


def test_a_new_connection_is_idle_and_its_first_transaction_may_set_its_isolation(
    run, postgres_dsn
):
    """Preparing the reset's statements leaves no transaction open on a new
    connection (asyncpg's prepare ends with Flush: the implicit transaction
    of its Parse, and its snapshot, would last until the next Sync)."""

    async def body() -> None:
        conn = await connect(postgres_dsn)
        other = await connect(postgres_dsn)
        try:
            pid = conn._conn.get_server_pid()
            state = await other._conn.fetchval(
                "SELECT state FROM pg_stat_activity WHERE pid = $1", pid
            )
            assert state == "idle"
            await conn.begin(TransactionMode(isolation=IsolationLevel.SERIALIZABLE))
            isolation = await conn._conn.fetchval("SELECT current_setting('transaction_isolation')")
            assert isolation == "serializable"
            await conn.rollback()
        finally:
            await conn.close()
            await other.close()

    run(body())


def test_row_limits_hold(run, postgres_dsn):
    async def body() -> None:
        conn = await connect(postgres_dsn)
        try:
            limits = ResultLimits(max_rows=3)
            result = await conn.query("SELECT generate_series(1, 10)", [], limits=limits)
            assert [r.values[0].int_value for r in result.rows] == [1, 2, 3]
            assert result.truncated
            assert conn.lean_calls == 1
            assert conn.is_reset()
        finally:
            await conn.close()

    run(body())


def test_session_state_of_a_lean_call_does_not_outlive_it(run, postgres_dsn):
    async def body() -> None:
        conn = await connect(postgres_dsn)
        raw = conn._conn
        try:
            zone = await raw.fetchval("SHOW TimeZone")
            # A clean reset's answer is learned, then taken unparsed: one
            # that differs (ParameterStatus of undone settings) is parsed.
            for _ in range(2):
                await conn.query("SELECT 1", [], limits=LIMITS)
            assert conn._reset_answer is not None
            await conn.query(
                "SELECT set_config('TimeZone', 'Asia/Tokyo', false),"
                " set_config('search_path', 'nowhere', false),"
                " pg_try_advisory_lock(4242)",
                [],
                limits=LIMITS,
            )
            await conn.execute("CREATE TEMP TABLE lean_temp AS SELECT 1 AS a", [])
            await conn.execute("SELECT 1 FROM (SELECT set_config('work_mem', '77MB', false)) s", [])
            assert conn.lean_calls == 5
            assert conn.is_reset()
            assert not raw.is_in_transaction()
            # asyncpg saw the ParameterStatus messages: its record is the server's.
            assert raw._protocol.get_settings().TimeZone == zone
            assert await raw.fetchval("SHOW TimeZone") == zone
            assert await raw.fetchval("SHOW work_mem") != "77MB"
            assert await raw.fetchval("SHOW search_path") != "nowhere"
            locks = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1"
            assert await raw.fetchval(locks, raw.get_server_pid()) == 0
            assert await raw.fetchval("SELECT to_regclass('lean_temp')::text") is None
        finally:
            await conn.close()

    run(body())


def test_an_error_is_reported_as_before_and_the_connection_is_clean(run, postgres_dsn):
    async def body() -> None:
        conn = await connect(postgres_dsn)
        raw = conn._conn
        try:
            await raw.execute("CREATE TABLE lean_u (id int4 PRIMARY KEY)")
            errors = []
            for lean in (True, False):
                if not lean:
                    conn._lean_ready = lambda: False  # type: ignore[method-assign]
                for sql in (
                    "SELECT 1 / $1::int4",
                    "INSERT INTO lean_u VALUES ($1::int4), ($1::int4) RETURNING id",
                ):
                    with pytest.raises(GatewayError) as info:
                        await conn.query(sql, [V(int_value=0)], limits=LIMITS)
                    e = info.value
                    errors.append((e.reason, e.message, e.metadata))
                    if lean:
                        assert conn.is_reset()
            del conn._lean_ready
            assert errors[:2] == errors[2:]
            assert conn.lean_calls == 2
            assert not raw.is_in_transaction()
            assert await raw.fetchval("SELECT count(*) FROM lean_u") == 0
        finally:
            await raw.execute("DROP TABLE IF EXISTS lean_u")
            await conn.close()

    run(body())


def test_a_timed_out_lean_call_is_cancelled_and_the_connection_resynchronised(run, postgres_dsn):
    async def body() -> None:
        conn = await connect(postgres_dsn)
        raw = conn._conn
        marker = uuid.uuid4().hex
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await conn.query(
                        f"SELECT 1 FROM pg_sleep(30) WHERE '{marker}' <> ''", [], limits=LIMITS
                    )
            assert conn.lean_calls == 1
            assert not conn.is_reset()
            # The pool resets an interrupted connection: it waits for the cancel.
            async with asyncio.timeout(5):
                await conn.reset()
            assert not conn.is_closed()
            result = await conn.query("SELECT 2", [], limits=LIMITS)
            assert result.rows[0].values[0].int_value == 2
            assert await raw.fetchval("SELECT 3") == 3
            other = await connect(postgres_dsn)
            try:
                running = await other._conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                    f" AND query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
                )
            finally:
                await other.close()
            assert running == 0
        finally:
            await conn.close()

    run(body())


def test_lone_calls_through_the_pool_need_no_separate_reset(run, postgres_dsn):
    async def body() -> None:
        async def open_counting() -> Counting:
            conn = await connect(postgres_dsn)
            counted = Counting(conn._conn, "pg")
            return counted

        pool = ConnectionPool("pg", open_counting, PoolSettings(min_size=1, max_size=1))
        await pool.start()
        Counting.resets = 0
        try:
            for i in range(20):
                async with pool.connection(5) as conn:
                    result = await conn.query("SELECT $1::int8", [V(int_value=i)], limits=LIMITS)
                    assert result.rows[0].values[0].int_value == i
            await pool.settled()
            assert Counting.resets == 0
            # A statement asyncpg runs still gets the pool's reset.
            async with pool.connection(5) as conn:
                await conn.query("SELECT '1.1.1.1'::inet", [], limits=LIMITS)
            await pool.settled()
            assert Counting.resets == 1
            assert pool.stats().created_total == 1
        finally:
            await pool.close()

    run(body())
