"""Clean connections: a connection reaches a caller only in the state a fresh
one has, whatever the caller before it did, said, or was cut off doing.

Real PostgreSQL, MariaDB and SQLite behind a real server with a pool of one
connection per database, so every call reuses the connection the previous
call had: each state-changing trick is either refused, or invisible to the
next caller (its observable session equals a fresh connection's)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc as pb_grpc
from tests.integration.polling import eventually
from tests.support import (
    ServerProcess,
    call_error,
    create_mysql_database,
    create_postgres_database,
    drop_mysql_database,
    drop_postgres_database,
    mysql_fetch,
    pg_fetch,
    unique_name,
)

TOKENS = {"writer": "hygiene-writer-token", "reader": "hygiene-reader-token"}
ENGINES = ("pg", "mysql", "lite")
#: How long a silent stream may hold its connection on the test server.
IDLE = 2.0


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer(name: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {TOKENS[name]}")]


def principal(name: str, right: str, extra: str = "") -> str:
    dbs = ", ".join(f'{db} = "{right}"' for db in ENGINES)
    return (
        f'[[principals]]\nname = "{name}"\ntoken_sha256 = "{sha(TOKENS[name])}"\n'
        f"databases = {{ {dbs} }}\n{extra}\n"
    )


@pytest.fixture(scope="module")
def dsns() -> Iterator[tuple[str, str]]:
    postgres, mysql = create_postgres_database(), create_mysql_database()
    yield postgres, mysql
    drop_postgres_database(postgres)
    drop_mysql_database(mysql)


def databases(postgres: str, mysql: str, lite: Path, pool: str) -> str:
    return "".join(
        f'[databases.{name}]\ndsn = "{dsn}"\npool = {{ {pool} }}\n\n'
        for name, dsn in (("pg", postgres), ("mysql", mysql), ("lite", f"sqlite://{lite}"))
    )


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, dsns: tuple[str, str]
) -> Iterator[ServerProcess]:
    """One connection per database, a writer and a reader, short stream bounds."""
    workdir = tmp_path_factory.mktemp("hygiene")
    config = (
        f"[server]\nstream_idle_timeout = {IDLE}\n\n"
        + databases(*dsns, workdir / "lite.sqlite3", "min_size = 1, max_size = 1")
        + principal("writer", "write")
        + principal("reader", "read")
    )
    proc = ServerProcess(workdir, config=config).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def db(server: ServerProcess) -> Iterator[pb_grpc.DatabaseServiceStub]:
    with server.channel() as channel:
        yield pb_grpc.DatabaseServiceStub(channel)


def query(db, engine: str, sql: str, who: str = "writer", **kwargs) -> pb.QueryResponse:
    return db.Query(pb.QueryRequest(database=engine, sql=sql, **kwargs), metadata=bearer(who))


def execute(db, engine: str, sql: str, who: str = "writer") -> pb.ExecuteResponse:
    return db.Execute(pb.ExecuteRequest(database=engine, sql=sql), metadata=bearer(who))


def text(value) -> str:
    kind = value.WhichOneof("kind")
    return "NULL" if kind == "null_value" else str(getattr(value, kind))


def rows(response) -> list[tuple[str, ...]]:
    return [tuple(text(v) for v in row.values) for row in response.rows]


def attempt(call, *args, **kwargs) -> str:
    """What a call came to: "ok", or its code and reason."""
    try:
        result = call(*args, **kwargs)
        if hasattr(result, "__next__"):
            list(result)
    except grpc.RpcError as exc:
        error = call_error(exc)
        return f"{error.code.name}/{error.reason}"
    return "ok"


def in_transaction(
    db, engine: str, statements: list[str], who: str = "writer", *, commit: bool = True
) -> list[str]:
    """Runs statements in a Transaction stream and commits (or rolls back);
    each statement's outcome ("ok" or its in-band error message)."""
    requests = [pb.TransactionRequest(begin=pb.TransactionRequest.Begin(database=engine))]
    requests += [
        pb.TransactionRequest(statement=pb.Statement(sql=sql, options=pb.RequestOptions()))
        for sql in statements
    ]
    if commit:
        requests.append(pb.TransactionRequest(commit=pb.TransactionRequest.Commit()))
    else:
        requests.append(pb.TransactionRequest(rollback=pb.TransactionRequest.Rollback()))
    outcomes = []
    for response in db.Transaction(iter(requests), metadata=bearer(who)):
        if response.HasField("result"):
            error = response.result.error
            outcomes.append(error.message if error.code else "ok")
    return outcomes


