"""``make bench``: dbgateway side by side with direct asyncpg and PgBouncer.

Same machine, same run, same database, same concurrency and the same number of
database connections for every contender. Each (contender, workload) run is its
own process; runs are interleaved in a shuffled order and repeated, and the
table reports medians with the spread (max-min over median) across repetitions.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
DEFAULT_DSN = os.environ.get(
    "DBGATEWAY_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/dbgw_bench"
)

DEFAULT_MYSQL_DSN = os.environ.get(
    "DBGATEWAY_BENCH_MYSQL_DSN", "mysql://root@127.0.0.1:3306/dbgw_bench"
)

PG_ALL = [
    "asyncpg",
    "pgbouncer",
    "gateway-client",
    "gateway-client-unary",
    "gateway-stubs",
    "gateway-workers2",
]
#: The small reads also run against the naive gateway (bench/naive_gateway.py),
#: the Python floor for a unary gateway with the same messages.
PG_SMALL = [*PG_ALL, "naive-stubs"]
MYSQL = ["aiomysql", "gateway-mysql-client", "gateway-mysql-client-unary", "gateway-mysql"]
#: The large reads also run with the opt-in columnar encoding.
PG_READS = [*PG_ALL[:4], "gateway-columnar", *PG_ALL[4:]]

#: section -> (workload, concurrency or None for --concurrency, contenders), in table order.
SECTIONS: dict[str, tuple[str, int | None, list[str]]] = {
    "point_select": ("point_select", None, PG_SMALL),
    "read_100": ("read_100", None, PG_SMALL),
    "read_10k (Query)": ("read_10k", None, PG_READS),
    "read_10k (StreamQuery)": ("read_10k_stream", None, PG_READS),
    "insert": ("insert", None, PG_ALL),
    "execute_batch_1000": ("batch_1000", None, PG_ALL),
    "run_transaction_4": ("tx_4", None, PG_ALL),
    "point_select, concurrency 1": ("point_select", 1, PG_SMALL),
    "point_select, 1,000 callers": (
        "point_select",
        1000,
        ["asyncpg", "pgbouncer", "gateway-stubs", "gateway-workers2"],
    ),
    # The same gateway build with tracing on (every call sampled, spans exported
    # over OTLP/gRPC to a collector on this machine) against tracing off.
    "point_select, tracing off vs on": ("point_select", None, ["gateway-stubs", "gateway-traced"]),
    "mariadb point_select": ("point_select", None, MYSQL),
    "mariadb read_100": ("read_100", None, MYSQL),
    "mariadb insert": ("insert", None, MYSQL),
}
WRITES = {"insert", "batch_1000", "tx_4"}
LABELS = {
    "asyncpg": "asyncpg (direct)",
    "pgbouncer": "PgBouncer + asyncpg",
    "gateway-client": "dbgateway (one AsyncClient, session)",
    "gateway-client-unary": "dbgateway (AsyncClient, transport=unary)",
    "naive-stubs": "naive grpc.aio + asyncpg gateway (raw stubs)",
    "gateway-columnar": "dbgateway (AsyncClient, columnar=True)",
    "gateway-stubs": "dbgateway (raw stubs)",
    "gateway-workers2": "dbgateway --workers 2 (raw stubs)",
    "gateway-traced": "dbgateway, tracing on (raw stubs)",
    "aiomysql": "aiomysql (direct)",
    "gateway-mysql": "dbgateway (raw stubs)",
    "gateway-mysql-client": "dbgateway (one AsyncClient, session)",
    "gateway-mysql-client-unary": "dbgateway (AsyncClient, transport=unary)",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_db(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


async def _prepare_database(dsn: str) -> None:
    import asyncpg

    name = urlsplit(dsn).path.lstrip("/")
    admin = await asyncpg.connect(with_db(dsn, "postgres"))
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """
            DROP TABLE IF EXISTS bench_items, bench_writes;
            CREATE TABLE bench_items (
                id integer PRIMARY KEY, name text NOT NULL,
                price numeric(10, 2) NOT NULL, created timestamptz NOT NULL);
            INSERT INTO bench_items
                SELECT g, 'item ' || g, (g % 1000) / 10.0, now() - g * interval '1 minute'
                FROM generate_series(1, 100000) g;
            CREATE TABLE bench_writes (id bigserial PRIMARY KEY, name text, price float8);
            ANALYZE bench_items;
            """
        )
    finally:
        await conn.close()


def _mysql_params(dsn: str, database: str | None = None) -> dict[str, Any]:
    parts = urlsplit(dsn)
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": parts.username or "root",
        "password": parts.password or "",
        "db": database if database is not None else parts.path.lstrip("/"),
        "autocommit": True,
    }


async def _prepare_mysql(dsn: str) -> bool:
    """The same table on MariaDB; False when no MariaDB is reachable."""
    import aiomysql

    name = urlsplit(dsn).path.lstrip("/")
    try:
        conn = await aiomysql.connect(**_mysql_params(dsn, ""))
    except Exception as exc:
        print(f"MariaDB not reachable ({exc}); skipping the MariaDB workloads", file=sys.stderr)
        return False
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"CREATE DATABASE IF NOT EXISTS `{name}`")
            await cur.execute(f"USE `{name}`")
            await cur.execute("DROP TABLE IF EXISTS bench_items, bench_writes")
            await cur.execute(
                "CREATE TABLE bench_items (id int PRIMARY KEY, name text NOT NULL, "
                "price decimal(10, 2) NOT NULL, created datetime(6) NOT NULL)"
            )
            await cur.execute(
                "INSERT INTO bench_items SELECT seq, CONCAT('item ', seq), (seq % 1000) / 10.0, "
                "NOW(6) - INTERVAL seq MINUTE FROM seq_1_to_100000"
            )
            await cur.execute(
                "CREATE TABLE bench_writes (id bigint AUTO_INCREMENT PRIMARY KEY, name text, "
                "price double)"
            )
    finally:
        conn.close()
    return True


async def _truncate_writes(contender: str, dsn: str, mysql_dsn: str) -> None:
    """Write workloads start from an empty bench_writes, whoever ran before."""
    if contender in MYSQL:
        import aiomysql

        conn = await aiomysql.connect(**_mysql_params(mysql_dsn))
        try:
            async with conn.cursor() as cur:
                await cur.execute("TRUNCATE bench_writes")
        finally:
            conn.close()
        return
    import asyncpg

    pg = await asyncpg.connect(dsn)
    try:
        await pg.execute("TRUNCATE bench_writes")
    finally:
        await pg.close()


@contextmanager
def gateway(
    dsn: str,
    mysql_dsn: str | None,
    connections: int,
    workdir: Path,
    workers: int = 1,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    config = workdir / "gateway.toml"
    pool = f"pool = {{ min_size = {connections}, max_size = {connections} }}\n"
    text = f'[databases.bench]\ndsn = "{dsn}"\n{pool}'
    if mysql_dsn:
        text += f'[databases.mbench]\ndsn = "{mysql_dsn}"\n{pool}'
    config.write_text(text)
    log = workdir / "gateway.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                *(str(BIN / "dbgateway"), "serve", "--config", str(config)),
                *("--listen", "127.0.0.1:0", "--workers", str(workers)),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env={**os.environ, **(env or {})},
        )
    try:
        target = _wait_for_listen(proc, log)
        yield target
    finally:
        proc.terminate()
        proc.wait(30)


@contextmanager
def traced_gateway(dsn: str, connections: int, workdir: Path, wanted: bool) -> Iterator[str]:
    """A gateway with tracing on, exporting every span to an OTLP collector
    in this process (which only counts them); "" when no section needs it."""
    if not wanted:
        yield ""
        return
    from tests.otlp import otlp_receiver

    with otlp_receiver(keep=False) as sink:
        env = sink.env(OTEL_BSP_SCHEDULE_DELAY="500", OTEL_SERVICE_NAME="dbgateway-bench")
        with gateway(dsn, None, connections, workdir, env=env) as target:
            yield target
        print(f"  traced gateway exported {sink.span_count:,} spans", file=sys.stderr)


@contextmanager
def naive_gateway(dsn: str, connections: int, workdir: Path) -> Iterator[str]:
    """bench/naive_gateway.py with a pool the size of the gateway's."""
    log = workdir / "naive.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.naive_gateway", dsn, str(connections)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        yield _wait_for_listen(proc, log, r"listening on (\S+:\d+)")
    finally:
        proc.terminate()
        proc.wait(30)


