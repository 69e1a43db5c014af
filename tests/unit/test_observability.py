"""Metrics, log formats, label bounding and the long-transaction watch (no database)."""

from __future__ import annotations

import asyncio
import enum
import io
import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from prometheus_client import CollectorRegistry, Histogram

from dbgateway._cli import databases_table
from dbgateway.v1 import admin_service_pb2 as admin_pb
from dbgateway_server.call import OpenTransaction, current_call
from dbgateway_server.config import Config, DatabaseConfig, Engine, ServerConfig
from dbgateway_server.errors import GatewayError, Reason
from dbgateway_server.gateway import Gateway
from dbgateway_server.observability import (
    ACQUIRE_BUCKETS,
    FIELDS,
    NO_DATABASE,
    REQUEST_BUCKETS,
    UNKNOWN_DATABASE,
    CircuitState,
    JsonFormatter,
    LogStream,
    LongTransactionWatch,
    MetricsServer,
    Observability,
    TextFormatter,
    circuit_state,
    database_label,
    logfmt,
)
from tests.unit.test_config import error_of
from tests.unit.test_pool import Clock, make_pool


def gateway(*names: str, tmp: Path = Path("/nonexistent")) -> Gateway:
    databases = {
        name: DatabaseConfig(name=name, dsn=f"sqlite:{tmp}/{name}.db", engine=Engine.SQLITE)
        for name in names
    }
    return Gateway(Config(server=ServerConfig(), databases=databases))


def observability(*names: str, **server: object) -> Observability:
    return Observability(ServerConfig(**server), gateway(*names))  # type: ignore[arg-type]


# -- labels ----------------------------------------------------------------------


def test_configured_names_are_their_own_label_and_anything_else_is_one_fixed_value():
    gw = gateway("orders", "cache")
    assert database_label(gw, "orders") == "orders"
    assert database_label(gw, "orders-typo-1234") == UNKNOWN_DATABASE
    assert database_label(gw, "") == UNKNOWN_DATABASE  # ambiguous with two databases
    assert database_label(gw, None) == NO_DATABASE


def test_an_empty_name_is_the_only_database_when_one_is_configured():
    assert database_label(gateway("only"), "") == "only"


class BreakerState(enum.Enum):
    CLOSED = 1
    OPEN = 2
    HALF_OPEN = 3


@pytest.mark.parametrize(
    ("reported", "expected"),
    [
        (None, CircuitState.CLOSED),
        (BreakerState.OPEN, CircuitState.OPEN),
        (BreakerState.HALF_OPEN, CircuitState.HALF_OPEN),
        ("half-open", CircuitState.HALF_OPEN),
        ("closed", CircuitState.CLOSED),
    ],
)
def test_circuit_state_reads_whatever_the_breaker_reports(reported, expected):
    db = SimpleNamespace(circuit_state=reported)
    assert circuit_state(db) is expected  # type: ignore[arg-type]


def test_a_database_without_a_breaker_is_closed():
    db = gateway("a").databases["a"]
    assert circuit_state(db) is CircuitState.CLOSED


# -- log formats -----------------------------------------------------------------


def test_logfmt_quotes_anything_that_could_forge_a_field_or_a_line():
    line = logfmt({"tag": 'x code=OK\nfake line "', "method": "Query", "n": 3})
    assert "\n" not in line
    assert line == 'tag="x code=OK\\nfake line \\"" method=Query n=3'


def test_logfmt_renders_a_value_the_same_every_time_it_comes_back():
    fields = {"method": "Query", "tag": "a b", "principal": "(unauthenticated)", "n": 1}
    lines = {logfmt(fields) for _ in range(3)}
    assert lines == {'method=Query tag="a b" principal=(unauthenticated) n=1'}
    long_value = "x" * 100  # too long to be remembered: checked every time
    assert logfmt({"v": long_value}) == logfmt({"v": long_value}) == f"v={long_value}"


def test_logfmt_leaves_out_empty_strings_and_shows_milliseconds_to_the_microsecond():
    assert logfmt({"tag": "", "duration_ms": 1.23456, "reason": ""}) == "duration_ms=1.235"


