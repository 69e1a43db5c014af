"""RunTransaction under contention: with the default options it is retried
until its deadline, not given up after a fixed number of attempts; an
explicit ``max_attempts`` stays a limit; ``attempts`` says how many runs it
took. The same through the Python client."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

import grpc
import pytest

import dbgateway
from dbgateway.v1 import database_service_pb2 as pb
from tests.integration.transactions_support import PLACEHOLDER
from tests.support import V, call_error, unique_name

pytestmark = [pytest.mark.postgres, pytest.mark.mysql]

TRANSFERS = 40
CALLERS = 16
DEADLINE = 30.0
START = 100_000


def statement(sql: str, *params: object) -> pb.Statement:
    return pb.Statement(sql=sql, params=params)


def accounts(db, database: str) -> str:
    table = unique_name("acct")
    db.Execute(
        pb.ExecuteRequest(
            database=database,
            sql=f"CREATE TABLE {table} (id INT PRIMARY KEY, balance INT NOT NULL)",
        )
    )
    db.Execute(
        pb.ExecuteRequest(
            database=database, sql=f"INSERT INTO {table} VALUES (1, {START}), (2, {START})"
        )
    )
    return table


def transfer_statements(table: str, database: str, amount: int) -> list[pb.Statement]:
    p = PLACEHOLDER[database]
    # Both transactions read both rows, then write them: under SERIALIZABLE
    # concurrent transfers conflict (PostgreSQL 40001, MariaDB deadlock 1213).
    return [
        statement(f"SELECT balance FROM {table} WHERE id IN (1, 2)"),
        statement(
            f"UPDATE {table} SET balance = balance - {p} WHERE id = 1", V.of(int_value=amount)
        ),
        statement(
            f"UPDATE {table} SET balance = balance + {p} WHERE id = 2", V.of(int_value=amount)
        ),
    ]


def balances(db, database: str, table: str) -> list[int]:
    rows = db.Query(
        pb.QueryRequest(database=database, sql=f"SELECT balance FROM {table} ORDER BY id")
    ).rows
    return [r.values[0].int_value for r in rows]


def run_all(call: Callable[[int], object]) -> list[object]:
    """``call(k)`` for every transfer, 16 at a time; each result or its error."""
    with concurrent.futures.ThreadPoolExecutor(CALLERS) as pool:
        futures = [pool.submit(call, k) for k in range(TRANSFERS)]
        outcomes: list[object] = []
        for f in futures:
            try:
                outcomes.append(f.result())
            except Exception as exc:
                outcomes.append(exc)
    return outcomes


def amount(k: int) -> int:
    return k % 7 + 1


@pytest.mark.parametrize("database", ["pg", "mysql"])
def test_contending_serializable_transfers_all_commit_under_the_default_options(db, database):
    table = accounts(db, database)

    def call(k: int) -> pb.RunTransactionResponse:
        return db.RunTransaction(
            pb.RunTransactionRequest(
                database=database,
                options=pb.TransactionOptions(isolation=pb.ISOLATION_LEVEL_SERIALIZABLE),
                statements=transfer_statements(table, database, amount(k)),
            ),
            timeout=DEADLINE,
        )

    outcomes = run_all(call)
    failed = [call_error(o) for o in outcomes if isinstance(o, grpc.RpcError)]
    assert not failed, f"{len(failed)} of {TRANSFERS} failed: {failed[:3]}"
    replies = [o for o in outcomes if isinstance(o, pb.RunTransactionResponse)]
    assert len(replies) == TRANSFERS
    assert max(r.attempts for r in replies) > 1  # they did contend
    moved = sum(amount(k) for k in range(TRANSFERS))
    assert balances(db, database, table) == [START - moved, START + moved]


def test_an_explicit_max_attempts_is_a_limit_reported_in_the_error(db, server):
    table = accounts(db, "pg")
    with dbgateway.Client(server.address, timeout=DEADLINE) as client:

        def call(k: int) -> object:
            return client.run_transaction(
                [
                    (f"SELECT balance FROM {table} WHERE id IN (1, 2)", ()),
                    (f"UPDATE {table} SET balance = balance - $1 WHERE id = 1", (amount(k),)),
                    (f"UPDATE {table} SET balance = balance + $1 WHERE id = 2", (amount(k),)),
                ],
                database="pg",
                isolation="serializable",
                max_attempts=1,
            )

        outcomes = run_all(call)
    errors = [o for o in outcomes if isinstance(o, dbgateway.DbGatewayError)]
    assert errors, "16 callers, one attempt each: some must lose the conflict"
    assert all(e.reason == "SERIALIZATION_FAILURE" for e in errors)
    assert all(e.metadata.get("attempts") == "1" for e in errors)
    done = [o for o in outcomes if not isinstance(o, Exception)]
    moved = sum(amount(k) for k, o in enumerate(outcomes) if not isinstance(o, Exception))
    assert all(r.attempts == 1 for r in done)
    assert balances(db, "pg", table) == [START - moved, START + moved]


def test_the_python_client_run_transaction_retries_until_its_deadline(db, server):
    table = accounts(db, "pg")
    with dbgateway.Client(server.address, timeout=DEADLINE) as client:

        def call(k: int) -> object:
            return client.run_transaction(
                [
                    (f"SELECT balance FROM {table} WHERE id IN (1, 2)", ()),
                    (f"UPDATE {table} SET balance = balance - $1 WHERE id = 1", (amount(k),)),
                    (f"UPDATE {table} SET balance = balance + $1 WHERE id = 2", (amount(k),)),
                ],
                database="pg",
                isolation="serializable",
            )

        outcomes = run_all(call)
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert not errors, f"{len(errors)} of {TRANSFERS} failed: {errors[:3]}"
    assert max(o.attempts for o in outcomes) > 1  # type: ignore[attr-defined]
    moved = sum(amount(k) for k in range(TRANSFERS))
    assert balances(db, "pg", table) == [START - moved, START + moved]