def _wait_for_listen(
    proc: subprocess.Popen[bytes], log: Path, pattern: str = r"dbgateway listening on (\S+:\d+)"
) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        match = re.search(pattern, text)
        if match:
            return match.group(1)
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited:\n{text}")
        time.sleep(0.1)
    raise RuntimeError("gateway did not start listening")


def ensure_pgbouncer() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if found:
        return found
    print("installing the Debian package pgbouncer ...", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "pgbouncer"], check=True, env=env)
    return shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


@contextmanager
def pgbouncer(dsn: str, connections: int, workdir: Path) -> Iterator[str]:
    """PgBouncer in transaction mode on a free port, pooling ``connections``
    server connections; yields the DSN clients use."""
    binary = ensure_pgbouncer()
    parts = urlsplit(dsn)
    name = parts.path.lstrip("/")
    user = parts.username or "postgres"
    port = free_port()
    workdir.chmod(0o777)
    (workdir / "users.txt").write_text(f'"{user}" ""\n')
    ini = workdir / "pgbouncer.ini"
    ini.write_text(
        f"""[databases]
{name} = host={parts.hostname or "127.0.0.1"} port={parts.port or 5432} dbname={name} user={user}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
auth_type = trust
auth_file = {workdir / "users.txt"}
pool_mode = transaction
default_pool_size = {connections}
max_client_conn = 5000
logfile = {workdir / "pgbouncer.log"}
log_connections = 0
log_disconnections = 0
pidfile = {workdir / "pgbouncer.pid"}
unix_socket_dir =
"""
    )
    (workdir / "pgbouncer.log").touch()
    for f in workdir.iterdir():
        f.chmod(0o666)
    cmd = [binary, str(ini)]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        cmd = [binary, "-u", "postgres", str(ini)]
    # stderr to a file: a pipe nobody reads fills up over a long run and
    # PgBouncer blocks writing its log (then accepts no more connections).
    stderr_path = workdir / "pgbouncer.stderr"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {stderr_path.read_text(errors='replace')}")
            time.sleep(0.1)
        yield urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{port}"))
    finally:
        proc.terminate()
        proc.wait(10)


