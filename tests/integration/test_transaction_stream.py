"""The interactive ``Transaction`` stream: begin, statements, commit or rollback;
errors in-band; and whatever way a stream ends without commit, nothing is kept
and no session is left idle in transaction."""

from __future__ import annotations

import grpc
import pytest

from dbgateway.v1 import database_service_pb2 as pb
from tests.integration.polling import eventually
from tests.integration.transactions_support import (
    ENGINES,
    PLACEHOLDER,
    TransactionStream,
    open_transactions,
)
from tests.support import V, call_error, unique_name


def make_table(db, database: str) -> str:
    table = unique_name("tx")
    db.Execute(
        pb.ExecuteRequest(
            database=database, sql=f"CREATE TABLE {table} (id INT PRIMARY KEY, note VARCHAR(50))"
        )
    )
    return table


def count(db, database: str, table: str) -> int:
    reply = db.Query(pb.QueryRequest(database=database, sql=f"SELECT count(*) FROM {table}"))
    return reply.rows[0].values[0].int_value


def insert_sql(database: str, table: str) -> str:
    p = PLACEHOLDER[database]
    return f"INSERT INTO {table} (id, note) VALUES ({p}, 'x')"


def dsn_of(database, postgres_dsn, mysql_dsn):
    return {"pg": postgres_dsn, "mysql": mysql_dsn}.get(database)


@pytest.mark.parametrize("database", ENGINES)
def test_stream_commit_keeps_the_writes(db, database):
    table = make_table(db, database)
    stream = TransactionStream(db)
    begun = stream.begin(database)
    assert len(begun.begun.transaction_id) >= 22  # 128 bits or more, base64
    assert stream.statement(insert_sql(database, table), V.of(int_value=1)).rows_affected == 1
    assert stream.statement(insert_sql(database, table), V.of(int_value=2)).rows_affected == 1
    seen = stream.statement(f"SELECT count(*) AS n FROM {table}")
    assert seen.rows[0].values[0].int_value == 2
    assert stream.commit().WhichOneof("event") == "committed"
    assert count(db, database, table) == 2


@pytest.mark.parametrize("database", ENGINES)
def test_stream_rollback_keeps_nothing(db, database):
    table = make_table(db, database)
    stream = TransactionStream(db)
    stream.begin(database)
    stream.statement(insert_sql(database, table), V.of(int_value=1))
    assert stream.rollback().WhichOneof("event") == "rolled_back"
    assert count(db, database, table) == 0


@pytest.mark.parametrize("database", ENGINES)
def test_stream_dropped_mid_transaction_rolls_back(db, database, postgres_dsn, mysql_dsn):
    table = make_table(db, database)
    stream = TransactionStream(db)
    stream.begin(database)
    stream.statement(insert_sql(database, table), V.of(int_value=1))
    dsn = dsn_of(database, postgres_dsn, mysql_dsn)
    if dsn is not None:
        assert open_transactions(database, dsn) >= 1  # the check below can see one
    stream.cancel()
    if dsn is not None:
        assert eventually(lambda: open_transactions(database, dsn) == 0, within=1.0)
    # SQLite: the writer lock the transaction held is free again, or this would time out.
    db.Execute(
        pb.ExecuteRequest(
            database=database,
            sql=insert_sql(database, table),
            params=[V.of(int_value=2)],
            options=pb.RequestOptions(timeout={"seconds": 5}),
        )
    )
    assert count(db, database, table) == 1


@pytest.mark.parametrize("database", ["pg", "mysql"])
def test_stream_closed_without_commit_rolls_back(db, database, postgres_dsn, mysql_dsn):
    table = make_table(db, database)
    stream = TransactionStream(db)
    stream.begin(database)
    stream.statement(insert_sql(database, table), V.of(int_value=1))
    last = stream.half_close()
    assert [r.WhichOneof("event") for r in last] == ["rolled_back"]
    assert count(db, database, table) == 0
    assert eventually(
        lambda: open_transactions(database, dsn_of(database, postgres_dsn, mysql_dsn)) == 0
    )


def test_stream_past_its_deadline_rolls_back(db, postgres_dsn):
    table = make_table(db, "pg")
    stream = TransactionStream(db, timeout=0.5)
    stream.begin("pg")
    stream.statement(insert_sql("pg", table), V.of(int_value=1))
    with pytest.raises(grpc.RpcError) as info:  # noqa: PT012
        while True:  # each statement is cut off at the stream's deadline, in-band
            stream.statement("SELECT pg_sleep(5)")
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert eventually(lambda: open_transactions("pg", postgres_dsn) == 0)
    assert count(db, "pg", table) == 0


