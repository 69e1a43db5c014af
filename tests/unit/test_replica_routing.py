"""Which replica a read goes to: pure routing logic, with stand-in endpoints."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from dbgateway_server.config import BreakerSettings, ReadPreference
from dbgateway_server.errors import Reason
from dbgateway_server.replicas import ReplicaSet
from dbgateway_server.resilience.breaker import CircuitState


def endpoint(state: CircuitState = CircuitState.CLOSED) -> Any:
    return SimpleNamespace(breaker=SimpleNamespace(state=state), name="orders")


def replica_set(*endpoints: Any, default: ReadPreference = ReadPreference.PRIMARY) -> ReplicaSet:
    primary: Any = SimpleNamespace(
        name="orders",
        engine="postgresql",
        config=SimpleNamespace(
            max_replica_lag=10.0, read_preference=default, breaker=BreakerSettings()
        ),
    )
    health: list[bool] = []
    replicas = ReplicaSet(primary, list(endpoints), on_health=health.append)
    replicas.health = health  # type: ignore[attr-defined]
    return replicas


def test_the_usable_replica_with_the_fewest_calls_in_flight_is_chosen():
    replicas = replica_set(endpoint(), endpoint(), endpoint())
    for r, lag in zip(replicas.replicas, (0.0, 1.0, 2.0), strict=True):
        r.lag = lag
    first, second, third = replicas.replicas
    first.in_flight, second.in_flight, third.in_flight = 3, 1, 2
    assert replicas.choose() is second
    with replicas.running(second), replicas.running(second):
        assert replicas.choose() is third
    assert second.in_flight == 1
    assert replicas.choose(exclude=[second]) is third


@pytest.mark.parametrize(
    ("state", "lag"),
    [
        (CircuitState.OPEN, 0.0),
        (CircuitState.HALF_OPEN, 0.0),
        (CircuitState.CLOSED, None),  # unknown: unreachable or replication broken
        (CircuitState.CLOSED, 10.5),  # beyond max_replica_lag
    ],
)
def test_a_replica_that_is_down_broken_or_behind_is_not_used(state, lag):
    replicas = replica_set(endpoint(state))
    replicas.replicas[0].lag = lag
    assert replicas.choose() is None
    assert not replicas.serving
    error = replicas.no_replica()
    assert error.reason is Reason.NO_REPLICA_AVAILABLE
    assert "replica-1" in error.message


def test_a_replica_within_the_lag_bound_is_used_again_by_itself():
    replicas = replica_set(endpoint())
    replica = replicas.replicas[0]
    replica.lag = 30.0
    replicas.changed()
    assert replicas.choose() is None
    replica.lag = 10.0  # at the bound is within it
    replicas.changed()
    assert replicas.choose() is replica
    assert replicas.health == [True]  # type: ignore[attr-defined]


def test_an_unspecified_preference_is_the_database_default_and_none_without_replicas():
    assert replica_set(endpoint(), default=ReadPreference.REPLICA).preference(None) is (
        ReadPreference.REPLICA
    )
    assert replica_set(endpoint()).preference(ReadPreference.REPLICA_PREFERRED) is (
        ReadPreference.REPLICA_PREFERRED
    )
    assert replica_set().preference(ReadPreference.REPLICA) is ReadPreference.PRIMARY


def test_the_databases_command_prints_each_endpoint_of_a_database_with_replicas():
    from google.protobuf import duration_pb2

    from dbgateway._cli import databases_table
    from dbgateway.v1 import admin_service_pb2 as admin_pb

    primary = admin_pb.EndpointInfo(
        name="primary",
        role=admin_pb.ENDPOINT_ROLE_PRIMARY,
        address="db-1:5432",
        serving=True,
        circuit_state=admin_pb.CIRCUIT_STATE_CLOSED,
        pool=admin_pb.PoolStats(size=2, in_use=1, max_size=10),
    )
    behind = admin_pb.EndpointInfo(
        name="replica-1",
        role=admin_pb.ENDPOINT_ROLE_REPLICA,
        address="db-2:5432",
        circuit_state=admin_pb.CIRCUIT_STATE_CLOSED,
        lag=duration_pb2.Duration(seconds=12, nanos=500_000_000),
        pool=admin_pb.PoolStats(max_size=4),
    )
    down = admin_pb.EndpointInfo(
        name="replica-2",
        role=admin_pb.ENDPOINT_ROLE_REPLICA,
        address="db-3:5432",
        circuit_state=admin_pb.CIRCUIT_STATE_OPEN,
    )
    response = admin_pb.ListDatabasesResponse(
        databases=[
            admin_pb.DatabaseInfo(name="orders", endpoints=[primary, behind, down]),
            admin_pb.DatabaseInfo(name="solo", endpoints=[primary]),
        ]
    )
    lines = databases_table(response).splitlines()
    start = lines.index("") + 1
    assert lines[start].split() == [
        *("DATABASE", "ENDPOINT", "ROLE", "ADDRESS", "SERVING", "CIRCUIT", "LAG"),
        *("SIZE", "IN", "USE", "WAITING", "MAX"),
    ]
    assert lines[start + 1].split() == [
        *("orders", "primary", "primary", "db-1:5432", "yes", "closed", "-", "2", "1", "0", "10")
    ]
    assert lines[start + 2].split()[:7] == [
        *("orders", "replica-1", "replica", "db-2:5432", "no", "closed", "12.500s")
    ]
    assert lines[start + 3].split()[:7] == [
        *("orders", "replica-2", "replica", "db-3:5432", "no", "open", "?")
    ]
    assert len(lines) == start + 4  # a database without replicas has no endpoint rows


def test_metrics_and_the_access_log_name_the_endpoint(caplog):
    import logging

    from dbgateway_server.config import Config, DatabaseConfig, Engine, PoolSettings, ServerConfig
    from dbgateway_server.gateway import Gateway
    from dbgateway_server.observability import Observability
    from dbgateway_server.replicas import routed_to

    orders = DatabaseConfig(
        name="orders",
        dsn="postgresql://app:secret@127.0.0.1:1/orders",
        engine=Engine.POSTGRES,
        replicas=("postgresql://app:secret@127.0.0.1:2/orders",),
        replica_pool=PoolSettings(max_size=3),
    )
    gateway = Gateway(Config(server=ServerConfig(), databases={"orders": orders}))
    obs = Observability(ServerConfig(), gateway)
    registry = obs.metrics.registry

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("dbgateway_pool_max_connections", database="orders", endpoint="primary") == 10
    assert value("dbgateway_pool_max_connections", database="orders", endpoint="replica-1") == 3
    # Never measured yet: not usable, and no lag sample rather than a made-up one.
    assert value("dbgateway_replica_usable", database="orders", endpoint="replica-1") == 0
    assert value("dbgateway_replica_lag_seconds", database="orders", endpoint="replica-1") is None

    with caplog.at_level(logging.INFO, logger="dbgateway.access"):
        read = obs.begin("Query", request_id="r1", database="orders")
        routed_to("replica-1")
        obs.end(read)
        write = obs.begin("Execute", request_id="r2", database="orders")
        obs.end(write)
    labels = {"database": "orders", "code": "OK", "transport": "unary"}
    assert value("dbgateway_requests_total", method="Query", endpoint="replica-1", **labels) == 1
    assert value("dbgateway_requests_total", method="Execute", endpoint="primary", **labels) == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "dbgateway.access"]
    assert "endpoint=replica-1" in lines[0]
    assert "endpoint=primary" in lines[1]
