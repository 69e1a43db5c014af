"""The client API against a real server: sync and async, results, typed errors
with SQLSTATE, deadlines, and the retry rules (the last against a scripted
gRPC server, since no real database can be made to answer CIRCUIT_OPEN on cue)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

import dbgateway
from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc as pb_grpc
from tests.support import unique_name

PLACEHOLDER = {"pg": "$1", "mysql": "%s", "lite": "?"}
KEY = {"pg": "INTEGER PRIMARY KEY", "mysql": "INT PRIMARY KEY", "lite": "INTEGER PRIMARY KEY"}


@pytest.fixture(scope="module")
def client(server) -> Iterator[dbgateway.Client]:
    with dbgateway.Client(server.address, timeout=30) as db:
        yield db


@pytest.fixture(scope="module")
def tables(client) -> dict[str, str]:
    """A table with a unique email and a NOT NULL name on each engine."""
    names = {}
    for database in PLACEHOLDER:
        table = unique_name("people")
        client.execute(
            f"CREATE TABLE {table} (id {KEY[database]}, email VARCHAR(100) UNIQUE, name VARCHAR(50) NOT NULL)",
            database=database,
        )
        client.execute(
            f"INSERT INTO {table} (id, email, name) VALUES (1, 'a@x', 'Ada')", database=database
        )
        names[database] = table
    return names


def test_query_returns_columns_rows_and_dicts(client):
    result = client.query(
        "SELECT 1 AS id, 'Ada' AS name UNION ALL SELECT 2, 'Bob'", database="lite"
    )
    assert result.columns == ("id", "name")
    assert result.rows == [(1, "Ada"), (2, "Bob")]
    assert list(result) == result.rows
    assert len(result) == 2
    assert result.as_dicts() == [{"id": 1, "name": "Ada"}, {"id": 2, "name": "Bob"}]
    assert result.scalar() == 1
    assert result.truncated is False


def test_max_rows_truncates_and_says_so(client):
    result = client.query("SELECT generate_series(1, 10) AS n", database="pg", max_rows=3)
    assert result.rows == [(1,), (2,), (3,)]
    assert result.truncated is True


@pytest.mark.parametrize("database", ["mysql", "lite"])
def test_execute_reports_rows_affected_and_last_insert_id(client, database):
    table = unique_name("auto")
    key = "INT AUTO_INCREMENT PRIMARY KEY" if database == "mysql" else "INTEGER PRIMARY KEY"
    p = PLACEHOLDER[database]
    client.execute(f"CREATE TABLE {table} (id {key}, v INT)", database=database)
    first = client.execute(f"INSERT INTO {table} (v) VALUES ({p})", 10, database=database)
    second = client.execute(f"INSERT INTO {table} (v) VALUES ({p})", 20, database=database)
    assert (first.rows_affected, first.last_insert_id) == (1, 1)
    assert second.last_insert_id == 2
    updated = client.execute(f"UPDATE {table} SET v = v + 1", database=database)
    assert updated.rows_affected == 2
    assert updated.rows == []


def test_execute_returning_gives_rows(client):
    table = unique_name("ret")
    client.execute(f"CREATE TABLE {table} (id serial PRIMARY KEY, v text)", database="pg")
    result = client.execute(
        f"INSERT INTO {table} (v) VALUES ($1), ($2) RETURNING id, v", "a", "b", database="pg"
    )
    assert result.rows_affected == 2
    assert result.columns == ("id", "v")
    assert result.as_dicts() == [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]


@pytest.mark.parametrize(
    ("database", "sqlstate", "vendor"),
    [("pg", "23505", None), ("mysql", "23000", "1062"), ("lite", None, "SQLITE_CONSTRAINT_UNIQUE")],
)
def test_unique_violation_raises_unique_violation_with_sqlstate(
    client, tables, database, sqlstate, vendor
):
    p = PLACEHOLDER[database]
    with pytest.raises(dbgateway.UniqueViolation) as info:
        client.execute(
            f"INSERT INTO {tables[database]} (id, email, name) VALUES (2, {p}, 'Eve')",
            "a@x",
            database=database,
        )
    error = info.value
    assert isinstance(error, dbgateway.IntegrityError)
    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert error.reason == "UNIQUE_VIOLATION"
    assert error.sqlstate == sqlstate
    assert error.metadata["database"] == database
    if vendor:
        assert error.metadata["vendor_code"] == vendor


# MySQL reports a missing NOT NULL value as 1364 "no default value", SQLSTATE HY000.
@pytest.mark.parametrize(
    ("database", "sqlstate"), [("pg", "23502"), ("mysql", "HY000"), ("lite", None)]
)
def test_not_null_violation_raises_integrity_error(client, tables, database, sqlstate):
    with pytest.raises(dbgateway.IntegrityError) as info:
        client.execute(
            f"INSERT INTO {tables[database]} (id, email) VALUES (3, 'c@x')", database=database
        )
    assert type(info.value) is dbgateway.IntegrityError
    assert info.value.reason == "CONSTRAINT_VIOLATION"
    assert info.value.sqlstate == sqlstate


@pytest.mark.parametrize(
    ("database", "sqlstate"), [("pg", "42P01"), ("mysql", "42S02"), ("lite", None)]
)
def test_unknown_table_raises_sql_error_with_the_databases_message(client, database, sqlstate):
    with pytest.raises(dbgateway.SqlError) as info:
        client.query("SELECT * FROM no_such_table_here", database=database)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.sqlstate == sqlstate
    assert "no_such_table_here" in info.value.message


def test_unknown_database_raises_not_found(client):
    with pytest.raises(dbgateway.NotFound) as info:
        client.query("SELECT 1", database="nope")
    assert info.value.reason == "UNKNOWN_DATABASE"


def test_a_database_that_is_down_raises_unavailable(client):
    with pytest.raises(dbgateway.Unavailable) as info:
        client.query("SELECT 1", database="down", timeout=10)
    # Down since start: its circuit is open, and the answer says when to come
    # back (the client itself waits that long and retries within its timeout).
    assert info.value.reason == "CIRCUIT_OPEN"
    assert info.value.retry_after is not None


def test_a_statement_past_its_deadline_raises_deadline_exceeded(client):
    started = time.monotonic()
    with pytest.raises(dbgateway.DeadlineExceeded):
        client.query("SELECT pg_sleep(5)", database="pg", timeout=0.5)
    assert time.monotonic() - started < 3


def test_an_unsupported_parameter_type_fails_before_the_call(client):
    with pytest.raises(TypeError, match=r"parameter 1: .*set"):
        client.query("SELECT ?", {1}, database="lite")


def test_an_unreachable_server_raises_unavailable_quickly():
    started = time.monotonic()
    with (
        dbgateway.Client("127.0.0.1:1", timeout=5) as db,
        pytest.raises(dbgateway.Unavailable) as info,
    ):
        db.query("SELECT 1")
    assert info.value.reason == ""
    assert time.monotonic() - started < 4


def test_health_reports_serving_and_not_serving(client):
    assert client.health() is dbgateway.HealthStatus.SERVING
    assert client.health("dbgateway.v1.DatabaseService") is dbgateway.HealthStatus.SERVING
    assert client.health("db/pg") is dbgateway.HealthStatus.SERVING
    assert client.health("db/down") is dbgateway.HealthStatus.NOT_SERVING
    assert client.health("db/nope") is dbgateway.HealthStatus.SERVICE_UNKNOWN


async def test_the_async_client_has_the_same_api(server, tables):
    async with dbgateway.AsyncClient(server.address, timeout=30) as db:
        table = tables["pg"]
        result = await db.query(f"SELECT name FROM {table} WHERE id = $1", 1, database="pg")
        assert result.rows == [("Ada",)]
        written = await db.execute(
            f"UPDATE {table} SET name = $1 WHERE id = 1", "Ada L.", database="pg"
        )
        assert written.rows_affected == 1
        with pytest.raises(dbgateway.UniqueViolation) as info:
            await db.execute(
                f"INSERT INTO {table} (id, email, name) VALUES (9, 'a@x', 'x')", database="pg"
            )
        assert info.value.sqlstate == "23505"
        assert await db.health("db/down") is dbgateway.HealthStatus.NOT_SERVING


# -- Retries, against a scripted server --------------------------------------


def _status(code: int, reason: str, message: str, retry_after: float | None) -> grpc.Status:
    details = []
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="dbgateway"))
    details.append(info)
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry_after * 1e9))
        retry = any_pb2.Any()
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        details.append(retry)
    return rpc_status.to_status(status_pb2.Status(code=code, message=message, details=details))


class ScriptedService(pb_grpc.DatabaseServiceServicer):
    """Fails the first ``failures`` calls with ``reason``, then answers; records
    when each call came and with what metadata."""

    def __init__(self, failures: int, reason: str, retry_after: float | None) -> None:
        self.failures = failures
        self.reason = reason
        self.retry_after = retry_after
        self.calls: list[float] = []
        self.metadata: list[dict[str, str]] = []

    def _maybe_fail(self, context: grpc.ServicerContext) -> None:
        self.calls.append(time.monotonic())
        self.metadata.append(dict(context.invocation_metadata()))
        if len(self.calls) <= self.failures:
            context.abort_with_status(
                _status(code_pb2.UNAVAILABLE, self.reason, "try later", self.retry_after)
            )

    def Query(self, request, context):
        self._maybe_fail(context)
        return pb.QueryResponse()

    def Execute(self, request, context):
        self._maybe_fail(context)
        return pb.ExecuteResponse(rows_affected=1)


@pytest.fixture
def scripted():
    servers = []

    def start(failures: int, reason: str = "CIRCUIT_OPEN", retry_after: float | None = 0.3):
        service = ScriptedService(failures, reason, retry_after)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pb_grpc.add_DatabaseServiceServicer_to_server(service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return service, f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(0)


def test_retry_info_is_honoured_as_the_minimum_wait(scripted):
    # The channel's own retries do not see RetryInfo and are spent within the
    # first round; after them the client waits what the server asked.
    service, address = scripted(failures=4, retry_after=0.3)
    with dbgateway.Client(address, timeout=10) as db:
        db.query("SELECT 1")
    assert len(service.calls) == 5
    assert service.calls[-1] - service.calls[-2] >= 0.3


def test_a_write_is_not_replayed_after_an_ambiguous_unavailable(scripted):
    service, address = scripted(failures=1, reason="DATABASE_UNAVAILABLE", retry_after=None)
    with dbgateway.Client(address, timeout=10) as db, pytest.raises(dbgateway.Unavailable):
        db.execute("INSERT INTO t VALUES (1)")
    assert len(service.calls) == 1


def test_an_idempotent_write_and_a_write_refused_by_an_open_circuit_are_retried(scripted):
    service, address = scripted(failures=1, reason="DATABASE_UNAVAILABLE", retry_after=None)
    with dbgateway.Client(address, timeout=10) as db:
        assert db.execute("UPDATE t SET v = 1", idempotent=True).rows_affected == 1
    assert len(service.calls) == 2
    service, address = scripted(failures=1, reason="CIRCUIT_OPEN", retry_after=0.2)
    with dbgateway.Client(address, timeout=10) as db:
        assert db.execute("INSERT INTO t VALUES (1)").rows_affected == 1
    assert service.calls[1] - service.calls[0] >= 0.2


def test_no_retry_when_the_wait_would_pass_the_deadline(scripted):
    _, address = scripted(failures=10, retry_after=5.0)
    started = time.monotonic()
    with dbgateway.Client(address, timeout=1) as db, pytest.raises(dbgateway.Unavailable) as info:
        db.query("SELECT 1")
    assert info.value.retry_after == 5.0
    assert time.monotonic() - started < 1


async def test_the_token_is_sent_as_a_bearer_authorization_header(scripted):
    service, address = scripted(failures=0)
    async with dbgateway.AsyncClient(address, token="s3cret") as db:
        await db.query("SELECT 1")
    with dbgateway.Client(address, token="s3cret") as db:
        db.execute("SELECT 1")
    assert [m["authorization"] for m in service.metadata] == ["Bearer s3cret", "Bearer s3cret"]
