"""Handle-based transactions: BeginTransaction, then Query / Execute /
ExecuteBatch with its transaction_id, then Commit or Rollback."""

from __future__ import annotations

import secrets
import time

import grpc
import pytest

from dbgateway.v1 import database_service_pb2 as pb
from tests.integration.polling import eventually
from tests.integration.transactions_support import (
    ENGINES,
    PLACEHOLDER,
    open_transactions,
)
from tests.support import V, call_error, pg_fetch, unique_name


def make_table(db, database: str) -> str:
    table = unique_name("htx")
    db.Execute(
        pb.ExecuteRequest(
            database=database, sql=f"CREATE TABLE {table} (id INT PRIMARY KEY, note VARCHAR(50))"
        )
    )
    return table


def count(db, database: str, table: str, transaction_id: str = "") -> int:
    reply = db.Query(
        pb.QueryRequest(
            database=database, sql=f"SELECT count(*) FROM {table}", transaction_id=transaction_id
        )
    )
    return reply.rows[0].values[0].int_value


def insert(db, database: str, table: str, key: int, transaction_id: str) -> pb.ExecuteResponse:
    return db.Execute(
        pb.ExecuteRequest(
            database=database,
            sql=f"INSERT INTO {table} (id, note) VALUES ({PLACEHOLDER[database]}, 'x')",
            params=[V.of(int_value=key)],
            transaction_id=transaction_id,
        )
    )


def begin(db, database: str, **options) -> str:
    reply = db.BeginTransaction(
        pb.BeginTransactionRequest(database=database, options=pb.TransactionOptions(**options))
    )
    return reply.transaction_id


def fail(call, request):
    with pytest.raises(grpc.RpcError) as info:
        call(request)
    return call_error(info.value)


@pytest.mark.parametrize("database", ENGINES)
def test_writes_are_invisible_to_others_until_commit(db, database):
    table = make_table(db, database)
    tx = begin(db, database)
    insert(db, database, table, 1, tx)
    assert count(db, database, table, transaction_id=tx) == 1
    assert count(db, database, table) == 0
    db.Commit(pb.CommitRequest(transaction_id=tx))
    assert count(db, database, table) == 1


@pytest.mark.parametrize("database", ENGINES)
def test_rollback_discards_the_writes(db, database):
    table = make_table(db, database)
    tx = begin(db, database)
    insert(db, database, table, 1, tx)
    db.Rollback(pb.RollbackRequest(transaction_id=tx, database=database))
    assert count(db, database, table) == 0


def test_begin_gives_an_unguessable_id_and_its_expiry(db):
    reply = db.BeginTransaction(pb.BeginTransactionRequest(database="pg"))
    other = db.BeginTransaction(pb.BeginTransactionRequest(database="pg"))
    assert reply.transaction_id != other.transaction_id
    assert len(reply.transaction_id) >= 22  # at least 128 bits of base64
    left = reply.expire_time.ToDatetime().timestamp() - time.time()
    assert 30 < left <= 61  # the default idle timeout is 60 s
    for tx in (reply.transaction_id, other.transaction_id):
        db.Rollback(pb.RollbackRequest(transaction_id=tx))


def test_unknown_transaction_id_is_not_found(db):
    err = fail(
        db.Query,
        pb.QueryRequest(database="pg", sql="SELECT 1", transaction_id=secrets.token_urlsafe(24)),
    )
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert err.reason == "TRANSACTION_NOT_FOUND"


def test_rollback_of_an_unknown_id_is_ok(db):
    db.Rollback(pb.RollbackRequest(transaction_id=secrets.token_urlsafe(24)))


def test_commit_of_an_unknown_id_is_not_found(db):
    err = fail(db.Commit, pb.CommitRequest(transaction_id=secrets.token_urlsafe(24)))
    assert err.code == grpc.StatusCode.NOT_FOUND


