"""Nothing a caller sends may crash the gateway or leave a connection or a
transaction behind: garbage bodies, oversized SQL, wrong parameters, deeply
nested values, invalid UTF-8, and thousands of streams opened and abandoned.
Each gets an error code, and the server keeps serving.

The tight server (tests/integration/conftest.py) has databases of its own
and pools of SMALL_POOL, so leftovers show in pg_stat_activity."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest

from dbgateway.v1 import admin_service_pb2 as admin_pb
from dbgateway.v1 import admin_service_pb2_grpc as admin_grpc
from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc as pb_grpc
from tests.integration.conftest import SMALL_POOL
from tests.support import V, call_error, pg_fetch

ENGINES = ("pg", "mysql", "lite")
PLACEHOLDER = {"pg": "$1", "mysql": "%s", "lite": "?"}
QUERY = "/dbgateway.v1.DatabaseService/Query"
CLEAN_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED}


def raw_query(channel: grpc.Channel, body: bytes) -> grpc.StatusCode:
    """Sends ``body`` as a Query request as is, bypassing the serializer."""
    with pytest.raises(grpc.RpcError) as info:
        channel.unary_unary(QUERY)(body, timeout=10)
    return info.value.code()  # type: ignore[attr-defined]


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, encoded by hand."""
    length, size = b"", len(payload)
    while True:
        byte = size & 0x7F
        size >>= 7
        length += bytes([byte | (0x80 if size else 0)])
        if not size:
            break
    return bytes([number << 3 | 2]) + length + payload


def still_serving(stub: pb_grpc.DatabaseServiceStub) -> None:
    for engine in ENGINES:
        reply = stub.Query(pb.QueryRequest(database=engine, sql="SELECT 1"), timeout=10)
        assert reply.rows[0].values[0].int_value == 1


@pytest.fixture(scope="module")
def channel(tight_server):
    with tight_server.channel() as ch:
        yield ch


def test_random_bytes_as_a_request_body_get_an_error_code(channel, tight):
    rng = random.Random(9)
    codes = set()
    for size in (1, 2, 7, 64, 1000, 100_000):
        for _ in range(5):
            codes.add(raw_query(channel, rng.randbytes(size)))
    assert grpc.StatusCode.OK not in codes
    still_serving(tight)


def test_invalid_utf8_in_strings_gets_an_error_code(channel, tight):
    sql = field(1, b"lite") + field(2, b"SELECT '\xff\xfe'")
    assert raw_query(channel, sql) != grpc.StatusCode.OK
    param = field(1, b"lite") + field(2, b"SELECT ?") + field(3, field(6, b"\xc3\x28"))
    assert raw_query(channel, param) != grpc.StatusCode.OK
    still_serving(tight)