# -- The observable session ------------------------------------------------------

_PG_SESSION = (
    "SELECT 'setting ' || name || '=' || setting FROM pg_settings "
    "WHERE source NOT IN ('default', 'override') AND name <> 'transaction_read_only' "
    "UNION ALL SELECT 'advisory locks ' || count(*) FROM pg_locks "
    "  WHERE pid = pg_backend_pid() AND locktype = 'advisory' "
    "UNION ALL SELECT 'temp objects ' || count(*) FROM pg_class "
    "  WHERE relnamespace = pg_my_temp_schema() "
    "UNION ALL SELECT 'cursors ' || count(*) FROM pg_cursors WHERE name <> '' "
    "UNION ALL SELECT 'listening ' || count(*) FROM pg_listening_channels() "
    "UNION ALL SELECT 'user ' || current_user || '/' || session_user "
    "UNION ALL SELECT 'search_path ' || current_setting('search_path') "
    "UNION ALL SELECT 'read only ' || current_setting('default_transaction_read_only') "
    "UNION ALL SELECT 'statement_timeout ' || current_setting('statement_timeout') "
    "ORDER BY 1"
)
#: Session variables that differ from call to call or connection to connection.
_MYSQL_VOLATILE = (
    "'TIMESTAMP', 'PSEUDO_THREAD_ID', 'LAST_INSERT_ID', 'IDENTITY', 'INSERT_ID', "
    "'RAND_SEED1', 'RAND_SEED2', 'WARNING_COUNT', 'ERROR_COUNT', 'LAST_GTID', 'GTID_SEQ_NO', "
    "'SERVER_ID', 'THREAD_POOL_PRIORITY', 'IN_TRANSACTION'"
)
_MYSQL_SESSION = (
    "SELECT CONCAT(VARIABLE_NAME, '=', IFNULL(VARIABLE_VALUE, 'NULL')) "
    "FROM information_schema.SESSION_VARIABLES "
    f"WHERE VARIABLE_NAME NOT IN ({_MYSQL_VOLATILE}) "
    "UNION ALL SELECT CONCAT('user variables ', IFNULL(@dbgw_a, '-'), IFNULL(@dbgw_b, '-')) "
    "UNION ALL SELECT CONCAT('named lock ', IFNULL(IS_USED_LOCK('dbgw_lock'), 'free')) "
    "UNION ALL SELECT CONCAT('autocommit ', @@autocommit) "
    "ORDER BY 1"
)
_SQLITE_PRAGMAS = (
    "foreign_keys",
    "query_only",
    "recursive_triggers",
    "defer_foreign_keys",
    "cache_size",
    "temp_store",
    "synchronous",
    "busy_timeout",
    "automatic_index",
    "reverse_unordered_selects",
    "ignore_check_constraints",
    "legacy_alter_table",
    "trusted_schema",
    "cell_size_check",
    "journal_mode",
)
_SQLITE_SESSION = (
    " UNION ALL ".join(f"SELECT '{p} ' || (SELECT * FROM pragma_{p})" for p in _SQLITE_PRAGMAS)
    + " UNION ALL SELECT 'temp objects ' || count(*) FROM temp.sqlite_schema"
    + " UNION ALL SELECT 'databases ' || count(*) FROM pragma_database_list"
)
SESSION = {"pg": _PG_SESSION, "mysql": _MYSQL_SESSION, "lite": _SQLITE_SESSION}
#: Probes for temporary tables by name (absent in a fresh session).
TEMP_PROBES = {
    "pg": ["dbgw_t1", "dbgw_t2", "dbgw_t3"],
    "mysql": ["dbgw_tmp", "dbgw_tmp2"],
    "lite": ["dbgw_t1", "dbgw_t2"],
}


