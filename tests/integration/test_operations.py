"""Operating it: after a known sequence of calls (successes, SQL errors, a
saturated pool, a database that is down, an unknown database), /metrics,
ListDatabases, the access log and the slow-query log report exactly what
happened. One server of its own, with both listeners on port 0."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from dbgateway import __version__
from dbgateway.v1 import admin_service_pb2 as admin_pb
from dbgateway.v1 import admin_service_pb2_grpc, database_service_pb2_grpc
from dbgateway.v1 import database_service_pb2 as pb
from tests.integration.polling import waited_for
from tests.support import BIN, ServerProcess, V

pytestmark = pytest.mark.postgres

_METRICS = re.compile(r"metrics listening on (\S+):(\d+)")
_LOGFMT = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')
#: A parameter value that must never reach a log.
SECRET = f"hunter2-{uuid.uuid4().hex}"
LOCK_KEY = 770_077
#: A database name a caller made up: logged, never a metrics label.
UNKNOWN_NAME = f"no_such_db_{uuid.uuid4().hex}"


class Operated:
    """The server under test, its stubs and its metrics endpoint."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        match = waited_for(lambda: _METRICS.search(server.log()), "metrics listening line")
        self.metrics_url = f"http://127.0.0.1:{match.group(2)}"
        self.channel = server.channel()
        self.db = database_service_pb2_grpc.DatabaseServiceStub(self.channel)
        self.admin = admin_service_pb2_grpc.AdminServiceStub(self.channel)
        self.sent: dict[str, tuple[str, str, str]] = {}  # request id -> (method, database, code)
        self.prefix = uuid.uuid4().hex[:8]

    def rid(self, method: str, database: str, code: str) -> list[tuple[str, str]]:
        rid = f"ops-{self.prefix}-{len(self.sent)}"
        self.sent[rid] = (method, database, code)
        return [("x-request-id", rid)]

    def query(self, database: str, sql: str, *params: Any, code: str = "OK", **kw: Any) -> Any:
        request = pb.QueryRequest(database=database, sql=sql, params=list(params))
        metadata = self.rid("Query", database, code)
        if code == "OK":
            reply, call = self.db.Query.with_call(request, metadata=metadata, timeout=30, **kw)
            assert dict(call.trailing_metadata())["x-request-id"] == metadata[0][1]
            return reply
        with pytest.raises(grpc.RpcError) as info:
            self.db.Query(request, metadata=metadata, timeout=30, **kw)
        assert info.value.code().name == code, info.value.details()
        assert dict(info.value.trailing_metadata())["x-request-id"] == metadata[0][1]
        return info.value

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.metrics_url + path, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        status, text = self.http("/metrics")
        assert status == 200
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def access_lines(self) -> list[dict[str, str]]:
        lines = []
        for line in self.server.log().splitlines():
            if " dbgateway.access: " in line:
                fields = line.split(" dbgateway.access: ", 1)[1]
                lines.append(
                    {
                        k: json.loads(v) if v.startswith('"') else v
                        for k, v in _LOGFMT.findall(fields)
                    }
                )
        return lines


def sample(metrics: dict[Any, float], name: str, **labels: str) -> float | None:
    """The sample with exactly these labels; per-endpoint series without an
    ``endpoint`` given: the primary's."""
    value = metrics.get((name, frozenset(labels.items())))
    if value is None and "endpoint" not in labels:
        value = metrics.get((name, frozenset({**labels, "endpoint": "primary"}.items())))
    return value


class AdvisoryLock:
    """A PostgreSQL advisory lock held by a connection outside the gateway, so a
    gateway call can be made to wait for as long as the test wants."""

    def __init__(self, dsn: str, key: int) -> None:
        import asyncpg

        self.loop = asyncio.new_event_loop()
        self.conn = self.loop.run_until_complete(asyncpg.connect(dsn, timeout=5))
        self.key = key

    def __enter__(self) -> AdvisoryLock:
        self.loop.run_until_complete(self.conn.execute("SELECT pg_advisory_lock($1)", self.key))
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.run_until_complete(self.conn.execute("SELECT pg_advisory_unlock($1)", self.key))
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()