def test_json_records_are_one_object_with_the_structured_fields():
    record = logging.LogRecord("dbgateway.access", logging.INFO, "", 0, "%s", ("x",), None)
    setattr(record, FIELDS, {"request_id": "r1", "rows": 2})
    doc = json.loads(JsonFormatter().format(record))
    assert doc["logger"] == "dbgateway.access"
    assert doc["level"] == "INFO"
    assert (doc["request_id"], doc["rows"]) == ("r1", 2)
    assert doc["time"].endswith("Z")
    plain = logging.LogRecord("x", logging.WARNING, "", 0, "hello %s", ("you",), None)
    assert json.loads(JsonFormatter().format(plain))["message"] == "hello you"


# -- calls -------------------------------------------------------------------------


def sample(obs: Observability, name: str, **labels: str) -> float | None:
    """The sample with exactly these labels; per-endpoint series without an
    ``endpoint`` given: the primary's."""
    value = obs.metrics.registry.get_sample_value(name, labels)
    if value is None and "endpoint" not in labels:
        value = obs.metrics.registry.get_sample_value(name, {**labels, "endpoint": "primary"})
    return value


def test_a_call_is_counted_timed_and_logged_once(caplog):
    obs = observability("pg")
    call = obs.begin("Query", request_id="req-1", database="pg", tag="billing", sql="SELECT 1")
    assert current_call() is call
    call.rows = 4
    with caplog.at_level(logging.INFO, logger="dbgateway"):
        obs.end(call)
    assert (
        sample(
            obs,
            "dbgateway_requests_total",
            method="Query",
            database="pg",
            code="OK",
            transport="unary",
        )
        == 1
    )
    assert sample(obs, "dbgateway_rows_returned_total", database="pg") == 4
    assert (
        sample(obs, "dbgateway_request_duration_seconds_count", method="Query", database="pg") == 1
    )
    [line] = [r for r in caplog.records if r.name == "dbgateway.access"]
    fields = getattr(line, FIELDS)
    assert fields["request_id"] == "req-1"
    assert (fields["method"], fields["database"], fields["tag"]) == ("Query", "pg", "billing")
    assert (fields["code"], fields["rows"], fields["retries"]) == ("OK", 4, 0)
    assert not [r for r in caplog.records if r.name == "dbgateway.slow_query"]


def test_a_failed_call_to_an_unknown_database_counts_under_the_fixed_label():
    obs = observability("pg")
    call = obs.begin("Query", request_id="r", database="x" * 40)
    call.failed(grpc.StatusCode.NOT_FOUND, "UNKNOWN_DATABASE")
    obs.end(call)
    text = obs.metrics.exposition().decode()
    assert "x" * 40 not in text
    assert (
        sample(
            obs, "dbgateway_requests_total", method="Query", database=UNKNOWN_DATABASE,
            code="NOT_FOUND", transport="unary",
        )
        == 1
    )  # fmt: skip


async def test_answered_calls_tallied_until_collected_read_as_one_inc_and_observe_each():
    """The answered calls are tallied and applied to the series when the
    registry is collected: a scrape in the same loop turn, and one after it,
    read what a Counter.inc and a Histogram.observe per call make (bucket
    edges too)."""
    obs = observability("pg")
    registry = CollectorRegistry()
    reference = Histogram("ref", "", buckets=REQUEST_BUCKETS, registry=registry)
    durations = [0.0, 0.0005, 0.00051, 0.001, 0.3, 5.0, 30.0, 31.0, 0.0025, 0.0025]
    for i, seconds in enumerate(durations):
        principal = "svc" if i % 2 else "anonymous"
        obs.metrics.answered_call("Query", "pg", "primary", "OK", "unary", principal, seconds, i)
        reference.observe(seconds)
    labels = {"method": "Query", "database": "pg", "endpoint": "primary"}
    bounds = [*map(str, REQUEST_BUCKETS), "+Inf"]

    def histogram(registry: CollectorRegistry, name: str, **at: str) -> list[float | None]:
        values = [registry.get_sample_value(f"{name}_bucket", {**at, "le": le}) for le in bounds]
        return [*values, registry.get_sample_value(f"{name}_sum", at)]

    expected = histogram(registry, "ref")
    for _ in range(2):  # in the turn the calls were answered, then after it
        answered = sample(obs, "dbgateway_requests_total", code="OK", transport="unary", **labels)
        assert answered == 10
        assert sample(obs, "dbgateway_principal_requests_total", principal="svc", code="OK") == 5
        assert sample(obs, "dbgateway_rows_returned_total", database="pg") == sum(range(10))
        ours = histogram(obs.metrics.registry, "dbgateway_request_duration_seconds", **labels)
        assert ours[:-1] == expected[:-1]
        assert ours[-1] == pytest.approx(expected[-1])
        await asyncio.sleep(0)
    assert b"dbgateway_requests_total" in obs.metrics.exposition()


