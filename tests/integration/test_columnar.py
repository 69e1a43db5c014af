"""The columnar encoding (RESULT_ENCODING_COLUMNS) against a real server: the
same query gives the same native rows in both encodings on every engine,
unary and streamed; simple columns travel as packed lists, the rest as
Values; chunks and result caps hold; other RPCs refuse it."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_status import rpc_status

import dbgateway
from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc as pb_grpc
from dbgateway_server.errors import invalid_request, to_rpc_status
from tests.integration.conftest import SMALL_CHUNK, SMALL_MAX_RESULT_ROWS

COUNT = 3000

#: (name, expression of g): every column is NULL on every 7th row, so each
#: list is interleaved with NULLs.
POSTGRES_COLUMNS = [
    ("i2", "g::int2"),
    ("i4", "g"),
    ("i8", "g::int8 * 1000000007"),
    ("f4", "(g / 4.0)::float4"),
    ("f8", "(g / 3.0)::float8"),
    ("label", "'row ' || g"),
    ("vc", "('v' || g)::varchar(20)"),
    ("raw", "decode(lpad(to_hex(g), 8, '0'), 'hex')"),
    ("flag", "g % 2 = 0"),
    ("amount", "(g / 7.0)::numeric(12, 4)"),
    ("at", "timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second'"),
    ("pair", "ARRAY[g, g + 1]"),
]
POSTGRES_SQL = (
    "SELECT "
    + ", ".join(f"CASE WHEN g % 7 = 0 THEN NULL ELSE {e} END AS {n}" for n, e in POSTGRES_COLUMNS)
    + f" FROM generate_series(1, {COUNT}) AS g ORDER BY g"
)

MARIADB_SQL = (
    "SELECT IF(seq % 7 = 0, NULL, CAST(seq AS SIGNED)) AS n, "
    "IF(seq % 7 = 0, NULL, seq / 3e0) AS d, "
    "IF(seq % 7 = 0, NULL, CONCAT('row ', seq)) AS label, "
    "IF(seq % 7 = 0, NULL, UNHEX(LPAD(HEX(seq), 8, '0'))) AS raw, "
    "IF(seq % 7 = 0, NULL, CAST(seq / 7 AS DECIMAL(12, 4))) AS amount, "
    "IF(seq % 7 = 0, NULL, TIMESTAMP '2024-01-01 00:00:00' + INTERVAL seq SECOND) AS at, "
    "IF(seq % 7 = 0, NULL, CAST(seq AS UNSIGNED) + 18446744073709540000) AS big "
    f"FROM seq_1_to_{COUNT} ORDER BY seq"
)

SQLITE_SQL = (
    "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s "
    f"WHERE n < {COUNT}) SELECT "
    "CASE WHEN n % 7 = 0 THEN NULL ELSE n END AS n, "
    "CASE WHEN n % 7 = 0 THEN NULL ELSE n / 3.0 END AS d, "
    "CASE WHEN n % 7 = 0 THEN NULL ELSE 'row ' || n END AS label, "
    "CASE WHEN n % 7 = 0 THEN NULL ELSE CAST(printf('%08x', n) AS BLOB) END AS raw, "
    "CASE WHEN n % 7 = 0 THEN NULL WHEN n % 2 = 0 THEN n ELSE 'odd ' || n END AS mixed "
    "FROM s ORDER BY n"
)

CASES = [
    pytest.param("pg", POSTGRES_SQL, id="postgresql"),
    pytest.param("mysql", MARIADB_SQL, id="mariadb"),
    pytest.param("lite", SQLITE_SQL, id="sqlite"),
]


@pytest.fixture(scope="module")
def client(server) -> Iterator[dbgateway.Client]:
    with dbgateway.Client(server.address, timeout=60) as db:
        yield db


@pytest.fixture(scope="module")
def tight_client(tight_server) -> Iterator[dbgateway.Client]:
    with dbgateway.Client(tight_server.address, timeout=60) as db:
        yield db


@pytest.mark.parametrize(("database", "sql"), CASES)
def test_both_encodings_give_the_same_rows(client, database, sql):
    rows = client.query(sql, database=database, columnar=False)
    columns = client.query(sql, database=database, columnar=True)
    assert columns.column_info == rows.column_info
    assert len(columns.rows) == COUNT
    assert columns.rows == rows.rows
    for i in range(len(rows.columns)):
        values = [row[i] for row in columns.rows]
        assert None in values
        assert any(v is not None for v in values)


@pytest.mark.parametrize(("database", "sql"), CASES)
def test_both_encodings_stream_the_same_rows(client, database, sql):
    expected = client.query(sql, database=database, columnar=False).rows
    with client.stream(sql, database=database, columnar=True) as stream:
        assert list(stream) == expected


def test_postgres_values_come_back_with_their_types(client):
    rows = client.query(POSTGRES_SQL, database="pg", columnar=True).rows
    first, seventh = rows[0], rows[6]
    assert first == (
        1,
        1,
        1000000007,
        0.25,
        pytest.approx(1 / 3),
        "row 1",
        "v1",
        b"\x00\x00\x00\x01",
        False,
        decimal.Decimal("0.1429"),
        dt.datetime(2024, 1, 1, 0, 0, 1, tzinfo=dt.UTC),
        [1, 2],
    )
    assert seventh == (None,) * 12


def test_simple_columns_travel_as_packed_lists(db):
    request = pb.QueryRequest(
        database="pg",
        sql=POSTGRES_SQL,
        options=pb.RequestOptions(encoding=pb.RESULT_ENCODING_COLUMNS),
    )
    response = db.Query(request)
    assert not response.rows
    assert response.stats.rows == COUNT
    assert sum(b.row_count for b in response.column_batches) == COUNT
    batch = response.column_batches[0]
    lists = [
        next(
            (
                name
                for name in ("ints", "doubles", "strings", "bytes", "bools", "values")
                if len(getattr(c, name))
            ),
            None,
        )
        for c in batch.columns
    ]
    assert lists == [
        "ints", "ints", "ints", "doubles", "doubles", "strings", "strings", "bytes", "bools",
        "values", "values", "values",
    ]  # fmt: skip
    assert list(batch.columns[0].null_indexes[:2]) == [6, 13]


def test_an_empty_result_has_its_columns(client):
    result = client.query(
        "SELECT g, 'x' AS t FROM generate_series(1, 0) AS g", database="pg", columnar=True
    )
    assert result.columns == ("g", "t")
    assert result.rows == []


def test_max_rows_truncates_alike(client):
    for columnar in (False, True):
        result = client.query(POSTGRES_SQL, database="pg", max_rows=10, columnar=columnar)
        assert len(result.rows) == 10
        assert result.truncated
        with client.stream(POSTGRES_SQL, database="pg", max_rows=10, columnar=columnar) as s:
            assert len(list(s)) == 10
            assert s.truncated


@pytest.mark.parametrize("database", ["pg", "mysql", "lite"])
def test_stream_query_columnar_is_chunked(tight, database):
    sql = {
        "pg": "SELECT g, repeat('x', 50) AS pad FROM generate_series(1, 5000) AS g ORDER BY g",
        "mysql": "SELECT CAST(seq AS SIGNED), REPEAT('x', 50) AS pad FROM seq_1_to_5000 ORDER BY seq",
        "lite": "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 5000) "
        "SELECT n, printf('%.50c', 'x') AS pad FROM s",
    }[database]
    request = pb.QueryRequest(
        database=database, sql=sql, options=pb.RequestOptions(encoding=pb.RESULT_ENCODING_COLUMNS)
    )
    messages = list(tight.StreamQuery(request))
    batches = [m.column_batch for m in messages if m.HasField("column_batch")]
    assert len(batches) > 5
    assert all(b.ByteSize() <= SMALL_CHUNK for b in batches)
    numbers = [n for b in batches for n in b.columns[0].ints]
    assert numbers == list(range(1, 5001))
    assert messages[-1].stats.rows == 5000


@pytest.mark.parametrize("database", ["pg", "mysql", "lite"])
def test_unary_caps_hold_in_columnar(tight_client, database):
    sql = {
        "pg": "SELECT g FROM generate_series(1, {n}) AS g",
        "mysql": "SELECT seq FROM seq_1_to_{n}",
        "lite": "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {n}) "
        "SELECT n FROM s",
    }[database]
    assert len(tight_client.query(sql.format(n=SMALL_MAX_RESULT_ROWS), database=database,
                                  columnar=True)) == SMALL_MAX_RESULT_ROWS  # fmt: skip
    with pytest.raises(dbgateway.DbGatewayError) as info:
        tight_client.query(
            sql.format(n=SMALL_MAX_RESULT_ROWS + 1), database=database, columnar=True
        )
    assert info.value.reason == "RESULT_TOO_LARGE"
    wide = {
        "pg": "SELECT repeat('x', 1000) FROM generate_series(1, 500)",
        "mysql": "SELECT REPEAT('x', 1000) FROM seq_1_to_500",
        "lite": "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 500) "
        "SELECT printf('%.1000c', 'x') FROM s",
    }[database]
    with pytest.raises(dbgateway.DbGatewayError) as info:
        tight_client.query(wide, database=database, columnar=True)
    assert info.value.reason == "RESULT_TOO_LARGE"
    assert "max_result_bytes" in str(info.value)


def test_query_in_a_handle_transaction_can_be_columnar(db, client):
    tx = db.BeginTransaction(pb.BeginTransactionRequest(database="pg"))
    try:
        response = db.Query(
            pb.QueryRequest(
                sql="SELECT g FROM generate_series(1, 5) AS g",
                transaction_id=tx.transaction_id,
                options=pb.RequestOptions(encoding=pb.RESULT_ENCODING_COLUMNS),
            )
        )
        assert list(response.column_batches[0].columns[0].ints) == [1, 2, 3, 4, 5]
    finally:
        db.Rollback(pb.RollbackRequest(transaction_id=tx.transaction_id))


def test_other_rpcs_refuse_the_columnar_encoding(db):
    columns = pb.RequestOptions(encoding=pb.RESULT_ENCODING_COLUMNS)
    with pytest.raises(grpc.RpcError) as info:
        db.Execute(pb.ExecuteRequest(database="pg", sql="SELECT 1", options=columns))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        db.RunTransaction(
            pb.RunTransactionRequest(
                database="pg", statements=[pb.Statement(sql="SELECT 1", options=columns)]
            )
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        db.Query(
            pb.QueryRequest(database="pg", sql="SELECT 1", options=pb.RequestOptions(encoding=9))
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT


#: 1,000 rows of 20 small integers: about 82 KiB as rows, 21 KiB as columns.
WIDE_SQL = {
    "pg": "SELECT {columns} FROM generate_series(1, 1000) AS g ORDER BY g",
    "mysql": "SELECT {columns} FROM seq_1_to_1000 AS s ORDER BY seq",
    "lite": "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < 1000) "
    "SELECT {columns} FROM s",
}


@pytest.mark.parametrize("database", ["pg", "mysql", "lite"])
def test_query_reads_in_the_columnar_encoding_unless_told_otherwise(tight_client, database):
    # The tight server caps a unary result at 64 KiB: these rows fit it as
    # columns, not as rows, so which encoding travelled shows.
    value = "CAST((seq + {i}) % 100 AS SIGNED)" if database == "mysql" else "(g + {i}) % 100"
    sql = WIDE_SQL[database].format(
        columns=", ".join(f"{value.format(i=i)} AS c{i}" for i in range(20))
    )
    result = tight_client.query(sql, database=database)
    assert result.rows == [tuple((g + i) % 100 for i in range(20)) for g in range(1, 1001)]
    assert result.columns == tuple(f"c{i}" for i in range(20))
    with pytest.raises(dbgateway.ResourceExhausted, match="too large"):
        tight_client.query(sql, database=database, columnar=False)


# -- RESULT_ENCODING_COLUMNS_V2: decimals and instants as packed lists --------


def _lists(batch: pb.ColumnBatch) -> list[str | None]:
    names = ("ints", "doubles", "strings", "bytes", "bools", "decimals", "timestamps", "values")
    return [next((n for n in names if len(getattr(c, n))), None) for c in batch.columns]


def test_v2_sends_decimals_and_instants_as_packed_lists_and_columns_does_not(db):
    def first_batch(encoding: int) -> pb.ColumnBatch:
        options = pb.RequestOptions(encoding=encoding)
        response = db.Query(pb.QueryRequest(database="pg", sql=POSTGRES_SQL, options=options))
        assert sum(b.row_count for b in response.column_batches) == COUNT
        return response.column_batches[0]

    simple = ["ints", "ints", "ints", "doubles", "doubles", "strings", "strings", "bytes", "bools"]
    v2 = first_batch(pb.RESULT_ENCODING_COLUMNS_V2)
    assert _lists(v2) == [*simple, "decimals", "timestamps", "values"]
    assert v2.columns[9].decimals[0] == "0.1429"
    assert v2.columns[10].timestamps[0] == 1_704_067_201_000_000  # 2024-01-01 00:00:01Z
    # A caller that asked for RESULT_ENCODING_COLUMNS (an older client) does
    # not know those lists: it gets the Values it always got.
    assert _lists(first_batch(pb.RESULT_ENCODING_COLUMNS)) == [
        *simple,
        "values",
        "values",
        "values",
    ]


#: Values at the edges: exponent-form decimals, NaN, negative zero, the
#: widest numerics, instants before 1970 and at the ends of the calendar,
#: infinities (which have no instant: the column then travels as Values).
EDGE_DECIMALS = (
    "SELECT v FROM (VALUES (1, 'NaN'::numeric), (2, 1e-20), (3, -0.0), (4, 1e20), "
    "(5, 123456789012345678901234567890.123456789), (6, NULL), (7, 0.000000), (8, -42)) "
    "AS t(i, v) ORDER BY i"
)
EDGE_INSTANTS = (
    "SELECT v FROM (VALUES (1, timestamptz '0001-01-01 00:00:00+00'), "
    "(2, timestamptz '1969-12-31 23:59:59.999999+00'), (3, timestamptz '9999-12-31 23:59:59.999999+00'), "
    "(4, NULL), (5, timestamptz '2024-02-29 12:00:00.5+05:30')) AS t(i, v) ORDER BY i"
)
EDGE_INFINITE = (
    "SELECT v FROM (VALUES (1, timestamptz '2024-01-01 00:00:00+00'), (2, 'infinity'), "
    "(3, '-infinity'), (4, NULL)) AS t(i, v) ORDER BY i"
)


@pytest.mark.parametrize("sql", [EDGE_DECIMALS, EDGE_INSTANTS, EDGE_INFINITE])
def test_v2_gives_the_row_encodings_values_at_the_edges(client, db, sql):
    def seen(rows):  # repr: NaN is not equal to itself
        return [tuple(map(repr, row)) for row in rows]

    expected = seen(client.query(sql, database="pg", columnar=False).rows)
    assert seen(client.query(sql, database="pg").rows) == expected
    with client.stream(sql, database="pg", columnar=True) as stream:
        assert seen(stream) == expected
    options = pb.RequestOptions(encoding=pb.RESULT_ENCODING_COLUMNS_V2)
    batch = db.Query(pb.QueryRequest(database="pg", sql=sql, options=options)).column_batches[0]
    expected = (
        "values" if sql is EDGE_INFINITE else ("decimals" if sql is EDGE_DECIMALS else "timestamps")
    )
    assert _lists(batch) == [expected]


def test_v2_packs_mariadb_timestamps_and_decimals(client, db):
    table = "columnar_v2_instants"
    client.execute(f"DROP TABLE IF EXISTS {table}", database="mysql")
    client.execute(
        f"CREATE TABLE {table} (i int PRIMARY KEY, at TIMESTAMP(6) NULL, amount DECIMAL(30, 6))",
        database="mysql",
    )
    try:
        client.execute(
            f"INSERT INTO {table} VALUES (1, '1970-01-01 00:00:01.000005', 12345678901234.5), "
            "(2, NULL, NULL), (3, '2038-01-19 03:14:07', -0.000001)",
            database="mysql",
        )
        sql = f"SELECT at, amount FROM {table} ORDER BY i"
        rows = client.query(sql, database="mysql", columnar=False).rows
        assert rows[0] == (
            dt.datetime(1970, 1, 1, 0, 0, 1, 5, tzinfo=dt.UTC),
            decimal.Decimal("12345678901234.500000"),
        )
        assert client.query(sql, database="mysql").rows == rows
        options = pb.RequestOptions(encoding=pb.RESULT_ENCODING_COLUMNS_V2)
        response = db.Query(pb.QueryRequest(database="mysql", sql=sql, options=options))
        assert _lists(response.column_batches[0]) == ["timestamps", "decimals"]
    finally:
        client.execute(f"DROP TABLE {table}", database="mysql")


def test_other_rpcs_refuse_the_v2_encoding(db):
    options = pb.RequestOptions(encoding=pb.RESULT_ENCODING_COLUMNS_V2)
    with pytest.raises(grpc.RpcError) as info:
        db.Execute(pb.ExecuteRequest(database="pg", sql="SELECT 1", options=options))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "RESULT_ENCODING_COLUMNS_V2 is for Query and StreamQuery only" in info.value.details()


class _OlderServer(pb_grpc.DatabaseServiceServicer):
    """A gateway from before RESULT_ENCODING_COLUMNS_V2, in front of the real
    one: it refuses that encoding as such a server's option check did (and,
    having no Session, makes the client use unary calls)."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = pb_grpc.DatabaseServiceStub(self.channel)
        self.encodings: list[int] = []

    def _refuse_v2(self, request, context) -> None:
        self.encodings.append(request.options.encoding)
        if request.options.encoding == pb.RESULT_ENCODING_COLUMNS_V2:
            error = invalid_request("options.encoding", "unknown result encoding 3")
            context.abort_with_status(rpc_status.to_status(to_rpc_status(error)))

    def Query(self, request, context):
        self._refuse_v2(request, context)
        return self.stub.Query(request)

    def StreamQuery(self, request, context):
        self._refuse_v2(request, context)
        yield from self.stub.StreamQuery(request)


