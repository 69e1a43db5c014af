"""Outages between the gateway and PostgreSQL, made with the fault proxy: the
circuit breaker, health, recovery, and which calls are retried."""

from __future__ import annotations

import concurrent.futures
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc
from tests.faultproxy import FaultProxy
from tests.integration.polling import eventually
from tests.support import (
    ServerProcess,
    V,
    call_error,
    pg_fetch,
)

pytestmark = pytest.mark.postgres


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
MAX_SIZE = 4


@dataclass
class Outage:
    proxy: FaultProxy
    server: ServerProcess
    db: database_service_pb2_grpc.DatabaseServiceStub
    health: health_pb2_grpc.HealthStub
    dsn: str  # direct, not through the proxy

    def status(self, service: str) -> int:
        return self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status

    def wait_for(self, service: str, status: int, within: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < within:
            if self.status(service) == status:
                return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(f"{service} not {status} within {within}s:\n{self.server.log()}")

    def heal(self) -> None:
        self.proxy.restore()
        self.wait_for("db/pg", SERVING, within=15)


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory, own_dsn: str) -> Iterator[Outage]:
    """A gateway whose database ``pg`` is reached through a fault proxy, and a
    SQLite database ``lite`` that has nothing to do with it."""
    parts = urlsplit(own_dsn)
    workdir = tmp_path_factory.mktemp("outage")
    with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        config = f"""
[databases.pg]
dsn = "{proxy.dsn(own_dsn)}"
connect_timeout = 1
pool = {{ min_size = 1, max_size = {MAX_SIZE}, acquire_timeout = 2 }}
breaker = {{ open_time = 1, max_open_time = 2 }}

[databases.lite]
dsn = "sqlite://{workdir / "lite.sqlite3"}"
"""
        server = ServerProcess(workdir, config=config).start()
        try:
            with server.channel() as channel:
                yield Outage(
                    proxy,
                    server,
                    database_service_pb2_grpc.DatabaseServiceStub(channel),
                    health_pb2_grpc.HealthStub(channel),
                    own_dsn,
                )
        finally:
            server.stop()


@dataclass
class Result:
    started: float
    elapsed: float
    code: grpc.StatusCode
    reason: str


def hammer(call: Callable[[], object], stop: threading.Event, results: list[Result]) -> None:
    while not stop.is_set():
        started = time.monotonic()
        try:
            call()
            code, reason = grpc.StatusCode.OK, ""
        except grpc.RpcError as exc:
            err = call_error(exc)
            code, reason = err.code, err.reason
        results.append(Result(started, time.monotonic() - started, code, reason))
        time.sleep(0.01)


def gateway_connections(dsn: str) -> int:
    name = urlsplit(dsn).path.lstrip("/")
    rows = pg_fetch(
        dsn,
        "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'dbgateway' "
        f"AND datname = '{name}'",
    )
    return int(rows[0]["n"])