def session(db, engine: str) -> list[tuple[str, ...]]:
    observed = rows(query(db, engine, SESSION[engine]))
    for name in TEMP_PROBES[engine]:
        observed.append((name, attempt(query, db, engine, f"SELECT * FROM {name}")))
    return observed


@pytest.fixture(scope="module")
def fresh(db) -> dict[str, list[tuple[str, ...]]]:
    return {engine: session(db, engine) for engine in ENGINES}


# -- The tricks ----------------------------------------------------------------

#: (engine, how, sql): how is "query", "execute" or "transaction" (a
#: Transaction stream that runs it and commits).
TRICKS = [
    ("pg", "query", "SELECT set_config('search_path', 'pg_catalog', false)"),
    ("pg", "query", "SELECT set_config('statement_timeout', '5ms', false)"),
    ("pg", "query", "SELECT set_config('default_transaction_read_only', 'on', false)"),
    ("pg", "query", "SELECT set_config('application_name', 'stolen', false)"),
    ("pg", "query", "SET search_path = pg_catalog"),
    ("pg", "query", "/* a comment */ SET statement_timeout = 5"),
    ("pg", "query", "/* /* */ SELECT 1 */ SET statement_timeout = 5"),
    ("pg", "query", "SELECT 1; SET statement_timeout = 5"),
    ("pg", "query", "SELECT pg_advisory_lock(42)"),
    ("pg", "query", "LISTEN dbgw"),
    ("pg", "query", "(((LISTEN dbgw)))"),
    ("pg", "execute", "SELECT 1 AS x INTO TEMP dbgw_t1"),
    ("pg", "execute", "CREATE TABLE pg_temp.dbgw_t2 (x int)"),
    ("pg", "execute", "BEGIN"),
    ("pg", "transaction", "CREATE TEMP TABLE dbgw_t3 (x int)"),
    ("pg", "transaction", "DECLARE dbgw_c CURSOR WITH HOLD FOR SELECT 1"),
    ("pg", "transaction", "SELECT set_config('search_path', 'pg_catalog', false)"),
    ("pg", "transaction", "SELECT pg_advisory_lock(43)"),
    ("pg", "transaction", "SET LOCAL statement_timeout = 5"),
    ("mysql", "query", "SET SESSION sql_mode = ''"),
    ("mysql", "query", "/*!SET autocommit=0*/"),
    ("mysql", "query", "/*!50000 SET autocommit=0*/"),
    ("mysql", "query", "/*M!100000 SET SESSION sql_mode = ''*/"),
    ("mysql", "query", "#x\nSET autocommit=0"),
    ("mysql", "query", "SELECT 1; SET autocommit=0"),
    ("mysql", "query", "SELECT GET_LOCK('dbgw_lock', 0)"),
    ("mysql", "query", "SELECT @dbgw_a := 1"),
    ("mysql", "query", "SELECT 1 INTO @dbgw_b"),
    ("mysql", "query", "SET @dbgw_a = 1"),
    ("mysql", "execute", "CREATE TEMPORARY TABLE dbgw_tmp (x int)"),
    ("mysql", "execute", "/*!CREATE TEMPORARY TABLE dbgw_tmp (x int)*/"),
    ("mysql", "transaction", "CREATE TEMPORARY TABLE dbgw_tmp2 (x int)"),
    ("mysql", "transaction", "SET LOCAL sql_mode = ''"),
    ("mysql", "transaction", "SELECT GET_LOCK('dbgw_lock', 0)"),
    ("lite", "query", "PRAGMA foreign_keys = OFF"),
    ("lite", "query", "PRAGMA foreign_keys(0)"),
    ("lite", "query", "PRAGMA main.recursive_triggers = 1"),
    ("lite", "query", "PRAGMA query_only(1)"),
    ("lite", "query", "/* x */ PRAGMA cache_size(5)"),
    ("lite", "query", "SELECT 1; PRAGMA foreign_keys = 0"),
    ("lite", "query", "ATTACH ':memory:' AS dbgw"),
    ("lite", "execute", "CREATE TABLE temp.dbgw_t1 (x)"),
    ("lite", "transaction", "CREATE TEMP TABLE dbgw_t2 (x)"),
    ("lite", "transaction", "PRAGMA defer_foreign_keys(1)"),
    ("lite", "transaction", "PRAGMA defer_foreign_keys/**/(1)"),
    ("lite", "query", "PRAGMA foreign_keys/**/= 0"),
]