def test_pool_waits_tallied_until_collected_read_as_one_observe_each():
    obs = observability("pg")
    registry = CollectorRegistry()
    reference = Histogram("ref", "", buckets=ACQUIRE_BUCKETS, registry=registry)
    for seconds in (0.0, 0.0001, 0.00011, 0.05, 9.0, 11.0, 0.0001):
        obs.metrics.waited("pg", seconds)
        reference.observe(seconds)
    for le in [*map(str, ACQUIRE_BUCKETS), "+Inf"]:
        ours = sample(obs, "dbgateway_pool_acquire_seconds_bucket", database="pg", le=le)
        assert ours == registry.get_sample_value("ref_bucket", {"le": le})
    assert sample(obs, "dbgateway_pool_acquire_seconds_count", database="pg") == 7


def test_the_slow_query_log_has_the_sql_and_the_parameter_count_never_a_value(caplog):
    obs = observability("pg", slow_query_threshold=1e-9)
    call = obs.begin("Query", request_id="r", database="pg", sql="SELECT $1", params=1)
    with caplog.at_level(logging.INFO, logger="dbgateway"):
        obs.end(call)
    [record] = [r for r in caplog.records if r.name == "dbgateway.slow_query"]
    assert record.levelno == logging.WARNING
    fields = getattr(record, FIELDS)
    assert (fields["sql"], fields["params"]) == ("SELECT $1", 1)


def test_retries_are_counted_by_database_and_reason():
    obs = observability("pg")
    obs.retried("pg", Reason.DATABASE_UNAVAILABLE)
    obs.retried("nope", Reason.DATABASE_UNAVAILABLE)
    assert sample(obs, "dbgateway_retries_total", database="pg", reason="DATABASE_UNAVAILABLE") == 1
    assert (
        sample(
            obs, "dbgateway_retries_total", database=UNKNOWN_DATABASE,
            reason="DATABASE_UNAVAILABLE",
        )
        == 1
    )  # fmt: skip


def test_pool_and_circuit_gauges_are_read_at_scrape_time():
    obs = observability("a", "b")
    assert sample(obs, "dbgateway_pool_connections", database="a", state="idle") == 0
    assert sample(obs, "dbgateway_pool_max_connections", database="b") == 10
    assert sample(obs, "dbgateway_circuit_state", database="a") == 0
    # Health is the circuit: closed (no failure seen yet) until start() says otherwise.
    assert sample(obs, "dbgateway_database_up", database="a") == 1
    assert sample(obs, "dbgateway_transactions_open", database="b") == 0
    assert sample(obs, "dbgateway_pool_acquire_timeouts_total", database="a") == 0


# -- transactions ----------------------------------------------------------------


def tx(key: str, age: float, database: str = "pg") -> OpenTransaction:
    return OpenTransaction(key=key, database=database, age=age, tag="batch", request_id="rq-7")


def test_a_transaction_past_the_threshold_is_reported_once():
    watch = LongTransactionWatch(threshold=60)
    assert watch.check([tx("a", 59.9), tx("b", 10)]) == []
    assert watch.check([tx("a", 60.0), tx("b", 15)]) == [tx("a", 60.0)]
    assert watch.check([tx("a", 65.0), tx("b", 20)]) == []
    assert watch.check([tx("a", 70.0), tx("b", 61)]) == [tx("b", 61)]


def test_an_ended_transaction_is_forgotten_so_a_new_one_with_its_key_is_reported():
    watch = LongTransactionWatch(threshold=1)
    assert watch.check([tx("a", 2)]) == [tx("a", 2)]
    assert watch.check([]) == []
    assert watch.check([tx("a", 3)]) == [tx("a", 3)]


