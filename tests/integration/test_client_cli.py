"""`dbgateway query / exec / health` as people and Docker's HEALTHCHECK run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support import BIN, ServerProcess, unique_name


def dbgateway(
    *args: str, server: ServerProcess | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DBGATEWAY_")}
    if server is not None:
        environ["DBGATEWAY_SERVER"] = server.address
    environ.update(env)
    return subprocess.run(
        [str(BIN / "dbgateway"), *args], capture_output=True, text=True, timeout=60, env=environ
    )


@pytest.fixture(scope="module")
def notes(server) -> str:
    table = unique_name("notes")
    for sql, *params in [
        (
            f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, body TEXT NOT NULL, stars REAL, tag BLOB)",
        ),
        (
            f"INSERT INTO {table} (id, body, stars, tag) VALUES (?, ?, ?, ?)",
            "int:1",
            "hello",
            "float:4.5",
            "bytes:00ff",
        ),
        (
            f"INSERT INTO {table} (id, body, stars, tag) VALUES (?, ?, ?, ?)",
            "int:10",
            "two\nlines",
            "null:",
            "null:",
        ),
    ]:
        result = dbgateway("exec", "--database", "lite", sql, *params, server=server)
        assert result.returncode == 0, result.stderr
    return table


def test_query_prints_an_aligned_table(server, notes):
    result = dbgateway(
        "query",
        "-d",
        "lite",
        f"SELECT id, body, stars, tag FROM {notes} WHERE id >= ? ORDER BY id",
        "int:1",
        server=server,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "id | body       | stars | tag\n"
        "---+------------+-------+-------\n"
        " 1 | hello      |   4.5 | \\x00ff\n"
        "10 | two\\nlines | NULL  | NULL\n"
        "(2 rows)\n"
    )
    assert result.stderr == ""


def test_query_json_prints_one_object_per_row(server, notes):
    result = dbgateway(
        "query",
        "--json",
        "--database",
        "lite",
        f"SELECT id, body, stars, tag FROM {notes} ORDER BY id",
        server=server,
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows == [
        {"id": 1, "body": "hello", "stars": 4.5, "tag": "AP8="},
        {"id": 10, "body": "two\nlines", "stars": None, "tag": None},
    ]


def test_query_json_keeps_exact_and_rich_values_as_text(server):
    result = dbgateway(
        "query", "--json", "-d", "pg",
        "SELECT $1::numeric AS amount, $2::date AS day, $3::jsonb AS doc, $4::uuid AS id, '1 day 2 hours'::interval AS span",
        "decimal:12.50", "date:2024-02-29", 'json:{"a": [1]}', "uuid:12345678-1234-5678-1234-567812345678",
        server=server,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "amount": "12.50",
        "day": "2024-02-29",
        "doc": {"a": [1]},
        "id": "12345678-1234-5678-1234-567812345678",
        "span": "P1DT7200S",
    }


def test_exec_reports_rows_affected_and_last_insert_id(server, notes):
    result = dbgateway(
        "exec",
        "-d",
        "lite",
        f"UPDATE {notes} SET stars = ? WHERE id = ?",
        "float:5",
        "int:1",
        server=server,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("rows affected: 1")
    result = dbgateway(
        "exec",
        "--json",
        "-d",
        "lite",
        f"INSERT INTO {notes} (body) VALUES (?)",
        "third",
        server=server,
    )
    assert json.loads(result.stdout) == {"rows_affected": 1, "last_insert_id": 11}


def test_a_failure_is_one_line_with_code_reason_and_message(server, notes):
    result = dbgateway(
        "exec", "-d", "lite", f"INSERT INTO {notes} (id, body) VALUES (1, 'again')", server=server
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert (
        result.stderr
        == f"dbgateway: ALREADY_EXISTS UNIQUE_VIOLATION: UNIQUE constraint failed: {notes}.id\n"
    )


def test_a_bad_parameter_is_a_usage_error(server):
    result = dbgateway("query", "-d", "lite", "SELECT ?", "int:five", server=server)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "dbgateway: 'int:five' is not a valid int: invalid literal for int() with base 10: 'five'"
    )


def test_health_exit_codes_serving_not_serving_unreachable(server):
    serving = dbgateway("health", server=server)
    assert (serving.returncode, serving.stdout) == (0, "SERVING\n")
    database = dbgateway("health", "--service", "db/lite", "--server", server.address)
    assert (database.returncode, database.stdout) == (0, "SERVING\n")
    down = dbgateway("health", "--service", "db/down", server=server)
    assert (down.returncode, down.stdout) == (1, "NOT_SERVING\n")
    unreachable = dbgateway("health", "--server", "127.0.0.1:1", "--timeout", "2")
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith("dbgateway: UNAVAILABLE: ")
    assert len(unreachable.stderr.splitlines()) == 1
    assert "Traceback" not in unreachable.stderr


def test_the_client_commands_need_no_server_driver(server):
    """A plain `pip install dbgateway` has no asyncpg, aiomysql, ...: the client
    commands must still work."""
    blocked = [
        "asyncpg",
        "aiomysql",
        "pymysql",
        "aiosqlite",
        "tenacity",
        "uvloop",
        "grpc_health",
        "grpc_reflection",
    ]
    script = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "from dbgateway_server.cli import main\n"
        f"sys.exit(main(['query', '--server', {server.address!r}, '-d', 'lite', 'SELECT 42 AS answer']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == ("answer\n------\n    42\n(1 row)".splitlines()[-2:])


def test_databases_takes_the_shared_connection_options(server):
    """`databases` is a client command: DBGATEWAY_SERVER and the shared
    flags work, and it runs with the server's drivers (and prometheus_client)
    blocked."""
    listed = dbgateway("databases", server=server)
    assert listed.returncode == 0, listed.stderr
    table = listed.stdout.partition("\n\n")[0]  # then why open circuits are open
    names = [line.split()[0] for line in table.splitlines()[1:]]
    assert names == ["down", "lite", "mysql", "pg"]
    blocked = ["asyncpg", "aiomysql", "aiosqlite", "prometheus_client", "uvloop"]
    script = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "from dbgateway._cli import add_commands, run\n"
        "import argparse\n"
        "parser = argparse.ArgumentParser()\n"
        "add_commands(parser.add_subparsers(dest='command'))\n"
        f"args = parser.parse_args(['databases', '--server', {server.address!r}, '--timeout', '5'])\n"
        "sys.exit(run(args))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("NAME")
    unreachable = dbgateway("databases", "--server", "127.0.0.1:1", "--timeout", "1")
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith("dbgateway: ")
    assert len(unreachable.stderr.splitlines()) == 1