def test_outage_opens_the_circuit_and_the_gateway_recovers_by_itself(outage: Outage):
    select = pb.QueryRequest(database="pg", sql="SELECT 1")
    assert outage.db.Query(select, timeout=5).rows
    assert outage.status("db/pg") == SERVING

    stop = threading.Event()
    results: list[Result] = []
    workers = [
        threading.Thread(
            target=hammer, args=(lambda: outage.db.Query(select, timeout=5), stop, results)
        )
        for _ in range(3)
    ]
    for w in workers:
        w.start()
    time.sleep(0.5)
    cut_at = time.monotonic()
    outage.proxy.refuse()
    outage.proxy.cut()
    time.sleep(1.5)
    stop.set()
    for w in workers:
        w.join(10)

    before = [r for r in results if r.started + r.elapsed < cut_at]
    after = [r for r in results if r.started >= cut_at]
    assert before
    assert all(r.code == grpc.StatusCode.OK for r in before)
    failures = [r for r in after if r.code != grpc.StatusCode.OK]
    assert failures, "no call failed after the cut"
    assert {r.code for r in failures} == {grpc.StatusCode.UNAVAILABLE}
    assert {r.reason for r in failures} <= {"DATABASE_UNAVAILABLE", "CIRCUIT_OPEN"}
    fast = [r for r in failures if r.reason == "CIRCUIT_OPEN"]
    assert len(fast) >= 10, f"only {len(fast)} CIRCUIT_OPEN answers"
    # Answered without touching the network (loosely: the machine is shared).
    fast_times = sorted(r.elapsed for r in fast)
    assert fast_times[len(fast_times) // 2] < 0.1, fast_times
    assert "circuit of database pg: closed -> open" in outage.server.log()
    assert "DATABASE_UNAVAILABLE" in outage.server.log()

    err = None
    try:
        outage.db.Query(select, timeout=5)
    except grpc.RpcError as exc:
        err = call_error(exc)
    assert err is not None
    assert err.reason == "CIRCUIT_OPEN"
    assert err.retry_delay is not None
    assert 0 <= err.retry_delay <= 2
    assert outage.status("db/pg") == NOT_SERVING
    # Another database keeps answering, and the process stays SERVING.
    reply = outage.db.Query(pb.QueryRequest(database="lite", sql="SELECT 1"), timeout=5)
    assert reply.rows[0].values[0] == V.of(int_value=1)
    assert outage.status("db/lite") == SERVING
    assert outage.status("") == SERVING

    outage.proxy.restore()
    recovered_in = outage.wait_for("db/pg", SERVING, within=10)
    assert recovered_in < 6
    assert outage.db.Query(select, timeout=5).rows
    assert "open -> closed (a background probe succeeded)" in outage.server.log()

    # Nothing leaked: the database sees no more connections than the pool may hold.
    deadline = time.monotonic() + 5
    while gateway_connections(outage.dsn) > MAX_SIZE and time.monotonic() < deadline:
        time.sleep(0.1)
    assert 1 <= gateway_connections(outage.dsn) <= MAX_SIZE


def cut_during(call: Callable[[], object], after: float, proxy: FaultProxy) -> object:
    """Runs ``call`` and cuts every connection ``after`` seconds into it."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(call)
        time.sleep(after)
        assert proxy.cut() >= 1
        return future.result(30)


@pytest.fixture
def table(outage: Outage) -> str:
    name = f"lost_{uuid.uuid4().hex[:10]}"
    outage.db.Execute(pb.ExecuteRequest(database="pg", sql=f"CREATE TABLE {name} (n int)"))
    return name


def count(outage: Outage, table: str) -> int:
    return int(pg_fetch(outage.dsn, f"SELECT count(*) AS n FROM {table}")[0]["n"])


def test_a_write_that_lost_its_connection_is_not_retried(outage: Outage, table: str):
    insert = pb.ExecuteRequest(database="pg", sql=f"INSERT INTO {table} SELECT 1 FROM pg_sleep(1)")
    with pytest.raises(grpc.RpcError) as info:
        cut_during(lambda: outage.db.Execute(insert, timeout=10), 0.4, outage.proxy)
    err = call_error(info.value)
    assert err.code == grpc.StatusCode.UNAVAILABLE
    assert err.reason == "DATABASE_UNAVAILABLE"
    assert "attempts" not in err.metadata
    time.sleep(1.5)  # let the server finish what it was doing
    assert count(outage, table) <= 1
    outage.heal()


def test_an_idempotent_write_that_lost_its_connection_is_retried(outage: Outage, table: str):
    outage.db.Execute(pb.ExecuteRequest(database="pg", sql=f"CREATE UNIQUE INDEX ON {table} (n)"))
    insert = pb.ExecuteRequest(
        database="pg",
        sql=f"INSERT INTO {table} SELECT 7 FROM pg_sleep(1) ON CONFLICT DO NOTHING",
        options=pb.RequestOptions(idempotent=True),
    )
    reply = cut_during(lambda: outage.db.Execute(insert, timeout=10), 0.4, outage.proxy)
    assert reply.stats.attempts == 2
    time.sleep(1.0)
    assert count(outage, table) == 1
    outage.heal()


def test_a_read_that_lost_its_connection_is_retried_once(outage: Outage):
    query = pb.QueryRequest(database="pg", sql="SELECT 42 AS n FROM pg_sleep(1)")
    reply = cut_during(lambda: outage.db.Query(query, timeout=10), 0.4, outage.proxy)
    assert reply.rows[0].values[0] == V.of(int_value=42)
    assert reply.stats.attempts == 2
    outage.heal()


def test_connect_refused_is_retried_then_reported(outage: Outage):
    outage.proxy.refuse()
    outage.proxy.cut()
    try:
        with pytest.raises(grpc.RpcError) as info:
            outage.db.Execute(pb.ExecuteRequest(database="pg", sql="SELECT 1"), timeout=10)
        err = call_error(info.value)
        assert err.code == grpc.StatusCode.UNAVAILABLE
        # Nothing reached the database, so even a write was tried again (the
        # circuit, closed until now, needs more failures than one call makes).
        assert err.reason == "DATABASE_UNAVAILABLE"
        assert err.metadata["attempts"] == "3"
    finally:
        outage.heal()


def test_a_transaction_begun_too_late_for_its_answer_is_rolled_back_at_once(outage: Outage):
    """A BeginTransaction whose BEGIN came back in the last moments of its
    deadline fails DEADLINE_EXCEEDED and leaves no transaction open: its
    caller might give up before the answer arrived, and then nobody would know
    the transaction's id while it held a connection until its idle timeout."""
    outage.heal()
    name = urlsplit(outage.dsn).path.lstrip("/")
    open_transactions = (
        "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'dbgateway' "
        f"AND datname = '{name}' AND state LIKE 'idle in transaction%'"
    )
    # Each way 100 ms: the BEGIN's round trip takes 200 ms of the call's 230.
    outage.proxy.latency(0.1)
    try:
        with pytest.raises(grpc.RpcError) as info:
            outage.db.BeginTransaction(pb.BeginTransactionRequest(database="pg"), timeout=0.23)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert eventually(lambda: pg_fetch(outage.dsn, open_transactions)[0]["n"] == 0, within=2)
    finally:
        outage.heal()
    # With time to spare, a transaction begins as usual.
    begun = outage.db.BeginTransaction(pb.BeginTransactionRequest(database="pg"), timeout=5)
    assert pg_fetch(outage.dsn, open_transactions)[0]["n"] == 1
    outage.db.Rollback(pb.RollbackRequest(transaction_id=begun.transaction_id), timeout=5)