@pytest.mark.parametrize(("engine", "how", "sql"), TRICKS, ids=[f"{e}:{s}" for e, _, s in TRICKS])
def test_a_state_changing_trick_is_refused_or_unseen_by_the_next_caller(
    db, fresh, engine: str, how: str, sql: str
):
    if how == "query":
        outcome = attempt(query, db, engine, sql)
    elif how == "execute":
        outcome = attempt(execute, db, engine, sql)
    else:
        outcome = ",".join(in_transaction(db, engine, [sql]))
    # Refused calls say so with a clear error, never an internal one.
    assert "INTERNAL" not in outcome, outcome
    assert "UNKNOWN" not in outcome, outcome
    assert session(db, engine) == fresh[engine], f"{sql!r} ({outcome}) reached the next caller"


def test_the_guard_refuses_hidden_session_statements_with_a_clear_error(db):
    for engine, sql in [
        ("mysql", "/*!SET autocommit=0*/"),
        ("mysql", "#x\nSET autocommit=0"),
        ("pg", "/* /* */ SELECT 1 */ SET statement_timeout = 5"),
        ("lite", "PRAGMA foreign_keys(0)"),
    ]:
        with pytest.raises(grpc.RpcError) as raised:
            query(db, engine, sql)
        error = call_error(raised.value)
        assert error.code is grpc.StatusCode.FAILED_PRECONDITION, (sql, error)
        assert error.reason == "UNSUPPORTED_STATEMENT"


def test_one_statement_per_call_is_enforced_by_the_driver(db):
    execute(db, "mysql", "CREATE TABLE IF NOT EXISTS dbgw_victim (x int)")
    with pytest.raises(grpc.RpcError) as raised:
        query(db, "mysql", "SELECT 1; DROP TABLE dbgw_victim")
    assert call_error(raised.value).code is grpc.StatusCode.INVALID_ARGUMENT
    assert rows(query(db, "mysql", "SELECT COUNT(*) FROM dbgw_victim")) == [("0",)]


def test_sqlite_itself_refuses_a_pragma_with_a_value_and_says_which(db):
    # Inside a transaction the guard lets PRAGMA through: SQLite's authorizer decides.
    # A comment the guard does not look through; SQLite's authorizer is not fooled.
    outcomes = in_transaction(
        db, "lite", ["PRAGMA defer_foreign_keys/**/(1)", "PRAGMA foreign_keys"]
    )
    assert outcomes[0].startswith("PRAGMA defer_foreign_keys with a value is refused"), outcomes
    assert outcomes[1] == "ok"
    # Reading a PRAGMA, or a PRAGMA that only reads, stays allowed.
    assert rows(query(db, "lite", "PRAGMA foreign_keys")) == [("1",)]
    assert attempt(query, db, "lite", "PRAGMA table_info(sqlite_schema)") == "ok"


# -- Read principals -------------------------------------------------------------

#: Forms a read principal might try to write with; the INSERT after each must fail too.
READER_TRICKS = {
    "pg": [
        "INSERT INTO dbgw_guarded VALUES (1)",
        "WITH x AS (INSERT INTO dbgw_guarded VALUES (2) RETURNING 1) SELECT * FROM x",
        "SELECT 1; COMMIT; INSERT INTO dbgw_guarded VALUES (3)",
        "/* x */ COMMIT",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "SELECT set_config('transaction_read_only', 'off', true)",
    ],
    "mysql": [
        "INSERT INTO dbgw_guarded VALUES (1)",
        "SELECT 1; COMMIT; INSERT INTO dbgw_guarded VALUES (2)",
        "/*!COMMIT*/",
        "#x\nCOMMIT",
        "/*!SET autocommit=0*/",
        "SELECT 1 /*!; COMMIT*/",
    ],
    "lite": [
        "INSERT INTO dbgw_guarded VALUES (1)",
        "PRAGMA query_only(0)",
        "PRAGMA query_only = 0",
        "/* x */ PRAGMA query_only(false)",
        "PRAGMA query_only/**/(0)",
        "SELECT 1; INSERT INTO dbgw_guarded VALUES (2)",
    ],
}


