"""Every Value kind survives a round trip through a real table on every engine
that has the type: what goes in through a parameter comes back equal."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import value_pb2
from tests.support import MYSQL_DSN, V, _mysql_connect, unique_name

INT64_MIN, INT64_MAX, UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
DECIMAL_40 = "123456789012345678901234567890.1234567890"
UNICODE = "héllo wörld ✓ 🎉 中文 \t\n"
BYTES = bytes(range(256))
INSTANT = dt.datetime(2024, 5, 1, 10, 30, 15, 123456, tzinfo=dt.UTC)

# (column type, value in, value out when it differs)
POSTGRES_CASES = [
    ("bigint", V.of(int_value=INT64_MIN), None),
    ("bigint", V.of(int_value=INT64_MAX), None),
    ("integer", V.of(int_value=-(2**31)), None),
    ("smallint", V.of(int_value=32767), None),
    ("numeric", V.of(decimal_value=DECIMAL_40), None),
    ("numeric", V.of(decimal_value="-0.000000000000000000000000000001"), None),
    ("numeric(12,2)", V.of(decimal_value="12.50"), None),
    ("numeric", V.of(decimal_value="NaN"), None),
    ("double precision", V.of(double_value=-1.7976931348623157e308), None),
    ("double precision", V.of(double_value=0.1), None),
    ("real", V.of(double_value=0.5), None),
    ("text", V.of(string_value=UNICODE), None),
    ("varchar(200)", V.of(string_value="plain"), None),
    ("bytea", V.of(bytes_value=BYTES), None),
    ("boolean", V.of(bool_value=True), None),
    ("boolean", V.of(bool_value=False), None),
    ("date", V.of(date_value="2024-02-29"), None),
    ("time", V.of(time_value="13:45:30.123456"), None),
    ("timetz", V.of(time_value="13:45:30+02:00"), None),
    ("timestamp", V.of(datetime_value="2024-05-01T12:30:00.123456"), None),
    ("timestamptz", V.ts(INSTANT), None),
    ("json", V.of(json_value='{"a": [1, 2.5, {"b": null}], "c": "ü"}'), None),
    ("jsonb", V.of(json_value='{"a": [1, 2.5, {"b": null}], "c": "ü"}'), None),
    ("uuid", V.of(uuid_value=str(uuid.UUID(int=2**128 - 1))), None),
    (
        "interval",
        V.of(interval_value=value_pb2.Interval(months=14, days=-3, microseconds=4_005_006)),
        None,
    ),
    ("integer[]", V.list(V.of(int_value=1), V.null(), V.of(int_value=3)), None),
    ("text[]", V.list(V.of(string_value="a"), V.of(string_value="ü")), None),
    (
        "integer[][]",
        V.list(
            V.list(V.of(int_value=1), V.of(int_value=2)),
            V.list(V.of(int_value=3), V.of(int_value=4)),
        ),
        None,
    ),
    ("numeric[]", V.list(V.of(decimal_value="1.10"), V.of(decimal_value="2")), None),
]


def _is_mariadb() -> bool:
    conn = _mysql_connect()
    try:
        with conn.cursor() as cur:
            cur.execute("select version()")
            return "MariaDB" in cur.fetchone()[0]
    finally:
        conn.close()


MARIADB = _is_mariadb() if "mysql" in MYSQL_DSN else False
_JSON = '{"a": [1, 2.5, {"b": null}]}'

MYSQL_CASES = [
    ("BIGINT", V.of(int_value=INT64_MIN), None),
    ("BIGINT", V.of(int_value=INT64_MAX), None),
    ("BIGINT UNSIGNED", V.of(uint_value=UINT64_MAX), None),
    ("INT UNSIGNED", V.of(int_value=4294967295), None),
    ("DECIMAL(40,10)", V.of(decimal_value=DECIMAL_40), None),
    ("DECIMAL(12,2)", V.of(decimal_value="-12.50"), None),
    ("DOUBLE", V.of(double_value=-1.7976931348623157e308), None),
    ("DOUBLE", V.of(double_value=0.1), None),
    ("VARCHAR(200)", V.of(string_value=UNICODE), None),
    ("LONGTEXT", V.of(string_value=UNICODE * 100), None),
    ("VARBINARY(300)", V.of(bytes_value=BYTES), None),
    ("LONGBLOB", V.of(bytes_value=BYTES * 10), None),
    # MySQL has no boolean type: BOOLEAN is TINYINT(1).
    ("BOOLEAN", V.of(bool_value=True), V.of(int_value=1)),
    ("DATE", V.of(date_value="2024-02-29"), None),
    ("TIME(6)", V.of(time_value="13:45:30.123456"), None),
    ("TIME", V.of(time_value="-838:59:59"), None),
    ("DATETIME(6)", V.of(datetime_value="2024-05-01T12:30:00.123456"), None),
    ("TIMESTAMP(6) NULL", V.ts(INSTANT), None),
    # MariaDB's JSON is LONGTEXT with a check: the text comes back unchanged.
    ("JSON", V.of(json_value=_JSON), V.of(string_value=_JSON) if MARIADB else None),
]

SQLITE_CASES = [
    ("INTEGER", V.of(int_value=INT64_MIN), None),
    ("INTEGER", V.of(int_value=INT64_MAX), None),
    ("REAL", V.of(double_value=-1.7976931348623157e308), None),
    ("REAL", V.of(double_value=0.1), None),
    ("TEXT", V.of(string_value=UNICODE), None),
    ("BLOB", V.of(bytes_value=BYTES), None),
    # SQLite stores INTEGER/REAL/TEXT/BLOB: richer kinds are kept as exact text.
    ("TEXT", V.of(decimal_value=DECIMAL_40), V.of(string_value=DECIMAL_40)),
    ("TEXT", V.of(date_value="2024-02-29"), V.of(string_value="2024-02-29")),
    ("INTEGER", V.of(bool_value=True), V.of(int_value=1)),
]


def _round_trip(db, database: str, column_type: str, value, placeholder: str):
    table = unique_name("rt")
    db.Execute(pb.ExecuteRequest(database=database, sql=f"CREATE TABLE {table} (v {column_type})"))
    db.Execute(
        pb.ExecuteRequest(
            database=database, sql=f"INSERT INTO {table} (v) VALUES ({placeholder})", params=[value]
        )
    )
    db.Execute(
        pb.ExecuteRequest(
            database=database,
            sql=f"INSERT INTO {table} (v) VALUES ({placeholder})",
            params=[V.null()],
        )
    )
    reply = db.Query(
        pb.QueryRequest(database=database, sql=f"SELECT v FROM {table} ORDER BY v IS NULL")
    )
    db.Execute(pb.ExecuteRequest(database=database, sql=f"DROP TABLE {table}"))
    return reply


def _ids(cases):
    return [f"{t}-{v.WhichOneof('kind')}-{i}" for i, (t, v, _) in enumerate(cases)]


@pytest.mark.parametrize(
    ("column_type", "value", "expected"), POSTGRES_CASES, ids=_ids(POSTGRES_CASES)
)
def test_postgres_round_trip(db, column_type, value, expected):
    reply = _round_trip(db, "pg", column_type, value, "$1")
    assert [r.values[0] for r in reply.rows] == [expected or value, V.null()]
    assert reply.columns[0].name == "v"


@pytest.mark.parametrize(("column_type", "value", "expected"), MYSQL_CASES, ids=_ids(MYSQL_CASES))
def test_mysql_round_trip(db, column_type, value, expected):
    reply = _round_trip(db, "mysql", column_type, value, "%s")
    assert [r.values[0] for r in reply.rows] == [expected or value, V.null()]


@pytest.mark.parametrize(("column_type", "value", "expected"), SQLITE_CASES, ids=_ids(SQLITE_CASES))
def test_sqlite_round_trip(db, column_type, value, expected):
    reply = _round_trip(db, "lite", column_type, value, "?")
    assert [r.values[0] for r in reply.rows] == [expected or value, V.null()]


def test_timestamptz_written_in_any_zone_reads_back_as_the_instant(db):
    reply = db.Query(
        pb.QueryRequest(
            database="pg",
            sql="SELECT '2024-05-01 16:00:15.123456+05:30'::timestamptz AS a, $1::timestamptz AS b",
            params=[V.of(datetime_value="2024-05-01T03:30:15.123456-07:00")],
        )
    )
    a, b = reply.rows[0].values
    assert a == V.ts(INSTANT)
    assert b == V.ts(INSTANT)
    assert [c.db_type for c in reply.columns] == ["timestamptz", "timestamptz"]


def test_columns_carry_the_engines_type_names(db):
    pg = db.Query(
        pb.QueryRequest(database="pg", sql="SELECT 1::int8 AS a, 'x'::text AS b, 1.5::numeric AS c")
    )
    assert [(c.name, c.db_type) for c in pg.columns] == [
        ("a", "int8"),
        ("b", "text"),
        ("c", "numeric"),
    ]
    table = unique_name("cols")
    db.Execute(
        pb.ExecuteRequest(
            database="mysql",
            sql=f"CREATE TABLE {table} (a BIGINT UNSIGNED, b VARCHAR(3), c DECIMAL(5,2), d VARBINARY(4))",
        )
    )
    my = db.Query(pb.QueryRequest(database="mysql", sql=f"SELECT a, b, c, d FROM {table}"))
    assert [c.db_type for c in my.columns] == ["BIGINT UNSIGNED", "VARCHAR", "DECIMAL", "VARBINARY"]
    assert len(my.rows) == 0


def test_mysql_bigint_unsigned_above_int64_is_uint(db):
    reply = db.Query(
        pb.QueryRequest(database="mysql", sql="SELECT CAST(18446744073709551615 AS UNSIGNED) AS u")
    )
    assert reply.rows[0].values[0] == V.of(uint_value=UINT64_MAX)
