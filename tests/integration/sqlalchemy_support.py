"""URLs of the session gateway's three databases through the dbgateway
dialects, and of the same databases through SQLAlchemy's native drivers (to
check what the gateway stored)."""

from __future__ import annotations

from urllib.parse import urlsplit

from tests.support import ServerProcess

ENGINES = ("postgresql", "mysql", "sqlite")
_GATEWAY_DATABASE = {"postgresql": "pg", "mysql": "mysql", "sqlite": "lite"}


def gateway_url(server: ServerProcess, engine: str, *, asyncio: bool = False) -> str:
    driver = "dbgateway_async" if asyncio else "dbgateway"
    return f"{engine}+{driver}://{server.address}/{_GATEWAY_DATABASE[engine]}"


def native_url(server: ServerProcess, engine: str, postgres_dsn: str, mysql_dsn: str) -> str:
    if engine == "postgresql":
        pg = urlsplit(postgres_dsn)
        return f"postgresql+asyncpg://{pg.netloc}{pg.path}"
    if engine == "mysql":
        my = urlsplit(mysql_dsn)
        return f"mysql+pymysql://{my.netloc}{my.path}?charset=utf8mb4"
    return f"sqlite+pysqlite:///{server.workdir / 'lite.sqlite3'}"


def native_rows(
    server: ServerProcess, engine: str, postgres_dsn: str, mysql_dsn: str, sql: str
) -> list[tuple[object, ...]]:
    """Runs ``sql`` on the database itself, not through the gateway."""
    import sqlite3

    from tests.support import mysql_fetch, pg_fetch

    if engine == "postgresql":
        return [tuple(r) for r in pg_fetch(postgres_dsn, sql)]
    if engine == "mysql":
        return mysql_fetch(mysql_dsn, sql)
    conn = sqlite3.connect(server.workdir / "lite.sqlite3")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()
