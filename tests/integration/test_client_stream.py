"""``stream()`` against a real server: 100,000 rows from each engine arrive in
order as native values; ``max_rows`` truncates and says so; leaving a stream
early stops it; errors are typed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

import dbgateway

COUNT = 100_000

#: (database, SQL giving n = 1..COUNT with a text and a date column)
HUNDRED_THOUSAND = [
    pytest.param(
        "pg",
        "SELECT g AS n, 'row ' || g AS label, DATE '2024-01-01' + (g % 7) AS day "
        f"FROM generate_series(1, {COUNT}) AS g ORDER BY g",
        id="postgresql",
    ),
    pytest.param(
        "mysql",
        "SELECT CAST(seq AS SIGNED) AS n, CONCAT('row ', seq) AS label, "
        "DATE '2024-01-01' + INTERVAL (seq % 7) DAY AS day "
        f"FROM seq_1_to_{COUNT} ORDER BY seq",
        id="mariadb",
    ),
    pytest.param(
        "lite",
        "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s "
        f"WHERE n < {COUNT}) SELECT n, 'row ' || n AS label, "
        "date('2024-01-01', '+' || (n % 7) || ' days') AS day FROM s",
        id="sqlite",
    ),
]


#: Far more rows than a test reads, held back by flow control until cancelled
#: (PostgreSQL materializes generate_series, so not too many: the first row
#: waits for all of them).
ENDLESS = "SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 1000000) AS g"


def expected_day(database: str, n: int) -> object:
    day = dt.date(2024, 1, 1) + dt.timedelta(days=n % 7)
    # SQLite has no date type: date() gives text.
    return day.isoformat() if database == "lite" else day


@pytest.fixture(scope="module")
def client(server) -> Iterator[dbgateway.Client]:
    with dbgateway.Client(server.address, timeout=120) as db:
        yield db


@pytest.mark.slow
@pytest.mark.parametrize(("database", "sql"), HUNDRED_THOUSAND)
def test_stream_gives_every_row_in_order_as_native_values(client, database, sql):
    rows = client.stream(sql, database=database)
    assert rows.columns is None  # nothing asked for yet
    expected = 1
    for n, label, day in rows:
        assert n == expected
        assert label == f"row {n}"
        if n % 9973 == 1:
            assert day == expected_day(database, n)
        expected += 1
    assert expected - 1 == COUNT
    assert rows.columns == ("n", "label", "day")
    assert rows.truncated is False


@pytest.mark.slow
@pytest.mark.parametrize(("database", "sql"), HUNDRED_THOUSAND)
async def test_the_async_stream_gives_every_row_in_order(server, database, sql):
    async with dbgateway.AsyncClient(server.address, timeout=120) as db:
        numbers = [row[0] async for row in db.stream(sql, database=database)]
    assert numbers == list(range(1, COUNT + 1))


@pytest.mark.parametrize("database", ["pg", "mysql", "lite"])
def test_max_rows_truncates_a_stream_and_says_so(client, database):
    sql = {
        "pg": "SELECT g AS n FROM generate_series(1, 100) AS g",
        "mysql": "SELECT CAST(seq AS SIGNED) AS n FROM seq_1_to_100",
        "lite": "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s "
        "WHERE n < 100) SELECT n FROM s",
    }[database]
    with client.stream(sql, database=database, max_rows=10) as rows:
        assert [n for (n,) in rows] == list(range(1, 11))
    assert rows.truncated is True


def test_an_empty_result_streams_no_rows_but_its_columns(client):
    rows = client.stream("SELECT 1 AS a, 2 AS b WHERE 1 = 0", database="pg")
    assert list(rows) == []
    assert rows.columns == ("a", "b")


def test_leaving_a_stream_early_stops_it_and_frees_the_connection(client):
    for _ in range(15):  # more than the pool's 8, so a leak would block
        with client.stream(ENDLESS, database="pg", timeout=10) as rows:
            assert next(rows)[0] == 1
    assert client.query("SELECT 1 AS one", database="pg").scalar() == 1


async def test_leaving_an_async_stream_early_stops_it(server):
    async with dbgateway.AsyncClient(server.address, timeout=10) as db:
        for _ in range(15):
            async with db.stream(ENDLESS, database="pg") as rows:
                async for n, _ in rows:
                    assert n == 1
                    break
        assert (await db.query("SELECT 1 AS one", database="pg")).scalar() == 1


@pytest.mark.parametrize("database", ["pg", "mysql", "lite"])
def test_a_failing_stream_raises_a_typed_error(client, database):
    with pytest.raises(dbgateway.SqlError) as info:
        list(client.stream("SELECT * FROM no_such_table_here", database=database))
    assert info.value.reason == "SQL_ERROR"
    if database == "pg":
        assert info.value.sqlstate == "42P01"


async def test_a_failing_async_stream_raises_a_typed_error(server):
    async with dbgateway.AsyncClient(server.address, timeout=10) as db:
        with pytest.raises(dbgateway.NotFound):
            async for _ in db.stream("SELECT 1", database="no_such_database"):
                pass
