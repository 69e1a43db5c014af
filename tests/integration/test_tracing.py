"""OpenTelemetry traces: a real `dbgateway serve` with OTEL_* set exports to a
real OTLP receiver; each call continues the caller's traceparent."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import grpc
import pytest

from dbgateway import Client
from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc
from tests.otlp import OtlpReceiver, ReceivedSpan, otlp_receiver
from tests.support import (
    ServerProcess,
    V,
    call_error,
    create_postgres_database,
    drop_postgres_database,
    unique_name,
)

pytestmark = [pytest.mark.postgres, pytest.mark.mysql]


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as r:
        yield r


@pytest.fixture(scope="module")
def pg_dsn() -> Iterator[str]:
    dsn = create_postgres_database()
    yield dsn
    drop_postgres_database(dsn)


@pytest.fixture(scope="module")
def traced(
    tmp_path_factory, receiver: OtlpReceiver, pg_dsn: str, mysql_dsn: str
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("traced")
    config = (
        f'[databases.pg]\ndsn = "{pg_dsn}"\npool = {{ min_size = 1, max_size = 4 }}\n\n'
        f'[databases.mysql]\ndsn = "{mysql_dsn}"\n\n'
        f'[databases.lite]\ndsn = "sqlite://{workdir / "lite.sqlite3"}"\n'
    )
    proc = ServerProcess(workdir, config=config, env=receiver.env()).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def stub(traced: ServerProcess) -> Iterator[database_service_pb2_grpc.DatabaseServiceStub]:
    with traced.channel() as channel:
        yield database_service_pb2_grpc.DatabaseServiceStub(channel)


class Caller:
    """A caller's own span: the traceparent it sends."""

    def __init__(self) -> None:
        self.trace_id = secrets.token_hex(16)
        self.span_id = secrets.token_hex(8)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("traceparent", f"00-{self.trace_id}-{self.span_id}-01"),)


