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
