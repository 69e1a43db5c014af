"""A call answers the same over a Session stream as over its unary RPC: the
same response, and for every row of the error table the same code, message
and details (timings and request ids aside)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from dbgateway.v1 import database_service_pb2 as pb
from tests.support import V, unique_name

PLACEHOLDER = {"pg": "$1", "mysql": "%s", "lite": "?"}
ENGINES = list(PLACEHOLDER)


@pytest.fixture(scope="module")
def tables(db) -> dict[str, str]:
    names = {}
    for database in ENGINES:
        table = unique_name("parity")
        key = "INT PRIMARY KEY" if database == "mysql" else "INTEGER PRIMARY KEY"
        db.Execute(
            pb.ExecuteRequest(
                database=database,
                sql=f"CREATE TABLE {table} (id {key}, email VARCHAR(100) NOT NULL UNIQUE)",
            )
        )
        db.Execute(
            pb.ExecuteRequest(
                database=database,
                sql=f"INSERT INTO {table} (id, email) VALUES (1, 'a@x'), (2, 'b@x')",
            )
        )
        names[database] = table
    return names


def timeout(seconds: float) -> pb.RequestOptions:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(seconds * 1e9))
    return pb.RequestOptions(timeout=value)


Case = Callable[[str, str], tuple[str, Any]]

SLEEP = {
    "pg": "SELECT pg_sleep(5)",
    "mysql": "SELECT SLEEP(5)",
    "lite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
}

#: What a call does, per engine: (kind, request). Successes first, then one
#: case per row of the error table this server can produce.
CASES: dict[str, Case] = {
    "query_rows": lambda d, t: (
        "query",
        pb.QueryRequest(database=d, sql=f"SELECT id, email FROM {t} ORDER BY id"),
    ),
    "query_columnar": lambda d, t: (
        "query",
        pb.QueryRequest(
            database=d,
            sql=f"SELECT id, email FROM {t} ORDER BY id",
            options=pb.RequestOptions(encoding=pb.RESULT_ENCODING_COLUMNS),
        ),
    ),
    "query_truncated": lambda d, t: (
        "query",
        pb.QueryRequest(
            database=d, sql=f"SELECT id FROM {t} ORDER BY id", options=pb.RequestOptions(max_rows=1)
        ),
    ),
    "execute_update": lambda d, t: (
        "execute",
        pb.ExecuteRequest(
            database=d,
            sql=f"UPDATE {t} SET email = email WHERE id = {PLACEHOLDER[d]}",
            params=[V.of(int_value=1)],
        ),
    ),
    "execute_batch": lambda d, t: (
        "execute_batch",
        pb.ExecuteBatchRequest(
            database=d,
            sql=f"UPDATE {t} SET email = email WHERE id = {PLACEHOLDER[d]}",
            param_sets=[pb.ParamSet(params=[V.of(int_value=i)]) for i in (1, 2, 3)],
        ),
    ),
    "run_transaction": lambda d, t: (
        "run_transaction",
        pb.RunTransactionRequest(
            database=d,
            statements=[
                pb.Statement(sql=f"SELECT count(*) AS n FROM {t}"),
                pb.Statement(sql=f"UPDATE {t} SET email = email WHERE id = 2"),
            ],
        ),
    ),
    "SQL_ERROR": lambda d, t: ("query", pb.QueryRequest(database=d, sql="SELEC 1")),
    "wrong_parameter_count": lambda d, t: (
        "query",
        pb.QueryRequest(
            database=d,
            sql=f"SELECT id FROM {t} WHERE id = {PLACEHOLDER[d]}",
            params=[V.of(int_value=1), V.of(int_value=2)],
        ),
    ),
    "UNIQUE_VIOLATION": lambda d, t: (
        "execute",
        pb.ExecuteRequest(database=d, sql=f"INSERT INTO {t} (id, email) VALUES (9, 'a@x')"),
    ),
    "CONSTRAINT_VIOLATION": lambda d, t: (
        "execute",
        pb.ExecuteRequest(database=d, sql=f"INSERT INTO {t} (id, email) VALUES (9, NULL)"),
    ),
    "UNKNOWN_DATABASE": lambda d, t: ("query", pb.QueryRequest(database="nope", sql="SELECT 1")),
    "INVALID_REQUEST": lambda d, t: ("query", pb.QueryRequest(database=d, sql="  ")),
    "UNSUPPORTED_STATEMENT": lambda d, t: ("execute", pb.ExecuteRequest(database=d, sql="BEGIN")),
    "TRANSACTION_NOT_FOUND": lambda d, t: (
        "query",
        pb.QueryRequest(database=d, sql="SELECT 1", transaction_id="no-such-transaction"),
    ),
    "STATEMENT_TIMEOUT": lambda d, t: (
        "query",
        pb.QueryRequest(database=d, sql=SLEEP[d], options=timeout(0.3)),
    ),
    "batch_SQL_ERROR": lambda d, t: (
        "execute_batch",
        pb.ExecuteBatchRequest(
            database=d,
            sql=f"INSERT INTO {t} (id, email) VALUES ({PLACEHOLDER[d]}, 'a@x')",
            param_sets=[pb.ParamSet(params=[V.of(int_value=50)])],
        ),
    ),
    "transaction_statement_error": lambda d, t: (
        "run_transaction",
        pb.RunTransactionRequest(
            database=d,
            statements=[pb.Statement(sql="SELECT 1"), pb.Statement(sql="SELEC 2")],
        ),
    ),
}

UNARY = {
    "query": "Query",
    "execute": "Execute",
    "execute_batch": "ExecuteBatch",
    "run_transaction": "RunTransaction",
}


def normalized_status(status: status_pb2.Status) -> tuple[Any, ...]:
    details = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            metadata = {k: v for k, v in info.metadata.items() if k != "request_id"}
            details.append(("ErrorInfo", info.domain, info.reason, tuple(sorted(metadata.items()))))
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            details.append(("RetryInfo",))
        else:
            details.append((detail.type_url, detail.value))
    message = re.sub(r"request id \w+(\.\d+)?", "request id _", status.message)
    return (status.code, message, tuple(details))


def normalized_response(response: Any) -> bytes:
    copy = type(response)()
    copy.CopyFrom(response)
    if "stats" in type(copy).DESCRIPTOR.fields_by_name:
        copy.stats.ClearField("elapsed")
    return copy.SerializeToString(deterministic=True)


def unary(db, kind: str, request: Any) -> tuple[str, Any]:
    try:
        return "ok", normalized_response(getattr(db, UNARY[kind])(request, timeout=30))
    except grpc.RpcError as exc:
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None, "every failure carries google.rpc.Status details"
    return "error", normalized_status(status)


def over_session(db, kind: str, request: Any) -> tuple[str, Any]:
    call = pb.SessionCall(id=1, **{kind: request})
    call.timeout.CopyFrom(duration_pb2.Duration(seconds=30))
    (response,) = list(db.Session(iter([pb.SessionRequest(calls=[call])]), timeout=30))
    (result,) = response.results
    assert result.id == 1
    if result.WhichOneof("result") == "error":
        return "error", normalized_status(result.error)
    return "ok", normalized_response(getattr(result, kind))


@pytest.mark.parametrize("database", ENGINES)
@pytest.mark.parametrize("case", list(CASES))
def test_unary_and_session_answer_alike(db, tables, database, case):
    kind, request = CASES[case](database, tables[database])
    expected = unary(db, kind, request)
    got = over_session(db, kind, request)
    assert got == expected
    if case.isupper():  # named after the reason it must produce
        assert got[0] == "error"
        (info,) = [d for d in got[1][2] if d[0] == "ErrorInfo"]
        assert info[2] == case


def test_an_unreachable_database_answers_alike(db):
    # Whatever the breaker's state, both transports see the same code and reason.
    request = pb.QueryRequest(database="down", sql="SELECT 1")
    unary_kind, unary_status = unary(db, "query", request)
    session_kind, session_status = over_session(db, "query", request)
    assert unary_kind == session_kind == "error"
    assert unary_status[0] == session_status[0] == grpc.StatusCode.UNAVAILABLE.value[0]
    reasons = {
        d[2] for status in (unary_status, session_status) for d in status[2] if d[0] == "ErrorInfo"
    }
    assert reasons <= {"DATABASE_UNAVAILABLE", "CIRCUIT_OPEN"}