def test_in_band_error_then_rollback_to_savepoint_then_commit_on_postgres(db):
    table = make_table(db, "pg")
    stream = TransactionStream(db)
    stream.begin("pg")
    stream.statement(insert_sql("pg", table), V.of(int_value=1))
    stream.statement("SAVEPOINT before_dup")
    failed = stream.statement(insert_sql("pg", table), V.of(int_value=1))
    assert failed.error.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert "duplicate key" in failed.error.message
    stream.statement("ROLLBACK TO SAVEPOINT before_dup")
    stream.statement(insert_sql("pg", table), V.of(int_value=2))
    assert stream.commit().WhichOneof("event") == "committed"
    assert count(db, "pg", table) == 2


@pytest.mark.parametrize("database", ENGINES)
def test_statement_error_comes_back_in_band_with_its_details(db, database):
    stream = TransactionStream(db)
    stream.begin(database)
    failed = stream.statement("SELECT * FROM no_such_table")
    assert failed.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "no_such_table" in failed.error.message
    assert any(d.type_url.endswith("google.rpc.ErrorInfo") for d in failed.error.details)
    assert stream.rollback().WhichOneof("event") == "rolled_back"


def test_commit_after_an_unrecovered_error_on_postgres_is_refused(db):
    table = make_table(db, "pg")
    stream = TransactionStream(db)
    stream.begin("pg")
    stream.statement(insert_sql("pg", table), V.of(int_value=1))
    assert stream.statement("SELECT 1/0").error.code != 0
    with pytest.raises(grpc.RpcError) as info:
        stream.commit()
    err = call_error(info.value)
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == "INVALID_TRANSACTION_STATE"
    assert count(db, "pg", table) == 0


def test_statement_before_begin_ends_the_stream_with_failed_precondition(db):
    stream = TransactionStream(db)
    with pytest.raises(grpc.RpcError) as info:
        stream.send(pb.TransactionRequest(statement=pb.Statement(sql="SELECT 1")))
    assert call_error(info.value).code == grpc.StatusCode.FAILED_PRECONDITION


def test_second_begin_ends_the_stream_with_failed_precondition(db, postgres_dsn):
    stream = TransactionStream(db)
    stream.begin("pg")
    with pytest.raises(grpc.RpcError) as info:
        stream.begin("pg")
    assert call_error(info.value).code == grpc.StatusCode.FAILED_PRECONDITION
    assert eventually(lambda: open_transactions("pg", postgres_dsn) == 0)


@pytest.mark.parametrize("database", ENGINES)
def test_transaction_control_inside_the_stream_is_refused_in_band(db, database):
    stream = TransactionStream(db)
    stream.begin(database)
    refused = stream.statement("COMMIT")
    assert refused.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "commit or rollback action" in refused.error.message
    stream.rollback()


@pytest.mark.parametrize(
    ("database", "options"),
    [
        ("lite", {"isolation": pb.ISOLATION_LEVEL_READ_COMMITTED}),
        ("lite", {"deferrable": True}),
        ("mysql", {"deferrable": True}),
    ],
)
def test_options_the_engine_cannot_honour_are_unimplemented(db, database, options):
    stream = TransactionStream(db)
    with pytest.raises(grpc.RpcError) as info:
        stream.begin(database, **options)
    err = call_error(info.value)
    assert err.code == grpc.StatusCode.UNIMPLEMENTED
    assert err.reason == "UNSUPPORTED"


@pytest.mark.parametrize("database", ENGINES)
def test_read_only_transaction_refuses_writes(db, database):
    table = make_table(db, database)
    stream = TransactionStream(db)
    stream.begin(database, read_only=True)
    refused = stream.statement(insert_sql(database, table), V.of(int_value=1))
    assert refused.error.code != 0
    stream.rollback()
    assert count(db, database, table) == 0


def test_a_stream_transaction_is_counted_as_open_while_it_lasts(db, channel):
    from dbgateway.v1 import admin_service_pb2, admin_service_pb2_grpc

    admin = admin_service_pb2_grpc.AdminServiceStub(channel)

    def open_on_lite() -> int:
        reply = admin.ListDatabases(admin_service_pb2.ListDatabasesRequest())
        return next(d.open_transactions for d in reply.databases if d.name == "lite")

    before = open_on_lite()
    stream = TransactionStream(db)
    stream.begin("lite")
    assert open_on_lite() == before + 1
    stream.commit()
    assert eventually(lambda: open_on_lite() == before, within=2.0)
