"""Many callers share a few connections: everyone is answered, with their own answer."""

from __future__ import annotations

import asyncio

import grpc

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc
from tests.support import V, pg_fetch


def test_fifteen_hundred_concurrent_callers_share_a_pool_of_eight(server, postgres_dsn):
    async def run() -> list[object]:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = database_service_pb2_grpc.DatabaseServiceStub(channel)

            async def call(i: int) -> object:
                try:
                    reply = await stub.Query(
                        pb.QueryRequest(
                            database="pg",
                            sql="SELECT $1::bigint * 2 AS doubled, pg_backend_pid() AS pid",
                            params=[V.of(int_value=i)],
                        )
                    )
                except grpc.aio.AioRpcError as exc:
                    return exc.code()
                return (reply.rows[0].values[0].int_value, reply.rows[0].values[1].int_value)

            return await asyncio.gather(*(call(i) for i in range(1500)))

    results = asyncio.run(run())
    errors = [r for r in results if not isinstance(r, tuple)]
    assert errors == []
    assert [r[0] for r in results] == [2 * i for i in range(1500)]
    backends = {r[1] for r in results}
    assert 1 <= len(backends) <= 8  # the pool's max_size for "pg"
    name = postgres_dsn.rsplit("/", 1)[1]
    sessions = pg_fetch(
        postgres_dsn, f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}'"
    )
    assert sessions[0][0] <= 8 + 1  # the pool, plus this check's own connection


def test_pool_exhaustion_tells_grpc_retries_how_long_to_wait(tmp_path, postgres_dsn):
    """RetryInfo is for our client; grpc-retry-pushback-ms makes any gRPC
    client's built-in retry policy wait as long."""
    from tests.support import ServerProcess, call_error

    config = f'[databases.pg]\ndsn = "{postgres_dsn}"\npool = {{ min_size = 1, max_size = 1, acquire_timeout = 0.2 }}\n'
    proc = ServerProcess(tmp_path, config=config).start()
    try:
        with proc.channel() as channel:
            stub = database_service_pb2_grpc.DatabaseServiceStub(channel)
            slow = stub.Query.future(pb.QueryRequest(sql="SELECT pg_sleep(1.5)"))
            import time

            time.sleep(0.3)
            try:
                stub.Query(pb.QueryRequest(sql="SELECT 1"))
            except grpc.RpcError as exc:
                err = call_error(exc)
                trailers = dict(exc.trailing_metadata())
            else:
                raise AssertionError("the second call should not have found a connection")
            slow.result()
    finally:
        proc.stop()
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.reason == "POOL_EXHAUSTED"
    assert err.retry_delay == 0.1
    assert trailers["grpc-retry-pushback-ms"] == "100"