@pytest.fixture(scope="module")
def operated(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[Operated]:
    workdir = tmp_path_factory.mktemp("operations")
    config = f"""
[server]
metrics_listen = "127.0.0.1:0"
slow_query_threshold = 0.2

[databases.pg]
dsn = "{postgres_dsn}"
pool = {{ min_size = 1, max_size = 4 }}

[databases.busy]
dsn = "{postgres_dsn}"
pool = {{ min_size = 1, max_size = 1, acquire_timeout = 0.2 }}

[databases.lite]
dsn = "sqlite://{workdir / "lite.sqlite3"}"

# Nothing listens on port 1: this database is down for the whole run (it
# stands in for an open circuit until the breaker lands).
[databases.down]
dsn = "postgresql://postgres@127.0.0.1:1/nowhere"
connect_timeout = 1
"""
    server = ServerProcess(workdir, config=config).start()
    ops = Operated(server)
    # The known sequence.
    ops.query("pg", "SELECT $1::int AS n", V.of(int_value=1))
    ops.query("pg", "SELECT $1::int AS n", V.of(int_value=2))
    ops.query("pg", "SELECT pg_sleep(0.3), $1::text AS marker", V.of(string_value=SECRET))
    ops.query("pg", "SELECT * FROM no_such_table_here", code="INVALID_ARGUMENT")
    ops.query("pg", "SELEC 1", code="INVALID_ARGUMENT")
    with AdvisoryLock(postgres_dsn, LOCK_KEY):
        holder_request = pb.QueryRequest(
            database="busy",
            sql="SELECT pg_advisory_xact_lock($1)",
            params=[V.of(int_value=LOCK_KEY)],
        )
        holder = ops.db.Query.future(
            holder_request, metadata=ops.rid("Query", "busy", "OK"), timeout=60
        )
        waited_for(
            lambda: (
                sample(ops.metrics(), "dbgateway_pool_connections", database="busy", state="in_use")
                == 1
            ),
            "the one connection of busy is in use",
        )
        ops.query("busy", "SELECT 1", code="RESOURCE_EXHAUSTED")
        ops.query("busy", "SELECT 1", code="RESOURCE_EXHAUSTED")
    assert len(holder.result().rows) == 1
    ops.query("down", "SELECT 1", code="UNAVAILABLE")
    ops.query("down", "SELECT 1", code="UNAVAILABLE")
    ops.query(UNKNOWN_NAME, "SELECT 1", code="NOT_FOUND")
    ops.query("lite", "SELECT 1 UNION ALL SELECT 2")
    yield ops
    ops.channel.close()
    server.stop()


def test_requests_are_counted_by_method_database_and_code(operated: Operated):
    m = operated.metrics()

    def requests(database: str, code: str) -> float | None:
        return sample(
            m,
            "dbgateway_requests_total",
            method="Query",
            database=database,
            code=code,
            transport="unary",
        )

    assert requests("pg", "OK") == 3
    assert requests("pg", "INVALID_ARGUMENT") == 2
    assert requests("busy", "OK") == 1
    assert requests("busy", "RESOURCE_EXHAUSTED") == 2
    assert requests("down", "UNAVAILABLE") == 2
    assert requests("(unknown)", "NOT_FOUND") == 1
    assert requests("lite", "OK") == 1
    count = "dbgateway_request_duration_seconds_count"
    assert sample(m, count, method="Query", database="pg") == 5
    assert sample(m, count, method="Query", database="busy") == 3


def test_rows_pool_circuit_and_health_gauges_match_what_happened(operated: Operated):
    m = operated.metrics()
    assert sample(m, "dbgateway_rows_returned_total", database="pg") == 3
    assert sample(m, "dbgateway_rows_returned_total", database="busy") == 1
    assert sample(m, "dbgateway_rows_returned_total", database="lite") == 2
    assert sample(m, "dbgateway_pool_acquire_timeouts_total", database="busy") == 2
    assert sample(m, "dbgateway_pool_acquire_timeouts_total", database="pg") == 0
    # Every checkout by a call is timed, given-up ones included.
    assert sample(m, "dbgateway_pool_acquire_seconds_count", database="busy") == 3
    assert sample(m, "dbgateway_pool_acquire_seconds_count", database="pg") == 5
    assert sample(m, "dbgateway_pool_connections", database="busy", state="in_use") == 0
    assert sample(m, "dbgateway_pool_connections", database="busy", state="idle") == 1
    assert sample(m, "dbgateway_pool_max_connections", database="busy") == 1
    assert sample(m, "dbgateway_pool_waiting", database="busy") == 0
    for name in ("pg", "busy", "lite", "down"):
        # 0 closed, 1 half-open, 2 open: down since start, its circuit is open.
        assert sample(m, "dbgateway_circuit_state", database=name) == (2 if name == "down" else 0)
        assert sample(m, "dbgateway_transactions_open", database=name) == 0
        assert sample(m, "dbgateway_database_up", database=name) == (0 if name == "down" else 1)


def test_a_callers_database_name_never_becomes_a_label(operated: Operated):
    status, text = operated.http("/metrics")
    assert status == 200
    assert UNKNOWN_NAME not in text
    assert SECRET not in text
    assert "SELECT" not in text


def test_healthz_is_ok_while_serving(operated: Operated):
    assert operated.http("/healthz") == (200, "ok\n")
    assert operated.http("/nope")[0] == 404


def test_list_databases_reports_engines_health_and_pools(operated: Operated):
    reply = operated.admin.ListDatabases(admin_pb.ListDatabasesRequest(), timeout=10)
    dbs = {d.name: d for d in reply.databases}
    assert [d.name for d in reply.databases] == ["busy", "down", "lite", "pg"]
    busy, down, lite, pg = dbs["busy"], dbs["down"], dbs["lite"], dbs["pg"]
    assert (busy.engine, lite.engine, down.engine) == (
        admin_pb.ENGINE_POSTGRESQL,
        admin_pb.ENGINE_SQLITE,
        admin_pb.ENGINE_POSTGRESQL,
    )
    assert pg.server_version
    assert lite.server_version
    assert not down.server_version
    assert pg.health == busy.health == lite.health == admin_pb.DATABASE_HEALTH_SERVING
    assert down.health == admin_pb.DATABASE_HEALTH_NOT_SERVING
    circuits = {d.name: d.circuit_state for d in reply.databases}
    assert circuits.pop("down") == admin_pb.CIRCUIT_STATE_OPEN  # down since start
    assert set(circuits.values()) == {admin_pb.CIRCUIT_STATE_CLOSED}
    assert {d.open_transactions for d in reply.databases} == {0}
    # busy: the start-up check and the lock holder got its one connection; two gave up.
    assert busy.pool == admin_pb.PoolStats(
        size=1, idle=1, in_use=0, waiting=0, min_size=1, max_size=1,
        acquired_total=2, created_total=1, closed_total=0, acquire_timeouts_total=2,
    )  # fmt: skip
    # pg: the start-up check and five calls, on one connection (SQL errors keep it).
    assert (pg.pool.acquired_total, pg.pool.created_total, pg.pool.closed_total) == (6, 1, 0)
    assert (down.pool.size, down.pool.acquired_total) == (0, 0)


def test_server_info_and_admin_health(operated: Operated):
    info = operated.admin.GetServerInfo(admin_pb.GetServerInfoRequest(), timeout=10)
    assert info.version == __version__
    assert info.uptime.ToNanoseconds() > 0
    assert 0 < time.time() - info.start_time.ToSeconds() < 3600
    assert info.build.python_version
    assert info.build.grpc_version == grpc.__version__
    assert info.build.protobuf_version
    health = health_pb2_grpc.HealthStub(operated.channel)
    check = health.Check(health_pb2.HealthCheckRequest(service="dbgateway.v1.AdminService"))
    assert check.status == health_pb2.HealthCheckResponse.SERVING


def test_the_access_log_has_one_line_per_call_with_the_request_id_sent(operated: Operated):
    by_id: dict[str, list[dict[str, str]]] = {}
    for line in operated.access_lines():
        by_id.setdefault(line["request_id"], []).append(line)
    for rid, (method, database, code) in operated.sent.items():
        assert len(by_id.get(rid, [])) == 1, rid
        [line] = by_id[rid]
        assert (line["method"], line["database"], line["code"]) == (method, database, code)
        assert float(line["duration_ms"]) >= 0
    saturated = [by_id[r][0] for r, s in operated.sent.items() if s[2] == "RESOURCE_EXHAUSTED"]
    assert {line["reason"] for line in saturated} == {"POOL_EXHAUSTED"}
    ok_pg = [
        by_id[r][0] for r, s in operated.sent.items() if s[:2] == ("Query", "pg") and s[2] == "OK"
    ]
    assert [line["rows"] for line in ok_pg] == ["1", "1", "1"]


def test_a_call_without_a_request_id_gets_one_back_and_in_the_log(operated: Operated):
    _, call = operated.db.Query.with_call(
        pb.QueryRequest(database="lite", sql="SELECT 1"), timeout=10
    )
    rid = dict(call.trailing_metadata())["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    waited_for(
        lambda: any(line["request_id"] == rid for line in operated.access_lines()),
        "the access line of the call",
    )


def test_the_slow_query_log_shows_the_sql_but_never_a_parameter_value(operated: Operated):
    log = operated.server.log()
    slow = [line for line in log.splitlines() if " dbgateway.slow_query: " in line]
    assert any("pg_sleep(0.3), $1::text AS marker" in line and "params=1" in line for line in slow)
    assert any("pg_advisory_xact_lock($1)" in line for line in slow)
    assert SECRET not in log


def test_dbgateway_databases_prints_the_table(operated: Operated):
    result = subprocess.run(
        [str(BIN / "dbgateway"), "databases", "--server", operated.server.address],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    table, _, causes = result.stdout.partition("\n\n")
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["NAME", "ENGINE", "VERSION", "HEALTH", "CIRCUIT"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"busy", "down", "lite", "pg"}
    assert rows["down"][1:5] == ["postgresql", "-", "not-serving", "open"]
    assert rows["busy"][-2] == "2"  # acquire timeouts
    assert rows["lite"][1] == "sqlite"
    assert causes.startswith("down: circuit not closed because of DATABASE_UNAVAILABLE")


def test_dbgateway_databases_loads_no_server_driver(operated: Operated):
    script = (
        "import sys\n"
        "from dbgateway_server.cli import main\n"
        f"assert main(['databases', '--server', '{operated.server.address}']) == 0\n"
        "loaded = {'asyncpg', 'aiomysql', 'aiosqlite', 'prometheus_client'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


def test_dbgateway_databases_says_when_the_server_is_not_there(tmp_path):
    result = subprocess.run(
        [str(BIN / "dbgateway"), "databases", "--server", "127.0.0.1:1", "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr or "DEADLINE_EXCEEDED" in result.stderr
    assert "Traceback" not in result.stderr


def test_json_log_format_writes_one_object_per_line(tmp_path):
    config = f"""
[server]
log_format = "json"

[databases.lite]
dsn = "sqlite://{tmp_path / "lite.sqlite3"}"
"""
    server = ServerProcess(tmp_path, config=config).start()
    try:
        with server.channel() as channel:
            stub = database_service_pb2_grpc.DatabaseServiceStub(channel)
            request = pb.QueryRequest(sql="SELECT ?", params=[V.of(string_value=SECRET)])
            request.options.tag = "json-test"
            stub.Query(request, metadata=[("x-request-id", "json-1")], timeout=10)
    finally:
        assert server.stop() == 0
    records = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    [access] = [r for r in records if r["logger"] == "dbgateway.access"]
    assert access["request_id"] == "json-1"
    assert (access["method"], access["database"], access["tag"]) == ("Query", "lite", "json-test")
    assert (access["code"], access["reason"], access["rows"], access["retries"]) == ("OK", "", 1, 0)
    assert isinstance(access["duration_ms"], float)
    assert any("dbgateway listening on" in r.get("message", "") for r in records)
    assert SECRET not in server.log()


def test_healthz_turns_503_while_the_server_drains(tmp_path, postgres_dsn: str):
    config = f"""
[server]
metrics_listen = "127.0.0.1:0"
shutdown_grace = 60

[databases.pg]
dsn = "{postgres_dsn}"
"""
    server = ServerProcess(tmp_path, config=config).start()
    ops = Operated(server)
    try:
        assert ops.http("/healthz") == (200, "ok\n")
        with AdvisoryLock(postgres_dsn, LOCK_KEY + 1):
            in_flight = ops.db.Query.future(
                pb.QueryRequest(
                    sql="SELECT pg_advisory_xact_lock($1)", params=[V.of(int_value=LOCK_KEY + 1)]
                ),
                timeout=60,
            )
            waited_for(
                lambda: (
                    sample(
                        ops.metrics(), "dbgateway_pool_connections", database="pg", state="in_use"
                    )
                    == 1
                ),
                "the call holds a connection",
            )
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            assert waited_for(lambda: ops.http("/healthz")[0] == 503, "healthz says draining")
            assert ops.http("/healthz") == (503, "draining\n")
        assert len(in_flight.result().rows) == 1  # the in-flight call finished
        assert server.process.wait(30) == 0
    finally:
        ops.channel.close()
        server.stop()


def test_retries_are_counted_by_database_and_reason(tmp_path, postgres_dsn: str):
    """A statement that always fails with a serialization failure makes
    RunTransaction retry the whole transaction; each retry is counted."""
    config = f"""
[server]
metrics_listen = "127.0.0.1:0"

[databases.pg]
dsn = "{postgres_dsn}"
"""
    server = ServerProcess(tmp_path, config=config).start()
    ops = Operated(server)
    conflict = "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$"
    try:
        with pytest.raises(grpc.RpcError) as info:
            ops.db.RunTransaction(
                pb.RunTransactionRequest(statements=[pb.Statement(sql=conflict)], max_attempts=3),
                timeout=30,
            )
        assert info.value.code() == grpc.StatusCode.ABORTED
        metrics = ops.metrics()
        assert (
            sample(
                metrics, "dbgateway_retries_total", database="pg", reason="SERIALIZATION_FAILURE"
            )
            == 2
        )  # three attempts: two retries
    finally:
        ops.channel.close()
        server.stop()