def test_a_10_mb_sql_string_is_resource_exhausted(tight):
    with pytest.raises(grpc.RpcError) as info:
        tight.Query(pb.QueryRequest(database="pg", sql="SELECT " + "1" * 10_000_000), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    still_serving(tight)


@pytest.mark.parametrize("depth", [20, 99, 150, 5000])
def test_deeply_nested_list_values_get_an_error_code(channel, tight, depth):
    value = b""
    for _ in range(depth):
        value = field(16, field(1, value))  # Value{list_value: ListValue{values: [value]}}
    body = field(1, b"pg") + field(2, b"SELECT $1") + field(3, value)
    assert raw_query(channel, body) != grpc.StatusCode.OK
    still_serving(tight)


@pytest.mark.parametrize("engine", ENGINES)
def test_wrong_parameter_counts_and_types_are_invalid_argument(tight, engine):
    p = PLACEHOLDER[engine]
    cases = [
        (f"SELECT {p}", []),
        (f"SELECT {p}", [V.of(int_value=1), V.of(int_value=2)]),
        ("SELECT 1", [V.of(int_value=1)]),
        (
            f"SELECT 1 + {p}" if engine != "pg" else "SELECT 1 + $1::int",
            [V.of(bytes_value=b"\x00\xff")],
        ),
        (f"SELECT {p}", [V.of(decimal_value="not a number")]),
        (f"SELECT {p}", [V.of(date_value="2024-13-45")]),
        (f"SELECT {p}", [V.of(uuid_value="zzz")]),
        (f"SELECT {p}", [V.of()]),
    ]
    for sql, params in cases:
        try:
            tight.Query(pb.QueryRequest(database=engine, sql=sql, params=params), timeout=10)
        except grpc.RpcError as exc:
            err = call_error(exc)
            assert err.code in CLEAN_CODES, (sql, params, err)
    still_serving(tight)


ENDLESS = {
    "pg": "SELECT g FROM generate_series(1, 100000000) AS g",
    "mysql": "SELECT seq FROM seq_1_to_100000000",
    "lite": "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s) SELECT n FROM s",
}


async def _abandon_streams(address: str, n: int) -> list[grpc.StatusCode]:
    async with grpc.aio.insecure_channel(address) as ch:
        stub = pb_grpc.DatabaseServiceStub(ch)

        async def one(i: int) -> grpc.StatusCode:
            engine = ENGINES[i % 3]
            if i % 2:
                call = stub.StreamQuery(pb.QueryRequest(database=engine, sql=ENDLESS[engine]))
            else:
                begin = pb.TransactionRequest(begin=pb.TransactionRequest.Begin(database=engine))
                insert = pb.TransactionRequest(statement=pb.Statement(sql="SELECT 1"))
                call = stub.Transaction(iter([begin, insert]))
            try:
                async with asyncio.timeout(0.3 + (i % 7) * 0.05):
                    async for _ in call:
                        pass
            except TimeoutError:
                call.cancel()
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return await call.code()

        return await asyncio.gather(*(one(i) for i in range(n)))


def test_thousands_of_abandoned_streams_leave_nothing_behind(tight_server, tight, tight_databases):
    codes = asyncio.run(_abandon_streams(tight_server.address, 2000))
    # Every call ended with a status: most cancelled by us, some refused
    # (a saturated pool), a few finished before we gave up on them.
    assert len(codes) == 2000
    assert all(isinstance(code, grpc.StatusCode) for code in codes)
    assert codes.count(grpc.StatusCode.CANCELLED) > 1000
    still_serving(tight)
    postgres_dsn, _ = tight_databases
    name = urlsplit(postgres_dsn).path.lstrip("/")

    def sessions() -> list[tuple[int, int]]:
        rows = pg_fetch(
            postgres_dsn,
            "SELECT count(*) AS n, count(*) FILTER (WHERE state LIKE 'idle in transaction%') AS tx "
            f"FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()",
        )
        return rows[0]["n"], rows[0]["tx"]

    def databases() -> Any:
        with tight_server.channel() as ch:
            return admin_grpc.AdminServiceStub(ch).ListDatabases(admin_pb.ListDatabasesRequest())

    def settled() -> bool:
        n, in_tx = sessions()
        pools = databases().databases
        return (
            n <= SMALL_POOL
            and in_tx == 0
            and all(d.open_transactions == 0 for d in pools)
            and all(d.pool.in_use == 0 and d.pool.waiting == 0 for d in pools)
        )

    # The cancelled calls' connections come back as their cancellations
    # land (an SQLite query interrupted at the cancel returns its connection
    # from aiosqlite's thread a moment later): give them a bounded while.
    deadline = time.monotonic() + 20
    while not settled() and time.monotonic() < deadline:
        time.sleep(0.2)
    n, in_tx = sessions()
    assert n <= SMALL_POOL
    assert in_tx == 0
    info = databases()
    assert all(d.open_transactions == 0 for d in info.databases)
    assert all(d.pool.in_use == 0 and d.pool.waiting == 0 for d in info.databases), info
