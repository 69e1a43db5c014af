"""SIGTERM drains: health turns NOT_SERVING at once, new calls are refused
(once the drain listener holds the port: health checks answered NOT_SERVING,
other calls UNAVAILABLE / SERVER_DRAINING, not run, over TLS when the server
speaks it), in-flight calls finish within ``shutdown_grace``, pools close,
exit status 0.

Open transactions being rolled back at drain is not covered here: the
transactions table is not on this branch (``Gateway.close`` is where it goes).
"""

from __future__ import annotations

import concurrent.futures
import signal
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc
from tests.certs import Certificates, make_certificates
from tests.integration.test_client_cli import dbgateway
from tests.support import (
    ServerProcess,
    V,
    call_error,
    pg_fetch,
)

pytestmark = pytest.mark.postgres


NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def start(
    workdir: Path, dsn: str, grace: float, certs: Certificates | None = None
) -> ServerProcess:
    tls = (
        ""
        if certs is None
        else f'tls_cert = "{certs.server.cert}"\ntls_key = "{certs.server.key}"\n'
    )
    config = f"""
[server]
shutdown_grace = {grace}
{tls}
[databases.pg]
dsn = "{dsn}"
pool = {{ min_size = 2, max_size = 4 }}
"""
    return ServerProcess(workdir, config=config, tls_ca=None if certs is None else certs.ca).start()


#: What the server logs once new connections get answers during the drain.
DRAIN_LISTENING = "drain: answering new calls"


