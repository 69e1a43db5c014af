"""Helpers for the transaction tests: a driveable Transaction stream, and what
the databases themselves say about open transactions."""

from __future__ import annotations

import queue
import time

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc
from tests.support import mysql_fetch, pg_fetch

PLACEHOLDER = {"pg": "$1", "mysql": "%s", "lite": "?"}
ENGINES = list(PLACEHOLDER)


class TransactionStream:
    """One ``Transaction`` call, driven a message at a time."""

    def __init__(
        self, db: database_service_pb2_grpc.DatabaseServiceStub, timeout: float | None = 30
    ) -> None:
        self._requests: queue.Queue[pb.TransactionRequest | None] = queue.Queue()
        self.call = db.Transaction(iter(self._requests.get, None), timeout=timeout)

    def send(self, request: pb.TransactionRequest) -> pb.TransactionResponse:
        self._requests.put(request)
        return next(self.call)

    def begin(self, database: str, **options) -> pb.TransactionResponse:
        return self.send(
            pb.TransactionRequest(
                begin=pb.TransactionRequest.Begin(
                    database=database, options=pb.TransactionOptions(**options)
                )
            )
        )

    def statement(self, sql: str, *params) -> pb.StatementResult:
        reply = self.send(pb.TransactionRequest(statement=pb.Statement(sql=sql, params=params)))
        assert reply.WhichOneof("event") == "result", reply
        return reply.result

    def commit(self) -> pb.TransactionResponse:
        return self.send(pb.TransactionRequest(commit=pb.TransactionRequest.Commit()))

    def rollback(self) -> pb.TransactionResponse:
        return self.send(pb.TransactionRequest(rollback=pb.TransactionRequest.Rollback()))

    def half_close(self) -> list[pb.TransactionResponse]:
        """Ends the caller's side and returns what the server still sends."""
        self._requests.put(None)
        return list(self.call)

    def cancel(self) -> None:
        self.call.cancel()


def open_transactions(database: str, dsn: str) -> int:
    """Sessions of the test database that sit inside a transaction, as the
    database server itself reports them."""
    if database == "pg":
        name = dsn.rsplit("/", 1)[-1]
        rows = pg_fetch(
            dsn,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = "
            f"'{name}' AND state LIKE 'idle in transaction%'",
        )
        return int(rows[0][0])
    name = dsn.rsplit("/", 1)[-1]
    # InnoDB refreshes its information_schema.innodb_trx cache only when it
    # was not read for 100 ms: reading it more often keeps showing the past.
    time.sleep(0.12)
    rows = mysql_fetch(
        dsn,
        "SELECT count(*) FROM information_schema.innodb_trx t "
        "JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
        f"WHERE p.db = '{name}' AND p.id <> CONNECTION_ID()",
    )
    return int(rows[0][0])
