"""The server's own CPU per call: ``python -m bench.cpu_per_call``.

Throughput on a shared 2-core machine says more about the neighbours than
about the gateway; the CPU time the serving process spends per completed call
does not. For each contender this starts the server (dbgateway, or the naive
gateway of bench/naive_gateway.py), runs one ``bench.load`` process against it
with no warm-up, and divides the server's user + system CPU (from
/proc/<pid>/stat, read just before the load starts and after it ends) by the
calls the load completed. Runs are interleaved and repeated; the medians are
printed.

Beside it, the CPU per call of the rest of the chain: the load process (the
client library) and, when the databases run on this machine, their
processes (every ``postgres`` and ``mariadbd``). The ``pgbouncer`` contender
(asyncpg through PgBouncer in transaction mode) puts the same figures side by
side for the pooler a platform team compares us with, and ``asyncpg`` /
``aiomysql`` for the drivers alone: on a machine whose cores are all busy,
throughput follows the total.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.run import (
    DEFAULT_DSN,
    DEFAULT_MYSQL_DSN,
    ROOT,
    _prepare_database,
    _prepare_mysql,
    gateway,
    naive_gateway,
    pgbouncer,
)

#: name -> (server, bench.load contender, database)
CONTENDERS: dict[str, tuple[str, str, str]] = {
    "stubs": ("gateway", "gateway-stubs", "bench"),
    "session": ("gateway", "gateway-client", "bench"),
    "naive": ("naive", "naive-stubs", "bench"),
    "mysql-session": ("gateway", "gateway-mysql-client", "mbench"),
    "pgbouncer": ("pgbouncer", "pgbouncer", "bench"),
    "asyncpg": ("direct", "asyncpg", "bench"),
    "aiomysql": ("direct-mysql", "aiomysql", "mbench"),
}

#: The database servers' process names (their CPU is the chain's database part).
DATABASE_PROCESSES = frozenset({"postgres", "mariadbd"})

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int | str) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name: state, ppid, ...;
    user and system time (ticks) at 11 and 12, its reaped children's at 13, 14."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int | str, *, reaped: bool = False) -> float:
    """User + system CPU of ``pid`` and its threads so far (with ``reaped``,
    that of the children it has waited for as well)."""
    fields = _stat(pid)
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICKS


def _server_pid(port: str) -> int:
    """The process listening on ``port`` (the server, not a wrapper)."""
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True)
    text = out.stdout
    start = text.index("pid=") + 4
    return int(text[start : text.index(",", start)])


def run_once(
    contender: str, target: str, args: argparse.Namespace, workload: str
) -> dict[str, Any]:
    server, load_contender, database = CONTENDERS[contender]
    pid: int | None
    if server == "pgbouncer":
        pid, where = pgbouncer_pid(target), ("--dsn", target)
    elif server.startswith("direct"):
        pid, where = None, ("--dsn", target)
    else:
        pid, where = _server_pid(target.rsplit(":", 1)[1]), ("--target", target)
    cmd = [
        *(sys.executable, "-m", "bench.load", "--contender", load_contender),
        *("--workload", workload, *where, "--database", database),
        *("--concurrency", str(args.concurrency), "--connections", str(args.connections)),
        *("--duration", str(args.duration), "--warmup", "0", "--channels", str(args.channels)),
    ]
    before, children, backends = _server_cpu(pid), _children_cpu(), database_cpu()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600, check=True)
    used = _server_cpu(pid) - before
    load_used = _children_cpu() - children
    database_used = database_cpu() - backends
    result = json.loads(out.stdout.strip().splitlines()[-1])
    calls = result["ops"] + 1  # the load's first call (connect, prepare) is not in ops
    return {
        "calls": calls,
        "cpu_s": used,
        "us_per_call": used / calls * 1e6,
        "load_us_per_call": load_used / calls * 1e6,
        "database_us_per_call": database_used / calls * 1e6,
        **result,
    }


def _server_cpu(pid: int | None) -> float:
    """The server's CPU so far (0 for a direct contender: there is none)."""
    return 0.0 if pid is None else cpu_seconds(pid)