def test_a_committed_transaction_cannot_be_used_again(db):
    tx = begin(db, "lite")
    db.Commit(pb.CommitRequest(transaction_id=tx))
    err = fail(db.Query, pb.QueryRequest(sql="SELECT 1", transaction_id=tx))
    assert err.reason == "TRANSACTION_NOT_FOUND"


@pytest.mark.parametrize("database", ["pg", "mysql"])
def test_idle_transaction_expires_rolls_back_and_reports_expired(
    db, database, postgres_dsn, mysql_dsn
):
    table = make_table(db, database)
    tx = begin(db, database, idle_timeout={"nanos": 300_000_000})
    insert(db, database, table, 1, tx)
    time.sleep(0.4)
    err = fail(db.Query, pb.QueryRequest(sql="SELECT 1", transaction_id=tx))
    assert err.code == grpc.StatusCode.ABORTED
    assert err.reason == "TRANSACTION_EXPIRED"
    assert "idle" in err.message
    err = fail(db.Commit, pb.CommitRequest(transaction_id=tx))
    assert err.reason == "TRANSACTION_EXPIRED"
    assert count(db, database, table) == 0
    dsn = {"pg": postgres_dsn, "mysql": mysql_dsn}[database]
    assert eventually(lambda: open_transactions(database, dsn) == 0)


def test_forgotten_transaction_is_rolled_back_by_the_reaper(db, postgres_dsn):
    table = make_table(db, "pg")
    tx = begin(db, "pg", idle_timeout={"nanos": 200_000_000})
    insert(db, "pg", table, 1, tx)
    # Nobody touches it again: the background reaper alone must end it.
    assert eventually(lambda: open_transactions("pg", postgres_dsn) == 0, within=2.0)


