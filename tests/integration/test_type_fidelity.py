"""Every PostgreSQL type asyncpg decodes, and every MySQL column type, maps to
a deliberate Value kind (the walk, as the error table's test walks every
exception); the types that used to come back lossy or as a Python repr round
trip through parameters in their PostgreSQL text form, checked against what
asyncpg itself reads from the same rows."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pymysql.constants.FIELD_TYPE as FIELD_TYPE
import pytest

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import value_pb2
from dbgateway_server.values import from_python, mysql_column, pg_converter_is_deliberate
from tests.support import V, unique_name

pytestmark = [pytest.mark.postgres, pytest.mark.mysql]

_KINDS = {b"b": "scalar", b"r": "range", b"m": "multirange"}


def pg(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def test_every_pg_catalog_type_has_a_deliberate_value_kind(postgres_dsn):
    rows = pg(
        postgres_dsn,
        """
        SELECT t.typname, t.typtype, t.typcategory, e.typname AS element, e.typtype AS etype
        FROM pg_type t
        JOIN pg_namespace n ON n.oid = t.typnamespace
        LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
        WHERE n.nspname = 'pg_catalog' AND t.typtype IN ('b', 'r', 'm')
          AND t.typcategory <> 'P'
        """,
    )
    assert len(rows) > 150  # base, range and multirange types and their arrays
    missing = []
    for r in rows:
        if r["etype"] in (b"c", b"p"):
            continue  # arrays of rows (converted by their fields) and of pseudo-types
        if r["element"] is not None and r["typname"] not in ("int2vector", "oidvector"):
            name, kind = f"{r['element']}[]", "array"  # as asyncpg names an array type
        else:
            name, kind = r["typname"], _KINDS[r["typtype"]]
        if not pg_converter_is_deliberate(name, kind):
            missing.append(name)
    assert missing == []


def test_every_mysql_column_type_has_a_deliberate_value_kind():
    codes = {v for k, v in vars(FIELD_TYPE).items() if k.isupper()}
    for code in codes:
        for flags, charset in ((0, 45), (32, 45), (0, 63)):
            name, conv = mysql_column(code, flags, charset)
            assert not name.startswith("TYPE_"), code
            assert conv is not from_python


def query(db, sql: str, *params: value_pb2.Value) -> value_pb2.Value:
    reply = db.Query(pb.QueryRequest(database="pg", sql=sql, params=list(params)), timeout=20)
    return reply.rows[0].values[0]


#: (column type, value written, the same value as a SQL literal). What comes
#: back must equal what was written, and PostgreSQL must hold the literal.
ROUND_TRIPS = [
    ("bit(4)", V.of(string_value="1010"), "B'1010'"),
    ("varbit", V.of(string_value="101011101"), "B'101011101'"),
    ("int4range", V.of(string_value="[1,5)"), "'[1,5)'"),
    ("int4range", V.of(string_value="empty"), "'empty'"),
    ("int8range", V.of(string_value="(,20)"), "'(,20)'"),
    ("numrange", V.of(string_value="[1.50,2.25]"), "'[1.50,2.25]'"),
    ("daterange", V.of(string_value="[2020-01-01,2020-02-01)"), "'[2020-01-01,2020-02-01)'"),
    (
        "tsrange",
        V.of(string_value='["2020-01-01 10:00:00","2020-01-02 00:00:00.250000")'),
        "'[2020-01-01 10:00,2020-01-02 00:00:00.25)'",
    ),
    (
        "tstzrange",
        V.of(string_value='["2020-01-01 10:00:00+00:00",infinity)'),
        "'[2020-01-01 10:00+00,infinity)'",
    ),
    ("int4multirange", V.of(string_value="{[1,3),[5,7)}"), "'{[1,3),[5,7)}'"),
    ("point", V.of(string_value="(1.5,-2.0)"), "'(1.5,-2)'"),
    ("circle", V.of(string_value="<(1.0,2.0),3.5>"), "'<(1,2),3.5>'"),
    ("box", V.of(string_value="(3.0,4.0),(1.0,2.0)"), "'(3,4),(1,2)'"),
    ("lseg", V.of(string_value="[(1.0,2.0),(3.0,4.0)]"), "'[(1,2),(3,4)]'"),
    ("line", V.of(string_value="{1.0,-1.0,0.0}"), "'{1,-1,0}'"),
    ("path", V.of(string_value="[(1.0,2.0),(3.0,4.0)]"), "'[(1,2),(3,4)]'"),
    ("polygon", V.of(string_value="((0.0,0.0),(1.0,0.0),(1.0,1.0))"), "'((0,0),(1,0),(1,1))'"),
    ("inet", V.of(string_value="192.168.0.1"), "'192.168.0.1'"),
    ("cidr", V.of(string_value="10.0.0.0/8"), "'10.0.0.0/8'"),
    ("timestamptz", V.of(datetime_value="infinity"), "'infinity'"),
    ("timestamptz", V.of(datetime_value="-infinity"), "'-infinity'"),
    ("timestamp", V.of(datetime_value="infinity"), "'infinity'"),
    ("date", V.of(date_value="infinity"), "'infinity'"),
    ("date", V.of(date_value="-infinity"), "'-infinity'"),
    (
        "jsonb[]",
        V.list(V.of(json_value='{"a": 1}'), V.of(json_value="[1, 2]"), V.null()),
        """ARRAY['{"a": 1}', '[1, 2]', NULL]::jsonb[]""",
    ),
    (
        "json[]",
        V.list(V.of(json_value='{"b":[true]}')),
        """ARRAY['{"b":[true]}']::json[]""",
    ),
    (
        "interval[]",
        V.list(
            V.of(interval_value=value_pb2.Interval(months=14, days=3, microseconds=5_000_001)),
            V.of(interval_value=value_pb2.Interval(microseconds=-1)),
        ),
        "ARRAY['1 year 2 months 3 days 5.000001 seconds', '-0.000001 seconds']::interval[]",
    ),
    (
        "int4range[]",
        V.list(V.of(string_value="[1,2)"), V.of(string_value="empty")),
        "ARRAY['[1,2)', 'empty']::int4range[]",
    ),
]


@pytest.mark.parametrize(("pg_type", "value", "literal"), ROUND_TRIPS, ids=lambda x: str(x)[:40])
def test_the_type_round_trips_in_its_text_form(db, postgres_dsn, pg_type, value, literal):
    table = unique_name("types")
    db.Execute(pb.ExecuteRequest(database="pg", sql=f"CREATE TABLE {table} (v {pg_type})"))
    db.Execute(
        pb.ExecuteRequest(database="pg", sql=f"INSERT INTO {table} VALUES ($1)", params=[value])
    )
    # What asyncpg reads from the row is what it reads from the literal.
    [row] = pg(postgres_dsn, f"SELECT v, ({literal})::{pg_type} AS lit FROM {table}")
    assert row["v"] == row["lit"]
    assert query(db, f"SELECT v FROM {table}") == value


def test_infinite_timestamps_are_not_the_last_microsecond_of_9999(db):
    last = query(db, "SELECT '9999-12-31 23:59:59.999998+00'::timestamptz")
    assert last.WhichOneof("kind") == "timestamp_value"
    assert query(db, "SELECT 'infinity'::timestamptz") == V.of(datetime_value="infinity")
    assert query(db, "SELECT '-infinity'::date") == V.of(date_value="-infinity")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT '1010'::bit(4)",
        "SELECT int4range(1, 5)",
        "SELECT '(1,2)'::point",
        "SELECT '((1,2),(3,4))'::path",
        "SELECT '(1,2)'::tid",
        "SELECT '10:20:10,14'::txid_snapshot",
        "SELECT '16/B374D848'::pg_lsn",
        "SELECT ROW(1, 'a')",
    ],
)
def test_no_value_reads_back_as_a_python_repr(db, sql):
    value = query(db, sql)
    text = str(value)
    assert "asyncpg" not in text, text
    assert "<" not in text, text


def test_a_text_that_is_not_of_the_parameter_type_is_an_invalid_parameter(db):
    import grpc

    from tests.support import call_error

    for pg_type, text in [("int4range", "[1,"), ("bit(4)", "10x1"), ("point", "(1)")]:
        with pytest.raises(grpc.RpcError) as info:
            query(db, f"SELECT $1::{pg_type}", V.of(string_value=text))
        err = call_error(info.value)
        assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PARAMETER")