def database_cpu() -> float:
    """User + system CPU so far of the local PostgreSQL and MariaDB processes
    (0 when both are remote): those alive now, and the PostgreSQL backends
    that have exited (a direct contender's connections close with its load;
    their postmaster has reaped them, so their CPU is in its children's)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        if _comm(entry.name) not in DATABASE_PROCESSES:
            continue
        try:
            # The postmaster (its parent is no database process) holds the
            # CPU of the backends it reaped.
            parent = _stat(entry.name)[1]
            reaped = parent == "1" or _comm(parent) not in DATABASE_PROCESSES
            total += cpu_seconds(entry.name, reaped=reaped)
        except OSError:  # gone meanwhile
            continue
    return total


def _comm(pid: int | str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def pgbouncer_pid(dsn: str) -> int:
    return _server_pid(str(urlsplit(dsn).port))


def _children_cpu() -> float:
    """User + system CPU of the finished load processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_per_call")
    parser.add_argument("--contenders", default="stubs,session,naive")
    parser.add_argument("--workload", default="point_select")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--mysql-dsn", default=DEFAULT_MYSQL_DSN)
    args = parser.parse_args(argv)
    wanted = args.contenders.split(",")
    asyncio.run(_prepare_database(args.dsn))
    mysql = bool({"mysql-session", "aiomysql"} & set(wanted))
    mysql = mysql and asyncio.run(_prepare_mysql(args.mysql_dsn))
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in wanted}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        tmpdir = Path(tmp)
        targets: dict[str, str] = {}
        if any(CONTENDERS[c][0] == "gateway" for c in wanted):
            (tmpdir / "gw").mkdir()
            targets["gateway"] = stack.enter_context(
                gateway(
                    args.dsn,
                    args.mysql_dsn if mysql else None,
                    args.connections,
                    tmpdir / "gw",
                )
            )
        if "pgbouncer" in wanted:
            (tmpdir / "pgbouncer").mkdir()
            tmpdir.chmod(0o755)  # PgBouncer runs as postgres
            targets["pgbouncer"] = stack.enter_context(
                pgbouncer(args.dsn, args.connections, tmpdir / "pgbouncer")
            )
        targets["direct"] = args.dsn
        targets["direct-mysql"] = args.mysql_dsn
        if "naive" in wanted:
            (tmpdir / "naive").mkdir()
            targets["naive"] = stack.enter_context(
                naive_gateway(args.dsn, args.connections, tmpdir / "naive")
            )
        for _ in range(args.repeat):
            for contender in wanted:
                target = targets[CONTENDERS[contender][0]]
                runs[contender].append(run_once(contender, target, args, args.workload))
    print(
        f"| contender ({args.workload}, {args.concurrency} callers) | server CPU us/call "
        "| runs (server us/call @ ops/s) | load CPU us/call | database CPU us/call "
        "| total us/call | ops/s | p50 ms |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for contender, results in runs.items():
        per_call = [r["us_per_call"] for r in results]
        each = ", ".join(f"{r['us_per_call']:.0f} @ {r['ops_per_s']:,.0f}/s" for r in results)
        ops = statistics.median(r["ops_per_s"] for r in results)
        p50 = statistics.median(r["p50_ms"] for r in results)
        load = statistics.median(r["load_us_per_call"] for r in results)
        backends = statistics.median(r["database_us_per_call"] for r in results)
        total = statistics.median(
            r["us_per_call"] + r["load_us_per_call"] + r["database_us_per_call"] for r in results
        )
        print(
            f"| {contender} | {statistics.median(per_call):.0f} | {each} | {load:.0f} "
            f"| {backends:.0f} | {total:.0f} | {ops:,.0f} | {p50:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
