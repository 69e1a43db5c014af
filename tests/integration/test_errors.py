"""Failures come back with the right gRPC code and details, per engine, and the
server keeps serving after each."""

from __future__ import annotations

import grpc
import pytest

from dbgateway.v1 import database_service_pb2 as pb
from tests.support import V, call_error, unique_name

PLACEHOLDER = {"pg": "$1", "mysql": "%s", "lite": "?"}
ENGINES = list(PLACEHOLDER)


def fail(call, request):
    with pytest.raises(grpc.RpcError) as info:
        call(request)
    return call_error(info.value)


def still_serving(db, database: str) -> None:
    reply = db.Query(pb.QueryRequest(database=database, sql="SELECT 1 AS one"))
    assert reply.rows[0].values[0] == V.of(int_value=1)


@pytest.fixture(scope="module")
def tables(db):
    """A parent/child pair with a unique key, NOT NULL and a foreign key on each engine."""
    names = {}
    for database in ENGINES:
        parent, child = unique_name("parent"), unique_name("child")
        key = "INTEGER PRIMARY KEY" if database != "mysql" else "INT PRIMARY KEY"
        db.Execute(
            pb.ExecuteRequest(
                database=database,
                sql=f"CREATE TABLE {parent} (id {key}, email VARCHAR(100) NOT NULL UNIQUE)",
            )
        )
        db.Execute(
            pb.ExecuteRequest(
                database=database,
                sql=f"CREATE TABLE {child} (id {key}, parent_id INT NOT NULL "
                f"REFERENCES {parent}(id))",
            )
        )
        db.Execute(
            pb.ExecuteRequest(
                database=database, sql=f"INSERT INTO {parent} (id, email) VALUES (1, 'a@x')"
            )
        )
        names[database] = (parent, child)
    return names


@pytest.mark.parametrize(
    ("database", "sqlstate", "vendor"),
    [("pg", "42601", None), ("mysql", "42000", "1064"), ("lite", None, "SQLITE_ERROR")],
)
def test_syntax_error_is_invalid_argument_with_sqlstate(db, database, sqlstate, vendor):
    err = fail(db.Query, pb.QueryRequest(database=database, sql="SELEC 1"))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason == "SQL_ERROR"
    assert err.metadata.get("sqlstate") == sqlstate
    assert err.metadata.get("vendor_code") == vendor
    assert err.metadata["database"] == database
    assert err.metadata["engine"] in ("postgresql", "mysql", "sqlite")
    assert "Traceback" not in err.message
    still_serving(db, database)


@pytest.mark.parametrize("database", ENGINES)
def test_undefined_table_is_invalid_argument(db, database):
    err = fail(db.Query, pb.QueryRequest(database=database, sql="SELECT * FROM no_such_table"))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason == "SQL_ERROR"
    assert "no_such_table" in err.message
    still_serving(db, database)


@pytest.mark.parametrize("database", ENGINES)
def test_unique_violation_maps_to_already_exists(db, tables, database):
    parent, _ = tables[database]
    p = PLACEHOLDER[database]
    err = fail(
        db.Execute,
        pb.ExecuteRequest(
            database=database,
            sql=f"INSERT INTO {parent} (id, email) VALUES (2, {p})",
            params=[V.of(string_value="a@x")],
        ),
    )
    assert err.code == grpc.StatusCode.ALREADY_EXISTS
    assert err.reason == "UNIQUE_VIOLATION"
    if database == "pg":
        assert err.metadata["sqlstate"] == "23505"
        assert err.metadata["constraint"] == f"{parent}_email_key"
    if database == "mysql":
        assert err.metadata["vendor_code"] == "1062"
    still_serving(db, database)


@pytest.mark.parametrize("database", ENGINES)
def test_not_null_violation_maps_to_failed_precondition(db, tables, database):
    parent, _ = tables[database]
    err = fail(
        db.Execute,
        pb.ExecuteRequest(
            database=database,
            sql=f"INSERT INTO {parent} (id, email) VALUES (3, {PLACEHOLDER[database]})",
            params=[V.null()],
        ),
    )
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == "CONSTRAINT_VIOLATION"
    still_serving(db, database)


@pytest.mark.parametrize("database", ENGINES)
def test_foreign_key_violation_maps_to_failed_precondition(db, tables, database):
    _, child = tables[database]
    err = fail(
        db.Execute,
        pb.ExecuteRequest(
            database=database, sql=f"INSERT INTO {child} (id, parent_id) VALUES (1, 999)"
        ),
    )
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == "CONSTRAINT_VIOLATION"
    if database == "pg":
        assert err.metadata["sqlstate"] == "23503"
    if database == "mysql":
        assert err.metadata["vendor_code"] == "1452"
    still_serving(db, database)


def test_unknown_database_is_not_found(db):
    err = fail(db.Query, pb.QueryRequest(database="nope", sql="SELECT 1"))
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert err.reason == "UNKNOWN_DATABASE"
    assert "pg" in err.message  # lists what is configured


def test_database_is_required_when_several_are_configured(db):
    err = fail(db.Query, pb.QueryRequest(sql="SELECT 1"))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.field_violations == [("database", "required")]


