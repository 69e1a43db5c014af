"""``dbgateway.v1.AdminService``: what the gateway knows about itself."""

from __future__ import annotations

import dataclasses
import platform
import time
from collections.abc import Mapping

import grpc
from google.protobuf import __version__ as protobuf_version
from google.protobuf import duration_pb2, timestamp_pb2

from dbgateway import __version__
from dbgateway.v1 import admin_service_pb2 as pb
from dbgateway.v1 import admin_service_pb2_grpc as pb_grpc

from ..config import Engine
from ..database import Database
from ..errors import invalid_request
from ..gateway import Gateway
from ..observability import (
    CircuitState,
    Observability,
    circuit_state,
    is_serving,
    open_transactions_by_database,
)
from ..resilience.breaker import CAUSE_MESSAGE, CAUSE_REASON, CAUSE_SQLSTATE, CAUSE_VENDOR_CODE
from ..security import Guard
from ..statement_stats import StatementSnapshot
from .calls import Servicer, rpc

ENGINES: Mapping[Engine, int] = {
    Engine.POSTGRES: pb.ENGINE_POSTGRESQL,
    Engine.MYSQL: pb.ENGINE_MYSQL,
    Engine.SQLITE: pb.ENGINE_SQLITE,
}

CIRCUIT_STATES: Mapping[CircuitState, int] = {
    CircuitState.CLOSED: pb.CIRCUIT_STATE_CLOSED,
    CircuitState.HALF_OPEN: pb.CIRCUIT_STATE_HALF_OPEN,
    CircuitState.OPEN: pb.CIRCUIT_STATE_OPEN,
}


def circuit_cause(db: Database) -> pb.CircuitCause | None:
    """Why ``db``'s circuit is not closed (None while it is)."""
    cause = db.breaker.cause()
    if not cause:
        return None
    return pb.CircuitCause(
        reason=cause.get(CAUSE_REASON, ""),
        sqlstate=cause.get(CAUSE_SQLSTATE, ""),
        vendor_code=cause.get(CAUSE_VENDOR_CODE, ""),
        message=cause.get(CAUSE_MESSAGE, ""),
    )


def _pool(db: Database) -> pb.PoolStats:
    return pb.PoolStats(**dataclasses.asdict(db.pool.stats()))


def endpoint_infos(db: Database) -> list[pb.EndpointInfo]:
    """The primary, then each replica: where it is, whether it serves, its lag."""
    endpoints = [
        pb.EndpointInfo(
            name=db.endpoint,
            role=pb.ENDPOINT_ROLE_PRIMARY,
            address=db.address,
            serving=is_serving(db),
            circuit_state=CIRCUIT_STATES[circuit_state(db)],  # type: ignore[arg-type]
            pool=_pool(db),
        )
    ]
    for replica in db.replicas.replicas:
        info = pb.EndpointInfo(
            name=replica.name,
            role=pb.ENDPOINT_ROLE_REPLICA,
            address=replica.database.address,
            serving=replica.usable,
            circuit_state=CIRCUIT_STATES[circuit_state(replica.database)],  # type: ignore[arg-type]
            pool=_pool(replica.database),
        )
        if replica.lag is not None:
            info.lag.FromNanoseconds(int(replica.lag * 1e9))
        endpoints.append(info)
    return endpoints


def database_info(db: Database, open_transactions: int) -> pb.DatabaseInfo:
    return pb.DatabaseInfo(
        name=db.name,
        engine=ENGINES.get(db.config.engine, pb.ENGINE_UNSPECIFIED),  # type: ignore[arg-type]
        server_version=db.backend.server_version,
        health=pb.DATABASE_HEALTH_SERVING if is_serving(db) else pb.DATABASE_HEALTH_NOT_SERVING,
        circuit_state=CIRCUIT_STATES[circuit_state(db)],  # type: ignore[arg-type]
        pool=_pool(db),
        open_transactions=open_transactions,
        circuit_cause=circuit_cause(db),
        # A database without replicas is its primary alone, shown above.
        endpoints=endpoint_infos(db) if db.replicas else [],
    )


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def statement_stats(entry: StatementSnapshot) -> pb.StatementStats:
    last_seen = timestamp_pb2.Timestamp()
    last_seen.FromNanoseconds(int(entry.last_seen * 1e9))
    return pb.StatementStats(
        database=entry.database,
        text=entry.text,
        calls=entry.calls,
        errors=entry.errors,
        errors_by_reason=entry.errors_by_reason,
        rows=entry.rows,
        total_time=_duration(entry.total_time),
        mean_time=_duration(entry.mean_time),
        p99_time=_duration(entry.p99_time),
        last_seen=last_seen,
    )


class AdminServicer(Servicer, pb_grpc.AdminServiceServicer):
    admin_only = True

    def __init__(self, gateway: Gateway, observability: Observability, guard: Guard) -> None:
        self._gateway = gateway
        self.observability = observability
        self.guard = guard
        self._started_wall = time.time()
        self._started = time.monotonic()

    @rpc
    async def ListDatabases(
        self, request: pb.ListDatabasesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDatabasesResponse:
        open_tx = open_transactions_by_database(self._gateway)
        return pb.ListDatabasesResponse(
            databases=[
                database_info(db, open_tx.get(name, 0))
                for name, db in sorted(self._gateway.databases.items())
            ]
        )

    @rpc
    async def GetServerInfo(
        self, request: pb.GetServerInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetServerInfoResponse:
        start_time = timestamp_pb2.Timestamp()
        start_time.FromNanoseconds(int(self._started_wall * 1e9))
        uptime = duration_pb2.Duration()
        uptime.FromNanoseconds(int((time.monotonic() - self._started) * 1e9))
        return pb.GetServerInfoResponse(
            version=__version__,
            start_time=start_time,
            uptime=uptime,
            build=pb.BuildInfo(
                python_version=platform.python_version(),
                grpc_version=grpc.__version__,
                protobuf_version=protobuf_version,
                platform=platform.platform(terse=True) + "-" + platform.machine(),
            ),
        )

    @rpc
    async def ListStatements(
        self, request: pb.ListStatementsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListStatementsResponse:
        if request.limit < 0:
            raise invalid_request("limit", "must not be negative")
        database = self._gateway.database(request.database).name if request.database else ""
        statements = self._gateway.statements
        return pb.ListStatementsResponse(
            statements=[statement_stats(e) for e in statements.top(database, request.limit)],
            capacity=statements.capacity,
        )

    @rpc
    async def ResetStatements(
        self, request: pb.ResetStatementsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResetStatementsResponse:
        database = self._gateway.database(request.database).name if request.database else ""
        return pb.ResetStatementsResponse(removed=self._gateway.statements.reset(database))
