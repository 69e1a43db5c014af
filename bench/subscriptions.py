"""Notification fan-out: dbgateway's Subscribe against direct asyncpg LISTEN.

For each number of subscribers S, all on one channel, a sender issues N
``pg_notify()`` calls (one per statement, as fast as it can) and every
subscriber receives all N. Compared:

- ``asyncpg``: each subscriber is its own asyncpg connection that LISTENs
  (what an application does without the gateway: S database sessions);
- ``dbgateway``: each subscriber is a ``Subscribe`` call; the gateway LISTENs
  on one connection and fans out.

Reported: deliveries per second (S x N over the time from the first send to
the last receipt), the latency from send to receipt (p50 / p99, clocked in
this process) and the PostgreSQL sessions the subscribers needed.

    python -m bench.subscriptions [--notifications N] [--subscribers 1,10,40]

PostgreSQL comes from DBGATEWAY_BENCH_POSTGRES_DSN (default
postgresql://postgres@127.0.0.1:5432/postgres). Results are printed and
written to bench/results/subscriptions.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import grpc.aio

from dbgateway.v1 import database_service_pb2_grpc
from dbgateway.v1 import subscription_pb2 as spb

from .stream_memory import Server

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "subscriptions.md"
POSTGRES_DSN = os.environ.get(
    "DBGATEWAY_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
CHANNEL = "bench_fanout"


@dataclass
class Run:
    contender: str
    subscribers: int
    notifications: int
    seconds: float
    latencies: list[float]
    sessions: int

    @property
    def deliveries_per_s(self) -> float:
        return self.subscribers * self.notifications / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000


async def send(n: int) -> float:
    """Sends ``n`` notifications, each carrying its send time; returns the first's."""
    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        started = time.perf_counter()
        for _ in range(n):
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, repr(time.perf_counter()))
        return started
    finally:
        await conn.close()


async def measure(
    contender: str,
    subscribers: int,
    n: int,
    subscribe: Callable[[Callable[[str], None]], Awaitable[Callable[[], Awaitable[None]]]],
    sessions: int,
    failures: list[str],
) -> Run:
    latencies: list[float] = []
    done = asyncio.Event()
    last = 0.0

    def received(payload: str) -> None:
        nonlocal last
        last = time.perf_counter()
        latencies.append(last - float(payload))
        if len(latencies) == subscribers * n:
            done.set()

    closers = [await subscribe(received) for _ in range(subscribers)]
    started = await send(n)
    while not done.is_set():
        if failures:
            raise RuntimeError(f"{contender}: a subscriber ended: {failures[0]}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 1.0)
    for close in closers:
        await close()
    return Run(contender, subscribers, n, last - started, latencies, sessions)


async def asyncpg_subscriber(received: Callable[[str], None]) -> Callable[[], Awaitable[None]]:
    conn = await asyncpg.connect(POSTGRES_DSN)
    await conn.add_listener(CHANNEL, lambda _c, _pid, _ch, payload: received(payload))
    return conn.close  # type: ignore[no-any-return]


def gateway_subscriber(
    stub: database_service_pb2_grpc.DatabaseServiceStub, failures: list[str]
) -> Callable[[Callable[[str], None]], Awaitable[Callable[[], Awaitable[None]]]]:
    async def subscribe(received: Callable[[str], None]) -> Callable[[], Awaitable[None]]:
        call = stub.Subscribe(spb.SubscribeRequest(database="pg", channels=[CHANNEL]))
        first = await call.read()
        assert first.ready

        async def read() -> None:
            try:
                # (read() and async iteration cannot be mixed on one call)
                while (message := await call.read()) is not grpc.aio.EOF:
                    received(message.payload)
            except grpc.aio.AioRpcError as exc:
                if exc.code() is not grpc.StatusCode.CANCELLED:
                    failures.append(f"{exc.code().name}: {exc.details()}")

        task = asyncio.create_task(read())

        async def close() -> None:
            call.cancel()
            task.cancel()

        return close

    return subscribe


async def run_all(counts: list[int], n: int, address: str) -> list[Run]:
    runs = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = database_service_pb2_grpc.DatabaseServiceStub(channel)
        for subscribers in counts:
            failures: list[str] = []
            for contender, subscribe, sessions in (
                ("asyncpg", asyncpg_subscriber, subscribers),
                ("dbgateway", gateway_subscriber(stub, failures), 1),
            ):
                run = await measure(contender, subscribers, n, subscribe, sessions, failures)
                print(table([run]).splitlines()[-1], flush=True)
                runs.append(run)
    return runs


def table(runs: list[Run]) -> str:
    lines = [
        "| subscribers | contender | deliveries/s | p50 ms | p99 ms | PostgreSQL sessions |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for run in runs:
        lines.append(
            f"| {run.subscribers} | {run.contender} | {run.deliveries_per_s:,.0f} | "
            f"{run.percentile(0.5):.2f} | {run.percentile(0.99):.2f} | {run.sessions} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.subscriptions", description=__doc__)
    parser.add_argument("--notifications", type=int, default=2000)
    parser.add_argument("--subscribers", default="1,10,40")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.subscribers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp))
        try:
            runs = asyncio.run(run_all(counts, args.notifications, server.address))
        finally:
            server.stop()
    version = asyncio.run(_server_version())
    header = (
        f"`python -m bench.subscriptions --notifications {args.notifications}`, "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, PostgreSQL {version} on the same machine; "
        f"one channel, a sender issuing pg_notify() one statement at a time.\n"
    )
    text = f"# Notification fan-out\n\n{header}\n{table(runs)}\n"
    RESULTS.write_text(text)
    sys.stdout.write(text)
    return 0


async def _server_version() -> str:
    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main())