def run_load(
    contender: str,
    workload: str,
    concurrency: int,
    args: argparse.Namespace,
    env: dict[str, str],
) -> dict[str, Any]:
    if workload in WRITES:
        asyncio.run(_truncate_writes(contender, args.dsn, args.mysql_dsn))
    cmd = [
        *(sys.executable, "-m", "bench.load"),
        # The traced gateway is loaded exactly as the untraced one.
        *("--contender", "gateway-stubs" if contender == "gateway-traced" else contender),
        *("--workload", workload),
        *("--concurrency", str(concurrency), "--connections", str(args.connections)),
        *("--duration", str(args.duration), "--warmup", str(args.warmup)),
        *("--channels", str(args.channels)),
    ]
    if contender == "gateway-workers2":
        cmd += ["--target", env["target_workers"], "--database", "bench"]
    elif contender == "naive-stubs":
        cmd += ["--target", env["naive"], "--database", "bench"]
    elif contender == "gateway-traced":
        cmd += ["--target", env["target_traced"], "--database", "bench"]
    elif contender.startswith("gateway-mysql"):
        cmd += ["--target", env["target"], "--database", "mbench"]
    elif contender.startswith("gateway"):
        cmd += ["--target", env["target"], "--database", "bench"]
    elif contender == "aiomysql":
        cmd += ["--dsn", args.mysql_dsn]
    else:
        cmd += ["--dsn", env["pgbouncer"] if contender == "pgbouncer" else args.dsn]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    if out.returncode != 0:
        # One failed run is reported (as an error) rather than losing the others.
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        print(f"  {contender}/{workload} failed: {last}", file=sys.stderr)
        nan = float("nan")
        return {
            **dict.fromkeys(("ops_per_s", "rows_per_s", "p50_ms", "p99_ms"), nan),
            "errors": {f"run failed: {last[:80]}": 1},
        }
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(runs: list[dict[str, Any]]) -> dict[str, float | dict[str, int]]:
    errors: dict[str, int] = {}
    for r in runs:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    ok = [r for r in runs if r["ops_per_s"] == r["ops_per_s"]]  # NaN: the run failed
    tput = [r["ops_per_s"] for r in ok]
    mid = median(tput)
    return {
        "ops_per_s": mid,
        "rows_per_s": median([r["rows_per_s"] for r in ok]),
        "p50_ms": median([r["p50_ms"] for r in ok]),
        "p99_ms": median([r["p99_ms"] for r in ok]),
        "spread": (max(tput) - min(tput)) / mid if tput and mid else float("nan"),
        "errors": errors,
    }


