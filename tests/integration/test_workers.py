"""``dbgateway serve --workers 2``: two processes share one port, each with
half of every pool, and a SIGTERM to the parent drains both."""

from __future__ import annotations

import re
import urllib.request

import grpc
import pytest

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc
from dbgateway_server.config import Config, DatabaseConfig, Engine, PoolSettings, ServerConfig
from dbgateway_server.workers import worker_config
from tests.support import ServerProcess, V

pytestmark = pytest.mark.postgres


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


def _queries(text: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("dbgateway_requests_total{") and 'method="Query"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_workers_share_the_port_and_drain_on_sigterm(tmp_path, postgres_dsn):
    config = f"""
[server]
metrics_listen = "127.0.0.1:0"

[databases.pg]
dsn = "{postgres_dsn}"
pool = {{ min_size = 2, max_size = 6 }}
"""
    proc = ServerProcess(tmp_path, config=config, args=["--workers", "2"]).start()
    try:
        log = proc.log()
        assert len(re.findall(r"dbgateway listening on ", log)) == 1
        pids = set(re.findall(r"worker \d/2 \(pid (\d+)\) serving on 127\.0\.0\.1:(\d+)", log))
        assert {port for _, port in pids} == {str(proc.port)}
        assert len(pids) == 2
        metrics_ports = [int(p) for p in re.findall(r"metrics listening on \S+:(\d+)", log)]
        assert len(metrics_ports) == 2

        # A channel is one connection, served by one worker: many channels
        # reach both.
        for i in range(40):
            with grpc.insecure_channel(
                proc.address, options=[("grpc.use_local_subchannel_pool", 1)]
            ) as channel:
                stub = database_service_pb2_grpc.DatabaseServiceStub(channel)
                reply = stub.Query(
                    pb.QueryRequest(
                        database="pg", sql="SELECT $1::int8", params=[V.of(int_value=i)]
                    ),
                    timeout=10,
                )
                assert reply.rows[0].values[0].int_value == i

        served = []
        for port in metrics_ports:
            text = _metrics(port)
            served.append(_queries(text))
            # each worker's pool is half of the configured one
            assert 'dbgateway_pool_max_connections{database="pg",endpoint="primary"} 3.0' in text
        assert sum(served) == 40
        assert all(n > 0 for n in served), served
    finally:
        code = proc.stop()
    assert code == 0
    assert proc.log().count("stopped") == 2


def test_each_worker_gets_its_share_of_the_pools_and_metrics_ports():
    db = DatabaseConfig(
        name="pg",
        dsn="postgresql://x@h/db",
        engine=Engine.POSTGRES,
        pool=PoolSettings(min_size=3, max_size=16),
    )
    tiny = DatabaseConfig(
        name="tiny",
        dsn="postgresql://x@h/db",
        engine=Engine.POSTGRES,
        pool=PoolSettings(min_size=1, max_size=1),
    )
    config = Config(
        server=ServerConfig(metrics_listen="127.0.0.1:9100"), databases={"pg": db, "tiny": tiny}
    )
    second = worker_config(config, 1, 2)
    assert (second.databases["pg"].pool.min_size, second.databases["pg"].pool.max_size) == (2, 8)
    assert (second.databases["tiny"].pool.min_size, second.databases["tiny"].pool.max_size) == (
        1,
        1,
    )
    assert second.server.metrics_listen == "127.0.0.1:9101"
    assert worker_config(config, 0, 1) is config
