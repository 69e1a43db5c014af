"""Health as orchestrators see it: the server, the service, and one entry per database."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dbgateway.v1 import database_service_pb2 as pb
from tests.integration.test_errors import fail
from tests.support import call_error

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def health(channel):
    return health_pb2_grpc.HealthStub(channel)


def status(health, service: str) -> int:
    return health.Check(health_pb2.HealthCheckRequest(service=service)).status


@pytest.mark.parametrize(
    "service", ["", "dbgateway.v1.DatabaseService", "db/pg", "db/mysql", "db/lite"]
)
def test_server_service_and_reachable_databases_are_serving(health, service):
    assert status(health, service) == SERVING


def test_a_database_down_at_start_is_not_serving_and_the_others_work(health, db):
    assert status(health, "db/down") == NOT_SERVING
    err = fail(db.Query, pb.QueryRequest(database="down", sql="SELECT 1"))
    assert err.code == grpc.StatusCode.UNAVAILABLE
    assert err.reason == "CIRCUIT_OPEN"  # down since start: its circuit is open
    assert err.retry_delay is not None
    assert err.metadata["database"] == "down"
    for name in ("pg", "mysql", "lite"):
        assert db.Query(pb.QueryRequest(database=name, sql="SELECT 1")).rows


def test_unknown_health_entry_is_not_found(health):
    with pytest.raises(grpc.RpcError) as info:
        status(health, "db/nope")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_streams_and_transactions_also_fail_fast_while_the_circuit_is_open(db):
    with pytest.raises(grpc.RpcError) as streamed:
        list(db.StreamQuery(pb.QueryRequest(database="down", sql="SELECT 1")))
    with pytest.raises(grpc.RpcError) as begun:
        db.BeginTransaction(pb.BeginTransactionRequest(database="down"))
    for info in (streamed, begun):
        err = call_error(info.value)
        assert err.code == grpc.StatusCode.UNAVAILABLE
        assert err.reason == "CIRCUIT_OPEN"
        assert err.retry_delay is not None


def test_callers_never_become_the_probe_of_a_database_that_is_down(tmp_path):
    """With a short open time the circuit is due for a probe many times a
    second; the background prober takes every probe, so callers keep getting
    the fast CIRCUIT_OPEN answer and never wait on a connect attempt."""
    from dbgateway.v1 import database_service_pb2_grpc
    from tests.support import ServerProcess

    config = """
[databases.down]
dsn = "postgresql://postgres@127.0.0.1:1/nowhere"
connect_timeout = 1
breaker = { open_time = 0.05, max_open_time = 0.1 }
"""
    server = ServerProcess(tmp_path, config=config).start()
    try:
        with server.channel() as channel:
            stub = database_service_pb2_grpc.DatabaseServiceStub(channel)
            reasons = []
            for _ in range(200):
                with pytest.raises(grpc.RpcError) as info:
                    stub.Query(pb.QueryRequest(sql="SELECT 1"), timeout=5)
                reasons.append(call_error(info.value).reason)
    finally:
        server.stop()
    assert set(reasons) == {"CIRCUIT_OPEN"}