def test_idle_timeout_above_the_maximum_is_invalid(db):
    err = fail(
        db.BeginTransaction,
        pb.BeginTransactionRequest(
            database="pg", options=pb.TransactionOptions(idle_timeout={"seconds": 61})
        ),
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.field_violations[0][0] == "options.idle_timeout"


def test_two_calls_at_once_on_one_transaction_are_busy(db):
    tx = begin(db, "pg")
    slow = db.Query.future(pb.QueryRequest(sql="SELECT pg_sleep(1.5)", transaction_id=tx))
    busy = None
    while busy is None and not slow.done():
        try:
            db.Query(pb.QueryRequest(sql="SELECT 1", transaction_id=tx))
        except grpc.RpcError as exc:
            busy = call_error(exc)
    slow.result()
    assert busy is not None
    assert busy.code == grpc.StatusCode.FAILED_PRECONDITION
    assert busy.reason == "TRANSACTION_BUSY"
    # Once the first call is done the transaction takes calls again.
    db.Query(pb.QueryRequest(sql="SELECT 1", transaction_id=tx))
    db.Rollback(pb.RollbackRequest(transaction_id=tx))


def test_the_request_database_must_be_the_transactions(db):
    tx = begin(db, "pg")
    err = fail(db.Query, pb.QueryRequest(database="mysql", sql="SELECT 1", transaction_id=tx))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.field_violations[0][0] == "database"
    db.Query(pb.QueryRequest(database="pg", sql="SELECT 1", transaction_id=tx))
    db.Rollback(pb.RollbackRequest(transaction_id=tx))


def test_error_inside_a_handle_transaction_keeps_it_open_on_postgres(db):
    table = make_table(db, "pg")
    tx = begin(db, "pg")
    insert(db, "pg", table, 1, tx)
    db.Execute(pb.ExecuteRequest(sql="SAVEPOINT s", database="pg", transaction_id=tx))
    err = fail(db.Execute, pb.ExecuteRequest(sql="SELECT 1/0", database="pg", transaction_id=tx))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    db.Execute(pb.ExecuteRequest(sql="ROLLBACK TO SAVEPOINT s", database="pg", transaction_id=tx))
    db.Commit(pb.CommitRequest(transaction_id=tx, database="pg"))
    assert count(db, "pg", table) == 1


def test_execute_batch_inside_a_transaction_that_fails_leaves_it_as_before(db):
    table = make_table(db, "pg")
    tx = begin(db, "pg")
    insert(db, "pg", table, 1, tx)
    err = fail(
        db.ExecuteBatch,
        pb.ExecuteBatchRequest(
            database="pg",
            sql=f"INSERT INTO {table} (id, note) VALUES ($1, 'b')",
            param_sets=[pb.ParamSet(params=[V.of(int_value=k)]) for k in (2, 3, 1)],
            transaction_id=tx,
        ),
    )
    assert err.code == grpc.StatusCode.ALREADY_EXISTS
    assert count(db, "pg", table, transaction_id=tx) == 1
    db.Commit(pb.CommitRequest(transaction_id=tx))
    assert count(db, "pg", table) == 1


def test_transaction_whose_connection_was_lost_is_aborted_not_committed(db, postgres_dsn):
    table = make_table(db, "pg")
    tx = begin(db, "pg")
    insert(db, "pg", table, 1, tx)
    pid = (
        db.Query(pb.QueryRequest(sql="SELECT pg_backend_pid()", transaction_id=tx))
        .rows[0]
        .values[0]
        .int_value
    )
    pg_fetch(postgres_dsn, f"SELECT pg_terminate_backend({pid})")
    time.sleep(0.1)  # the gateway's connection reads the server's goodbye
    err = fail(db.Commit, pb.CommitRequest(transaction_id=tx))
    assert err.code == grpc.StatusCode.ABORTED
    assert err.reason == "TRANSACTION_EXPIRED"
    assert count(db, "pg", table) == 0


def test_connection_lost_while_commit_runs_is_unknown_outcome(db, postgres_dsn):
    table = make_table(db, "pg")
    # A deferred constraint trigger makes COMMIT itself take a second.
    db.Execute(
        pb.ExecuteRequest(
            database="pg",
            sql=f"CREATE FUNCTION {table}_slow() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_sleep(1); RETURN NULL; END $$",
        )
    )
    db.Execute(
        pb.ExecuteRequest(
            database="pg",
            sql=f"CREATE CONSTRAINT TRIGGER {table}_at_commit AFTER INSERT ON {table} "
            f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {table}_slow()",
        )
    )
    tx = begin(db, "pg")
    insert(db, "pg", table, 1, tx)
    committing = db.Commit.future(pb.CommitRequest(transaction_id=tx))
    name = postgres_dsn.rsplit("/", 1)[-1]

    def commit_running() -> bool:
        found = pg_fetch(
            postgres_dsn,
            f"SELECT pid FROM pg_stat_activity WHERE datname = '{name}' "
            "AND state = 'active' AND query = 'COMMIT'",
        )
        return bool(found) and bool(
            pg_fetch(postgres_dsn, f"SELECT pg_terminate_backend({found[0][0]})")
        )

    assert eventually(commit_running, within=1.0)
    with pytest.raises(grpc.RpcError) as info:
        committing.result()
    err = call_error(info.value)
    assert err.code == grpc.StatusCode.UNKNOWN
    assert err.reason == "COMMIT_OUTCOME_UNKNOWN"


@pytest.mark.parametrize("database", ENGINES)
def test_stream_query_reads_inside_the_transaction(db, database):
    table = make_table(db, database)
    tx = begin(db, database)
    insert(db, database, table, 1, tx)
    insert(db, database, table, 2, tx)
    inside = list(
        db.StreamQuery(
            pb.QueryRequest(
                database=database, sql=f"SELECT id FROM {table} ORDER BY id", transaction_id=tx
            )
        )
    )
    assert [r.values[0].int_value for m in inside for r in m.rows] == [1, 2]
    outside = list(
        db.StreamQuery(pb.QueryRequest(database=database, sql=f"SELECT id FROM {table}"))
    )
    assert [r for m in outside for r in m.rows] == []  # not committed yet
    db.Commit(pb.CommitRequest(transaction_id=tx))
    assert count(db, database, table) == 2