def wait_for_log(server: ServerProcess, text: str, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while text not in server.log():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{server.log()}"
        time.sleep(0.02)


def gateway_backends(dsn: str, marker: str = "") -> int:
    name = urlsplit(dsn).path.lstrip("/")
    where = f"AND query LIKE '%{marker}%' AND pid <> pg_backend_pid()" if marker else ""
    rows = pg_fetch(
        dsn,
        "SELECT count(*) AS n FROM pg_stat_activity "
        f"WHERE application_name = 'dbgateway' AND datname = '{name}' {where}",
    )
    return int(rows[0]["n"])


def test_sigterm_lets_the_in_flight_call_finish_and_exits_zero(tmp_path, own_dsn):
    server = start(tmp_path, own_dsn, grace=10)
    assert server.process is not None
    with server.channel() as channel:
        db = database_service_pb2_grpc.DatabaseServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        db.Query(pb.QueryRequest(database="pg", sql="SELECT 1"), timeout=5)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(
                db.Query,
                pb.QueryRequest(database="pg", sql="SELECT 7 AS n FROM pg_sleep(1.5)"),
                timeout=20,
            )
            time.sleep(0.3)
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            assert next(watch).status == NOT_SERVING
            assert time.monotonic() - signalled < 1.0
            watch.cancel()
            with pytest.raises(grpc.RpcError) as info:
                db.Query(pb.QueryRequest(database="pg", sql="SELECT 1"), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            reply = slow.result(20)
        assert reply.rows[0].values[0] == V.of(int_value=7)
    assert server.process.wait(20) == 0
    assert "draining" in server.log()
    assert gateway_backends(own_dsn) == 0  # every pooled connection closed


def test_calls_outliving_the_grace_period_are_cancelled_on_the_database(tmp_path, own_dsn):
    server = start(tmp_path, own_dsn, grace=1)
    assert server.process is not None
    marker = uuid.uuid4().hex
    with server.channel() as channel:
        db = database_service_pb2_grpc.DatabaseServiceStub(channel)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            stuck = pool.submit(
                db.Query,
                pb.QueryRequest(database="pg", sql=f"SELECT pg_sleep(30), '{marker}'"),
                timeout=60,
            )
            time.sleep(0.5)
            assert gateway_backends(own_dsn, marker) == 1
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            with pytest.raises(grpc.RpcError):
                stuck.result(20)
    assert server.process.wait(20) == 0
    assert time.monotonic() - signalled < 8
    time.sleep(0.5)
    assert gateway_backends(own_dsn, marker) == 0
    assert gateway_backends(own_dsn) == 0


def test_sigint_drains_too(tmp_path, own_dsn):
    server = start(tmp_path, own_dsn, grace=5)
    assert server.process is not None
    server.process.send_signal(signal.SIGINT)
    assert server.process.wait(20) == 0
    assert "stopped" in server.log()


def test_a_call_outliving_the_grace_period_is_answered_unavailable_with_a_reason(tmp_path, own_dsn):
    server = start(tmp_path, own_dsn, grace=1)
    assert server.process is not None
    with server.channel() as channel:
        db = database_service_pb2_grpc.DatabaseServiceStub(channel)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            stuck = pool.submit(
                db.Query, pb.QueryRequest(database="pg", sql="SELECT pg_sleep(30)"), timeout=60
            )
            time.sleep(0.5)
            server.process.send_signal(signal.SIGTERM)
            with pytest.raises(grpc.RpcError) as info:
                stuck.result(20)
    err = call_error(info.value)
    assert err.code == grpc.StatusCode.UNAVAILABLE
    assert err.reason == "SERVER_DRAINING"
    assert "shutdown_grace is 1s" in err.message
    assert "Cancelling all calls" not in err.message
    assert server.process.wait(20) == 0


def check(channel: grpc.Channel, service: str = "") -> int:
    health = health_pb2_grpc.HealthStub(channel)
    return health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def drain_with_a_call_in_flight(server: ServerProcess, dsn: str, pool, seconds: float = 3):
    """SIGTERMs ``server`` while a query of ``seconds`` runs on it; returns
    the query's future and its channel once the drain answers new connections."""
    assert server.process is not None
    marker = uuid.uuid4().hex
    channel = server.channel()
    db = database_service_pb2_grpc.DatabaseServiceStub(channel)
    slow = pool.submit(
        db.Query,
        pb.QueryRequest(
            database="pg", sql=f"SELECT 7 AS n, '{marker}' AS m FROM pg_sleep({seconds})"
        ),
        timeout=30,
    )
    deadline = time.monotonic() + 10
    while gateway_backends(dsn, marker) == 0:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.02)
    server.process.send_signal(signal.SIGTERM)
    wait_for_log(server, DRAIN_LISTENING)
    return slow, channel


def test_a_health_check_during_the_drain_is_answered_not_serving(tmp_path, own_dsn):
    server = start(tmp_path, own_dsn, grace=10)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow, old_channel = drain_with_a_call_in_flight(server, own_dsn, pool)
        # A probe opens a new connection each time; so does a client whose
        # connection the draining server closed (GOAWAY).
        with server.channel() as channel:
            assert check(channel) == NOT_SERVING
            assert check(channel, "dbgateway.v1.DatabaseService") == NOT_SERVING
            assert check(channel, "db/pg") == NOT_SERVING
            with pytest.raises(grpc.RpcError) as info:
                check(channel, "db/nope")
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert check(old_channel) == NOT_SERVING
        assert slow.result(30).rows[0].values[0] == V.of(int_value=7)
        old_channel.close()
    assert server.process is not None
    assert server.process.wait(20) == 0
    assert "answered 5 new call(s) while draining" in server.log()


def test_a_new_call_during_the_drain_is_refused_as_not_run(tmp_path, own_dsn):
    server = start(tmp_path, own_dsn, grace=10)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow, old_channel = drain_with_a_call_in_flight(server, own_dsn, pool)
        with server.channel() as channel:
            db = database_service_pb2_grpc.DatabaseServiceStub(channel)
            calls = [
                lambda: db.Query(pb.QueryRequest(database="pg", sql="SELECT 1"), timeout=5),
                lambda: db.Execute(pb.ExecuteRequest(database="pg", sql="SELECT 1"), timeout=5),
                lambda: list(db.Session(iter([]), timeout=5)),
            ]
            for call in calls:
                with pytest.raises(grpc.RpcError) as info:
                    call()
                err = call_error(info.value)
                assert err.code == grpc.StatusCode.UNAVAILABLE
                assert err.reason == "SERVER_DRAINING"
                assert err.metadata["not_run"] == "true"
                assert err.retry_delay is not None
                assert "takes no new calls" in err.message
                assert "Cancelling all calls" not in err.message
        assert slow.result(30).rows[0].values[0] == V.of(int_value=7)
        old_channel.close()
    assert server.process is not None
    assert server.process.wait(20) == 0


def test_a_tls_servers_drain_answers_over_tls(tmp_path, own_dsn):
    certs = make_certificates(tmp_path / "certs")
    server = start(tmp_path / "run", own_dsn, grace=10, certs=certs)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow, old_channel = drain_with_a_call_in_flight(server, own_dsn, pool)
        with server.channel() as channel:
            assert check(channel) == NOT_SERVING
        # The container's probe, as the Dockerfile and the manifests run it.
        probe = dbgateway("health", "--ca", str(certs.ca), server=server)
        assert probe.returncode == 1
        assert "NOT_SERVING" in probe.stdout + probe.stderr
        with grpc.insecure_channel(server.address) as plaintext:
            with pytest.raises(grpc.RpcError) as info:
                check(plaintext)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # no TLS, no answer
        assert slow.result(30).rows[0].values[0] == V.of(int_value=7)
        old_channel.close()
    assert server.process is not None
    assert server.process.wait(20) == 0
