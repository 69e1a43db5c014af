from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from dbgateway.v1 import database_service_pb2_grpc
from tests.support import ServerProcess


@pytest.fixture(scope="session")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with server.channel() as ch:
        yield ch


@pytest.fixture(scope="session")
def db(channel: grpc.Channel) -> database_service_pb2_grpc.DatabaseServiceStub:
    return database_service_pb2_grpc.DatabaseServiceStub(channel)
