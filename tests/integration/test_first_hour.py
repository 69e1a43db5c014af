"""Small things a new user or the on-call engineer trips over in the first
hour: the server version shown, a read's rows_affected in a transaction, the
USE refusal's advice."""

from __future__ import annotations

import grpc
import pytest

from dbgateway.v1 import admin_service_pb2 as admin_pb
from dbgateway.v1 import admin_service_pb2_grpc
from dbgateway.v1 import database_service_pb2 as pb
from tests.integration.transactions_support import ENGINES, PLACEHOLDER, TransactionStream
from tests.support import V, call_error, pg_fetch, unique_name


def test_the_postgresql_version_is_the_servers_own(channel, postgres_dsn):
    admin = admin_service_pb2_grpc.AdminServiceStub(channel)
    reply = admin.ListDatabases(admin_pb.ListDatabasesRequest(), timeout=10)
    pg = next(d for d in reply.databases if d.name == "pg")
    actual = pg_fetch(postgres_dsn, "SHOW server_version")[0]["server_version"].split()[0]
    assert pg.server_version == actual  # e.g. "15.20", not "15.0"


@pytest.mark.parametrize("database", ENGINES)
def test_a_read_in_the_transaction_stream_affects_no_rows(db, database):
    table = unique_name("reads")
    db.Execute(pb.ExecuteRequest(database=database, sql=f"CREATE TABLE {table} (id INT)"))
    stream = TransactionStream(db)
    stream.begin(database)
    p = PLACEHOLDER[database]
    for n in (1, 2, 3):
        written = stream.statement(f"INSERT INTO {table} (id) VALUES ({p})", V.of(int_value=n))
        assert written.rows_affected == 1
    read = stream.statement(f"SELECT id FROM {table} ORDER BY id")
    assert [r.values[0].int_value for r in read.rows] == [1, 2, 3]
    assert read.rows_affected == 0
    changed = stream.statement(f"UPDATE {table} SET id = id + 10 WHERE id > 1")
    assert changed.rows_affected == 2
    assert stream.commit().WhichOneof("event") == "committed"


def test_the_use_refusal_does_not_suggest_what_mysql_lacks(db):
    with pytest.raises(grpc.RpcError) as info:
        db.Execute(pb.ExecuteRequest(database="mysql", sql="USE mysql"), timeout=10)
    err = call_error(info.value)
    assert err.reason == "UNSUPPORTED_STATEMENT"
    assert "SET LOCAL" not in err.message
    assert "database field" in err.message
    # SET still points PostgreSQL users at SET LOCAL.
    with pytest.raises(grpc.RpcError) as info:
        db.Execute(pb.ExecuteRequest(database="pg", sql="SET search_path = x"), timeout=10)
    assert "SET LOCAL" in call_error(info.value).message
