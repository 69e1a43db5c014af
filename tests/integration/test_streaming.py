"""StreamQuery: every row arrives, in order, in byte-bounded chunks, from a
server-side cursor; a cancelled stream stops its query and gives its
connection back."""

from __future__ import annotations

from urllib.parse import urlsplit

import grpc
import pytest

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc as pb_grpc
from tests.integration.conftest import SMALL_CHUNK, SMALL_POOL
from tests.integration.polling import waited_for
from tests.integration.rows import ENGINES, wide
from tests.support import call_error, mysql_fetch, pg_fetch

MiB = 1024 * 1024

#: (database, SQL producing 1..n in column ``n`` on the database server, n)
LARGE_RESULTS = [
    pytest.param(
        "pg", "SELECT g AS n FROM generate_series(1, 1000000) AS g", 1_000_000, id="postgresql"
    ),
    pytest.param(
        "mysql", "SELECT CAST(seq AS SIGNED) AS n FROM seq_1_to_200000", 200_000, id="mariadb"
    ),
    pytest.param(
        "lite",
        "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 100000) "
        "SELECT n FROM s",
        100_000,
        id="sqlite",
    ),
]

#: SQL that would produce far more rows than any test reads.
ENDLESS = {
    "pg": "SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 1000000) AS g",
    "mysql": "SELECT seq, repeat('x', 100) AS pad FROM seq_1_to_100000000",
    "lite": "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s) "
    "SELECT n, printf('%100s', 'x') AS pad FROM s",
}


# -- Every row, in order --------------------------------------------------------


@pytest.mark.parametrize(("database", "sql", "count"), LARGE_RESULTS)
def test_stream_delivers_every_row_in_order_after_the_columns(db, database, sql, count):
    messages = db.StreamQuery(pb.QueryRequest(database=database, sql=sql))
    first = next(messages)
    assert [c.name for c in first.columns] == ["n"]
    assert not first.rows
    assert not first.HasField("stats")

    expected = 1
    last = None
    for message in messages:
        if message.HasField("stats"):
            last = message
            break
        assert not message.columns
        assert message.rows, "a middle message carries rows"
        for row in message.rows:
            assert row.values[0].int_value == expected
            expected += 1
    assert expected - 1 == count
    assert last is not None, "the last message carries stats"
    assert last.stats.rows == count
    assert not last.truncated
    assert not last.rows
    assert list(messages) == [], "nothing follows the stats"


@pytest.mark.parametrize("database", ENGINES)
def test_stream_chunks_stay_under_the_byte_target(tight, database):
    messages = list(tight.StreamQuery(wide(database, 300, 2000)))
    chunks = messages[1:-1]
    assert sum(len(m.rows) for m in chunks) == 2000
    assert all(m.ByteSize() <= SMALL_CHUNK for m in chunks)
    # Bounded by bytes, not by a row count: each chunk but the last is nearly full.
    assert all(m.ByteSize() > SMALL_CHUNK - 400 for m in chunks[:-1])
    assert len(chunks) >= (2000 * 300) // SMALL_CHUNK


@pytest.mark.parametrize("database", ENGINES)
def test_stream_chunks_keep_the_default_target_of_about_1_mib(db, database):
    messages = list(db.StreamQuery(wide(database, 1000, 5000)))
    chunks = messages[1:-1]
    assert sum(len(m.rows) for m in chunks) == 5000
    assert all(0.9 * MiB < m.ByteSize() <= MiB for m in chunks[:-1])
    assert chunks[-1].ByteSize() <= MiB


@pytest.mark.parametrize("database", ENGINES)
def test_stream_row_larger_than_the_target_travels_alone(tight, database):
    messages = list(tight.StreamQuery(wide(database, 3 * SMALL_CHUNK, 3)))
    assert [len(m.rows) for m in messages[1:-1]] == [1, 1, 1]
    assert messages[-1].stats.rows == 3


@pytest.mark.parametrize("database", ENGINES)
def test_stream_max_rows_truncates_and_says_so_in_the_last_message(db, database):
    request = wide(database, 10, 500)
    request.options.max_rows = 123
    messages = list(db.StreamQuery(request))
    rows = [r for m in messages[1:-1] for r in m.rows]
    assert [r.values[0].int_value for r in rows] == list(range(1, 124))
    assert messages[-1].truncated
    assert messages[-1].stats.rows == 123


@pytest.mark.parametrize("database", ENGINES)
def test_stream_max_rows_equal_to_the_result_is_not_truncated(db, database):
    request = wide(database, 10, 50)
    request.options.max_rows = 50
    messages = list(db.StreamQuery(request))
    assert messages[-1].stats.rows == 50
    assert not messages[-1].truncated


@pytest.mark.parametrize("database", ENGINES)
def test_stream_of_an_empty_result_is_columns_then_stats(db, database):
    messages = list(db.StreamQuery(wide(database, 10, 0)))
    assert len(messages) == 2
    assert [c.name for c in messages[0].columns][-1] == "pad"
    assert messages[1].stats.rows == 0