@pytest.mark.parametrize("engine", ENGINES)
def test_a_read_principal_cannot_write_by_any_form(db, dsns, engine: str):
    execute(db, engine, "DROP TABLE IF EXISTS dbgw_guarded")
    execute(db, engine, "CREATE TABLE dbgw_guarded (x int)")
    insert = "INSERT INTO dbgw_guarded VALUES (9)"
    for sql in READER_TRICKS[engine]:
        attempt(query, db, engine, sql, who="reader")
        assert attempt(query, db, engine, insert, who="reader") != "ok", sql
        # In a Transaction stream of its own, the same forms, then the write.
        attempt(in_transaction, db, engine, [sql, insert], who="reader")
        # And the writer after it is neither read-only nor rolled back.
        execute(db, engine, "INSERT INTO dbgw_guarded VALUES (100)")
    count = rows(query(db, engine, "SELECT COUNT(*) FROM dbgw_guarded WHERE x < 100"))
    assert count == [("0",)]
    writes = rows(query(db, engine, "SELECT COUNT(*) FROM dbgw_guarded WHERE x = 100"))
    assert writes == [(str(len(READER_TRICKS[engine])),)]
    if engine == "mysql":
        # Every acknowledged write of the writer is stored, as seen from outside.
        stored = mysql_fetch(dsns[1], "SELECT COUNT(*) FROM dbgw_guarded WHERE x = 100")
        assert stored[0][0] == len(READER_TRICKS[engine])
    if engine == "pg":
        stored = pg_fetch(dsns[0], "SELECT COUNT(*) FROM dbgw_guarded WHERE x = 100")
        assert stored[0][0] == len(READER_TRICKS[engine])


def test_a_readers_set_autocommit_cannot_roll_back_the_writers_inserts(db, dsns):
    execute(db, "mysql", "DROP TABLE IF EXISTS dbgw_acked")
    execute(db, "mysql", "CREATE TABLE dbgw_acked (x int)")
    attempt(query, db, "mysql", "/*!SET autocommit=0*/", who="reader")
    for i in range(3):
        assert execute(db, "mysql", f"INSERT INTO dbgw_acked VALUES ({i})").rows_affected == 1
    assert mysql_fetch(dsns[1], "SELECT COUNT(*) FROM dbgw_acked")[0][0] == 3


# -- Cut-off calls -------------------------------------------------------------


def short(ms: float) -> float:
    return ms / 1000


def test_streamqueries_cancelled_during_begin_leave_the_connection_usable(racing):
    """StreamQuery opens its own read-only transaction; cut off while that
    BEGIN is on the wire, the connection must come back re-synchronised. (The
    database answers through a proxy that holds each answer for a few ms, so
    that the short deadlines land while the BEGIN runs.)"""
    with racing.channel() as channel:
        stub = pb_grpc.DatabaseServiceStub(channel)

        def stream_query(timeout: float) -> list[str]:
            responses = stub.StreamQuery(
                pb.QueryRequest(database="pg1", sql="SELECT 1"), timeout=timeout
            )
            return [text(v) for r in responses for row in r.rows for v in row.values]

        for i in range(60):
            # Deadlines from 1 to 16 ms sweep every step of the call, BEGIN among them.
            with contextlib.suppress(grpc.RpcError):  # cut off, or finished in time
                stream_query(short(1 + i * 0.25))
            assert stream_query(10) == ["1"], f"after a StreamQuery cut off at {1 + i * 0.25} ms"
        for _ in range(100):
            assert stream_query(10) == ["1"]


# -- Idle bounds -----------------------------------------------------------------


