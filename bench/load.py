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


SELECT_ONE = f"SELECT id, name, price, created FROM {TABLE} WHERE id = $1"
SELECT_RANGE = f"SELECT id, name, price, created FROM {TABLE} WHERE id >= $1 AND id < $2"
INSERT = "INSERT INTO bench_writes (name, price) VALUES ($1, $2)"
SELECT_PRICE = f"SELECT price FROM {TABLE} WHERE id = $1"
BATCH_ROWS = 1000


def _key(i: int) -> int:
    return i % ROWS + 1


def _range(i: int, size: int) -> tuple[int, int]:
    start = i % (ROWS - size) + 1
    return start, start + size


class AsyncpgContender(Contender):
    """asyncpg with its own pool (direct: the floor; via PgBouncer: the anchor).
    Both 10k-row workloads read with fetch(): the floor for rows/s."""

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
        return len(await self.pool.fetch(SELECT_ONE, _key(i)))

    async def op_read_100(self, i: int) -> int:
        return len(await self.pool.fetch(SELECT_RANGE, *_range(i, 100)))

    async def op_read_10k(self, i: int) -> int:
        return len(await self.pool.fetch(SELECT_RANGE, *_range(i, 10_000)))

    op_read_10k_stream = op_read_10k

    async def op_insert(self, i: int) -> int:
        await self.pool.execute(INSERT, f"w{i}", i * 0.5)
        return 1

    async def op_batch_1000(self, i: int) -> int:
        await self.pool.executemany(INSERT, [(f"b{i}-{j}", j * 0.5) for j in range(BATCH_ROWS)])
        return BATCH_ROWS

    async def op_tx_4(self, i: int) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.fetchval(SELECT_PRICE, _key(i))
            await conn.execute(INSERT, f"t{i}", 1.0)
            await conn.fetchval(SELECT_PRICE, _key(i + 1))
            await conn.execute(INSERT, f"t{i}", 2.0)
        return 4


class AiomysqlContender(Contender):
    """MariaDB through aiomysql's own pool (the floor for the MySQL side)."""

    name = "aiomysql (direct)"

    async def setup(self, args: argparse.Namespace) -> None:
        from urllib.parse import urlsplit

        import aiomysql

        parts = urlsplit(args.dsn)
        self.pool = await aiomysql.create_pool(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=parts.username or "root",
            password=parts.password or "",
            db=parts.path.lstrip("/"),
            minsize=args.connections,
            maxsize=args.connections,
            autocommit=True,
        )

    async def close(self) -> None:
        self.pool.close()
        await self.pool.wait_closed()

    async def _fetch(self, sql: str, *params: Any) -> int:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(sql, params)
            return len(await cur.fetchall())

    async def op_point_select(self, i: int) -> int:
        return await self._fetch(SELECT_ONE.replace("$1", "%s"), _key(i))

    async def op_read_100(self, i: int) -> int:
        sql = SELECT_RANGE.replace("$1", "%s").replace("$2", "%s")
        return await self._fetch(sql, *_range(i, 100))

    async def op_insert(self, i: int) -> int:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(INSERT.replace("$1", "%s").replace("$2", "%s"), (f"w{i}", i * 0.5))
        return 1


class GatewayStubContender(Contender):
    """dbgateway through the raw generated stubs (grpc.aio). ``--channels``
    channels, each its own connection (so ``--workers N`` can spread them)."""

    name = "dbgateway (stubs)"
    mysql = False

    async def setup(self, args: argparse.Namespace) -> None:
        import grpc

        from dbgateway.v1 import database_service_pb2 as pb
        from dbgateway.v1 import database_service_pb2_grpc as pb_grpc
        from dbgateway.v1 import value_pb2

        self.pb, self.value = pb, value_pb2
        self.channels = [
            grpc.aio.insecure_channel(
                args.target,
                options=[
                    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                    ("grpc.use_local_subchannel_pool", 1),
                ],
            )
            for _ in range(args.channels)
        ]
        self.stubs = [pb_grpc.DatabaseServiceStub(c) for c in self.channels]  # type: ignore[no-untyped-call]
        self.database = args.database
        self.mysql = args.database.startswith("m")

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()

    def _stub(self, i: int) -> Any:
        return self.stubs[i % len(self.stubs)]

    def _sql(self, sql: str) -> str:
        return sql.replace("$1", "%s").replace("$2", "%s") if self.mysql else sql

    def _int(self, v: int) -> Any:
        return self.value.Value(int_value=v)

    async def _query(self, i: int, sql: str, *params: Any) -> int:
        reply = await self._stub(i).Query(
            self.pb.QueryRequest(database=self.database, sql=self._sql(sql), params=list(params))
        )
        return len(reply.rows)

    async def op_point_select(self, i: int) -> int:
        return await self._query(i, SELECT_ONE, self._int(_key(i)))

    async def op_read_100(self, i: int) -> int:
        return await self._query(i, SELECT_RANGE, *map(self._int, _range(i, 100)))

    async def op_read_10k(self, i: int) -> int:
        return await self._query(i, SELECT_RANGE, *map(self._int, _range(i, 10_000)))

    async def op_read_10k_stream(self, i: int) -> int:
        request = self.pb.QueryRequest(
            database=self.database,
            sql=SELECT_RANGE,
            params=list(map(self._int, _range(i, 10_000))),
        )
        rows = 0
        async for message in self._stub(i).StreamQuery(request):
            rows += len(message.rows)
        return rows

    def _write_params(self, name: str, price: float) -> list[Any]:
        return [self.value.Value(string_value=name), self.value.Value(double_value=price)]

    async def op_insert(self, i: int) -> int:
        await self._stub(i).Execute(
            self.pb.ExecuteRequest(
                database=self.database,
                sql=self._sql(INSERT),
                params=self._write_params(f"w{i}", i * 0.5),
            )
        )
        return 1

    async def op_batch_1000(self, i: int) -> int:
        pb = self.pb
        await self._stub(i).ExecuteBatch(
            pb.ExecuteBatchRequest(
                database=self.database,
                sql=INSERT,
                param_sets=[
                    pb.ParamSet(params=self._write_params(f"b{i}-{j}", j * 0.5))
                    for j in range(BATCH_ROWS)
                ],
            )
        )
        return BATCH_ROWS

    async def op_tx_4(self, i: int) -> int:
        pb = self.pb
        await self._stub(i).RunTransaction(
            pb.RunTransactionRequest(
                database=self.database,
                statements=[
                    pb.Statement(sql=SELECT_PRICE, params=[self._int(_key(i))]),
                    pb.Statement(sql=INSERT, params=self._write_params(f"t{i}", 1.0)),
                    pb.Statement(sql=SELECT_PRICE, params=[self._int(_key(i + 1))]),
                    pb.Statement(sql=INSERT, params=self._write_params(f"t{i}", 2.0)),
                ],
            )
        )
        return 4