@pytest.mark.parametrize("database", ENGINES)
def test_stream_sql_error_is_a_status_with_details(db, database):
    with pytest.raises(grpc.RpcError) as info:
        list(db.StreamQuery(pb.QueryRequest(database=database, sql="SELEC 1")))
    err = call_error(info.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason == "SQL_ERROR"
    assert err.metadata["database"] == database


def test_stream_refuses_statements_that_change_session_state(db):
    with pytest.raises(grpc.RpcError) as info:
        list(db.StreamQuery(pb.QueryRequest(database="pg", sql="SET search_path TO x")))
    assert call_error(info.value).reason == "UNSUPPORTED_STATEMENT"


def test_postgresql_stream_runs_in_a_read_only_transaction(db):
    with pytest.raises(grpc.RpcError) as info:
        list(
            db.StreamQuery(
                pb.QueryRequest(database="pg", sql="CREATE TABLE streamed_write (id int)")
            )
        )
    err = call_error(info.value)
    assert err.reason == "READ_ONLY"
    assert err.code == grpc.StatusCode.PERMISSION_DENIED


# -- Cancelling -------------------------------------------------------------------


def cancel_after_a_few_messages(stub: pb_grpc.DatabaseServiceStub, database: str) -> None:
    call = stub.StreamQuery(pb.QueryRequest(database=database, sql=ENDLESS[database]))
    for _ in range(3):
        assert next(call).ByteSize() > 0
    call.cancel()
    with pytest.raises(grpc.RpcError) as info:
        list(call)
    assert info.value.code() == grpc.StatusCode.CANCELLED


def pool_still_hands_out_connections(stub: pb_grpc.DatabaseServiceStub, database: str) -> None:
    """More cancels than the pool has connections, then a query: a leaked
    connection per cancel would leave this query waiting for POOL_EXHAUSTED."""
    for _ in range(SMALL_POOL + 1):
        cancel_after_a_few_messages(stub, database)
    reply = stub.Query(pb.QueryRequest(database=database, sql="SELECT 1 AS one"))
    assert reply.rows[0].values[0].int_value == 1


def test_cancelled_postgresql_stream_stops_its_query_and_returns_its_connection(
    tight, tight_databases
):
    postgres_dsn, _ = tight_databases
    name = urlsplit(postgres_dsn).path.lstrip("/")
    sessions = (
        "SELECT state, query FROM pg_stat_activity "
        f"WHERE datname = '{name}' AND application_name = 'dbgateway'"
    )
    cancel_after_a_few_messages(tight, "pg")

    def settled() -> bool:
        rows = pg_fetch(postgres_dsn, sessions)
        return all(r["state"] == "idle" for r in rows)

    waited_for(settled, "every gateway session of the test database is idle")
    rows = pg_fetch(postgres_dsn, sessions)
    assert not [r for r in rows if "generate_series" in r["query"] and r["state"] != "idle"]
    assert len(rows) <= SMALL_POOL
    pool_still_hands_out_connections(tight, "pg")
    waited_for(settled, "every gateway session is idle after repeated cancels")
    assert len(pg_fetch(postgres_dsn, sessions)) <= SMALL_POOL


def test_cancelled_mariadb_stream_kills_its_query_and_returns_its_connection(
    tight, tight_databases
):
    _, mysql_dsn = tight_databases
    name = urlsplit(mysql_dsn).path.lstrip("/")
    others = f"FROM information_schema.PROCESSLIST WHERE DB = '{name}' AND ID <> CONNECTION_ID()"
    cancel_after_a_few_messages(tight, "mysql")

    def settled() -> bool:
        return not mysql_fetch(mysql_dsn, f"SELECT ID {others} AND COMMAND <> 'Sleep'")

    waited_for(settled, "no statement of the test database is running")
    assert len(mysql_fetch(mysql_dsn, f"SELECT ID {others}")) <= SMALL_POOL
    pool_still_hands_out_connections(tight, "mysql")
    waited_for(settled, "no statement is running after repeated cancels")
    waited_for(
        lambda: len(mysql_fetch(mysql_dsn, f"SELECT ID {others}")) <= SMALL_POOL,
        "the gateway holds at most its pool's connections",
    )


def test_cancelled_sqlite_stream_returns_its_connection(tight):
    pool_still_hands_out_connections(tight, "lite")
    # A write still gets through: the cancelled reads hold nothing open.
    tight.Execute(pb.ExecuteRequest(database="lite", sql="CREATE TABLE IF NOT EXISTS t (x)"))
    tight.Execute(pb.ExecuteRequest(database="lite", sql="INSERT INTO t VALUES (1)"))


# -- Limits and deadlines ---------------------------------------------------------

SLOW = {
    "pg": "SELECT pg_sleep(30) AS slept",
    "mysql": "SELECT SLEEP(30) AS slept",
    "lite": "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s) "
    "SELECT count(*) AS slept FROM s",
}


@pytest.mark.parametrize("database", ENGINES)
def test_stream_row_too_large_for_a_message_fails_with_result_too_large(db, database):
    # 5 MB in one row: over gRPC's default 4 MiB message limit, which every
    # stream message stays under.
    messages = db.StreamQuery(wide(database, 5_000_000, 1))
    assert [c.name for c in next(messages).columns] == ["n", "pad"]
    with pytest.raises(grpc.RpcError) as info:
        list(messages)
    err = call_error(info.value)
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.reason == "RESULT_TOO_LARGE"
    assert db.Query(pb.QueryRequest(database=database, sql="SELECT 1 AS one")).rows


@pytest.mark.parametrize("database", ENGINES)
def test_stream_timeout_stops_a_slow_query(tight, database):
    request = pb.QueryRequest(database=database, sql=SLOW[database])
    request.options.timeout.FromMilliseconds(300)
    with pytest.raises(grpc.RpcError) as info:
        list(tight.StreamQuery(request))
    err = call_error(info.value)
    assert err.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert err.reason == "STATEMENT_TIMEOUT"
    for _ in range(SMALL_POOL + 1):
        reply = tight.Query(pb.QueryRequest(database=database, sql="SELECT 1 AS one"))
        assert reply.rows[0].values[0].int_value == 1