def test_a_silent_transaction_stream_is_ended_and_its_locks_released(db, dsns):
    execute(db, "pg", "DROP TABLE IF EXISTS dbgw_locked")
    execute(db, "pg", "CREATE TABLE dbgw_locked (id int PRIMARY KEY, v int)")
    execute(db, "pg", "INSERT INTO dbgw_locked VALUES (1, 0)")
    release = threading.Event()

    def requests():
        yield pb.TransactionRequest(begin=pb.TransactionRequest.Begin(database="pg"))
        yield pb.TransactionRequest(
            statement=pb.Statement(sql="UPDATE dbgw_locked SET v = v + 1 WHERE id = 1")
        )
        release.wait(60)  # the client goes silent, its stream still open

    stream = db.Transaction(requests(), metadata=bearer("writer"))
    outcome: list[str] = []

    def read() -> None:
        outcome.append(attempt(lambda: list(stream)))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        # The stream's UPDATE holds the row lock before ours competes for it
        # (a stream whose BEGIN waited for a new connection could otherwise
        # come second, and commit once its client went on).
        holding = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state LIKE 'idle in transaction%' AND query LIKE 'UPDATE dbgw_locked%'"
        )
        assert eventually(lambda: pg_fetch(dsns[0], holding)[0][0] == 1, within=10)
        started = time.monotonic()
        # The row lock is released when the idle bound ends the stream.
        _update_within(dsns[0], "UPDATE dbgw_locked SET v = 10 WHERE id = 1", 20)
        waited = time.monotonic() - started
    finally:
        release.set()
        reader.join(30)
    assert outcome == ["ABORTED/TRANSACTION_EXPIRED"]
    assert waited < 20
    assert pg_fetch(dsns[0], "SELECT v FROM dbgw_locked")[0][0] == 10


def _update_within(dsn: str, sql: str, seconds: float) -> None:
    """Runs ``sql`` directly, waiting at most ``seconds`` for locks."""

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"SET lock_timeout = '{seconds}s'")
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def test_a_streamquery_whose_client_stops_reading_is_ended_and_its_locks_released(db, dsns):
    execute(db, "pg", "DROP TABLE IF EXISTS dbgw_big")
    execute(db, "pg", "CREATE TABLE dbgw_big (id int)")
    execute(db, "pg", "INSERT INTO dbgw_big SELECT generate_series(1, 200000)")
    stream = db.StreamQuery(
        pb.QueryRequest(database="pg", sql="SELECT id, repeat('x', 2000) FROM dbgw_big"),
        metadata=bearer("writer"),
    )
    next(stream)  # the columns; then the client reads nothing more
    # DROP TABLE (ACCESS EXCLUSIVE) waits for the stream's ACCESS SHARE lock.
    _update_within(dsns[0], "DROP TABLE dbgw_big", 20)
    with pytest.raises(grpc.RpcError) as raised:
        for _ in stream:
            pass
    error = call_error(raised.value)
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "STREAM_STALLED")
    # The connection is back and clean.
    assert rows(query(db, "pg", "SELECT 1")) == [("1",)]


# -- Concurrency limits ------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(
    tmp_path_factory: pytest.TempPathFactory, dsns: tuple[str, str]
) -> Iterator[pb_grpc.DatabaseServiceStub]:
    workdir = tmp_path_factory.mktemp("limited")
    config = (
        "[server]\nmax_concurrent_calls = 2\n\n"
        + databases(*dsns, workdir / "lite.sqlite3", "min_size = 1, max_size = 3")
        + principal("writer", "write")
        + principal("reader", "read")
    )
    proc = ServerProcess(workdir, config=config).start()
    try:
        with proc.channel() as channel:
            yield pb_grpc.DatabaseServiceStub(channel)
    finally:
        proc.stop()


