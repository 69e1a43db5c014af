"""ExecuteBatch: one statement, many parameter sets, through the drivers' bulk
paths; all rows or none."""

from __future__ import annotations

import grpc
import pytest

from dbgateway.v1 import database_service_pb2 as pb
from tests.integration.transactions_support import ENGINES, PLACEHOLDER
from tests.support import V, call_error, unique_name


def make_table(db, database: str) -> str:
    table = unique_name("batch")
    db.Execute(
        pb.ExecuteRequest(
            database=database,
            sql=f"CREATE TABLE {table} (id INT PRIMARY KEY, note VARCHAR(50), data {'BYTEA' if database == 'pg' else 'BLOB'})",
        )
    )
    return table


def batch(database: str, table: str, keys) -> pb.ExecuteBatchRequest:
    p = ["$1", "$2", "$3"] if database == "pg" else [PLACEHOLDER[database]] * 3
    return pb.ExecuteBatchRequest(
        database=database,
        sql=f"INSERT INTO {table} (id, note, data) VALUES ({p[0]}, {p[1]}, {p[2]})",
        param_sets=[
            pb.ParamSet(
                params=[
                    V.of(int_value=k),
                    V.of(string_value=f"row '{k}' 100%"),
                    V.of(bytes_value=bytes([k % 256, 0, 39])),
                ]
            )
            for k in keys
        ],
    )


def rows(db, database: str, sql: str):
    return db.Query(pb.QueryRequest(database=database, sql=sql)).rows


@pytest.mark.parametrize("database", ENGINES)
def test_batch_of_ten_thousand_rows(db, database):
    table = make_table(db, database)
    reply = db.ExecuteBatch(batch(database, table, range(10_000)))
    assert reply.rows_affected == 10_000
    got = rows(db, database, f"SELECT count(*), sum(id) FROM {table}")[0].values
    assert got[0].int_value == 10_000
    assert int(got[1].int_value or got[1].decimal_value) == sum(range(10_000))
    last = rows(db, database, f"SELECT note, data FROM {table} WHERE id = 9999")[0].values
    assert last[0].string_value == "row '9999' 100%"
    assert last[1].bytes_value == bytes([9999 % 256, 0, 39])


@pytest.mark.parametrize("database", ENGINES)
def test_batch_with_one_bad_row_leaves_nothing(db, database):
    table = make_table(db, database)
    keys = [*range(500), 250, *range(500, 600)]  # row 501 repeats a key
    with pytest.raises(grpc.RpcError) as info:
        db.ExecuteBatch(batch(database, table, keys))
    assert call_error(info.value).code == grpc.StatusCode.ALREADY_EXISTS
    assert rows(db, database, f"SELECT count(*) FROM {table}")[0].values[0].int_value == 0


@pytest.mark.parametrize("database", ENGINES)
def test_batch_of_updates_reports_rows_affected_where_the_engine_does(db, database):
    table = make_table(db, database)
    db.ExecuteBatch(batch(database, table, range(10)))
    p = ["$1", "$2"] if database == "pg" else [PLACEHOLDER[database]] * 2
    reply = db.ExecuteBatch(
        pb.ExecuteBatchRequest(
            database=database,
            sql=f"UPDATE {table} SET note = {p[0]} WHERE id < {p[1]}",
            param_sets=[
                pb.ParamSet(params=[V.of(string_value=f"u{k}"), V.of(int_value=k)]) for k in (3, 5)
            ],
        )
    )
    if database != "pg":
        assert reply.rows_affected == 3 + 5
    assert (
        rows(db, database, f"SELECT count(*) FROM {table} WHERE note = 'u5'")[0].values[0].int_value
        == 5
    )


def test_batch_statements_that_change_the_session_are_refused(db):
    with pytest.raises(grpc.RpcError) as info:
        db.ExecuteBatch(
            pb.ExecuteBatchRequest(
                database="pg", sql="SET search_path = x", param_sets=[pb.ParamSet()]
            )
        )
    assert call_error(info.value).reason == "UNSUPPORTED_STATEMENT"
