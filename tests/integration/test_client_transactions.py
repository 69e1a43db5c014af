"""``execute_batch``, ``run_transaction`` and ``transaction()`` against a real
server on PostgreSQL, MariaDB and SQLite, through the sync and async clients:
all or nothing, typed errors (with the failing statement's index), commit on
leaving the block, rollback when it raises, and in-band statement errors that
leave the transaction usable."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

import dbgateway
from tests.support import unique_name

DATABASES = ["pg", "mysql", "lite"]
P = {"pg": ("$1", "$2"), "mysql": ("%s", "%s"), "lite": ("?", "?")}


class Boom(Exception):
    pass


@pytest.fixture(scope="module")
def client(server) -> Iterator[dbgateway.Client]:
    with dbgateway.Client(server.address, timeout=30) as db:
        yield db


def make_table(client: dbgateway.Client, database: str) -> str:
    table = unique_name("tx")
    client.execute(
        f"CREATE TABLE {table} (id INT PRIMARY KEY, body VARCHAR(50) NOT NULL)",
        database=database,
    )
    return table


def ids(client: dbgateway.Client, table: str, database: str) -> list[int]:
    return [r[0] for r in client.query(f"SELECT id FROM {table} ORDER BY id", database=database)]


def insert(table: str, database: str) -> str:
    a, b = P[database]
    return f"INSERT INTO {table} (id, body) VALUES ({a}, {b})"


# -- execute_batch ------------------------------------------------------------------


@pytest.mark.parametrize("database", DATABASES)
def test_execute_batch_inserts_every_set(client, database):
    table = make_table(client, database)
    result = client.execute_batch(
        insert(table, database), [(1, "one"), (2, "two"), [3, "three"]], database=database
    )
    assert result.rows_affected == 3
    assert ids(client, table, database) == [1, 2, 3]


@pytest.mark.parametrize("database", DATABASES)
def test_a_failing_batch_inserts_nothing(client, database):
    table = make_table(client, database)
    with pytest.raises(dbgateway.UniqueViolation):
        client.execute_batch(
            insert(table, database), [(1, "one"), (2, "two"), (1, "again")], database=database
        )
    assert ids(client, table, database) == []


async def test_the_async_execute_batch(server, client):
    table = make_table(client, "lite")
    async with dbgateway.AsyncClient(server.address, timeout=30) as db:
        result = await db.execute_batch(
            insert(table, "lite"), [(i, f"n{i}") for i in range(50)], database="lite"
        )
    assert result.rows_affected == 50
    assert len(ids(client, table, "lite")) == 50


def test_a_parameter_set_must_be_a_sequence(client):
    with pytest.raises(TypeError):
        client.execute_batch("INSERT INTO t VALUES (?)", ["not a tuple"], database="lite")


# -- run_transaction ----------------------------------------------------------------


@pytest.mark.parametrize("database", DATABASES)
def test_run_transaction_returns_one_result_per_statement(client, database):
    table = make_table(client, database)
    a, _ = P[database]
    result = client.run_transaction(
        [
            (insert(table, database), (1, "one")),
            (insert(table, database), (2, "two")),
            (f"UPDATE {table} SET body = 'uno' WHERE id = {a}", [1]),
            f"SELECT id, body FROM {table} ORDER BY id",
        ],
        database=database,
        isolation="serializable" if database != "mysql" else "repeatable read",
    )
    assert result.attempts == 1
    assert len(result) == 4
    assert [r.rows_affected for r in result][:3] == [1, 1, 1]
    assert result[3].columns == ("id", "body")
    assert result[3].rows == [(1, "uno"), (2, "two")]
    assert result[3].as_dicts()[0] == {"id": 1, "body": "uno"}


@pytest.mark.parametrize("database", DATABASES)
def test_run_transaction_is_all_or_nothing_and_names_the_failing_statement(client, database):
    table = make_table(client, database)
    with pytest.raises(dbgateway.UniqueViolation) as info:
        client.run_transaction(
            [
                (insert(table, database), (1, "one")),
                (insert(table, database), (2, "two")),
                (insert(table, database), (1, "clash")),
            ],
            database=database,
        )
    assert info.value.statement_index == 2
    assert info.value.code == grpc.StatusCode.ALREADY_EXISTS
    if database == "pg":
        assert info.value.sqlstate == "23505"
    assert ids(client, table, database) == []


async def test_the_async_run_transaction(server, client):
    table = make_table(client, "pg")
    async with dbgateway.AsyncClient(server.address, timeout=30) as db:
        result = await db.run_transaction(
            [(insert(table, "pg"), (1, "one")), (f"SELECT count(*) FROM {table}", ())],
            database="pg",
            isolation=dbgateway.Isolation.SERIALIZABLE,
        )
        assert result[1].scalar() == 1
        with pytest.raises(dbgateway.SqlError) as info:
            await db.run_transaction(
                [(insert(table, "pg"), (2, "two")), ("SELECT * FROM no_such_table", ())],
                database="pg",
            )
        assert info.value.statement_index == 1
    assert ids(client, table, "pg") == [1]


def test_isolation_is_checked_before_the_call(client):
    with pytest.raises(ValueError, match="unknown isolation level"):
        client.run_transaction(["SELECT 1"], database="lite", isolation="snapshot")


# -- transaction(): sync ------------------------------------------------------------


@pytest.mark.parametrize("database", DATABASES)
def test_leaving_the_block_commits(client, database):
    table = make_table(client, database)
    with client.transaction(database) as tx:
        tx.execute(insert(table, database), 1, "one")
        written = tx.execute(insert(table, database), 2, "two")
        assert written.rows_affected == 1
        seen = tx.query(f"SELECT id, body FROM {table} ORDER BY id")
        assert seen.rows == [(1, "one"), (2, "two")]
        # Not visible outside before the commit.
        assert ids(client, table, database) == []
    assert tx.ended
    assert ids(client, table, database) == [1, 2]


@pytest.mark.parametrize("database", DATABASES)
def test_an_exception_rolls_back_and_propagates(client, database):
    table = make_table(client, database)
    opened: list[dbgateway.Transaction] = []

    def write_then_fail() -> None:
        with client.transaction(database) as tx:
            opened.append(tx)
            tx.execute(insert(table, database), 1, "one")
            raise Boom

    with pytest.raises(Boom):
        write_then_fail()
    assert opened[0].ended
    assert ids(client, table, database) == []


@pytest.mark.parametrize("database", ["mysql", "lite"])
def test_a_failing_statement_raises_and_the_transaction_goes_on(client, database):
    table = make_table(client, database)
    with client.transaction(database) as tx:
        tx.execute(insert(table, database), 1, "one")
        with pytest.raises(dbgateway.UniqueViolation) as info:
            tx.execute(insert(table, database), 1, "clash")
        assert info.value.reason == "UNIQUE_VIOLATION"
        tx.execute(insert(table, database), 2, "two")
    assert ids(client, table, database) == [1, 2]


def test_postgresql_recovers_from_an_error_with_a_savepoint(client):
    table = make_table(client, "pg")
    with client.transaction("pg") as tx:
        tx.execute(insert(table, "pg"), 1, "one")
        tx.execute("SAVEPOINT before_clash")
        with pytest.raises(dbgateway.UniqueViolation) as info:
            tx.execute(insert(table, "pg"), 1, "clash")
        assert info.value.sqlstate == "23505"
        # The transaction is aborted until the savepoint is rolled back to.
        with pytest.raises(dbgateway.DbGatewayError) as aborted:
            tx.query("SELECT 1")
        assert aborted.value.sqlstate == "25P02"
        tx.execute("ROLLBACK TO SAVEPOINT before_clash")
        tx.execute(insert(table, "pg"), 2, "two")
    assert ids(client, table, "pg") == [1, 2]


def test_postgresql_refuses_to_commit_after_an_unrecovered_error(client):
    table = make_table(client, "pg")

    def fail_and_leave() -> None:
        with client.transaction("pg") as tx:
            tx.execute(insert(table, "pg"), 1, "one")
            with pytest.raises(dbgateway.UniqueViolation):
                tx.execute(insert(table, "pg"), 1, "clash")

    with pytest.raises(dbgateway.DbGatewayError) as info:
        fail_and_leave()
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.reason == "INVALID_TRANSACTION_STATE"
    assert ids(client, table, "pg") == []


def test_isolation_and_read_only_reach_the_database(client):
    with client.transaction("pg", isolation="REPEATABLE_READ", read_only=True) as tx:
        assert tx.query("SHOW transaction_isolation").scalar() == "repeatable read"
        assert tx.query("SHOW transaction_read_only").scalar() == "on"
        with pytest.raises(dbgateway.DbGatewayError) as info:
            tx.execute("CREATE TABLE never_made (x int)")
        assert info.value.sqlstate == "25006"
        tx.rollback()  # PostgreSQL: the error aborted the transaction
    with client.transaction("pg", dbgateway.Isolation.SERIALIZABLE) as tx:
        assert tx.query("SHOW transaction_isolation").scalar() == "serializable"


def test_an_explicit_rollback_ends_the_transaction(client):
    table = make_table(client, "lite")
    with client.transaction("lite") as tx:
        tx.execute(insert(table, "lite"), 1, "one")
        tx.rollback()
        with pytest.raises(dbgateway.DbGatewayError) as info:
            tx.query("SELECT 1")
        assert info.value.reason == "INVALID_TRANSACTION_STATE"
    assert ids(client, table, "lite") == []


def test_an_unknown_database_fails_at_the_start(client):
    with pytest.raises(dbgateway.NotFound), client.transaction("no_such_database"):
        pytest.fail("the block must not run")


def test_the_transaction_deadline_rolls_back(client):
    table = make_table(client, "pg")

    def outlive_the_deadline() -> None:
        with client.transaction("pg", timeout=1) as tx:
            tx.execute(insert(table, "pg"), 1, "one")
            tx.query("SELECT pg_sleep(3)")

    with pytest.raises(dbgateway.DeadlineExceeded):
        outlive_the_deadline()
    assert ids(client, table, "pg") == []


# -- transaction(): async -----------------------------------------------------------


@pytest.mark.parametrize("database", DATABASES)
async def test_async_commit_on_exit_and_rollback_on_exception(server, client, database):
    table = make_table(client, database)
    async with dbgateway.AsyncClient(server.address, timeout=30) as db:
        async with db.transaction(database=database) as tx:
            await tx.execute(insert(table, database), 1, "one")
            assert (await tx.query(f"SELECT count(*) FROM {table}")).scalar() == 1

        async def write_then_fail() -> None:
            async with db.transaction(database=database) as tx:
                await tx.execute(insert(table, database), 2, "two")
                raise Boom

        with pytest.raises(Boom):
            await write_then_fail()
    assert ids(client, table, database) == [1]


async def test_async_savepoint_recovery_on_postgresql(server, client):
    table = make_table(client, "pg")
    async with (
        dbgateway.AsyncClient(server.address, timeout=30) as db,
        db.transaction("pg", isolation="serializable") as tx,
    ):
        await tx.execute(insert(table, "pg"), 1, "one")
        await tx.execute("SAVEPOINT s")
        with pytest.raises(dbgateway.IntegrityError):
            await tx.execute(f"INSERT INTO {table} (id, body) VALUES (2, NULL)")
        await tx.execute("ROLLBACK TO SAVEPOINT s")
        await tx.execute(insert(table, "pg"), 3, "three")
    assert ids(client, table, "pg") == [1, 3]
