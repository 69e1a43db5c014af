from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    ServerProcess,
    create_mysql_database,
    create_postgres_database,
    drop_mysql_database,
    drop_postgres_database,
)


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped afterwards."""
    dsn = create_postgres_database()
    yield dsn
    drop_postgres_database(dsn)


@pytest.fixture(scope="session")
def mysql_dsn() -> Iterator[str]:
    """A fresh MariaDB/MySQL database for this test run, dropped afterwards."""
    dsn = create_mysql_database()
    yield dsn
    drop_mysql_database(dsn)


def gateway_config(postgres_dsn: str, mysql_dsn: str, sqlite_file: Path) -> str:
    return f"""
[databases.pg]
dsn = "{postgres_dsn}"
pool = {{ min_size = 1, max_size = 8 }}

[databases.mysql]
dsn = "{mysql_dsn}"
pool = {{ min_size = 1, max_size = 8 }}

[databases.lite]
dsn = "sqlite://{sqlite_file}"

# Nothing listens on port 1: this database is down for the whole run.
[databases.down]
dsn = "postgresql://postgres@127.0.0.1:1/nowhere"
connect_timeout = 1
"""


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str, mysql_dsn: str
) -> Iterator[ServerProcess]:
    """One real gateway serving PostgreSQL (pg), MariaDB (mysql), SQLite (lite) and a
    database that is down (down)."""
    workdir = tmp_path_factory.mktemp("gateway")
    proc = ServerProcess(
        workdir, config=gateway_config(postgres_dsn, mysql_dsn, workdir / "lite.sqlite3")
    ).start()
    yield proc
    proc.stop()
