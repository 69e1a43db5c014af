"""ExecuteBatch says how many rows it changed, on every engine: the same total
as running each parameter set with Execute, for inserts, updates, deletes,
upserts and RETURNING, outside and inside a transaction."""

from __future__ import annotations

import grpc
import pytest

import dbgateway
from dbgateway.v1 import database_service_pb2 as pb
from tests.integration.transactions_support import ENGINES, PLACEHOLDER
from tests.support import V, call_error, unique_name

pytestmark = [pytest.mark.postgres, pytest.mark.mysql]

UPSERT = {
    "pg": "INSERT INTO {t} (id, n) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET n = EXCLUDED.n",
    "mysql": "INSERT INTO {t} (id, n) VALUES (%s, %s) ON DUPLICATE KEY UPDATE n = VALUES(n)",
    "lite": "INSERT INTO {t} (id, n) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET n = excluded.n",
}


def placeholders(database: str) -> tuple[str, str]:
    return ("$1", "$2") if database == "pg" else (PLACEHOLDER[database],) * 2


def table(db, database: str) -> str:
    name = unique_name("batch")
    db.Execute(
        pb.ExecuteRequest(
            database=database, sql=f"CREATE TABLE {name} (id INT PRIMARY KEY, n INT NOT NULL)"
        )
    )
    return name


def sets(*rows: tuple[int, ...]) -> list[pb.ParamSet]:
    return [pb.ParamSet(params=[V.of(int_value=v) for v in row]) for row in rows]


def batch(db, database: str, sql: str, param_sets: list[pb.ParamSet], **kw) -> int | None:
    reply = db.ExecuteBatch(
        pb.ExecuteBatchRequest(database=database, sql=sql, param_sets=param_sets, **kw),
        timeout=30,
    )
    return reply.rows_affected if reply.HasField("rows_affected") else None


def one_by_one(db, database: str, sql: str, param_sets: list[pb.ParamSet]) -> int:
    return sum(
        db.Execute(
            pb.ExecuteRequest(database=database, sql=sql, params=s.params), timeout=30
        ).rows_affected
        for s in param_sets
    )


@pytest.mark.parametrize("database", ENGINES)
def test_batch_counts_are_what_each_statement_reports(db, database):
    p1, p2 = placeholders(database)
    steps = [
        (f"INSERT INTO {{t}} (id, n) VALUES ({p1}, {p2})", sets(*((i, i) for i in range(1, 11)))),
        # 10 rows: ids 1..10; each update touches the rows with id >= x.
        (f"UPDATE {{t}} SET n = n + 100 WHERE id >= {p1}", sets((8,), (10,), (99,))),
        (UPSERT[database], sets((1, 5), (2, 6), (50, 7), (51, 8))),
        (f"DELETE FROM {{t}} WHERE id = {p1}", sets((3,), (3,), (4,), (1000,))),
    ]
    batched, single = table(db, database), table(db, database)
    for sql, param_sets in steps:
        expected = one_by_one(db, database, sql.format(t=single), param_sets)
        assert batch(db, database, sql.format(t=batched), param_sets) == expected, sql
    assert expected == 2  # the last step deleted rows 3 and 4 only


def test_postgres_counts_batches_with_returning_comments_and_semicolons(db):
    t = table(db, "pg")
    assert (
        batch(db, "pg", f"INSERT INTO {t} VALUES ($1, $2) RETURNING id", sets((1, 1), (2, 2))) == 2
    )
    assert (
        batch(db, "pg", f"INSERT INTO {t} VALUES ($1, $2); -- two more", sets((3, 3), (4, 4))) == 2
    )
    assert batch(db, "pg", f"UPDATE {t} SET n = 0 WHERE n < $1", sets((3,), (5,))) == 2 + 4
    # Not a data-modifying statement: still counted (what its tag says).
    assert batch(db, "pg", f"SELECT id FROM {t} WHERE id <= $1", sets((1,), (2,))) == 3


def test_a_counted_batch_in_a_transaction_keeps_the_transaction_usable(db):
    t = table(db, "pg")
    tx = db.BeginTransaction(pb.BeginTransactionRequest(database="pg"), timeout=10)
    try:
        got = batch(
            db,
            "pg",
            f"INSERT INTO {t} VALUES ($1, $2)",
            sets((1, 1), (2, 2), (3, 3)),
            transaction_id=tx.transaction_id,
        )
        assert got == 3
        with pytest.raises(grpc.RpcError) as info:
            batch(
                db,
                "pg",
                f"INSERT INTO {t} VALUES ($1, $2)",
                sets((4, 4), (1, 1)),
                transaction_id=tx.transaction_id,
            )
        assert call_error(info.value).reason == "UNIQUE_VIOLATION"
        rows = db.Query(
            pb.QueryRequest(
                database="pg", sql=f"SELECT count(*) FROM {t}", transaction_id=tx.transaction_id
            ),
            timeout=10,
        ).rows
        assert rows[0].values[0].int_value == 3  # the failed batch alone was undone
        db.Commit(pb.CommitRequest(database="pg", transaction_id=tx.transaction_id), timeout=10)
    finally:
        db.Rollback(pb.RollbackRequest(database="pg", transaction_id=tx.transaction_id))


def test_a_batch_on_a_missing_table_reports_the_database_error(db):
    with pytest.raises(grpc.RpcError) as info:
        batch(db, "pg", "INSERT INTO no_such_table_xyz VALUES ($1)", sets((1,)))
    err = call_error(info.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.metadata["sqlstate"] == "42P01"
    assert "RETURNING" not in err.message


@pytest.mark.parametrize("database", ENGINES)
def test_the_python_client_returns_the_batch_count(server, db, database):
    t = table(db, database)
    p1, p2 = placeholders(database)
    with dbgateway.Client(server.address, timeout=30) as client:
        result = client.execute_batch(
            f"INSERT INTO {t} (id, n) VALUES ({p1}, {p2})",
            [(i, i) for i in range(25)],
            database=database,
        )
    assert result.rows_affected == 25