def test_open_handle_transactions_count_toward_max_concurrent_calls(limited):
    begun = []
    refusals = []
    for _ in range(4):
        try:
            begun.append(
                limited.BeginTransaction(
                    pb.BeginTransactionRequest(database="pg"), metadata=bearer("reader")
                ).transaction_id
            )
        except grpc.RpcError as exc:
            refusals.append(call_error(exc))
    assert len(begun) == 2
    assert {(e.code, e.reason) for e in refusals} == {
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_CALLS")
    }
    # The reader still uses (and ends) what it began ...
    reply = limited.Query(
        pb.QueryRequest(database="pg", sql="SELECT 1", transaction_id=begun[0]),
        metadata=bearer("reader"),
    )
    assert rows(reply) == [("1",)]
    # ... and the pool still serves another principal at once.
    started = time.monotonic()
    reply = limited.Query(
        pb.QueryRequest(database="pg", sql="SELECT 2"), metadata=bearer("writer"), timeout=3
    )
    assert rows(reply) == [("2",)]
    assert time.monotonic() - started < 3
    for transaction_id in begun:
        limited.Rollback(
            pb.RollbackRequest(transaction_id=transaction_id), metadata=bearer("reader")
        )
    again = limited.BeginTransaction(
        pb.BeginTransactionRequest(database="pg"), metadata=bearer("reader")
    )
    limited.Rollback(
        pb.RollbackRequest(transaction_id=again.transaction_id), metadata=bearer("reader")
    )


# -- PostgreSQL roles -------------------------------------------------------------


@pytest.fixture(scope="module")
def reader_role(dsns: tuple[str, str]) -> Iterator[str]:
    role = unique_name("dbgw_reader")
    pg_fetch(dsns[0], f"CREATE ROLE {role} NOLOGIN")
    pg_fetch(dsns[0], "CREATE TABLE IF NOT EXISTS dbgw_public (x int)")
    pg_fetch(dsns[0], "CREATE TABLE IF NOT EXISTS dbgw_secret (x int)")
    pg_fetch(dsns[0], f"GRANT SELECT ON dbgw_public TO {role}")
    yield role
    pg_fetch(dsns[0], f"DROP OWNED BY {role}")
    pg_fetch(dsns[0], f"DROP ROLE {role}")


@pytest.fixture(scope="module")
def roled(
    tmp_path_factory: pytest.TempPathFactory, dsns: tuple[str, str], reader_role: str
) -> Iterator[pb_grpc.DatabaseServiceStub]:
    workdir = tmp_path_factory.mktemp("roled")
    config = (
        databases(*dsns, workdir / "lite.sqlite3", "min_size = 1, max_size = 1")
        + principal("writer", "write")
        + principal("reader", "read", f'postgres_role = "{reader_role}"')
    )
    proc = ServerProcess(workdir, config=config).start()
    try:
        with proc.channel() as channel:
            yield pb_grpc.DatabaseServiceStub(channel)
    finally:
        proc.stop()


def test_a_read_principal_with_a_postgres_role_reads_only_what_the_role_may(
    roled, reader_role: str
):
    assert rows(query(roled, "pg", "SELECT current_user", who="reader")) == [(reader_role,)]
    assert rows(query(roled, "pg", "SELECT count(*) FROM dbgw_public", who="reader")) == [("0",)]
    for sql in ("SELECT * FROM dbgw_secret", "SELECT pg_read_file('/etc/hostname')"):
        with pytest.raises(grpc.RpcError) as raised:
            query(roled, "pg", sql, who="reader")
        assert call_error(raised.value).code is grpc.StatusCode.PERMISSION_DENIED, sql
    # Streams and transactions run as the role too.
    streamed = list(
        roled.StreamQuery(
            pb.QueryRequest(database="pg", sql="SELECT current_user"), metadata=bearer("reader")
        )
    )
    assert [text(v) for r in streamed for row in r.rows for v in row.values] == [reader_role]
    denied = in_transaction(roled, "pg", ["SELECT * FROM dbgw_secret"], who="reader", commit=False)
    assert denied[0].startswith("permission denied"), denied
    # The writer on the same (single) connection is itself again.
    assert rows(query(roled, "pg", "SELECT current_user")) == [("postgres",)]


# -- The lost-write race -----------------------------------------------------------


class DelayProxy:
    """A TCP proxy that holds everything the database sends for ``delay``
    seconds (in order): every round trip takes at least that long, so a
    deadline of a few ms lands while a statement is on the wire, as it does
    on a busy network."""

    def __init__(self, host: str, port: int, delay: float) -> None:
        self._target = (host, port)
        self._delay = delay
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    def start(self) -> DelayProxy:
        self._thread.start()
        server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pipe(reader, up_writer, 0.0),
            self._pipe(up_reader, writer, self._delay),
            return_exceptions=True,
        )

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, delay: float
    ) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(max(due - loop.time(), 0))
                sink.write(data)
                await sink.drain()
            sink.close()

        delivering = loop.create_task(deliver())
        try:
            while data := await source.read(65536):
                queue.put_nowait((loop.time() + delay, data))
        finally:
            queue.put_nowait((0.0, b""))
            await delivering


