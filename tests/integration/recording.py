"""A real gateway whose one pooled connection reaches a real database through
a TCP proxy that records what the gateway writes (tests/faultproxy.py): for
tests of what travels on the database's wire, call by call."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc as pb_grpc
from dbgateway.v1 import value_pb2
from tests.faultproxy import FaultProxy
from tests.support import ServerProcess


def plain(value: value_pb2.Value) -> object:
    kind = value.WhichOneof("kind")
    return None if kind == "null_value" else getattr(value, kind)


@dataclass
class RecordedGateway:
    proxy: FaultProxy
    db: pb_grpc.DatabaseServiceStub
    dsn: str  # direct, not through the proxy
    database: str  # the gateway's name for it

    def query(self, sql: str, *params: value_pb2.Value) -> list[tuple[object, ...]]:
        response = self.db.Query(pb.QueryRequest(database=self.database, sql=sql, params=params))
        return [tuple(plain(v) for v in row.values) for row in response.rows]


G = TypeVar("G", bound=RecordedGateway)


@contextmanager
def recorded_gateway(
    kind: type[G], workdir: Path, database: str, dsn: str, default_port: int
) -> Iterator[G]:
    """A gateway with ``database`` at ``dsn`` behind a recording proxy, with a
    pool of one connection (so every call reuses the connection of the call
    before)."""
    parts = urlsplit(dsn)
    with FaultProxy(parts.hostname or "127.0.0.1", parts.port or default_port) as proxy:
        config = (
            f'[databases.{database}]\ndsn = "{proxy.dsn(dsn)}"\n'
            "pool = { min_size = 1, max_size = 1 }\n"
        )
        server = ServerProcess(workdir, config=config).start()
        try:
            with server.channel() as channel:
                yield kind(proxy, pb_grpc.DatabaseServiceStub(channel), dsn, database)
        finally:
            server.stop()
