"""CPU per PostgreSQL point select, through the pool, on the lean path
(backends/pg_wire.py: the statement and the session reset in one write)
and on asyncpg's (the statement, then the pool's reset round trip).

In process: 16 tasks share a pool of 16 connections, each call is a
checkout, ``PostgresConnection.query`` and the release (with the reset that
follows it), on uvloop as the server runs. Measured as CPU time, not wall
clock (the machine may be shared): this process's ``time.process_time`` and
the PostgreSQL backends' own (from /proc, when the server is local), per
call, in interleaved rounds, median of the rounds.

    python -m bench.pg_lean_cpu [--rounds N] [--calls N] [--tasks N]

The database is DBGATEWAY_BENCH_POSTGRES_DSN (the one ``make bench`` uses;
prepared as it prepares it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

import uvloop

from dbgateway.v1 import value_pb2
from dbgateway_server.backends.base import ResultLimits
from dbgateway_server.backends.postgres import PostgresBackend, PostgresConnection
from dbgateway_server.config import DatabaseConfig, Engine, PoolSettings
from dbgateway_server.pool import ConnectionPool

from .run import DEFAULT_DSN, _prepare_database

SELECT_ONE = "SELECT id, name, price, created FROM bench_items WHERE id = $1"
_TICKS = os.sysconf("SC_CLK_TCK")


def _backend_cpu(pids: list[int]) -> float | None:
    """The CPU seconds the PostgreSQL backends ``pids`` used so far, or None."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICKS


async def _round(pool: ConnectionPool, tasks: int, calls: int) -> int:
    limits = ResultLimits()

    async def worker(w: int) -> int:
        done = 0
        for i in range(calls // tasks):
            key = value_pb2.Value(int_value=1 + (w * 7919 + i * 104729) % 100000)
            async with pool.connection(5) as conn:
                result = await conn.query(SELECT_ONE, [key], limits=limits)
            done += len(result.rows)
        return done

    return sum(await asyncio.gather(*(worker(w) for w in range(tasks))))


async def main(rounds: int, calls: int, tasks: int) -> dict[str, Any]:
    await _prepare_database(DEFAULT_DSN)
    backend = PostgresBackend(DatabaseConfig(name="bench", dsn=DEFAULT_DSN, engine=Engine.POSTGRES))
    pool = ConnectionPool(
        "bench", backend.connect, PoolSettings(min_size=tasks, max_size=tasks, max_waiting=4096)
    )
    await pool.start()
    pids: list[int] = []
    conns = []
    for _ in range(tasks):  # every pooled connection once, to learn its backend
        checkout = pool.connection(5)
        conn = await checkout.__aenter__()
        assert isinstance(conn, PostgresConnection)
        pids.append(conn._conn.get_server_pid())
        conns.append(checkout)
    for checkout in conns:
        await checkout.__aexit__(None, None, None)
    await pool.settled()
    # (Run against a tree without the lean path, only asyncpg's is measured.)
    original = getattr(PostgresConnection, "_lean_ready", None)
    paths = ("asyncpg",) if original is None else ("asyncpg", "lean")
    samples: dict[str, list[tuple[float, float | None]]] = {path: [] for path in paths}
    try:
        await _round(pool, tasks, calls // 4)  # warm: statement caches, branch paths
        for _ in range(rounds):
            for path in paths:
                if original is not None:
                    PostgresConnection._lean_ready = (  # type: ignore[method-assign]
                        original if path == "lean" else (lambda self: False)
                    )
                server_before = _backend_cpu(pids)
                before = time.process_time()
                done = await _round(pool, tasks, calls)
                await pool.settled()
                spent = time.process_time() - before
                server_after = _backend_cpu(pids)
                assert done == calls // tasks * tasks
                server = (
                    None
                    if server_before is None or server_after is None
                    else (server_after - server_before) / done * 1e6
                )
                samples[path].append((spent / done * 1e6, server))
    finally:
        if original is not None:
            PostgresConnection._lean_ready = original  # type: ignore[method-assign]
        await pool.close()
    report: dict[str, Any] = {}
    for path, values in samples.items():
        gateway = statistics.median(v[0] for v in values)
        servers = [v[1] for v in values if v[1] is not None]
        report[path] = (gateway, statistics.median(servers) if servers else None)
    return report


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--tasks", type=int, default=16)
    args = parser.parse_args()
    report = uvloop.run(main(args.rounds, args.calls, args.tasks))
    print(f"point select through the pool, {args.tasks} tasks, CPU µs per call (median)")
    print(f"{'path':<10}{'gateway':>10}{'postgres':>10}")
    for path, (gateway, server) in report.items():
        shown = "-" if server is None else f"{server:.1f}"
        print(f"{path:<10}{gateway:>10.1f}{shown:>10}")


if __name__ == "__main__":
    cli()
