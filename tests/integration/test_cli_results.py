"""`dbgateway query` with results people actually look at: big ones (streamed,
or cut with --max-rows), MySQL TIME values, and a write sent through `query`."""

from __future__ import annotations

from tests.integration.test_client_cli import dbgateway
from tests.support import unique_name

#: One row more than a unary Query may return by default (max_result_rows).
TOO_MANY = 100_001
COUNT_TO = (
    "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < ?) "
    "SELECT n, 'row ' || n AS label FROM c"
)


def test_a_result_too_large_for_query_says_to_stream_or_cut_it(server):
    result = dbgateway("query", "-d", "lite", COUNT_TO, f"int:{TOO_MANY}", server=server)
    assert result.returncode == 1
    first, hint = result.stderr.splitlines()
    assert first.startswith("dbgateway: RESOURCE_EXHAUSTED RESULT_TOO_LARGE: ")
    assert hint == (
        "dbgateway: hint: add --stream to print a result of any size as it arrives, "
        "or --max-rows N to see the first N rows"
    )


def test_stream_prints_every_row_of_a_result_of_any_size(server):
    result = dbgateway(
        "query", "--stream", "-d", "lite", COUNT_TO, f"int:{TOO_MANY}", server=server
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "n\tlabel"
    assert lines[1] == "1\trow 1"
    assert lines[-2] == f"{TOO_MANY}\trow {TOO_MANY}"
    assert lines[-1] == f"({TOO_MANY} rows)"
    assert len(lines) == TOO_MANY + 2


def test_stream_with_max_rows_and_json(server):
    result = dbgateway(
        "query", "--stream", "--max-rows", "3", "-d", "lite", COUNT_TO, "int:50", server=server
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "n\tlabel",
        "1\trow 1",
        "2\trow 2",
        "3\trow 3",
        "(3 rows) (truncated: more rows were available)",
    ]
    result = dbgateway(
        "query", "--stream", "--json", "-d", "lite", COUNT_TO, "int:2", server=server
    )
    assert result.stdout.splitlines() == [
        '{"n": 1, "label": "row 1"}',
        '{"n": 2, "label": "row 2"}',
    ]


def test_max_rows_cuts_a_unary_result(server):
    result = dbgateway(
        "query", "--max-rows", "2", "-d", "lite", COUNT_TO, f"int:{TOO_MANY}", server=server
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "(2 rows) (truncated: more rows were available)"


def test_mysql_time_prints_as_the_database_writes_it(server):
    result = dbgateway(
        "query",
        "-d",
        "mysql",
        "SELECT CAST('10:11:12' AS TIME) AS t, CAST('-838:59:59' AS TIME) AS lowest, "
        "CAST('01:02:03.250000' AS TIME(6)) AS fine",
        server=server,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[2].split(" | ") == [
        "10:11:12",
        "-838:59:59",
        "01:02:03.250000",
    ]
    assert "PT" not in result.stdout


def test_a_write_through_query_is_not_silent(server):
    table = unique_name("written")
    assert (
        dbgateway(
            "exec", "-d", "lite", f"CREATE TABLE {table} (n INTEGER)", server=server
        ).returncode
        == 0
    )
    result = dbgateway("query", "-d", "lite", f"INSERT INTO {table} VALUES (1)", server=server)
    assert result.returncode == 0
    assert "the statement returned no result set" in result.stderr
    assert "dbgateway exec" in result.stderr