def table(workload: str, rows: dict[str, dict[str, Any]]) -> str:
    direct = rows.get("asyncpg", rows.get("aiomysql", {}))
    floor = direct.get("ops_per_s")
    anchor = rows.get("pgbouncer", {}).get("ops_per_s")
    naive = rows.get("naive-stubs", {}).get("ops_per_s")
    lines = [
        f"### {workload}",
        "",
        "| contender | ops/s | rows/s | p50 ms | p99 ms | p50 - direct ms | vs direct "
        "| vs PgBouncer | vs naive | spread | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for contender, s in rows.items():
        vs_floor = f"{s['ops_per_s'] / floor:.2f}x" if floor else "-"
        vs_anchor = f"{s['ops_per_s'] / anchor:.2f}x" if anchor else "-"
        vs_naive = f"{s['ops_per_s'] / naive:.2f}x" if naive else "-"
        added = f"{s['p50_ms'] - direct['p50_ms']:+.2f}" if direct else "-"
        errors = sum(s["errors"].values())
        lines.append(
            f"| {LABELS.get(contender, contender)} | {s['ops_per_s']:,.0f} "
            f"| {s['rows_per_s']:,.0f} "
            f"| {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {added} | {vs_floor} | {vs_anchor} "
            f"| {vs_naive} | {s['spread'] * 100:.0f}% | {errors} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--mysql-dsn", default=DEFAULT_MYSQL_DSN)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--channels", type=int, default=4, help="gRPC channels per gateway load process"
    )
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--quick", action="store_true", help="1.5 s runs, 0.5 s warm-up, one repetition"
    )
    parser.add_argument(
        "--sections", default="", help="section names separated by ';' (default: all)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.repeat = 1.5, 0.5, 1
    wanted = [x.strip() for x in args.sections.split(";") if x.strip()]
    sections = {k: v for k, v in SECTIONS.items() if not wanted or k in wanted}
    asyncio.run(_prepare_database(args.dsn))
    uses_mysql = any(set(c) & set(MYSQL) for _, _, c in sections.values())
    if uses_mysql and not asyncio.run(_prepare_mysql(args.mysql_dsn)):
        args.mysql_dsn = ""
    if not args.mysql_dsn:
        sections = {k: v for k, v in sections.items() if not set(v[2]) & set(MYSQL)}
    results: dict[str, dict[str, list[dict[str, Any]]]] = {k: {} for k in sections}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dbgw-bench-") as tmp:
        tmpdir = Path(tmp)
        tmpdir.chmod(0o755)  # PgBouncer runs as postgres and must reach its files
        for sub in ("gw", "gw2", "gwt", "pgb", "naive"):
            (tmpdir / sub).mkdir()
        mysql = args.mysql_dsn or None
        traced = any("gateway-traced" in c for _, _, c in sections.values())
        with (
            gateway(args.dsn, mysql, args.connections, tmpdir / "gw") as target,
            gateway(args.dsn, None, args.connections, tmpdir / "gw2", workers=2) as target2,
            traced_gateway(args.dsn, args.connections, tmpdir / "gwt", traced) as target_traced,
            pgbouncer(args.dsn, args.connections, tmpdir / "pgb") as bouncer,
            naive_gateway(args.dsn, args.connections, tmpdir / "naive") as naive,
        ):
            env = {
                "pgbouncer": bouncer,
                "target": target,
                "target_workers": target2,
                "naive": naive,
                "target_traced": target_traced,
            }
            plan = [
                (name, workload, concurrency or args.concurrency, contender)
                for name, (workload, concurrency, contenders) in sections.items()
                for contender in contenders
            ]
            for rep in range(args.repeat):
                random.shuffle(plan)
                for i, (name, workload, concurrency, contender) in enumerate(plan):
                    print(
                        f"[{rep + 1}/{args.repeat} {i + 1}/{len(plan)}] {name}: {contender}",
                        file=sys.stderr,
                    )
                    result = run_load(contender, workload, concurrency, args, env)
                    results[name].setdefault(contender, []).append(result)
    load = os.getloadavg()
    lines = [
        f"# dbgateway benchmark — {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"concurrency {args.concurrency} (unless the section says otherwise), "
        f"{args.connections} database connections per contender, {args.channels} gRPC "
        f"channels per gateway load process, {args.duration:g}s per run after "
        f"{args.warmup:g}s warm-up, median of {args.repeat} interleaved runs; spread = "
        "(max - min) / median of throughput. The load generator runs on the same "
        f"machine. Took {time.monotonic() - started:.0f}s; load average at the end "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}.",
        "",
    ]
    for name, (_, _, contenders) in sections.items():
        summary = {c: summarise(results[name][c]) for c in contenders if c in results[name]}
        lines += [table(name, summary), ""]
    report = "\n".join(lines)
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    (args.output.with_suffix(".json")).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
