"""The README's SQLAlchemy examples (written for the zero-configuration
SQLite database) run unchanged but for the URL on PostgreSQL and MariaDB
through the dbgateway dialects, and print what the README shows."""

from __future__ import annotations

import contextlib
import io

import pytest
import sqlalchemy as sa

from tests.integration.sqlalchemy_support import gateway_url
from tests.integration.test_readme import _FENCE
from tests.support import ROOT, ServerProcess

SQLITE_URL = "sqlite+dbgateway://127.0.0.1:50051/default"
SQLITE_ASYNC_URL = "sqlite+dbgateway_async://127.0.0.1:50051/default"
TABLES = ("sa_notes", "sa_customers", "sa_orders", "sa_events", "sa_weather")


def sqlalchemy_examples() -> list[tuple[str, str]]:
    """(code, output shown) of each README Python block that uses a dialect URL."""
    blocks = [(m.group(1), m.group(2)) for m in _FENCE.finditer((ROOT / "README.md").read_text())]
    return [
        (body, blocks[i + 1][1])
        for i, (lang, body) in enumerate(blocks)
        if lang == "python" and (SQLITE_URL in body or SQLITE_ASYNC_URL in body)
    ]


def test_readme_shows_core_orm_async_and_pandas() -> None:
    codes = [code for code, _ in sqlalchemy_examples()]
    assert any("orm.Session" in c for c in codes)
    assert any("create_async_engine" in c for c in codes)
    assert any("pd.read_sql" in c and "to_sql" in c for c in codes)
    assert any("engine.begin()" in c for c in codes)


@pytest.mark.parametrize("engine", ["postgresql", "mysql"])
def test_readme_sqlalchemy_examples_run_on_other_engines(
    server: ServerProcess, engine: str
) -> None:
    try:
        for code, shown in sqlalchemy_examples():
            code = code.replace(SQLITE_URL, gateway_url(server, engine))
            code = code.replace(SQLITE_ASYNC_URL, gateway_url(server, engine, asyncio=True))
            output = io.StringIO()
            with contextlib.redirect_stdout(output):
                exec(compile(code, "README.md", "exec", dont_inherit=True), {})
            assert output.getvalue().rstrip("\n") == shown.rstrip("\n"), code
    finally:
        cleanup = sa.create_engine(gateway_url(server, engine))
        with cleanup.begin() as conn:
            for table in TABLES:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        cleanup.dispose()
