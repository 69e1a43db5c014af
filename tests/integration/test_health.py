"""Health as orchestrators see it: the server, the service, and one entry per database."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dbgateway.v1 import database_service_pb2 as pb
from tests.integration.test_errors import fail

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
