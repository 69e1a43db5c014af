"""What the circuit breaker counts, how fast it notices a stalled database, and
how fast it lets a recovered one serve again: a real gateway in front of a
real PostgreSQL, reached through the fault proxy, with the default connect
timeout (5 s), far longer than the callers' deadlines."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dbgateway.v1 import admin_service_pb2 as admin_pb
from dbgateway.v1 import admin_service_pb2_grpc, database_service_pb2_grpc
from dbgateway.v1 import database_service_pb2 as pb
from tests.faultproxy import FaultProxy
from tests.support import ServerProcess, V, call_error

pytestmark = pytest.mark.postgres

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SELECT = pb.QueryRequest(database="pg", sql="SELECT 1")


@dataclass
class Gate:
    proxy: FaultProxy
    server: ServerProcess
    db: database_service_pb2_grpc.DatabaseServiceStub
    admin: admin_service_pb2_grpc.AdminServiceStub
    health: health_pb2_grpc.HealthStub

    def status(self) -> int:
        return self.health.Check(health_pb2.HealthCheckRequest(service="db/pg"), timeout=5).status

    def wait_for(self, status: int, within: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < within:
            if self.status() == status:
                return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(f"db/pg not {status} within {within}s:\n{self.server.log()}")

    def heal(self) -> None:
        self.proxy.restore()
        self.wait_for(SERVING, within=20)
        # The pool's idle connections died with the outage: let one call
        # find that out (and retry) before the next test counts calls.
        self.db.Query(SELECT, timeout=10)

    def pg(self) -> admin_pb.DatabaseInfo:
        reply = self.admin.ListDatabases(admin_pb.ListDatabasesRequest(), timeout=5)
        return next(d for d in reply.databases if d.name == "pg")


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory, own_dsn: str) -> Iterator[Gate]:
    parts = urlsplit(own_dsn)
    workdir = tmp_path_factory.mktemp("circuit")
    with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        # The default connect_timeout (5 s) and failure_threshold (5); an open
        # time that doubles quickly, to show recovery does not wait for it.
        config = f"""
