"""Native Python values survive a round trip through the client, a real server
and a real table on PostgreSQL, MariaDB and SQLite.

Where an engine has no type for a value, the tables say what comes back
instead (the README's Values table): MySQL has no boolean, uuid, interval or
array; MariaDB's JSON is text; SQLite keeps the richer kinds as exact text.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import pytest

import dbgateway
from dbgateway import Json
from tests.integration.test_values import MARIADB
from tests.support import unique_name

SAME = object()
INT64_MIN, INT64_MAX, UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
INSTANT = dt.datetime(2024, 5, 1, 10, 30, 15, 123456, tzinfo=dt.UTC)
IN_INDIA = INSTANT.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30)))
NAIVE = dt.datetime(2024, 5, 1, 12, 30, 0, 123456)
UNICODE = "héllo wörld ✓ 🎉 中文 \t\n"
BYTES = bytes(range(256))
DOC = {"a": [1, 2.5, {"b": None}], "c": "ü", "d": True}
ID = uuid.UUID("12345678-1234-5678-1234-567812345678")

# (column type, value sent, value expected back or SAME)
POSTGRES = [
    ("boolean", True, SAME),
    ("boolean", False, SAME),
    ("bigint", INT64_MIN, SAME),
    ("bigint", INT64_MAX, SAME),
    ("numeric", UINT64_MAX, decimal.Decimal(UINT64_MAX)),
    ("double precision", 0.1, SAME),
    ("text", UNICODE, SAME),
    ("bytea", BYTES, SAME),
    ("numeric", decimal.Decimal("123456789012345678901234567890.1234567890"), SAME),
    ("numeric(12,2)", decimal.Decimal("-12.50"), SAME),
    ("timestamptz", IN_INDIA, SAME),
    ("timestamp", NAIVE, SAME),
    ("date", dt.date(2024, 2, 29), SAME),
    ("time", dt.time(13, 45, 30, 123456), SAME),
    ("timetz", dt.time(13, 45, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))), SAME),
    ("uuid", ID, SAME),
    ("interval", dt.timedelta(days=-3, seconds=4, microseconds=5006), SAME),
    ("interval", dbgateway.Interval(months=14, days=-3, microseconds=4_005_006), SAME),
    ("jsonb", DOC, SAME),
    ("json", Json([1, "two", None]), [1, "two", None]),
    ("integer[]", [1, None, 3], SAME),
    ("text[]", ["a", "ü"], SAME),
    ("integer[][]", [[1, 2], [3, 4]], SAME),
    ("numeric[]", [decimal.Decimal("1.10"), decimal.Decimal("2")], SAME),
    ("date[]", [dt.date(2024, 1, 1), None], SAME),
    ("uuid[]", [ID], SAME),
]

MYSQL = [
    ("BOOLEAN", True, 1),
    ("BIGINT", INT64_MIN, SAME),
    ("BIGINT", INT64_MAX, SAME),
    ("BIGINT UNSIGNED", UINT64_MAX, SAME),
    ("DOUBLE", 0.1, SAME),
    ("VARCHAR(200)", UNICODE, SAME),
    ("VARBINARY(300)", BYTES, SAME),
    ("DECIMAL(40,10)", decimal.Decimal("123456789012345678901234567890.1234567890"), SAME),
    ("TIMESTAMP(6) NULL", IN_INDIA, SAME),
    ("DATETIME(6)", NAIVE, SAME),
    ("DATE", dt.date(2024, 2, 29), SAME),
    # MySQL TIME is a signed duration, as aiomysql reads it.
    ("TIME(6)", dt.timedelta(hours=-838, minutes=-59, seconds=-59), SAME),
    ("TIME(6)", dt.time(13, 45, 30, 123456), dt.timedelta(hours=13, minutes=45, seconds=30.123456)),
    ("CHAR(36)", ID, str(ID)),
    # MariaDB's JSON is LONGTEXT: its text comes back as a string.
    ("JSON", DOC, '{"a": [1, 2.5, {"b": null}], "c": "ü", "d": true}' if MARIADB else SAME),
]

SQLITE = [
    ("INTEGER", True, 1),
    ("INTEGER", INT64_MIN, SAME),
    ("INTEGER", INT64_MAX, SAME),
    ("REAL", 0.1, SAME),
    ("TEXT", UNICODE, SAME),
    ("BLOB", BYTES, SAME),
    # SQLite stores INTEGER/REAL/TEXT/BLOB: richer kinds are kept as exact text.
    ("TEXT", decimal.Decimal("12.50"), "12.50"),
    ("TEXT", IN_INDIA, INSTANT.isoformat()),
    ("TEXT", NAIVE, NAIVE.isoformat()),
    ("TEXT", dt.date(2024, 2, 29), "2024-02-29"),
    ("TEXT", dt.time(13, 45, 30), "13:45:30"),
    ("TEXT", ID, str(ID)),
    ("TEXT", DOC, '{"a": [1, 2.5, {"b": null}], "c": "ü", "d": true}'),
]

PLACEHOLDERS = {"pg": ("$1", "$2"), "mysql": ("%s", "%s"), "lite": ("?", "?")}
CASES = (
    [("pg", *c) for c in POSTGRES] + [("mysql", *c) for c in MYSQL] + [("lite", *c) for c in SQLITE]
)


@pytest.fixture(scope="module")
def client(server):
    with dbgateway.Client(server.address, timeout=30) as db:
        yield db


@pytest.mark.parametrize(
    ("database", "column_type", "value", "expected"),
    CASES,
    ids=[f"{d}-{t}-{type(v).__name__}-{i}" for i, (d, t, v, _) in enumerate(CASES)],
)
def test_native_value_round_trip(client, database, column_type, value, expected):
    table = unique_name("crt")
    client.execute(f"CREATE TABLE {table} (v {column_type})", database=database)
    try:
        first, second = PLACEHOLDERS[database]
        inserted = client.execute(
            f"INSERT INTO {table} (v) VALUES ({first}), ({second})",
            value,
            None,
            database=database,
        )
        assert inserted.rows_affected == 2
        result = client.query(f"SELECT v FROM {table} ORDER BY v IS NULL", database=database)
    finally:
        client.execute(f"DROP TABLE {table}", database=database)
    want = value if expected is SAME else expected
    assert result.rows == [(want,), (None,)]
    got = result.rows[0][0]
    assert type(got) is type(want)


async def test_the_async_client_maps_the_same_values(server):
    async with dbgateway.AsyncClient(server.address, timeout=30) as db:
        result = await db.query(
            "SELECT $1::timestamptz AS at, $2::numeric AS amount, $3::jsonb AS doc, $4::int[] AS ids",
            IN_INDIA,
            decimal.Decimal("12.50"),
            DOC,
            [1, 2],
            database="pg",
        )
    assert result.as_dicts() == [
        {"at": INSTANT, "amount": decimal.Decimal("12.50"), "doc": DOC, "ids": [1, 2]}
    ]
    assert [(c.name, c.db_type) for c in result.column_info] == [
        ("at", "timestamptz"),
        ("amount", "numeric"),
        ("doc", "jsonb"),
        ("ids", "int4[]"),
    ]
