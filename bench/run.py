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

#: workload -> contenders that run it, in table order.
WORKLOADS: dict[str, list[str]] = {
    "point_select": ["asyncpg", "pgbouncer", "gateway-stubs"],
    "read_100": ["asyncpg", "pgbouncer", "gateway-stubs"],
    "read_10k": ["asyncpg", "pgbouncer", "gateway-stubs"],
    "insert": ["asyncpg", "pgbouncer", "gateway-stubs"],
}
LABELS = {
    "asyncpg": "asyncpg (direct)",
    "pgbouncer": "PgBouncer + asyncpg",
    "gateway-stubs": "dbgateway (raw stubs)",
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


@contextmanager
def gateway(dsn: str, connections: int, workdir: Path) -> Iterator[str]:
    config = workdir / "gateway.toml"
    config.write_text(
        f'[databases.bench]\ndsn = "{dsn}"\n'
        f"pool = {{ min_size = {connections}, max_size = {connections} }}\n"
    )
    log = workdir / "gateway.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "dbgateway"), "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    try:
        target = _wait_for_listen(proc, log)
        yield target
    finally:
        proc.terminate()
        proc.wait(30)


def _wait_for_listen(proc: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        match = re.search(r"dbgateway listening on (\S+:\d+)", text)
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
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                raise RuntimeError(
                    f"pgbouncer exited: {proc.stderr.read().decode() if proc.stderr else ''}"
                )
            time.sleep(0.1)
        yield urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{port}"))
    finally:
        proc.terminate()
        proc.wait(10)


def run_load(
    contender: str,
    workload: str,
    args: argparse.Namespace,
    env: dict[str, str],
    concurrency: int | None = None,
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "bench.load",
        "--contender",
        contender,
        "--workload",
        workload,
        "--concurrency",
        str(concurrency or args.concurrency),
        "--connections",
        str(args.connections),
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
    ]
    if contender.startswith("gateway"):
        cmd += ["--target", env["target"], "--database", "bench"]
    else:
        cmd += ["--dsn", env["pgbouncer"] if contender == "pgbouncer" else env["dsn"]]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{contender}/{workload} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(runs: list[dict[str, Any]]) -> dict[str, float | dict[str, int]]:
    tput = [r["ops_per_s"] for r in runs]
    errors: dict[str, int] = {}
    for r in runs:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    mid = median(tput)
    return {
        "ops_per_s": mid,
        "rows_per_s": median([r["rows_per_s"] for r in runs]),
        "p50_ms": median([r["p50_ms"] for r in runs]),
        "p99_ms": median([r["p99_ms"] for r in runs]),
        "spread": (max(tput) - min(tput)) / mid if mid else float("nan"),
        "errors": errors,
    }


def table(workload: str, rows: dict[str, dict[str, Any]]) -> str:
    floor = rows.get("asyncpg", {}).get("ops_per_s")
    anchor = rows.get("pgbouncer", {}).get("ops_per_s")
    lines = [
        f"### {workload}",
        "",
        "| contender | ops/s | rows/s | p50 ms | p99 ms | vs asyncpg | vs PgBouncer "
        "| spread | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for contender, s in rows.items():
        vs_floor = f"{s['ops_per_s'] / floor:.2f}x" if floor else "-"
        vs_anchor = f"{s['ops_per_s'] / anchor:.2f}x" if anchor else "-"
        errors = sum(s["errors"].values())
        lines.append(
            f"| {LABELS.get(contender, contender)} | {s['ops_per_s']:,.0f} "
            f"| {s['rows_per_s']:,.0f} "
            f"| {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {vs_floor} | {vs_anchor} "
            f"| {s['spread'] * 100:.0f}% | {errors} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.md")
    args = parser.parse_args(argv)
    workloads = [w for w in args.workloads.split(",") if w]
    asyncio.run(_prepare_database(args.dsn))
    results: dict[str, dict[str, list[dict[str, Any]]]] = {w: {} for w in workloads}
    with tempfile.TemporaryDirectory(prefix="dbgw-bench-") as tmp:
        tmpdir = Path(tmp)
        tmpdir.chmod(0o755)  # PgBouncer runs as postgres and must reach its files
        (tmpdir / "gw").mkdir()
        (tmpdir / "pgb").mkdir()
        with (
            gateway(args.dsn, args.connections, tmpdir / "gw") as target,
            pgbouncer(args.dsn, args.connections, tmpdir / "pgb") as bouncer,
        ):
            env = {"dsn": args.dsn, "pgbouncer": bouncer, "target": target}
            plan = [(w, c) for w in workloads for c in WORKLOADS[w]]
            for rep in range(args.repeat):
                random.shuffle(plan)
                for workload, contender in plan:
                    print(f"[{rep + 1}/{args.repeat}] {workload:>12} {contender}", file=sys.stderr)
                    result = run_load(contender, workload, args, env)
                    results[workload].setdefault(contender, []).append(result)
    sections = [
        f"# dbgateway benchmark — {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"concurrency {args.concurrency}, {args.connections} database connections per contender, "
        f"{args.duration:g}s per run after {args.warmup:g}s warm-up, median of {args.repeat} "
        "interleaved runs; spread = (max - min) / median of throughput.",
        "",
    ]
    for workload in workloads:
        summary = {
            c: summarise(results[workload][c])
            for c in WORKLOADS[workload]
            if c in results[workload]
        }
        sections += [table(workload, summary), ""]
    report = "\n".join(sections)
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    (args.output.with_suffix(".json")).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