@pytest.fixture
def older_server(server) -> Iterator[tuple[str, _OlderServer]]:
    older = _OlderServer(server.address)
    front = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_DatabaseServiceServicer_to_server(older, front)
    port = front.add_insecure_port("127.0.0.1:0")
    front.start()
    try:
        yield f"127.0.0.1:{port}", older
    finally:
        front.stop(None)
        older.channel.close()


def test_the_client_asks_an_older_server_for_the_columnar_encoding_it_knows(older_server, client):
    address, older = older_server
    sql = "SELECT g, g / 7.0 AS amount FROM generate_series(1, 50) AS g ORDER BY g"
    expected = client.query(sql, database="pg", columnar=False).rows
    with dbgateway.Client(address, timeout=30) as db:
        assert db.query(sql, database="pg").rows == expected
        assert db.query(sql, database="pg").rows == expected
        with db.stream(sql, database="pg", columnar=True) as stream:
            assert list(stream) == expected
    # Refused once, then the encoding the older server knows, without asking again.
    assert older.encodings == [
        pb.RESULT_ENCODING_COLUMNS_V2,
        pb.RESULT_ENCODING_COLUMNS,
        pb.RESULT_ENCODING_COLUMNS,
        pb.RESULT_ENCODING_COLUMNS,
    ]