def test_long_transactions_are_logged_as_warnings_without_their_key(caplog):
    obs = observability("pg", long_transaction_threshold=30)
    assert obs.warn_long_transactions() == []  # the gateway has no transactions table yet
    with caplog.at_level(logging.WARNING, logger="dbgateway"):
        obs.warn_long_transactions([tx("secret-handle", 45)])
    [record] = [r for r in caplog.records if r.name == "dbgateway.transactions"]
    assert "secret-handle" not in record.getMessage()
    fields = getattr(record, FIELDS)
    assert (fields["database"], fields["request_id"], fields["age_s"]) == (
        "pg",
        "rq-7",
        45,
    )


# -- the HTTP endpoint -------------------------------------------------------------


def test_the_endpoint_serves_metrics_and_health_and_nothing_else():
    serving = [True]
    obs = observability("pg")
    server = MetricsServer("127.0.0.1:0", obs.metrics, lambda: serving[0])
    status, ctype, body = server.respond("GET", "/metrics")
    assert (status, ctype.split(";")[0]) == (200, "text/plain")
    assert b"dbgateway_pool_connections" in body
    assert server.respond("GET", "/healthz")[0] == 200
    serving[0] = False
    assert server.respond("GET", "/healthz")[:1] == (503,)
    assert server.respond("GET", "/")[0] == 404
    assert server.respond("POST", "/metrics")[0] == 405


# -- pool timing hook ----------------------------------------------------------------


async def test_the_pool_reports_every_checkout_wait_given_up_ones_included():
    clock = Clock()
    pool, _ = make_pool(clock, max_size=1)
    waits: list[float] = []
    pool.acquire_observer = waits.append

    async def second() -> None:
        async with pool.connection(1):
            pass

    async with pool.connection(1):
        waiter = asyncio.create_task(second())
        await asyncio.sleep(0.01)
        clock.now += 0.25  # the waiter waits a quarter of a (fake) second
    await waiter
    async with pool.connection(1):
        with pytest.raises(GatewayError):
            async with pool.connection(0):
                pass
    assert waits == [0.0, 0.25, 0.0, 0.0]


# -- config and CLI ------------------------------------------------------------------


def test_server_observability_defaults():
    server = ServerConfig()
    assert (server.metrics_listen, server.log_format) == ("", "text")
    assert server.slow_query_threshold == 1.0
    assert server.long_transaction_threshold == 60.0


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ("metrics_listen = 'nowhere'", "server.metrics_listen: must be HOST:PORT"),
        ("log_format = 'xml'", "server.log_format: must be one of text, json, got 'xml'"),
        ("slow_query_threshold = 0", "server.slow_query_threshold: must be a positive number"),
        (
            "long_transaction_threshold = -1",
            "server.long_transaction_threshold: must be a positive",
        ),
        ("metrics_port = 9000", "server.metrics_port: unknown key"),
    ],
)
def test_bad_observability_settings_name_the_key(server, message):
    assert message in error_of(f"[server]\n{server}\n[databases.a]\ndsn = 'sqlite:a.db'")


def test_the_databases_table_has_one_aligned_row_per_database():
    response = admin_pb.ListDatabasesResponse(
        databases=[
            admin_pb.DatabaseInfo(
                name="orders",
                engine=admin_pb.ENGINE_POSTGRESQL,
                server_version="16.4",
                health=admin_pb.DATABASE_HEALTH_SERVING,
                circuit_state=admin_pb.CIRCUIT_STATE_HALF_OPEN,
                pool=admin_pb.PoolStats(size=3, idle=1, in_use=2, min_size=1, max_size=20),
                open_transactions=1,
            ),
            admin_pb.DatabaseInfo(name="x", engine=admin_pb.ENGINE_SQLITE),
        ]
    )
    lines = databases_table(response).splitlines()
    assert lines[0].split()[:5] == ["NAME", "ENGINE", "VERSION", "HEALTH", "CIRCUIT"]
    assert lines[1].split()[:7] == [
        "orders",
        "postgresql",
        "16.4",
        "serving",
        "half-open",
        "3",
        "1",
    ]
    assert lines[2].split()[:5] == ["x", "sqlite", "-", "unspecified", "unspecified"]
    assert lines[1].index("postgresql") == lines[2].index("sqlite") == lines[0].index("ENGINE")


