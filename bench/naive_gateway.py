"""The Python floor for a unary gateway: grpc.aio + asyncpg and nothing else
(no auth, limits, retries, breaker, logs or metrics), answering ``Query`` with
the same messages as dbgateway. ``python -m bench.naive_gateway DSN POOL``
prints ``listening on 127.0.0.1:PORT``."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import sys
from typing import Any

import asyncpg
import grpc

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc as pb_grpc
from dbgateway.v1 import value_pb2


def value(v: Any) -> value_pb2.Value:
    if isinstance(v, int):
        return value_pb2.Value(int_value=v)
    if isinstance(v, decimal.Decimal):
        return value_pb2.Value(decimal_value=str(v))
    if isinstance(v, dt.datetime):
        out = value_pb2.Value()
        out.timestamp_value.FromDatetime(v)
        return out
    return value_pb2.Value(string_value=str(v))


def param(v: value_pb2.Value) -> Any:
    return getattr(v, v.WhichOneof("kind") or "string_value")


class Naive(pb_grpc.DatabaseServiceServicer):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def Query(self, request: pb.QueryRequest, context: Any) -> pb.QueryResponse:
        records = await self.pool.fetch(request.sql, *map(param, request.params))
        # Iterating a Record yields its values; keys() gives the column names.
        columns = [value_pb2.Column(name=k) for k in records[0].keys()] if records else []  # noqa: SIM118
        rows = [value_pb2.Row(values=[value(v) for v in r.values()]) for r in records]
        return pb.QueryResponse(columns=columns, rows=rows)


async def main(dsn: str, pool_size: int) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size)
    server = grpc.aio.server()
    pb_grpc.add_DatabaseServiceServicer_to_server(Naive(pool), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main(sys.argv[1], int(sys.argv[2])))
    except ModuleNotFoundError:
        asyncio.run(main(sys.argv[1], int(sys.argv[2])))
