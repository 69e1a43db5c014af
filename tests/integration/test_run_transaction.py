"""RunTransaction: statements run atomically in one round trip, retried whole
on serialization failure or deadlock."""

from __future__ import annotations

import grpc
import pytest

from dbgateway.v1 import database_service_pb2 as pb
from tests.integration.transactions_support import ENGINES, PLACEHOLDER
from tests.support import V, call_error, unique_name


def statement(sql: str, *params) -> pb.Statement:
    return pb.Statement(sql=sql, params=params)


@pytest.mark.parametrize("database", ENGINES)
def test_statements_run_atomically_with_one_result_each(db, database):
    table = unique_name("run")
    p = PLACEHOLDER[database]
    reply = db.RunTransaction(
        pb.RunTransactionRequest(
            database=database,
            statements=[
                statement(f"CREATE TABLE {table} (id INT PRIMARY KEY, note VARCHAR(20))"),
                statement(f"INSERT INTO {table} VALUES ({p}, 'a')", V.of(int_value=1)),
                statement(f"INSERT INTO {table} VALUES ({p}, 'b')", V.of(int_value=2)),
                statement(f"SELECT note FROM {table} ORDER BY id"),
            ],
        )
    )
    assert reply.attempts == 1
    assert len(reply.results) == 4
    assert reply.results[1].rows_affected == 1
    assert [r.values[0].string_value for r in reply.results[3].rows] == ["a", "b"]


@pytest.mark.parametrize("database", ENGINES)
def test_failing_statement_rolls_everything_back_and_names_its_index(db, database):
    table = unique_name("run")
    db.Execute(
        pb.ExecuteRequest(database=database, sql=f"CREATE TABLE {table} (id INT PRIMARY KEY)")
    )
    p = PLACEHOLDER[database]
    with pytest.raises(grpc.RpcError) as info:
        db.RunTransaction(
            pb.RunTransactionRequest(
                database=database,
                statements=[
                    statement(f"INSERT INTO {table} VALUES ({p})", V.of(int_value=1)),
                    statement(f"INSERT INTO {table} VALUES ({p})", V.of(int_value=2)),
                    statement(f"INSERT INTO {table} VALUES ({p})", V.of(int_value=1)),
                ],
            )
        )
    err = call_error(info.value)
    assert err.code == grpc.StatusCode.ALREADY_EXISTS
    assert err.metadata["statement_index"] == "2"
    assert err.metadata["attempts"] == "1"
    rows = db.Query(pb.QueryRequest(database=database, sql=f"SELECT count(*) FROM {table}")).rows
    assert rows[0].values[0].int_value == 0


def test_refused_statement_is_reported_before_anything_runs(db):
    with pytest.raises(grpc.RpcError) as info:
        db.RunTransaction(
            pb.RunTransactionRequest(
                database="pg", statements=[statement("SELECT 1"), statement("COMMIT")]
            )
        )
    err = call_error(info.value)
    assert err.reason == "UNSUPPORTED_STATEMENT"
    assert err.metadata["statement_index"] == "1"


def test_concurrent_serializable_transfers_all_succeed_with_retries(db):
    accounts = unique_name("accounts")
    db.Execute(
        pb.ExecuteRequest(
            database="pg", sql=f"CREATE TABLE {accounts} (id INT PRIMARY KEY, balance INT NOT NULL)"
        )
    )
    db.Execute(
        pb.ExecuteRequest(database="pg", sql=f"INSERT INTO {accounts} VALUES (1, 1000), (2, 1000)")
    )

    def transfer(amount: int) -> pb.RunTransactionRequest:
        return pb.RunTransactionRequest(
            database="pg",
            options=pb.TransactionOptions(isolation=pb.ISOLATION_LEVEL_SERIALIZABLE),
            max_attempts=50,
            statements=[
                statement(f"SELECT balance FROM {accounts} WHERE id IN (1, 2)"),
                statement(
                    f"UPDATE {accounts} SET balance = balance - $1 WHERE id = 1",
                    V.of(int_value=amount),
                ),
                statement(
                    f"UPDATE {accounts} SET balance = balance + $1 WHERE id = 2",
                    V.of(int_value=amount),
                ),
            ],
        )

    calls = [db.RunTransaction.future(transfer(k % 5 + 1), timeout=60) for k in range(40)]
    replies = [c.result() for c in calls]
    assert all(len(r.results) == 3 for r in replies)
    assert max(r.attempts for r in replies) > 1
    moved = sum(k % 5 + 1 for k in range(40))
    rows = db.Query(
        pb.QueryRequest(database="pg", sql=f"SELECT balance FROM {accounts} ORDER BY id")
    ).rows
    assert [r.values[0].int_value for r in rows] == [1000 - moved, 1000 + moved]


def test_max_attempts_beyond_the_limit_is_invalid(db):
    with pytest.raises(grpc.RpcError) as info:
        db.RunTransaction(
            pb.RunTransactionRequest(
                database="pg", statements=[statement("SELECT 1")], max_attempts=1000
            )
        )
    assert call_error(info.value).code == grpc.StatusCode.INVALID_ARGUMENT
