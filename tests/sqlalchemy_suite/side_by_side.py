"""The six suite runs: each engine through its dbgateway dialect and through
SQLAlchemy's native driver, on databases of their own, behind one gateway."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from tests.sqlalchemy_suite.run import SuiteResult, run_suite
from tests.support import (
    ServerProcess,
    create_mysql_database,
    create_postgres_database,
    drop_mysql_database,
    drop_postgres_database,
    pg_fetch,
)

ENGINES = ("postgresql", "mysql", "sqlite")


@contextmanager
def suite_gateway(workdir: Path) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    """A gateway serving fresh databases for the gateway runs, and the native
    URLs (fresh databases too) for the comparison runs."""
    made: list[tuple[str, str]] = []
    try:
        pg_gateway, pg_native = create_postgres_database(), create_postgres_database()
        made += [("pg", pg_gateway), ("pg", pg_native)]
        my_gateway, my_native = create_mysql_database(), create_mysql_database()
        made += [("my", my_gateway), ("my", my_native)]
        for dsn in (pg_gateway, pg_native):
            # The suite's schema tests use these two schemas (PostgreSQL only).
            pg_fetch(dsn, "CREATE SCHEMA test_schema")
            pg_fetch(dsn, "CREATE SCHEMA test_schema_2")
        config = f"""
[databases.pg]
dsn = "{pg_gateway}"
pool = {{ min_size = 1, max_size = 6 }}

[databases.mysql]
dsn = "{my_gateway}"
pool = {{ min_size = 1, max_size = 6 }}

[databases.lite]
dsn = "sqlite://{workdir / "gateway.sqlite3"}"
"""
        server = ServerProcess(workdir / "gateway", config=config).start()
        try:
            pg, my = urlsplit(pg_native), urlsplit(my_native)
            native = {
                "postgresql": f"postgresql+asyncpg://{pg.netloc}{pg.path}",
                "mysql": f"mysql+pymysql://{my.netloc}{my.path}?charset=utf8mb4",
                "sqlite": f"sqlite+pysqlite:///{workdir / 'native.sqlite3'}",
            }
            yield server, native
        finally:
            server.stop()
    finally:
        for kind, dsn in made:
            (drop_postgres_database if kind == "pg" else drop_mysql_database)(dsn)


def run_side_by_side(workdir: Path, *, parallel: int = 3) -> dict[str, dict[str, SuiteResult]]:
    """``{engine: {"dbgateway": result, "native": result}}``."""
    workdir.mkdir(parents=True, exist_ok=True)
    with suite_gateway(workdir) as (server, native):
        gateway = {
            "postgresql": f"postgresql+dbgateway://{server.address}/pg",
            "mysql": f"mysql+dbgateway://{server.address}/mysql",
            "sqlite": f"sqlite+dbgateway://{server.address}/lite",
        }
        runs = {(e, "dbgateway"): gateway[e] for e in ENGINES}
        runs.update({(e, "native"): native[e] for e in ENGINES})
        results: dict[str, dict[str, SuiteResult]] = {e: {} for e in ENGINES}
        with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
            futures = {
                pool.submit(run_suite, url, workdir / f"{engine}-{side}.xml"): (engine, side)
                for (engine, side), url in runs.items()
            }
            for future in concurrent.futures.as_completed(futures):
                engine, side = futures[future]
                results[engine][side] = future.result()
        return results


def table(results: dict[str, dict[str, SuiteResult]]) -> str:
    """The README's table: pass / fail / skip per engine and driver."""
    lines = [
        "| engine | driver | passed | failed | skipped | seconds |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for engine, sides in results.items():
        for side in ("dbgateway", "native"):
            r = sides[side]
            driver = r.url.split("://", 1)[0]
            lines.append(
                f"| {engine} | {driver} | {r.passed} | {r.failed} | {r.skipped} | {r.seconds:.0f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    import json
    import sys
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="sa-suite-"))
    found = run_side_by_side(out)
    print(table(found))
    failures = {e: {s: r.failures for s, r in sides.items()} for e, sides in found.items()}
    (out / "failures.json").write_text(json.dumps(failures, indent=1, sort_keys=True))
    print(out / "failures.json", file=sys.stderr)