[databases.pg]
dsn = "{proxy.dsn(own_dsn)}"
pool = {{ min_size = 1, max_size = 8 }}
breaker = {{ open_time = 1, max_open_time = 60 }}
"""
        server = ServerProcess(workdir, config=config).start()
        try:
            with server.channel() as channel:
                yield Gate(
                    proxy,
                    server,
                    database_service_pb2_grpc.DatabaseServiceStub(channel),
                    admin_service_pb2_grpc.AdminServiceStub(channel),
                    health_pb2_grpc.HealthStub(channel),
                )
        finally:
            server.stop()


def failing_call(gate: Gate, timeout: float = 10) -> tuple[str, dict[str, str]]:
    with pytest.raises(grpc.RpcError) as info:
        gate.db.Execute(pb.ExecuteRequest(database="pg", sql="SELECT 1"), timeout=timeout)
    err = call_error(info.value)
    return err.reason, err.metadata


def test_a_call_counts_once_toward_the_breaker_whatever_its_attempts(gate: Gate):
    gate.db.Query(SELECT, timeout=10)
    gate.proxy.refuse()
    gate.proxy.cut()
    try:
        # Each call is tried 3 times (nothing reached the database); four
        # calls are four failures, one short of the threshold of 5.
        for _ in range(4):
            reason, metadata = failing_call(gate)
            assert reason == "DATABASE_UNAVAILABLE"
            assert metadata["attempts"] == "3"
        # The access log agrees with the caller's ErrorInfo (its line is
        # written once the answer went out, so wait for the last one).
        failed: list[str] = []
        deadline = time.monotonic() + 10
        while len(failed) < 4 and time.monotonic() < deadline:
            failed = [
                line
                for line in gate.server.log().splitlines()
                if "method=Execute" in line and "code=UNAVAILABLE" in line
            ]
            time.sleep(0.05)
        assert len(failed) == 4
        assert all("retries=2" in line for line in failed), failed
        assert gate.status() == SERVING
        assert gate.pg().circuit_state == admin_pb.CIRCUIT_STATE_CLOSED
        reason, _ = failing_call(gate)
        assert reason == "DATABASE_UNAVAILABLE"
        assert gate.status() == NOT_SERVING
        assert "5 consecutive failures" in gate.server.log()
    finally:
        gate.heal()


def test_a_run_transaction_counts_once_toward_the_breaker_whatever_its_attempts(gate: Gate):
    gate.db.Query(SELECT, timeout=10)
    gate.proxy.refuse()
    gate.proxy.cut()
    request = pb.RunTransactionRequest(database="pg", statements=[pb.Statement(sql="SELECT 1")])
    try:
        # A transaction whose BEGIN reached nothing is tried again until its
        # deadline: still one call, one failure; four are one short of 5.
        for _ in range(4):
            with pytest.raises(grpc.RpcError) as info:
                gate.db.RunTransaction(request, timeout=1)
            err = call_error(info.value)
            assert err.reason == "DATABASE_UNAVAILABLE"
            assert int(err.metadata["attempts"]) > 1
        assert gate.status() == SERVING
        with pytest.raises(grpc.RpcError) as info:
            gate.db.RunTransaction(request, timeout=1)
        assert call_error(info.value).reason == "DATABASE_UNAVAILABLE"
        assert gate.status() == NOT_SERVING
        assert "5 consecutive failures" in gate.server.log()
    finally:
        gate.heal()


#: The table the stalled ExecuteBatch callers insert into.
STALL_TABLE = "circuit_stall_batch"

#: RPC name -> one call of it with a 1 s deadline. Each begins a transaction
#: (but Query), and a transaction's BEGIN must count as a statement does.
SHORT_CALLS: dict[str, Callable[[Gate], object]] = {
    "Query": lambda gate: gate.db.Query(SELECT, timeout=1),
    "RunTransaction": lambda gate: gate.db.RunTransaction(
        pb.RunTransactionRequest(database="pg", statements=[pb.Statement(sql="SELECT 1")]),
        timeout=1,
    ),
    "ExecuteBatch": lambda gate: gate.db.ExecuteBatch(
        pb.ExecuteBatchRequest(
            database="pg",
            sql=f"INSERT INTO {STALL_TABLE} (n) VALUES ($1)",
            param_sets=[pb.ParamSet(params=[V.of(int_value=1)])],
        ),
        timeout=1,
    ),
    "BeginTransaction": lambda gate: gate.db.BeginTransaction(
        pb.BeginTransactionRequest(database="pg"), timeout=1
    ),
    "Transaction": lambda gate: list(
        gate.db.Transaction(
            iter(
                [
                    pb.TransactionRequest(begin=pb.TransactionRequest.Begin(database="pg")),
                    pb.TransactionRequest(commit=pb.TransactionRequest.Commit()),
                ]
            ),
            timeout=1,
        )
    ),
}


@pytest.mark.parametrize("method", list(SHORT_CALLS))
def test_a_stalled_database_opens_the_circuit_though_every_deadline_is_short(
    gate: Gate, method: str
):
    gate.db.Query(SELECT, timeout=10)
    gate.db.Execute(
        pb.ExecuteRequest(database="pg", sql=f"CREATE TABLE IF NOT EXISTS {STALL_TABLE} (n INT)"),
        timeout=10,
    )
    call = SHORT_CALLS[method]
    gate.proxy.stall()
    outcomes: list[tuple[float, float, str]] = []
    stop = threading.Event()

    def caller() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                call(gate)
                reason = "OK"
            except grpc.RpcError as exc:
                err = call_error(exc)
                reason = err.reason or err.code.name
            outcomes.append((started, time.monotonic() - started, reason))

    callers = [threading.Thread(target=caller) for _ in range(4)]
    try:
        for t in callers:
            t.start()
        opened_in = gate.wait_for(NOT_SERVING, within=20)
        # Health turns NOT_SERVING as the circuit opens, which may be before
        # any caller's next call: let them call into the open circuit.
        settle = time.monotonic() + 5
        while time.monotonic() < settle and sum(o[2] == "CIRCUIT_OPEN" for o in outcomes) < 4:
            time.sleep(0.02)
        stop.set()
        for t in callers:
            t.join(10)
        before = [o for o in outcomes if o[2] != "CIRCUIT_OPEN"]
        # A few rounds of 1 s calls, not a minute of them.
        assert len(before) <= 16, (opened_in, before)
        fast = [o for o in outcomes if o[2] == "CIRCUIT_OPEN"]
        assert fast, f"no caller failed fast: {outcomes}"
        assert sorted(o[1] for o in fast)[len(fast) // 2] < 0.5
        info = gate.pg()
        assert info.circuit_state == admin_pb.CIRCUIT_STATE_OPEN
        assert info.circuit_cause.reason == "DATABASE_UNAVAILABLE"
        assert "did not answer" in info.circuit_cause.message
        assert "timed out and a check stalled too" in gate.server.log()
    finally:
        stop.set()
        gate.heal()


def test_a_database_back_after_a_long_outage_serves_within_seconds(gate: Gate):
    gate.db.Query(SELECT, timeout=10)
    gate.proxy.refuse()
    gate.proxy.cut()
    try:
        for _ in range(5):
            failing_call(gate)
        gate.wait_for(NOT_SERVING, within=5)
        # Long enough for the open time (1 s, doubling) to have grown well
        # past 5 s: probes doubling from 1 s would have failed at 1, 3, 7 and
        # 15 s, and the next would wait until 31 s.
        time.sleep(16)
        assert gate.status() == NOT_SERVING
        reason, metadata = failing_call(gate)
        assert reason == "CIRCUIT_OPEN"
        assert metadata["cause_reason"] == "DATABASE_UNAVAILABLE"
        assert "connect" in metadata["cause"].lower() or "refused" in metadata["cause"].lower()
    finally:
        gate.proxy.restore()
    recovered_in = gate.wait_for(SERVING, within=30)
    assert recovered_in < 5, f"serving again only after {recovered_in:.1f}s"
    assert gate.db.Query(SELECT, timeout=10).rows
    assert gate.pg().HasField("circuit_cause") is False
    assert "a background probe succeeded" in gate.server.log()
