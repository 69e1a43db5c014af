"""Parameters no engine can store faithfully are refused with INVALID_ARGUMENT
/ INVALID_PARAMETER before they cost the server anything, and a link lost in
the middle of a MySQL stream is UNAVAILABLE, never INTERNAL."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc as pb_grpc
from tests.faultproxy import FaultProxy
from tests.support import ServerProcess, V, call_error

pytestmark = [pytest.mark.postgres, pytest.mark.mysql]

ENGINES = ("pg", "mysql", "lite")
ECHO = {"pg": "SELECT $1::numeric", "mysql": "SELECT %s", "lite": "SELECT ?"}


def refused(db, database: str, sql: str, value) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        db.Query(pb.QueryRequest(database=database, sql=sql, params=[value]), timeout=10)
    return info.value


@pytest.mark.parametrize("database", ENGINES)
@pytest.mark.parametrize(
    "text", ["1E+300000000", "-1e-300000000", "9" * 20_000, "0." + "1" * 20_000, "1E+16384"]
)
def test_a_decimal_too_large_to_write_out_is_invalid_on_every_engine(db, server, database, text):
    started = time.monotonic()
    err = call_error(refused(db, database, ECHO[database], V.of(decimal_value=text)))
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PARAMETER")
    assert "digits" in err.message
    assert time.monotonic() - started < 5  # refused, not expanded
    # The server goes on serving.
    reply = db.Query(pb.QueryRequest(database=database, sql="SELECT 1"), timeout=10)
    assert reply.rows[0].values[0].int_value == 1


def test_a_decimal_within_the_bound_round_trips_exactly(db):
    text = "1" + "0" * 1000 + "." + "5" * 1000
    reply = db.Query(
        pb.QueryRequest(database="pg", sql=ECHO["pg"], params=[V.of(decimal_value=text)]),
        timeout=10,
    )
    assert reply.rows[0].values[0].decimal_value == text


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_mysql_refuses_nan_and_infinity_without_a_traceback(db, server, number):
    err = call_error(refused(db, "mysql", "SELECT %s", V.of(double_value=number)))
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PARAMETER")
    assert "Traceback" not in server.log()


def test_sqlite_refuses_nan_instead_of_storing_null(db):
    err = call_error(refused(db, "lite", "SELECT ?", V.of(double_value=math.nan)))
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PARAMETER")
    for number in (math.inf, -math.inf):  # SQLite's REAL keeps infinities: they round-trip
        reply = db.Query(
            pb.QueryRequest(database="lite", sql="SELECT ?", params=[V.of(double_value=number)]),
            timeout=10,
        )
        assert reply.rows[0].values[0].double_value == number


@pytest.fixture(scope="module")
def proxied_mysql(
    tmp_path_factory: pytest.TempPathFactory, mysql_dsn: str
) -> Iterator[tuple[FaultProxy, ServerProcess]]:
    parts = urlsplit(mysql_dsn)
    with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 3306) as proxy:
        workdir = tmp_path_factory.mktemp("mysql-lost")
        config = f"""
[databases.mysql]
dsn = "{proxy.dsn(mysql_dsn)}"
connect_timeout = 2
stream_chunk_bytes = 1024
pool = {{ min_size = 1, max_size = 2 }}
# One infrastructure failure opens the circuit: the lost stream must count.
breaker = {{ failure_threshold = 1, open_time = 3 }}
"""
        server = ServerProcess(workdir, config=config).start()
        try:
            yield proxy, server
        finally:
            server.stop()


def test_a_mysql_link_lost_mid_stream_is_unavailable_not_internal(proxied_mysql):
    proxy, server = proxied_mysql
    with server.channel() as channel:
        stub = pb_grpc.DatabaseServiceStub(channel)
        replies = stub.StreamQuery(
            pb.QueryRequest(
                database="mysql",
                sql="SELECT seq, REPEAT('x', 200) FROM seq_1_to_5000000",
            ),
            timeout=30,
        )

        def read_and_cut() -> None:
            for n, _ in enumerate(replies):
                if n == 3:
                    proxy.cut()

        with pytest.raises(grpc.RpcError) as info:
            read_and_cut()
        err = call_error(info.value)
        assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
        assert "unexpected error" not in server.log()
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest(service="db/mysql")
        assert health.Check(check, timeout=5).status == health_pb2.HealthCheckResponse.NOT_SERVING
        proxy.restore()
        # The circuit closes by itself, and the lost connection was discarded:
        # the next call gets a working one.
        deadline = time.monotonic() + 20
        while health.Check(check, timeout=5).status != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        reply = stub.Query(pb.QueryRequest(database="mysql", sql="SELECT 1"), timeout=20)
        assert reply.rows[0].values[0].int_value == 1
