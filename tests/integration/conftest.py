from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from dbgateway.v1 import database_service_pb2_grpc
from tests.support import (
    ServerProcess,
    create_mysql_database,
    create_postgres_database,
    drop_mysql_database,
    drop_postgres_database,
)

#: The tight server's limits (see ``tight_server``).
SMALL_POOL = 2
SMALL_CHUNK = 16 * 1024
SMALL_MAX_RESULT_ROWS = 1000
SMALL_MAX_RESULT_BYTES = 64 * 1024


@pytest.fixture(scope="session")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with server.channel() as ch:
        yield ch


@pytest.fixture(scope="session")
def db(channel: grpc.Channel) -> database_service_pb2_grpc.DatabaseServiceStub:
    return database_service_pb2_grpc.DatabaseServiceStub(channel)


@pytest.fixture(scope="session")
def tight_databases() -> Iterator[tuple[str, str]]:
    """PostgreSQL and MariaDB databases of their own, so that their sessions
    are the tight server's alone."""
    postgres_dsn, mysql_dsn = create_postgres_database(), create_mysql_database()
    yield postgres_dsn, mysql_dsn
    drop_postgres_database(postgres_dsn)
    drop_mysql_database(mysql_dsn)


@pytest.fixture(scope="session")
def tight_server(
    tmp_path_factory: pytest.TempPathFactory, tight_databases: tuple[str, str]
) -> Iterator[ServerProcess]:
    """A gateway with small pools, small result caps and small stream chunks,
    so that limits and leaks show with little data."""
    postgres_dsn, mysql_dsn = tight_databases
    workdir = tmp_path_factory.mktemp("tight")
    settings = (
        f"pool = {{ min_size = 1, max_size = {SMALL_POOL}, acquire_timeout = 5 }}\n"
        f"max_result_rows = {SMALL_MAX_RESULT_ROWS}\n"
        f"max_result_bytes = {SMALL_MAX_RESULT_BYTES}\n"
        f"stream_chunk_bytes = {SMALL_CHUNK}\n"
    )
    config = "".join(
        f'[databases.{name}]\ndsn = "{dsn}"\n{settings}\n'
        for name, dsn in (
            ("pg", postgres_dsn),
            ("mysql", mysql_dsn),
            ("lite", f"sqlite://{Path(workdir) / 'tight.sqlite3'}"),
        )
    )
    proc = ServerProcess(workdir, config=config).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def tight(tight_server: ServerProcess) -> Iterator[database_service_pb2_grpc.DatabaseServiceStub]:
    with tight_server.channel() as channel:
        yield database_service_pb2_grpc.DatabaseServiceStub(channel)


@pytest.fixture(scope="module")
def own_dsn() -> Iterator[str]:
    """A PostgreSQL database of the requesting module's own, so that connection
    counts in it are that module's alone."""
    dsn = create_postgres_database()
    yield dsn
    drop_postgres_database(dsn)