class GatewayClientContender(GatewayStubContender):
    """dbgateway through the Python ``AsyncClient`` (native values in and out),
    over its default transport: one client shared by every caller, as a
    service uses it, so every call travels on its one Session stream."""

    name = "dbgateway (AsyncClient)"
    transport = "session"

    async def setup(self, args: argparse.Namespace) -> None:
        from dbgateway import AsyncClient

        await super().setup(args)
        # A unary client per channel, as before sessions, so its numbers stay
        # comparable with earlier runs.
        count = 1 if self.transport == "session" else args.channels
        self.clients = [AsyncClient(args.target, transport=self.transport) for _ in range(count)]

    def _sql(self, sql: str) -> str:
        return sql.replace("$1", "%s").replace("$2", "%s") if self.mysql else sql

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        await super().close()

    def _client(self, i: int) -> Any:
        return self.clients[i % len(self.clients)]

    async def op_point_select(self, i: int) -> int:
        result = await self._client(i).query(self._sql(SELECT_ONE), _key(i), database=self.database)
        return len(result)

    async def op_read_100(self, i: int) -> int:
        result = await self._client(i).query(
            self._sql(SELECT_RANGE), *_range(i, 100), database=self.database
        )
        return len(result)

    async def op_read_10k(self, i: int) -> int:
        result = await self._client(i).query(
            SELECT_RANGE, *_range(i, 10_000), database=self.database
        )
        return len(result)

    async def op_insert(self, i: int) -> int:
        await self._client(i).execute(self._sql(INSERT), f"w{i}", i * 0.5, database=self.database)
        return 1

    async def op_read_10k_stream(self, i: int) -> int:
        rows = 0
        async for _ in self._client(i).stream(
            SELECT_RANGE, *_range(i, 10_000), database=self.database
        ):
            rows += 1
        return rows

    async def op_batch_1000(self, i: int) -> int:
        await self._client(i).execute_batch(
            INSERT, [(f"b{i}-{j}", j * 0.5) for j in range(BATCH_ROWS)], database=self.database
        )
        return BATCH_ROWS

    async def op_tx_4(self, i: int) -> int:
        await self._client(i).run_transaction(
            [
                (SELECT_PRICE, (_key(i),)),
                (INSERT, (f"t{i}", 1.0)),
                (SELECT_PRICE, (_key(i + 1),)),
                (INSERT, (f"t{i}", 2.0)),
            ],
            database=self.database,
        )
        return 4


class GatewayUnaryClientContender(GatewayClientContender):
    """The ``AsyncClient`` with ``transport="unary"``: one RPC per call."""

    name = "dbgateway (AsyncClient, unary)"
    transport = "unary"


class GatewayColumnarContender(GatewayClientContender):
    """The ``AsyncClient`` asking for the columnar encoding (``columnar=True``)
    on the 10k-row reads; the same native rows come back."""

    name = "dbgateway (AsyncClient, columnar)"

    async def op_read_10k(self, i: int) -> int:
        result = await self._client(i).query(
            SELECT_RANGE, *_range(i, 10_000), database=self.database, columnar=True
        )
        return len(result)

    async def op_read_10k_stream(self, i: int) -> int:
        rows = 0
        async for _ in self._client(i).stream(
            SELECT_RANGE, *_range(i, 10_000), database=self.database, columnar=True
        ):
            rows += 1
        return rows


CONTENDERS: dict[str, Callable[[], Contender]] = {
    "asyncpg": lambda: AsyncpgContender("asyncpg (direct)", statement_cache=True),
    "pgbouncer": lambda: AsyncpgContender("pgbouncer + asyncpg", statement_cache=False),
    "gateway-stubs": GatewayStubContender,
    "gateway-client": GatewayClientContender,
    "gateway-client-unary": GatewayUnaryClientContender,
    "naive-stubs": GatewayStubContender,
    "gateway-mysql-client": GatewayClientContender,
    "gateway-mysql-client-unary": GatewayUnaryClientContender,
    "gateway-columnar": GatewayColumnarContender,
    "gateway-workers2": GatewayStubContender,
    "aiomysql": AiomysqlContender,
    "gateway-mysql": GatewayStubContender,
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
            # Counted when it completes inside the measured window, so that
            # long operations (10k-row reads) are neither lost nor overcounted.
            done = time.perf_counter()
            if measure_from <= done <= stop_at:
                latencies.append(done - started)
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
    parser.add_argument("--channels", type=int, default=4, help="gRPC channels (gateway)")
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