def _through(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


@pytest.fixture(scope="module")
def racing(
    tmp_path_factory: pytest.TempPathFactory, dsns: tuple[str, str]
) -> Iterator[ServerProcess]:
    """PostgreSQL through a delaying proxy (``pg`` with a pool of two, ``pg1``
    with one), MariaDB directly."""
    parts = urlsplit(dsns[0])
    proxy = DelayProxy(parts.hostname or "127.0.0.1", parts.port or 5432, 0.003).start()
    workdir = tmp_path_factory.mktemp("racing")
    slow = _through(dsns[0], proxy.port)
    config = (
        f'[databases.pg]\ndsn = "{slow}"\npool = {{ min_size = 2, max_size = 2 }}\n\n'
        f'[databases.pg1]\ndsn = "{slow}"\npool = {{ min_size = 1, max_size = 1 }}\n\n'
        f'[databases.mysql]\ndsn = "{dsns[1]}"\npool = {{ min_size = 2, max_size = 2 }}\n\n'
    )
    proc = ServerProcess(workdir, config=config).start()
    try:
        yield proc
    finally:
        proc.stop()
        proxy.stop()


def timeout_of(ms: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(ms * 1e6))
    return value


async def _race(address: str, engine: str, table: str, inserts: int) -> list[int]:
    """INSERTs beside neighbours whose BeginTransaction and StreamQuery calls
    are cut off by 1-4 ms deadlines or cancelled; the ids acknowledged."""
    acknowledged: list[int] = []
    done = asyncio.Event()
    rng = random.Random(12)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.DatabaseServiceStub(channel)

        async def writer(ids: list[int]) -> None:
            for i in ids:
                try:
                    await stub.Execute(
                        pb.ExecuteRequest(database=engine, sql=f"INSERT INTO {table} VALUES ({i})"),
                        timeout=10,
                    )
                except grpc.aio.AioRpcError:
                    continue
                acknowledged.append(i)

        async def neighbour() -> None:
            while not done.is_set():
                deadline = rng.uniform(0.001, 0.004)
                if rng.random() < 0.5:
                    call = stub.BeginTransaction(
                        pb.BeginTransactionRequest(database=engine), timeout=deadline
                    )
                else:
                    call = stub.StreamQuery(
                        pb.QueryRequest(database=engine, sql="SELECT 1"), timeout=deadline
                    )
                if rng.random() < 0.3:
                    await asyncio.sleep(rng.uniform(0, 0.003))
                    call.cancel()
                try:
                    if isinstance(call, grpc.aio.UnaryUnaryCall):
                        begun = await call
                        await stub.Rollback(
                            pb.RollbackRequest(transaction_id=begun.transaction_id), timeout=10
                        )
                    else:
                        async for _ in call:
                            pass
                except (grpc.aio.AioRpcError, asyncio.CancelledError):
                    pass

        neighbours = [asyncio.create_task(neighbour()) for _ in range(2)]
        ids = list(range(inserts))
        await asyncio.gather(*(writer(ids[k::2]) for k in range(2)))
        done.set()
        await asyncio.gather(*neighbours)
    return acknowledged


@pytest.mark.parametrize("engine", ["pg", "mysql"])
def test_every_acknowledged_insert_is_stored_beside_cut_off_calls(racing, dsns, engine: str):
    table = unique_name("dbgw_race")
    fetch = pg_fetch if engine == "pg" else mysql_fetch
    dsn = dsns[0] if engine == "pg" else dsns[1]
    fetch(dsn, f"CREATE TABLE {table} (id int PRIMARY KEY)")
    acknowledged = asyncio.run(_race(racing.address, engine, table, 400))
    stored = {row[0] for row in fetch(dsn, f"SELECT id FROM {table}")}
    lost = sorted(set(acknowledged) - stored)
    assert len(acknowledged) > 300
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged INSERTs were lost"
