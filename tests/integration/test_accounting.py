"""What is counted and named: StreamQuery rows reach the access log and
``dbgateway_rows_returned_total``; the long-transaction warning names the
request id of the call that began the transaction."""

from __future__ import annotations

import re
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc as pb_grpc
from tests.integration.polling import waited_for
from tests.support import ServerProcess, V

pytestmark = [pytest.mark.postgres, pytest.mark.mysql]

_METRICS = re.compile(r"metrics listening on (\S+):(\d+)")
ROWS = 1234
PLACEHOLDER = {"pg": "$1", "mysql": "%s", "lite": "?"}
SERIES = {
    "pg": "SELECT g FROM generate_series(1, $1::int) AS g",
    "mysql": "SELECT seq FROM seq_1_to_100000 WHERE seq <= %s",
    "lite": "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < ?) "
    "SELECT n FROM s",
}


@pytest.fixture(scope="module")
def counted(
    tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str, mysql_dsn: str
) -> Iterator[tuple[ServerProcess, str]]:
    workdir = tmp_path_factory.mktemp("accounting")
    config = f"""
[server]
metrics_listen = "127.0.0.1:0"
long_transaction_threshold = 0.3

[databases.pg]
dsn = "{postgres_dsn}"

[databases.mysql]
dsn = "{mysql_dsn}"

[databases.lite]
dsn = "sqlite://{workdir / "lite.sqlite3"}"
"""
    server = ServerProcess(workdir, config=config).start()
    try:
        match = waited_for(lambda: _METRICS.search(server.log()), "metrics listening line")
        yield server, f"http://127.0.0.1:{match.group(2)}/metrics"
    finally:
        server.stop()


def rows_returned(url: str, database: str) -> float:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "dbgateway_rows_returned_total" and s.labels == {"database": database}:
                return s.value
    return 0.0


@pytest.mark.parametrize("database", ["pg", "mysql", "lite"])
def test_stream_query_rows_are_counted_in_the_log_and_the_metrics(
    counted: tuple[ServerProcess, str], database: str
):
    server, url = counted
    before = rows_returned(url, database)
    rid = f"stream-{uuid.uuid4().hex}"
    with server.channel() as channel:
        stub = pb_grpc.DatabaseServiceStub(channel)
        request = pb.QueryRequest(
            database=database, sql=SERIES[database], params=[V.of(int_value=ROWS)]
        )
        replies = list(stub.StreamQuery(request, metadata=[("x-request-id", rid)], timeout=30))
    assert sum(len(r.rows) for r in replies) == ROWS
    assert replies[-1].stats.rows == ROWS
    line = waited_for(
        lambda: next((ln for ln in server.log().splitlines() if rid in ln and "access" in ln), ""),
        "the access-log line of the stream",
    )
    assert f"rows={ROWS}" in line
    assert rows_returned(url, database) - before == ROWS


def test_the_long_transaction_warning_names_the_request_id_that_began_it(
    counted: tuple[ServerProcess, str],
):
    server, _ = counted
    rid = f"long-tx-{uuid.uuid4().hex}"
    with server.channel() as channel:
        stub = pb_grpc.DatabaseServiceStub(channel)
        begun = stub.BeginTransaction(
            pb.BeginTransactionRequest(database="pg"), metadata=[("x-request-id", rid)], timeout=10
        )
        try:
            line = waited_for(
                lambda: next(
                    (ln for ln in server.log().splitlines() if "long_transaction" in ln), ""
                ),
                "a long-transaction warning",
            )
        finally:
            stub.Rollback(
                pb.RollbackRequest(database="pg", transaction_id=begun.transaction_id), timeout=10
            )
    assert f"request_id={rid}" in line
    assert begun.transaction_id not in line
