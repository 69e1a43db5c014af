"""One contender x one workload, in its own process: ``python -m bench.load ...``.

Prints one JSON line: operations, seconds, rows, latency percentiles (ms) and
errors. The orchestrator (:mod:`bench.run`) starts one such process per run so
that no contender shares an interpreter, a GIL or an event loop with another.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

Operation = Callable[[int], Awaitable[int]]  # returns rows handled

TABLE = "bench_items"
ROWS = 100_000


class Contender:
    """A way of reaching PostgreSQL; each workload is one async operation."""

    name = ""

    async def setup(self, args: argparse.Namespace) -> None: ...

    async def close(self) -> None: ...

    def operation(self, workload: str) -> Operation:
        method = getattr(self, f"op_{workload}", None)
        if method is None:
            raise SystemExit(f"{self.name} has no workload {workload}")
        return method  # type: ignore[no-any-return]


class AsyncpgContender(Contender):
    """asyncpg with its own pool (direct: the floor; via PgBouncer: the anchor)."""

    def __init__(self, name: str, statement_cache: bool) -> None:
        self.name = name
        self._statement_cache = statement_cache

    async def setup(self, args: argparse.Namespace) -> None:
        import asyncpg

        self.pool = await asyncpg.create_pool(
            args.dsn,
            min_size=args.connections,
            max_size=args.connections,
            statement_cache_size=100 if self._statement_cache else 0,
        )

    async def close(self) -> None:
        await self.pool.close()

    async def op_point_select(self, i: int) -> int:
        rows = await self.pool.fetch(
            f"SELECT id, name, price, created FROM {TABLE} WHERE id = $1", i % ROWS + 1
        )
        return len(rows)

    async def op_read_100(self, i: int) -> int:
        start = i % (ROWS - 100) + 1
        rows = await self.pool.fetch(
            f"SELECT id, name, price, created FROM {TABLE} WHERE id >= $1 AND id < $2",
            start,
            start + 100,
        )
        return len(rows)

    async def op_read_10k(self, i: int) -> int:
        start = i % (ROWS - 10_000) + 1
        rows = await self.pool.fetch(
            f"SELECT id, name, price, created FROM {TABLE} WHERE id >= $1 AND id < $2",
            start,
            start + 10_000,
        )
        return len(rows)

    async def op_insert(self, i: int) -> int:
        await self.pool.execute(
            "INSERT INTO bench_writes (name, price) VALUES ($1, $2)", f"w{i}", i * 0.5
        )
        return 1


class GatewayStubContender(Contender):
    """dbgateway through the raw generated stubs (grpc.aio)."""

    name = "dbgateway (stubs)"

    async def setup(self, args: argparse.Namespace) -> None:
        import grpc

        from dbgateway.v1 import database_service_pb2 as pb
        from dbgateway.v1 import database_service_pb2_grpc as pb_grpc
        from dbgateway.v1 import value_pb2

        self.pb, self.value = pb, value_pb2
        self.channel = grpc.aio.insecure_channel(
            args.target, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        )
        self.stub = pb_grpc.DatabaseServiceStub(self.channel)
        self.database = args.database

    async def close(self) -> None:
        await self.channel.close()

    def _int(self, v: int) -> Any:
        return self.value.Value(int_value=v)

    async def _query(self, sql: str, *params: Any) -> int:
        reply = await self.stub.Query(
            self.pb.QueryRequest(database=self.database, sql=sql, params=list(params))
        )
        return len(reply.rows)

    async def op_point_select(self, i: int) -> int:
        return await self._query(
            f"SELECT id, name, price, created FROM {TABLE} WHERE id = $1", self._int(i % ROWS + 1)
        )

    async def op_read_100(self, i: int) -> int:
        start = i % (ROWS - 100) + 1
        return await self._query(
            f"SELECT id, name, price, created FROM {TABLE} WHERE id >= $1 AND id < $2",
            self._int(start),
            self._int(start + 100),
        )

    async def op_read_10k(self, i: int) -> int:
        start = i % (ROWS - 10_000) + 1
        return await self._query(
            f"SELECT id, name, price, created FROM {TABLE} WHERE id >= $1 AND id < $2",
            self._int(start),
            self._int(start + 10_000),
        )

    async def op_insert(self, i: int) -> int:
        await self.stub.Execute(
            self.pb.ExecuteRequest(
                database=self.database,
                sql="INSERT INTO bench_writes (name, price) VALUES ($1, $2)",
                params=[
                    self.value.Value(string_value=f"w{i}"),
                    self.value.Value(double_value=i * 0.5),
                ],
            )
        )
        return 1


CONTENDERS: dict[str, Callable[[], Contender]] = {
    "asyncpg": lambda: AsyncpgContender("asyncpg (direct)", statement_cache=True),
    "pgbouncer": lambda: AsyncpgContender("pgbouncer + asyncpg", statement_cache=False),
    "gateway-stubs": GatewayStubContender,
}


async def drive(op: Operation, concurrency: int, duration: float, warmup: float) -> dict[str, Any]:
    latencies: list[float] = []
    rows = 0
    errors: dict[str, int] = {}
    counter = random.randrange(ROWS)
    stop_at = time.perf_counter() + warmup + duration
    measure_from = time.perf_counter() + warmup

    async def caller() -> None:
        nonlocal rows, counter
        while True:
            counter += 7919  # a prime stride spreads keys over the table
            started = time.perf_counter()
            if started >= stop_at:
                return
            try:
                n = await op(counter)
            except Exception as exc:
                key = type(exc).__name__
                code = getattr(exc, "code", None)
                if callable(code):
                    key = f"{key}:{code()}"
                errors[key] = errors.get(key, 0) + 1
                continue
            if started >= measure_from:
                latencies.append(time.perf_counter() - started)
                rows += n

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    latencies.sort()
    ops = len(latencies)

    def pct(p: float) -> float:
        return latencies[min(ops - 1, int(p * ops))] * 1000 if ops else float("nan")

    return {
        "ops": ops,
        "seconds": duration,
        "ops_per_s": ops / duration,
        "rows_per_s": rows / duration,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_ms": statistics.fmean(latencies) * 1000 if ops else float("nan"),
        "errors": errors,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    contender = CONTENDERS[args.contender]()
    await contender.setup(args)
    try:
        op = contender.operation(args.workload)
        await op(1)  # connect, prepare
        result = await drive(op, args.concurrency, args.duration, args.warmup)
    finally:
        await contender.close()
    result.update(contender=args.contender, workload=args.workload, concurrency=args.concurrency)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("--contender", required=True, choices=sorted(CONTENDERS))
    parser.add_argument("--workload", required=True)
    parser.add_argument("--dsn", help="PostgreSQL DSN (asyncpg / pgbouncer contenders)")
    parser.add_argument("--target", help="gateway HOST:PORT")
    parser.add_argument("--database", default="bench")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args(argv)
    try:
        import uvloop

        result = uvloop.run(main_async(args))
    except ModuleNotFoundError:
        result = asyncio.run(main_async(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
