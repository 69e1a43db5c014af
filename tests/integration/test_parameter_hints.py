"""Parameter mistakes a new user makes, answered with what to fix: another
engine's placeholder style, and a value of the wrong kind for a parameter."""

from __future__ import annotations

import grpc
import pytest

from dbgateway.v1 import database_service_pb2 as pb
from tests.support import V, call_error, unique_name

#: database -> (a statement written with another engine's placeholders, the hint)
MIXED_UP = [
    ("pg", "SELECT ? + 1 AS n", "PostgreSQL placeholders are $1, $2, ...; this statement uses ?"),
    (
        "pg",
        "SELECT %s::int AS n",
        "PostgreSQL placeholders are $1, $2, ...; this statement uses %s",
    ),
    ("lite", "SELECT %s + 1 AS n", "SQLite placeholders are ?, ?, ...; this statement uses %s"),
    ("mysql", "SELECT ? + 1 AS n", "MySQL placeholders are %s, %s, ...; this statement uses ?"),
    ("mysql", "SELECT $1 + 1 AS n", "MySQL placeholders are %s, %s, ...; this statement uses $1"),
]


def fail(db, request: pb.QueryRequest):
    with pytest.raises(grpc.RpcError) as info:
        db.Query(request, timeout=10)
    return call_error(info.value)


@pytest.mark.parametrize(("database", "sql", "hint"), MIXED_UP)
def test_another_engines_placeholder_gets_a_hint_naming_this_ones(db, database, sql, hint):
    err = fail(db, pb.QueryRequest(database=database, sql=sql, params=[V.of(int_value=1)]))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"(hint: {hint})" in err.message
    assert err.metadata["placeholder"] in ("$1", "%s", "?")
    reply = db.Query(pb.QueryRequest(database=database, sql="SELECT 1 AS one"), timeout=10)
    assert reply.rows[0].values[0] == V.of(int_value=1)


#: database -> (an insert written with another engine's placeholders, the hint)
MIXED_UP_BATCH = [
    (
        "pg",
        "INSERT INTO {t} (n) VALUES (?)",
        "PostgreSQL placeholders are $1, $2, ...; this statement uses ?",
    ),
    (
        "lite",
        "INSERT INTO {t} (n) VALUES (%s)",
        "SQLite placeholders are ?, ?, ...; this statement uses %s",
    ),
    (
        "mysql",
        "INSERT INTO {t} (n) VALUES (?)",
        "MySQL placeholders are %s, %s, ...; this statement uses ?",
    ),
]


@pytest.mark.parametrize(("database", "sql", "hint"), MIXED_UP_BATCH)
def test_a_batch_with_another_engines_placeholder_gets_the_same_hint(db, database, sql, hint):
    t = unique_name("hint")
    db.Execute(pb.ExecuteRequest(database=database, sql=f"CREATE TABLE {t} (n INT)"), timeout=10)
    param_sets = [pb.ParamSet(params=[V.of(int_value=i)]) for i in (1, 2)]
    with pytest.raises(grpc.RpcError) as info:
        db.ExecuteBatch(
            pb.ExecuteBatchRequest(database=database, sql=sql.format(t=t), param_sets=param_sets),
            timeout=10,
        )
    err = call_error(info.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"(hint: {hint})" in err.message
    assert err.metadata["placeholder"] in ("$1", "%s", "?")


def test_a_real_syntax_error_gets_no_placeholder_hint(db):
    err = fail(db, pb.QueryRequest(database="pg", sql="SELEC $1", params=[V.of(int_value=1)]))
    assert err.reason == "SQL_ERROR"
    assert "hint" not in err.message
    # A question mark inside a string literal is not a placeholder.
    err = fail(db, pb.QueryRequest(database="pg", sql="SELEC 'why?'"))
    assert "hint" not in err.message


def test_text_sent_for_an_integer_parameter_says_which_expected_what_sent(db):
    err = fail(
        db,
        pb.QueryRequest(
            database="pg",
            sql="SELECT $1::int + $2::int AS n",
            params=[V.of(int_value=1), V.of(string_value="41")],
        ),
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason == "INVALID_PARAMETER"
    assert err.message.startswith(
        "params[1]: $2 is int4 in this statement, but string_value was sent"
    )
    assert "send int_value" in err.message
    assert "$2::text::int4" in err.message
    assert "'str' object" not in err.message  # no Python in the answer
    assert "41" not in err.message  # nor the value itself
    assert err.field_violations[0][0] == "params[1]"
    assert (err.metadata["expected_type"], err.metadata["sent_kind"]) == ("int4", "string_value")
    # The suggested cast works.
    reply = db.Query(
        pb.QueryRequest(
            database="pg",
            sql="SELECT $1::int + $2::text::int4 AS n",
            params=[V.of(int_value=1), V.of(string_value="41")],
        ),
        timeout=10,
    )
    assert reply.rows[0].values[0] == V.of(int_value=42)