@pytest.mark.parametrize("database", ENGINES)
@pytest.mark.parametrize(
    "sql",
    [
        "BEGIN",
        "  -- comment\n  start transaction",
        "COMMIT",
        "ROLLBACK",
        "SET search_path = x",
        "/* hi */ SET @a = 1",
        "SAVEPOINT s1",
        "LISTEN channel",
        "USE other",
        "CREATE TEMP TABLE tmp_x (a int)",
        "PRAGMA foreign_keys = OFF",
    ],
)
def test_session_state_statements_are_refused(db, database, sql):
    err = fail(db.Execute, pb.ExecuteRequest(database=database, sql=sql))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == "UNSUPPORTED_STATEMENT"
    assert "Transaction" in err.message or "pooled connection" in err.message
    still_serving(db, database)


@pytest.mark.parametrize("database", ENGINES)
def test_wrong_parameter_count_is_invalid_argument(db, database):
    p = PLACEHOLDER[database]
    err = fail(
        db.Query,
        pb.QueryRequest(
            database=database,
            sql=f"SELECT {p} AS a",
            params=[V.of(int_value=1), V.of(int_value=2)],
        ),
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    still_serving(db, database)


@pytest.mark.parametrize(
    ("database", "column", "value"),
    [
        ("pg", "INTEGER", V.of(string_value="abc")),
        ("mysql", "INTEGER", V.of(string_value="abc")),
        ("lite", "INTEGER", V.of(string_value="abc")),
        ("lite", "INTEGER", V.of(uint_value=2**64 - 1)),
    ],
)
def test_wrong_parameter_type_is_invalid_parameter(db, database, column, value):
    table = unique_name("typed")
    strict = " STRICT" if database == "lite" else ""
    db.Execute(
        pb.ExecuteRequest(database=database, sql=f"CREATE TABLE {table} (a {column}){strict}")
    )
    err = fail(
        db.Execute,
        pb.ExecuteRequest(
            database=database,
            sql=f"INSERT INTO {table} (a) VALUES ({PLACEHOLDER[database]})",
            params=[value],
        ),
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason == "INVALID_PARAMETER"
    rows = db.Query(pb.QueryRequest(database=database, sql=f"SELECT count(*) FROM {table}"))
    assert rows.rows[0].values[0] == V.of(int_value=0)


def test_malformed_parameter_text_names_the_parameter(db):
    err = fail(
        db.Query,
        pb.QueryRequest(
            database="pg",
            sql="SELECT $1::int + 1, $2::numeric",
            params=[V.of(int_value=1), V.of(decimal_value="12,5")],
        ),
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason == "INVALID_PARAMETER"
    assert err.field_violations[0][0] == "params[1]"


def test_empty_sql_is_invalid_argument(db):
    err = fail(db.Query, pb.QueryRequest(database="pg", sql="   "))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.field_violations == [("sql", "must not be empty")]


@pytest.mark.parametrize("database", ENGINES)
def test_execute_reports_rows_affected_last_insert_id_and_returning(db, database):
    table = unique_name("ins")
    key = {
        "pg": "BIGSERIAL PRIMARY KEY",
        "mysql": "BIGINT AUTO_INCREMENT PRIMARY KEY",
        "lite": "INTEGER PRIMARY KEY",
    }[database]
    db.Execute(pb.ExecuteRequest(database=database, sql=f"CREATE TABLE {table} (id {key}, n INT)"))
    first = db.Execute(
        pb.ExecuteRequest(database=database, sql=f"INSERT INTO {table} (n) VALUES (1), (2), (3)")
    )
    assert first.rows_affected == 3
    if database == "pg":
        assert not first.HasField("last_insert_id")  # PostgreSQL has no such thing
    else:
        assert first.HasField("last_insert_id")
    returned = db.Execute(
        pb.ExecuteRequest(
            database=database, sql=f"INSERT INTO {table} (n) VALUES (42) RETURNING id, n"
        )
    )
    assert [c.name for c in returned.columns] == ["id", "n"]
    assert returned.rows[0].values[0] == V.of(int_value=4)
    assert returned.rows[0].values[1] == V.of(int_value=42)
    updated = db.Execute(
        pb.ExecuteRequest(database=database, sql=f"UPDATE {table} SET n = n + 1 WHERE n < 3")
    )
    assert updated.rows_affected == 2
    assert not updated.HasField("last_insert_id")  # an UPDATE inserted nothing


@pytest.mark.parametrize("database", ENGINES)
def test_max_rows_truncates_and_says_so(db, database):
    sql = {
        "pg": "SELECT g FROM generate_series(1, 10) AS g",
        "mysql": "SELECT CAST(seq AS SIGNED) AS g FROM seq_1_to_10",  # seq is UNSIGNED
        "lite": "WITH RECURSIVE c(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM c WHERE g < 10) SELECT g FROM c",
    }[database]
    capped = db.Query(
        pb.QueryRequest(database=database, sql=sql, options=pb.RequestOptions(max_rows=4))
    )
    assert [r.values[0].int_value for r in capped.rows] == [1, 2, 3, 4]
    assert capped.truncated
    whole = db.Query(
        pb.QueryRequest(database=database, sql=sql, options=pb.RequestOptions(max_rows=10))
    )
    assert len(whole.rows) == 10
    assert not whole.truncated
    assert whole.stats.rows == 10
