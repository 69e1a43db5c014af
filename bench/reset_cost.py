"""What resetting a connection after every call costs, per engine.

The pool resets each connection before the next caller gets it (see the
README's "Connection hygiene"). This measures that price where it is paid, on
one backend connection: a point select alone, and a point select followed by
the engine's ``reset()`` as the pool runs it (not when the engine reports the
connection reset already), in interleaved rounds (so that the load of a
shared machine falls on both alike), median of the per-round means. MariaDB
sends its reset in the point select's own write, so there both columns hold
the statement with its reset, and the difference is about nothing.

    python -m bench.reset_cost [--rounds N] [--calls N]

PostgreSQL and MariaDB come from DBGATEWAY_BENCH_POSTGRES_DSN and
DBGATEWAY_BENCH_MYSQL_DSN (the databases ``make bench`` uses; created if
missing); SQLite is a temporary file. Results are printed and written to
bench/results/reset_cost.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from dbgateway.v1 import value_pb2
from dbgateway_server.backends import backend_for
from dbgateway_server.backends.base import DriverConnection, ResultLimits
from dbgateway_server.config import DatabaseConfig, Engine

from .run import DEFAULT_DSN, DEFAULT_MYSQL_DSN, _prepare_database, _prepare_mysql

RESULTS = Path(__file__).resolve().parent / "results"
POINT_SELECT = {
    Engine.POSTGRES: "SELECT v FROM dbgw_reset_cost WHERE id = $1",
    Engine.MYSQL: "SELECT v FROM dbgw_reset_cost WHERE id = %s",
    Engine.SQLITE: "SELECT v FROM dbgw_reset_cost WHERE id = ?",
}


async def _setup(conn: DriverConnection) -> None:
    await conn.execute("DROP TABLE IF EXISTS dbgw_reset_cost", ())
    await conn.execute("CREATE TABLE dbgw_reset_cost (id int PRIMARY KEY, v int)", ())
    await conn.execute("INSERT INTO dbgw_reset_cost VALUES (1, 1)", ())


async def _round(conn: DriverConnection, sql: str, calls: int, *, reset: bool) -> float:
    """Mean microseconds per call over ``calls`` calls."""
    params = [value_pb2.Value(int_value=1)]
    limits = ResultLimits()
    started = time.perf_counter()
    for _ in range(calls):
        await conn.query(sql, params, limits=limits)
        if reset and not conn.is_reset():
            await conn.reset()
    return (time.perf_counter() - started) / calls * 1e6


async def measure(engine: Engine, dsn: str, rounds: int, calls: int) -> tuple[float, float]:
    backend = backend_for(DatabaseConfig(name="bench", dsn=dsn, engine=engine))
    conn = await backend.connect()
    try:
        await _setup(conn)
        sql = POINT_SELECT[engine]
        plain: list[float] = []
        with_reset: list[float] = []
        await _round(conn, sql, calls, reset=True)  # warm the statement caches
        for _ in range(rounds):
            plain.append(await _round(conn, sql, calls, reset=False))
            with_reset.append(await _round(conn, sql, calls, reset=True))
        await conn.execute("DROP TABLE dbgw_reset_cost", ())
        return statistics.median(plain), statistics.median(with_reset)
    finally:
        await conn.close()
        await backend.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reset_cost", description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--mysql-dsn", default=DEFAULT_MYSQL_DSN)
    args = parser.parse_args(argv)
    asyncio.run(_prepare_database(args.dsn))
    targets: list[tuple[str, Engine, str]] = [("PostgreSQL", Engine.POSTGRES, args.dsn)]
    if asyncio.run(_prepare_mysql(args.mysql_dsn)):
        targets.append(("MariaDB", Engine.MYSQL, args.mysql_dsn))
    with tempfile.TemporaryDirectory(prefix="dbgw-reset-") as tmp:
        targets.append(("SQLite", Engine.SQLITE, f"sqlite://{Path(tmp) / 'reset.sqlite3'}"))
        rows = []
        for label, engine, dsn in targets:
            plain, with_reset = asyncio.run(measure(engine, dsn, args.rounds, args.calls))
            rows.append(
                f"| {label} | {plain:,.0f} | {with_reset:,.0f} | {with_reset - plain:+,.0f} "
                f"| {with_reset / plain:.2f}x |"
            )
    load = os.getloadavg()
    report = "\n".join(
        [
            f"# Reset cost — {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
            "",
            f"{os.cpu_count()} cores; one connection per engine; median of {args.rounds} "
            f"interleaved rounds of {args.calls} calls; load average at the end "
            f"{load[0]:.2f}.",
            "",
            "| engine | point select, µs | point select + reset, µs | reset adds, µs | ratio |",
            "|---|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    )
    print(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reset_cost.md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
