"""A server that stops rolls back the transactions still open on it."""

from __future__ import annotations

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc
from tests.integration.transactions_support import open_transactions
from tests.support import ServerProcess, V, pg_fetch, unique_name


def test_stopping_the_server_rolls_back_open_handle_transactions(tmp_path, postgres_dsn):
    table = unique_name("shutdown")
    pg_fetch(postgres_dsn, f"CREATE TABLE {table} (id INT PRIMARY KEY)")
    proc = ServerProcess(tmp_path, config=f'[databases.pg]\ndsn = "{postgres_dsn}"\n').start()
    try:
        with proc.channel() as channel:
            db = database_service_pb2_grpc.DatabaseServiceStub(channel)
            tx = db.BeginTransaction(pb.BeginTransactionRequest()).transaction_id
            db.Execute(
                pb.ExecuteRequest(
                    sql=f"INSERT INTO {table} VALUES ($1)",
                    params=[V.of(int_value=1)],
                    transaction_id=tx,
                )
            )
    finally:
        assert proc.stop() == 0
    assert "rolled back 1 open transaction(s) at shutdown" in proc.log()
    assert pg_fetch(postgres_dsn, f"SELECT count(*) FROM {table}")[0][0] == 0
    assert open_transactions("pg", postgres_dsn) == 0
