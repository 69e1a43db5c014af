"""``dbgateway.dbapi`` (PEP 249) against a real gateway: transactions begun by
the first statement, commit / rollback / close, autocommit, executemany as
one ExecuteBatch, PEP 249 errors carrying the gateway's reason and SQLSTATE,
and connections dropped with a transaction open."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from dbgateway import Client, dbapi
from tests.integration.polling import eventually
from tests.integration.transactions_support import open_transactions
from tests.support import ROOT, ServerProcess, unique_name

PLACEHOLDER = {"pg": "$1", "mysql": "%s", "lite": "?"}
TABLE = unique_name("dbapi")


def _ph(database: str, n: int = 1) -> str:
    if database == "pg":
        return ", ".join(f"${i}" for i in range(1, n + 1))
    return ", ".join([PLACEHOLDER[database]] * n)


@pytest.fixture(scope="module", params=["pg", "mysql", "lite"])
def database(request: pytest.FixtureRequest, server: ServerProcess) -> Iterator[str]:
    conn = dbapi.connect(server.address, database=request.param, autocommit=True)
    cur = conn.cursor()
    key = {
        "pg": "SERIAL PRIMARY KEY",
        "mysql": "INT AUTO_INCREMENT PRIMARY KEY",
        "lite": "INTEGER PRIMARY KEY",
    }[request.param]
    cur.execute(f"CREATE TABLE {TABLE} (id {key}, body VARCHAR(50) UNIQUE)")
    yield request.param
    cur.execute(f"DROP TABLE {TABLE}")
    conn.close()


@pytest.fixture
def conn(server: ServerProcess, database: str) -> Iterator[dbapi.Connection]:
    setup = dbapi.connect(server.address, database=database, autocommit=True)
    setup.cursor().execute(f"DELETE FROM {TABLE}")
    setup.close()
    connection = dbapi.connect(server.address, database=database)
    yield connection
    connection.close()


def _bodies(server: ServerProcess, database: str) -> list[str]:
    """What another connection sees (committed rows only)."""
    other = dbapi.connect(server.address, database=database, autocommit=True)
    try:
        cur = other.cursor()
        cur.execute(f"SELECT body FROM {TABLE} ORDER BY body")
        return [row[0] for row in cur.fetchall()]
    finally:
        other.close()


def test_module_declares_pep_249_globals() -> None:
    assert dbapi.apilevel == "2.0"
    assert dbapi.threadsafety == 1
    assert issubclass(dbapi.IntegrityError, dbapi.DatabaseError)
    assert issubclass(dbapi.DatabaseError, dbapi.Error)
    assert dbapi.NUMBER == "int4"
    assert dbapi.NUMBER == "BIGINT UNSIGNED"
    assert dbapi.DATETIME == "timestamptz"
    assert dbapi.BINARY == "bytea"
    assert dbapi.STRING != "bytea"


def test_first_statement_opens_a_transaction_that_commit_makes_visible(
    conn: dbapi.Connection, server: ServerProcess, database: str
) -> None:
    cur = conn.cursor()
    cur.execute(f"INSERT INTO {TABLE} (body) VALUES ({_ph(database)})", ["a"])
    assert conn.in_transaction
    assert cur.rowcount == 1
    assert _bodies(server, database) == []  # not yet committed
    conn.commit()
    assert not conn.in_transaction
    assert _bodies(server, database) == ["a"]


def test_rollback_discards_and_close_rolls_back_an_open_transaction(
    conn: dbapi.Connection, server: ServerProcess, database: str
) -> None:
    cur = conn.cursor()
    cur.execute(f"INSERT INTO {TABLE} (body) VALUES ({_ph(database)})", ["gone"])
    conn.rollback()
    cur.execute(f"INSERT INTO {TABLE} (body) VALUES ({_ph(database)})", ["also gone"])
    conn.close()
    assert _bodies(server, database) == []
    with pytest.raises(dbapi.InterfaceError):
        conn.cursor()


def test_description_rowcount_lastrowid_and_fetching(conn: dbapi.Connection, database: str) -> None:
    cur = conn.cursor()
    cur.execute(f"INSERT INTO {TABLE} (body) VALUES ({_ph(database)})", ["x"])
    if database != "pg":
        assert isinstance(cur.lastrowid, int)
        assert cur.lastrowid > 0
    for body in ("y", "z"):
        cur.execute(f"INSERT INTO {TABLE} (body) VALUES ({_ph(database)})", [body])
    cur.execute(f"SELECT id, body FROM {TABLE} ORDER BY body")
    assert [d[0] for d in cur.description] == ["id", "body"]
    assert cur.rowcount == 3
    assert cur.fetchone()[1] == "x"
    cur.arraysize = 2
    assert [r[1] for r in cur.fetchmany()] == ["y", "z"]
    assert cur.fetchall() == []
    assert cur.fetchone() is None
    cur.execute(f"UPDATE {TABLE} SET body = body WHERE body <> {_ph(database)}", ["x"])
    assert cur.rowcount == 2 or database == "mysql"  # MySQL counts changed rows only
    assert cur.description is None


def test_autocommit_runs_each_statement_alone(
    conn: dbapi.Connection, server: ServerProcess, database: str
) -> None:
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(f"INSERT INTO {TABLE} (body) VALUES ({_ph(database)})", ["now"])
    assert not conn.in_transaction
    assert _bodies(server, database) == ["now"]
    conn.rollback()  # nothing to roll back
    assert _bodies(server, database) == ["now"]


def test_executemany_in_autocommit_is_one_atomic_batch(
    conn: dbapi.Connection, server: ServerProcess, database: str
) -> None:
    conn.autocommit = True
    cur = conn.cursor()
    cur.executemany(f"INSERT INTO {TABLE} (body) VALUES ({_ph(database)})", [["a"], ["b"]])
    assert cur.rowcount in (2, -1)  # PostgreSQL's bulk path reports no count
    with pytest.raises(dbapi.IntegrityError):
        cur.executemany(f"INSERT INTO {TABLE} (body) VALUES ({_ph(database)})", [["c"], ["a"]])
    assert _bodies(server, database) == ["a", "b"]  # "c" went with the failed batch


def test_executemany_inside_a_transaction_is_part_of_it(
    conn: dbapi.Connection, server: ServerProcess, database: str
) -> None:
    cur = conn.cursor()
    cur.executemany(f"INSERT INTO {TABLE} (body) VALUES ({_ph(database)})", [["a"], ["b"]])
    assert cur.rowcount == 2
    conn.rollback()
    assert _bodies(server, database) == []


def test_errors_are_pep_249_classes_carrying_reason_and_sqlstate(
    conn: dbapi.Connection, database: str
) -> None:
    cur = conn.cursor()
    cur.execute(f"INSERT INTO {TABLE} (body) VALUES ({_ph(database)})", ["dup"])
    with pytest.raises(dbapi.IntegrityError) as unique:
        cur.execute(f"INSERT INTO {TABLE} (body) VALUES ({_ph(database)})", ["dup"])
    assert unique.value.reason == "UNIQUE_VIOLATION"
    assert unique.value.sqlstate == {"pg": "23505", "mysql": "23000", "lite": None}[database]
    conn.rollback()
    with pytest.raises(dbapi.ProgrammingError) as syntax:
        cur.execute("SELEC 1")
    assert syntax.value.reason == "SQL_ERROR"
    conn.rollback()
    conn.autocommit = True
    with pytest.raises(dbapi.NotSupportedError) as refused:
        cur.execute("SET autocommit = 0" if database == "mysql" else "SET x = 1")
    assert refused.value.reason == "UNSUPPORTED_STATEMENT"


def test_unknown_and_unreachable_databases(server: ServerProcess) -> None:
    with pytest.raises(dbapi.ProgrammingError) as unknown:
        dbapi.connect(server.address, database="nope", autocommit=True).cursor().execute("SELECT 1")
    assert unknown.value.reason == "UNKNOWN_DATABASE"
    down = dbapi.connect(server.address, database="down", timeout=10)
    with pytest.raises(dbapi.OperationalError) as unavailable:
        down.cursor().execute("SELECT 1")
    assert unavailable.value.reason in ("DATABASE_UNAVAILABLE", "CIRCUIT_OPEN")
    down.close()


def test_isolation_level_and_read_only_travel_with_the_begin(server: ServerProcess) -> None:
    conn = dbapi.connect(server.address, database="pg", isolation_level="serializable")
    cur = conn.cursor()
    cur.execute("SHOW transaction_isolation")
    assert cur.fetchone() == ("serializable",)
    conn.rollback()
    conn.isolation_level = "repeatable read"
    conn.read_only = True
    cur.execute("SHOW transaction_isolation")
    assert cur.fetchone() == ("repeatable read",)
    with pytest.raises(ProgrammingError := dbapi.ProgrammingError):  # noqa: F841
        conn.isolation_level = "serializable"  # not while a transaction is open
    with pytest.raises(dbapi.DatabaseError):
        cur.execute(f"INSERT INTO {TABLE} (body) VALUES ($1)", ["ro"])
    conn.rollback()
    conn.close()


def test_stream_cursor_reads_through_stream_query(server: ServerProcess) -> None:
    conn = dbapi.connect(server.address, database="pg")
    cur = conn.cursor(stream=True)
    cur.execute("SELECT g FROM generate_series(1, 25000) AS g")
    assert [d[0] for d in cur.description] == ["g"]
    assert cur.fetchmany(3) == [(1,), (2,), (3,)]
    assert sum(r[0] for r in cur.fetchall()) == sum(range(4, 25001))
    assert not conn.in_transaction  # read on its own, outside a transaction
    log = server.log().splitlines()
    assert any("dbgateway.access:" in line and "method=StreamQuery" in line for line in log)
    conn.close()


@pytest.mark.parametrize("shared_client", [False, True], ids=["own-client", "shared-client"])
@pytest.mark.parametrize("database", ["pg", "mysql"], indirect=True)
def test_a_dropped_connection_commits_nothing_and_leaves_no_open_session(
    server: ServerProcess, database: str, postgres_dsn: str, mysql_dsn: str, shared_client: bool
) -> None:
    dsn = postgres_dsn if database == "pg" else mysql_dsn
    # A shared client (as the SQLAlchemy dialect uses) outlives the
    # connection: dropping the connection itself must end its transaction.
    client = Client(server.address) if shared_client else None
    conn = dbapi.connect(server.address, database=database, client=client)
    conn.cursor().execute(f"INSERT INTO {TABLE} (body) VALUES ({_ph(database)})", ["dropped"])
    assert open_transactions(database, dsn) == 1
    del conn
    gc.collect()
    assert eventually(lambda: open_transactions(database, dsn) == 0, within=10)
    assert _bodies(server, database) == []
    if client is not None:
        client.close()


@pytest.mark.parametrize("database", ["pg", "mysql"], indirect=True)
def test_a_killed_process_commits_nothing_and_leaves_no_open_session(
    server: ServerProcess, database: str, postgres_dsn: str, mysql_dsn: str
) -> None:
    dsn = postgres_dsn if database == "pg" else mysql_dsn
    script = textwrap.dedent(
        f"""
        import sys, time
        from dbgateway import Client, dbapi
        conn = dbapi.connect({server.address!r}, database={database!r})
        conn.cursor().execute("INSERT INTO {TABLE} (body) VALUES ({_ph(database)})", ["killed"])
        print("inserted", flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "inserted"
        assert open_transactions(database, dsn) == 1
    finally:
        child.kill()
        child.wait()
    assert eventually(lambda: open_transactions(database, dsn) == 0, within=10)
    assert _bodies(server, database) == []