def _server_spans(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return [s for s in spans if s.is_server]


def _children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return sorted((s for s in spans if s.parent_span_id == parent.span_id), key=lambda s: s.start)


def _complete(clients: int):
    def done(spans: list[ReceivedSpan]) -> bool:
        return len(_server_spans(spans)) == 1 and sum(s.is_client for s in spans) >= clients

    return done


def _assert_no_value_in_attributes(spans: list[ReceivedSpan], *values: str) -> None:
    for span in spans:
        texts = [str(v) for v in span.attributes.values()]
        texts += [str(v) for _, attrs in span.events for v in attrs.values()]
        for value in values:
            assert not any(value in text for text in texts), (span.name, value, span.attributes)


def test_query_is_a_server_span_continuing_the_traceparent_with_a_client_span(
    stub, pg_dsn, receiver
):
    caller = Caller()
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    stub.Query(
        pb.QueryRequest(
            database="pg",
            sql="SELECT $1::text AS v, 4242 AS n",
            params=[V.of(string_value=secret)],
            options=pb.RequestOptions(tag="checkout"),
        ),
        metadata=caller.metadata,
    )
    spans = receiver.wait_for(caller.trace_id, _complete(1))
    (server,) = _server_spans(spans)
    assert server.name == "dbgateway.v1.DatabaseService/Query"
    assert server.parent_span_id == caller.span_id
    assert server.attributes["rpc.system"] == "grpc"
    assert server.attributes["rpc.service"] == "dbgateway.v1.DatabaseService"
    assert server.attributes["rpc.method"] == "Query"
    assert server.attributes["rpc.grpc.status_code"] == 0
    assert server.attributes["dbgateway.database"] == "pg"
    assert server.attributes["dbgateway.tag"] == "checkout"
    assert server.resource["service.name"] == "dbgateway-under-test"
    assert "pool.acquire" in [name for name, _ in server.events]
    (client,) = _children(spans, server)
    assert client.is_client
    assert client.name == f"SELECT {urlsplit(pg_dsn).path.lstrip('/')}"
    assert client.attributes["db.system.name"] == "postgresql"
    assert client.attributes["db.namespace"] == urlsplit(pg_dsn).path.lstrip("/")
    assert client.attributes["db.operation.name"] == "SELECT"
    assert client.attributes["db.query.text"] == "SELECT $1::text AS v, ? AS n"
    assert client.attributes["db.response.returned_rows"] == 1
    assert client.attributes["server.address"] == "127.0.0.1"
    assert client.attributes["server.port"] == 5432
    assert not client.failed
    assert server.start <= client.start
    assert client.end <= server.end
    _assert_no_value_in_attributes(spans, secret, "4242")


def test_failing_execute_reports_sqlstate_on_the_client_span(stub, receiver):
    table = unique_name("traced")
    stub.Execute(pb.ExecuteRequest(database="pg", sql=f"CREATE TABLE {table} (k TEXT PRIMARY KEY)"))
    secret = f"dup-{uuid.uuid4().hex}"
    insert = pb.ExecuteRequest(
        database="pg", sql=f"INSERT INTO {table} VALUES ($1)", params=[V.of(string_value=secret)]
    )
    stub.Execute(insert)
    caller = Caller()
    with pytest.raises(grpc.RpcError) as info:
        stub.Execute(insert, metadata=caller.metadata)
    assert call_error(info.value).reason == "UNIQUE_VIOLATION"
    spans = receiver.wait_for(caller.trace_id, _complete(1))
    (server,) = _server_spans(spans)
    assert server.name == "dbgateway.v1.DatabaseService/Execute"
    assert server.parent_span_id == caller.span_id
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert server.attributes["error.type"] == "UNIQUE_VIOLATION"
    # The caller's mistake, not the server's: the server span is not an error.
    assert not server.failed
    (client,) = _children(spans, server)
    assert client.attributes["db.operation.name"] == "INSERT"
    assert client.attributes["db.query.text"] == f"INSERT INTO {table} VALUES ($1)"
    assert client.attributes["db.response.status_code"] == "23505"
    assert client.attributes["error.type"] == "UNIQUE_VIOLATION"
    assert client.failed
    _assert_no_value_in_attributes(spans, secret)


def test_retried_run_transaction_shows_each_attempt_and_the_retry(stub, receiver):
    seq, table = unique_name("attempts"), unique_name("traced")
    stub.Execute(pb.ExecuteRequest(database="pg", sql=f"CREATE SEQUENCE {seq}"))
    stub.Execute(pb.ExecuteRequest(database="pg", sql=f"CREATE TABLE {table} (n INT)"))
    # Sequences are not transactional: the first attempt fails with a
    # serialization failure, the second finds nextval past 1 and succeeds.
    fail_once = (
        f"DO $$ BEGIN IF nextval('{seq}') = 1 THEN "
        "RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END IF; END $$"
    )
    caller = Caller()
    reply = stub.RunTransaction(
        pb.RunTransactionRequest(
            database="pg",
            statements=[
                pb.Statement(sql=fail_once),
                pb.Statement(sql=f"INSERT INTO {table} VALUES ($1)", params=[V.of(int_value=777)]),
            ],
        ),
        metadata=caller.metadata,
    )
    assert reply.attempts == 2
    spans = receiver.wait_for(caller.trace_id, _complete(3))
    (server,) = _server_spans(spans)
    assert server.name == "dbgateway.v1.DatabaseService/RunTransaction"
    assert server.parent_span_id == caller.span_id
    assert server.attributes["dbgateway.attempts"] == 2
    retries = [attrs for name, attrs in server.events if name == "retry"]
    assert retries == [{"dbgateway.database": "pg", "dbgateway.reason": "SERIALIZATION_FAILURE"}]
    clients = _children(spans, server)
    assert [(c.attributes["db.operation.name"], c.failed) for c in clients] == [
        ("DO", True),
        ("DO", False),
        ("INSERT", False),
    ]
    assert clients[0].attributes["db.response.status_code"] == "40001"
    assert clients[0].attributes["error.type"] == "SERIALIZATION_FAILURE"
    _assert_no_value_in_attributes(spans, "777")


def test_transaction_stream_is_one_span_over_every_statement(stub, receiver):
    table = unique_name("traced")
    stub.Execute(pb.ExecuteRequest(database="pg", sql=f"CREATE TABLE {table} (n INT)"))
    caller = Caller()
    requests = [
        pb.TransactionRequest(begin=pb.TransactionRequest.Begin(database="pg")),
        pb.TransactionRequest(
            statement=pb.Statement(
                sql=f"INSERT INTO {table} VALUES ($1)", params=[V.of(int_value=90210)]
            )
        ),
        pb.TransactionRequest(statement=pb.Statement(sql=f"SELECT n FROM {table}")),
        pb.TransactionRequest(commit=pb.TransactionRequest.Commit()),
    ]
    replies = list(stub.Transaction(iter(requests), metadata=caller.metadata))
    assert replies[-1].WhichOneof("event") == "committed"
    spans = receiver.wait_for(caller.trace_id, _complete(2))
    (server,) = _server_spans(spans)
    assert server.name == "dbgateway.v1.DatabaseService/Transaction"
    assert server.parent_span_id == caller.span_id
    assert server.attributes["rpc.grpc.status_code"] == 0
    clients = _children(spans, server)
    assert [c.attributes["db.operation.name"] for c in clients] == ["INSERT", "SELECT"]
    assert all(server.start <= c.start and c.end <= server.end for c in clients)
    _assert_no_value_in_attributes(spans, "90210")


def _assert_child_of(receiver: OtlpReceiver, span) -> None:
    from opentelemetry import trace

    context = span.get_span_context()
    spans = receiver.wait_for(trace.format_trace_id(context.trace_id), _complete(1))
    (server,) = _server_spans(spans)
    assert server.parent_span_id == trace.format_span_id(context.span_id)


def test_python_client_sends_the_current_span_as_traceparent(traced, receiver):
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("caller") as span, Client(traced.address) as db:
        db.query("SELECT 1", database="pg")
    _assert_child_of(receiver, span)


def test_async_client_sends_the_current_span_as_traceparent(traced, receiver):
    from opentelemetry.sdk.trace import TracerProvider

    from dbgateway import AsyncClient

    tracer = TracerProvider().get_tracer("test")

    async def call() -> None:
        async with AsyncClient(traced.address) as db:
            await db.execute("CREATE TABLE IF NOT EXISTS traced_async (n INT)", database="pg")

    with tracer.start_as_current_span("caller") as span:
        asyncio.run(call())
    _assert_child_of(receiver, span)


def test_call_without_traceparent_starts_a_trace_of_its_own(stub, receiver):
    marker = unique_name("root")
    stub.Query(pb.QueryRequest(database="pg", sql=f"SELECT 1 AS {marker}"))

    def mine(span: ReceivedSpan) -> bool:
        return marker in str(span.attributes.get("db.query.text", ""))

    (client,) = receiver.find(mine)
    spans = receiver.wait_for(client.trace_id, lambda s: len(_server_spans(s)) == 1)
    (server,) = _server_spans(spans)
    assert server.parent_span_id == ""
    assert client.parent_span_id == server.span_id


def test_serve_refuses_an_exporter_it_does_not_have(tmp_path):
    proc = ServerProcess(tmp_path, env={"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(RuntimeError, match="server exited 2") as info:
        proc.start()
    assert "OTEL_TRACES_EXPORTER: 'zipkin' is not supported" in str(info.value)


def test_stream_query_is_one_client_span_for_the_whole_stream(stub, receiver):
    caller = Caller()
    replies = list(
        stub.StreamQuery(
            pb.QueryRequest(database="pg", sql="SELECT g FROM generate_series(1, 500) g"),
            metadata=caller.metadata,
        )
    )
    assert sum(len(r.rows) for r in replies) == 500
    spans = receiver.wait_for(caller.trace_id, _complete(1))
    (server,) = _server_spans(spans)
    assert server.name == "dbgateway.v1.DatabaseService/StreamQuery"
    (client,) = _children(spans, server)
    assert client.attributes["db.query.text"] == "SELECT g FROM generate_series(?) g"
    assert client.attributes["db.response.returned_rows"] == 500
    assert client.end <= server.end


def test_execute_batch_is_one_client_span_for_all_its_parameter_sets(stub, receiver):
    table = unique_name("traced")
    stub.Execute(pb.ExecuteRequest(database="pg", sql=f"CREATE TABLE {table} (n INT)"))
    caller = Caller()
    stub.ExecuteBatch(
        pb.ExecuteBatchRequest(
            database="pg",
            sql=f"INSERT INTO {table} VALUES ($1)",
            param_sets=[pb.ParamSet(params=[V.of(int_value=31337 + n)]) for n in range(3)],
        ),
        metadata=caller.metadata,
    )
    spans = receiver.wait_for(caller.trace_id, _complete(1))
    (server,) = _server_spans(spans)
    assert server.name == "dbgateway.v1.DatabaseService/ExecuteBatch"
    (client,) = _children(spans, server)
    assert client.attributes["db.query.text"] == f"INSERT INTO {table} VALUES ($1)"
    assert client.attributes["db.operation.name"] == "INSERT"
    _assert_no_value_in_attributes(spans, "31337", "31338", "31339")


@pytest.mark.parametrize(
    ("database", "system", "status_code", "placeholder"),
    [
        ("mysql", "mariadb", "23000", "%s"),
        ("lite", "sqlite", "SQLITE_CONSTRAINT_PRIMARYKEY", "?"),
    ],
)
def test_each_engine_names_its_system_and_its_own_error_code(
    stub, receiver, database, system, status_code, placeholder
):
    table = unique_name("traced")
    stub.Execute(
        pb.ExecuteRequest(database=database, sql=f"CREATE TABLE {table} (k INT PRIMARY KEY)")
    )
    insert = pb.ExecuteRequest(
        database=database,
        sql=f"INSERT INTO {table} VALUES ({placeholder})",
        params=[V.of(int_value=8675309)],
    )
    stub.Execute(insert)
    caller = Caller()
    with pytest.raises(grpc.RpcError):
        stub.Execute(insert, metadata=caller.metadata)
    spans = receiver.wait_for(caller.trace_id, _complete(1))
    (server,) = _server_spans(spans)
    (client,) = _children(spans, server)
    assert client.attributes["db.system.name"] == system
    assert client.attributes["db.response.status_code"] == status_code
    assert client.attributes["error.type"] == "UNIQUE_VIOLATION"
    assert client.failed
    _assert_no_value_in_attributes(spans, "8675309")


def test_drain_sends_the_spans_still_buffered(tmp_path, receiver):
    # A batch delay far beyond the test: only the shutdown flush can send them.
    env = receiver.env(OTEL_BSP_SCHEDULE_DELAY="600000")
    proc = ServerProcess(tmp_path, env=env).start()
    caller = Caller()
    try:
        with proc.channel() as channel:
            database_service_pb2_grpc.DatabaseServiceStub(channel).Query(
                pb.QueryRequest(sql="SELECT 1"), metadata=caller.metadata
            )
    finally:
        assert proc.stop() == 0
    spans = receiver.wait_for(caller.trace_id, _complete(1), timeout=5)
    assert [s.name for s in _server_spans(spans)] == ["dbgateway.v1.DatabaseService/Query"]
