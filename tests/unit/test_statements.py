from __future__ import annotations

import pytest

from dbgateway_server.errors import GatewayError, Reason
from dbgateway_server.statements import check_statement

REFUSED = [
    "BEGIN",
    "begin transaction isolation level serializable",
    "START TRANSACTION",
    "COMMIT",
    "END",
    "ROLLBACK",
    "ABORT",
    "SAVEPOINT a",
    "RELEASE SAVEPOINT a",
    "SET search_path TO evil",
    "set session characteristics as transaction read only",
    "SET @x = 1",
    "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    "RESET ALL",
    "DISCARD ALL",
    "USE otherdb",
    "LISTEN jobs",
    "UNLISTEN *",
    "PREPARE q AS SELECT 1",
    "DECLARE c CURSOR FOR SELECT 1",
    "LOCK TABLES t WRITE",
    "UNLOCK TABLES",
    "CREATE TEMP TABLE x (a int)",
    "CREATE TEMPORARY TABLE x (a int)",
    "create local temporary table x (a int)",
    "ATTACH DATABASE 'x.db' AS x",
    "PRAGMA journal_mode = DELETE",
    "  -- leading comment\n  BEGIN",
    "/* block\n comment */ COMMIT",
    "(BEGIN)",
    # MySQL reads these comments differently from the others: none hides a keyword.
    "/*!SET autocommit=0*/",
    "/*!50000 SET autocommit=0*/",
    "/*M!100000 SET SESSION sql_mode = ''*/",
    "#x\nSET autocommit=0",
    "# comment\nCOMMIT",
    # PostgreSQL nests block comments: this SET is what it runs.
    "/* /* */ SELECT 1 */ SET statement_timeout = 5",
    # MySQL does not: this SET is what it runs.
    "/* /* */ SET autocommit=0 /* */",
    "PRAGMA foreign_keys(0)",
    "PRAGMA main.recursive_triggers = 1",
    'PRAGMA "query_only"(0)',
]

ALLOWED = [
    "SELECT 1",
    "  select * from t",
    "WITH x AS (SELECT 1) SELECT * FROM x",
    "INSERT INTO t VALUES (1)",
    "UPDATE settings SET value = 1",
    "CREATE TABLE t (a int)",
    "SET LOCAL statement_timeout = 1000",
    "PRAGMA table_info(t)",
    "PRAGMA main.index_list(t)",
    "PRAGMA foreign_keys",
    "/* a comment */ SELECT 1",
    "/*+ hint */ SELECT 1",
    "-- only a comment",
    "SELECT 'BEGIN'",
    "beginning_of_name_is_not_a_keyword()",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_session_state_statements_are_refused_outside_transactions(sql):
    with pytest.raises(GatewayError) as info:
        check_statement(sql)
    assert info.value.reason is Reason.UNSUPPORTED_STATEMENT
    assert "refused" in info.value.message


@pytest.mark.parametrize("sql", ALLOWED)
def test_ordinary_statements_pass(sql):
    check_statement(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SAVEPOINT a",
        "RELEASE SAVEPOINT a",
        "ROLLBACK TO SAVEPOINT a",
        "SET LOCAL lock_timeout = '1s'",
        "CREATE TEMP TABLE x (a int) ON COMMIT DROP",
        "LOCK TABLE t IN EXCLUSIVE MODE",
    ],
)
def test_transaction_scoped_statements_are_allowed_inside_transactions(sql):
    check_statement(sql, in_transaction=True)


@pytest.mark.parametrize("sql", ["COMMIT", "BEGIN", "ROLLBACK", "SET search_path = x", "USE db"])
def test_transaction_control_is_refused_inside_transactions(sql):
    with pytest.raises(GatewayError):
        check_statement(sql, in_transaction=True)


def test_refusal_points_to_the_transaction_rpcs():
    with pytest.raises(GatewayError) as info:
        check_statement("BEGIN")
    assert "BeginTransaction" in info.value.message