async def test_the_async_client_asks_an_older_server_for_the_encoding_it_knows(
    older_server, client
):
    address, older = older_server
    sql = "SELECT g::numeric / 3 AS third FROM generate_series(1, 20) AS g ORDER BY g"
    expected = client.query(sql, database="pg", columnar=False).rows
    async with dbgateway.AsyncClient(address, timeout=30) as db:
        assert (await db.query(sql, database="pg")).rows == expected
        assert (await db.query(sql, database="pg")).rows == expected
    assert older.encodings == [
        pb.RESULT_ENCODING_COLUMNS_V2,
        pb.RESULT_ENCODING_COLUMNS,
        pb.RESULT_ENCODING_COLUMNS,
    ]


@pytest.mark.parametrize(
    ("database", "one", "two"),
    [
        ("pg", "SELECT 1.5::numeric AS n, now() AS t", "SELECT g FROM generate_series(1, 2) AS g"),
        ("mysql", "SELECT CAST(1.5 AS DECIMAL(4, 2)) AS n", "SELECT seq FROM seq_1_to_2"),
        ("lite", "SELECT 1.5 AS n", "SELECT 1 UNION ALL SELECT 2"),
    ],
)
def test_v2_sends_a_result_of_one_row_as_rows(db, client, database, one, two):
    options = pb.RequestOptions(encoding=pb.RESULT_ENCODING_COLUMNS_V2)
    single = db.Query(pb.QueryRequest(database=database, sql=one, options=options))
    assert len(single.rows) == 1
    assert not single.column_batches
    pair = db.Query(pb.QueryRequest(database=database, sql=two, options=options))
    assert not pair.rows
    assert pair.column_batches[0].row_count == 2
    assert client.query(one, database=database).rows[0][0] == decimal.Decimal("1.5")
    # The stream sends batches whatever the size.
    streamed = list(db.StreamQuery(pb.QueryRequest(database=database, sql=one, options=options)))
    assert [m.column_batch.row_count for m in streamed if m.HasField("column_batch")] == [1]