# -- deploy/ -----------------------------------------------------------------------


def test_every_metric_the_dashboard_and_scrape_example_use_is_exported():
    from tests.support import ROOT

    obs = observability("pg")
    obs.retried("pg", "DATABASE_UNAVAILABLE")
    obs.end(obs.begin("Query", request_id="r", database="pg"))
    exported = set(re.findall(r"^(dbgateway_\w+)", obs.metrics.exposition().decode(), re.M))
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = set(re.findall(r"dbgateway_\w+", " ".join(exprs)))
    used |= set(re.findall(r"dbgateway_\w+", (ROOT / "deploy" / "prometheus.yml").read_text()))
    assert used
    assert used <= exported, used - exported


async def test_log_lines_on_the_loop_are_written_once_per_loop_turn_and_warnings_at_once():
    written: list[str] = []

    class Sink(io.StringIO):
        def flush(self) -> None:
            written.append(self.getvalue())
            self.seek(0)
            self.truncate()

    handler = LogStream(Sink())
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger("dbgateway.test_log_stream")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("one")
        logger.info("two")
        assert written == []  # nothing written yet: one write per loop turn
        await asyncio.sleep(0)
        assert len(written) == 1
        assert written[0].count("\n") == 2
        assert "INFO dbgateway.test_log_stream: one" in written[0]
        logger.warning("three")
        assert "WARNING dbgateway.test_log_stream: three" in written[-1]  # at once
    finally:
        logger.removeHandler(handler)


def test_log_lines_off_the_loop_are_written_at_once():
    stream = io.StringIO()
    handler = LogStream(stream)
    handler.setFormatter(TextFormatter())
    record = logging.LogRecord("dbgateway.access", logging.INFO, "", 0, "hello", (), None)
    record.created = 1_700_000_000.25
    record.msecs = 250.0
    handler.handle(record)
    line = stream.getvalue()
    assert line.endswith(" INFO dbgateway.access: hello\n")
    assert ",250 " in line


@pytest.mark.parametrize("formatter", [TextFormatter, JsonFormatter])
def test_a_line_written_without_its_record_is_the_line_its_record_makes(formatter):
    fields: dict[str, object] = {
        "request_id": "r1",
        "method": "Query",
        "tag": 'say "hi"',
        "duration_ms": 1.23456,
        "rows": 3,
        "reason": "",
    }
    direct, recorded = io.StringIO(), io.StringIO()
    handler = LogStream(direct)
    handler.setFormatter(formatter())
    assert handler.write_fields(logging.INFO, "dbgateway.access", fields)
    record = logging.LogRecord("dbgateway.access", logging.INFO, "", 0, logfmt(fields), (), None)
    record.dbgateway_fields = fields
    by_record = LogStream(recorded)
    by_record.setFormatter(formatter())
    by_record.handle(record)
    # Each read the clock itself: all but the time must agree.
    stamp = direct.getvalue()
    strip = (
        (lambda line: line.split(" ", 2)[2])
        if formatter is TextFormatter
        else (lambda line: {k: v for k, v in json.loads(line).items() if k != "time"})
    )
    assert strip(stamp) == strip(recorded.getvalue())
    assert stamp.endswith("\n")


async def test_access_lines_reach_a_capturing_handler_as_records():
    """The direct path is only taken when the gateway's own handler is the only
    one: a handler added to watch the log (as pytest's caplog does) sees every
    line as a record, with its structured fields."""
    stream = io.StringIO()
    own = LogStream(stream)
    own.setFormatter(TextFormatter())
    seen: list[logging.LogRecord] = []

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers[:] = [own]
    root.setLevel(logging.INFO)
    try:
        obs = observability("main")
        call = obs.begin("Query", request_id="direct-1", database="main")
        obs.end(call)
        await asyncio.sleep(0)
        assert "request_id=direct-1" in stream.getvalue()
        assert seen == []
        root.addHandler(Watch())
        call = obs.begin("Query", request_id="watched-1", database="main")
        obs.end(call)
        await asyncio.sleep(0)
        assert [getattr(r, FIELDS)["request_id"] for r in seen] == ["watched-1"]
        assert "request_id=watched-1" in stream.getvalue()
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
