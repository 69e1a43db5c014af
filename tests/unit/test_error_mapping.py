"""Every driver exception maps to a deliberate gRPC code: a walk over asyncpg's
exception tree, PyMySQL's families and sqlite3's error codes fails as soon as
one of them would fall through to a catch-all."""

from __future__ import annotations

import inspect
import sqlite3

import asyncpg.exceptions as pgexc
import asyncpg.exceptions._base as pgbase
import grpc
import pymysql.err
import pytest
from google.rpc import error_details_pb2

from dbgateway_server.backends import mysql as mysql_backend
from dbgateway_server.backends import postgres as pg_backend
from dbgateway_server.backends import sqlite as sqlite_backend
from dbgateway_server.errors import (
    _SQLITE_PRIMARY_NAMES,
    STATUS_CODES,
    GatewayError,
    Reason,
    reason_for_mysql_errno,
    reason_for_sqlstate,
    to_rpc_status,
)


def _all_subclasses(cls: type) -> list[type]:
    seen, todo = [], [cls]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in seen:
                seen.append(sub)
                todo.append(sub)
    return seen


ASYNCPG_SERVER_ERRORS = [
    c for c in _all_subclasses(pgexc.PostgresError) if getattr(c, "sqlstate", None)
]
ASYNCPG_CLIENT_ERRORS = sorted(
    {
        c
        for namespace in (vars(pgexc), vars(pgbase))
        for c in namespace.values()
        if inspect.isclass(c)
        and issubclass(c, Exception)
        and not issubclass(c, Warning | pgexc.PostgresError)
        and c.__module__.startswith("asyncpg")
    },
    key=lambda c: c.__name__,
)


def test_every_reason_has_a_grpc_code():
    assert set(STATUS_CODES) == set(Reason)


def test_the_walk_covers_asyncpgs_whole_tree():
    assert len(ASYNCPG_SERVER_ERRORS) > 200
    assert pgbase.DataError in ASYNCPG_CLIENT_ERRORS  # the client-side one


@pytest.mark.parametrize("cls", ASYNCPG_SERVER_ERRORS, ids=lambda c: f"{c.__name__}-{c.sqlstate}")
def test_every_asyncpg_server_error_has_a_deliberate_reason(cls):
    assert reason_for_sqlstate(cls.sqlstate) is not None, (
        f"{cls.__name__} (SQLSTATE {cls.sqlstate}) is not in the SQLSTATE table"
    )
    error = pg_backend.translate(cls("boom"), "db")
    assert error is not None
    assert error.metadata["sqlstate"] == cls.sqlstate
    assert error.metadata["engine"] == "postgresql"


@pytest.mark.parametrize("cls", ASYNCPG_CLIENT_ERRORS, ids=lambda c: c.__name__)
def test_every_asyncpg_client_error_is_mapped(cls):
    try:
        exc = cls("boom")
    except TypeError:
        exc = cls.__new__(cls)
    error = pg_backend.translate(exc, "db")
    assert error is not None, f"{cls.__name__} is not translated"
    assert error.reason is not Reason.INTERNAL


def test_a_parameter_the_codec_rejects_is_invalid_parameter():
    error = pg_backend.translate(pgbase.DataError("invalid input for query argument $1"), "db")
    assert error.reason is Reason.INVALID_PARAMETER


@pytest.mark.parametrize(
    ("sqlstate", "code", "reason"),
    [
        ("42601", grpc.StatusCode.INVALID_ARGUMENT, Reason.SQL_ERROR),
        ("42P01", grpc.StatusCode.INVALID_ARGUMENT, Reason.SQL_ERROR),
        ("22P02", grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_PARAMETER),
        ("23505", grpc.StatusCode.ALREADY_EXISTS, Reason.UNIQUE_VIOLATION),
        ("23503", grpc.StatusCode.FAILED_PRECONDITION, Reason.CONSTRAINT_VIOLATION),
        ("23502", grpc.StatusCode.FAILED_PRECONDITION, Reason.CONSTRAINT_VIOLATION),
        ("40001", grpc.StatusCode.ABORTED, Reason.SERIALIZATION_FAILURE),
        ("40P01", grpc.StatusCode.ABORTED, Reason.DEADLOCK),
        ("55P03", grpc.StatusCode.ABORTED, Reason.LOCK_TIMEOUT),
        ("57014", grpc.StatusCode.DEADLINE_EXCEEDED, Reason.STATEMENT_TIMEOUT),
        ("42501", grpc.StatusCode.PERMISSION_DENIED, Reason.PERMISSION_DENIED),
        ("28P01", grpc.StatusCode.PERMISSION_DENIED, Reason.PERMISSION_DENIED),
        ("08006", grpc.StatusCode.UNAVAILABLE, Reason.DATABASE_UNAVAILABLE),
        ("25006", grpc.StatusCode.PERMISSION_DENIED, Reason.READ_ONLY),
        ("0A000", grpc.StatusCode.UNIMPLEMENTED, Reason.UNSUPPORTED),
    ],
)
def test_design_table_rows_for_sqlstates(sqlstate, code, reason):
    assert reason_for_sqlstate(sqlstate) is reason
    assert STATUS_CODES[reason] == code


PYMYSQL_CLASSES = [pymysql.err.Error, *_all_subclasses(pymysql.err.Error)]


@pytest.mark.parametrize("cls", PYMYSQL_CLASSES, ids=lambda c: c.__name__)
def test_every_pymysql_error_family_is_mapped(cls):
    for errno in (0, 1105, 2013):
        error = mysql_backend.translate(cls(errno, "boom"), "db")
        assert error is not None
        assert error.reason is not Reason.INTERNAL
    assert mysql_backend.translate(cls(2013, "lost"), "db").reason is Reason.DATABASE_UNAVAILABLE


@pytest.mark.parametrize(
    ("errno", "reason"),
    [
        (1064, Reason.SQL_ERROR),
        (1146, Reason.SQL_ERROR),
        (1054, Reason.SQL_ERROR),
        (1062, Reason.UNIQUE_VIOLATION),
        (1451, Reason.CONSTRAINT_VIOLATION),
        (1452, Reason.CONSTRAINT_VIOLATION),
        (1048, Reason.CONSTRAINT_VIOLATION),
        (1213, Reason.DEADLOCK),
        (1205, Reason.LOCK_TIMEOUT),
        (3024, Reason.STATEMENT_TIMEOUT),
        (1969, Reason.STATEMENT_TIMEOUT),
        (1142, Reason.PERMISSION_DENIED),
        (2003, Reason.DATABASE_UNAVAILABLE),
    ],
)
def test_design_table_rows_for_mysql_errors(errno, reason):
    cls = pymysql.err.error_map.get(errno, pymysql.err.OperationalError)
    assert reason_for_mysql_errno(errno, cls.__name__) is reason


SQLITE_CLASSES = [sqlite3.Error, *_all_subclasses(sqlite3.Error)]


@pytest.mark.parametrize("cls", SQLITE_CLASSES, ids=lambda c: c.__name__)
def test_every_sqlite3_error_class_is_mapped(cls):
    error = sqlite_backend.translate(cls("boom"), "db")
    assert error is not None
    assert error.reason is not Reason.INTERNAL


@pytest.mark.parametrize("code", sorted(_SQLITE_PRIMARY_NAMES))
def test_every_sqlite_primary_result_code_is_mapped(code):
    exc = sqlite3.OperationalError("boom")
    exc.sqlite_errorcode = code
    exc.sqlite_errorname = "unknown"
    error = sqlite_backend.translate(exc, "db")
    assert error is not None
    assert error.metadata["vendor_code"] == _SQLITE_PRIMARY_NAMES[code]


def test_sqlite_extended_unique_code_is_unique_violation():
    exc = sqlite3.IntegrityError("UNIQUE constraint failed: t.a")
    exc.sqlite_errorcode = 2067
    exc.sqlite_errorname = "SQLITE_CONSTRAINT_UNIQUE"
    assert sqlite_backend.translate(exc, "db").reason is Reason.UNIQUE_VIOLATION


def test_status_carries_error_info_retry_info_and_bad_request():
    error = GatewayError(
        Reason.POOL_EXHAUSTED,
        "pool is exhausted",
        metadata={"database": "orders", "sqlstate": None},
        retry_after=0.25,
        field_violations=[("params[0]", "bad")],
    )
    status = to_rpc_status(error)
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert status.message == "pool is exhausted"
    info, retry, bad = (
        error_details_pb2.ErrorInfo(),
        error_details_pb2.RetryInfo(),
        error_details_pb2.BadRequest(),
    )
    assert status.details[0].Unpack(info)
    assert info.domain == "dbgateway"
    assert info.reason == "POOL_EXHAUSTED"
    assert dict(info.metadata) == {"database": "orders"}  # None values are dropped
    assert status.details[1].Unpack(retry)
    assert retry.retry_delay.ToMilliseconds() == 250
    assert status.details[2].Unpack(bad)
    assert bad.field_violations[0].field == "params[0]"


def test_short_waits_are_pushed_back_to_grpc_retries_long_ones_are_not_retried():
    from dbgateway_server.service.calls import grpc_status

    pool = dict(
        grpc_status(GatewayError(Reason.POOL_EXHAUSTED, "busy", retry_after=0.1)).trailing_metadata
    )
    assert pool["grpc-retry-pushback-ms"] == "100"
    circuit = dict(
        grpc_status(GatewayError(Reason.CIRCUIT_OPEN, "open", retry_after=5.0)).trailing_metadata
    )
    assert circuit["grpc-retry-pushback-ms"] == "-1"  # gRFC A6: do not retry transparently
    plain = dict(grpc_status(GatewayError(Reason.SQL_ERROR, "syntax")).trailing_metadata)
    assert "grpc-retry-pushback-ms" not in plain


def test_using_a_closed_asyncpg_connection_is_a_lost_connection():
    error = pg_backend.translate(pgexc.InterfaceError("connection is closed"), "db")
    assert error.reason is Reason.DATABASE_UNAVAILABLE
    other = pg_backend.translate(pgexc.InterfaceError("cannot use a closed cursor"), "db")
    assert other.reason is Reason.INVALID_REQUEST


def test_asyncpg_state_confusion_after_the_server_died_is_a_lost_connection():
    # Raised when a killed server's FATAL goodbye lands while a query is under way.
    message = "cannot switch to state 12; another operation (2) is in progress"
    error = pg_backend.translate(pgexc.InternalClientError(message), "db")
    assert error.reason is Reason.DATABASE_UNAVAILABLE
    other = pg_backend.translate(pgexc.InternalClientError("something else"), "db")
    assert other.reason is Reason.DATABASE_ERROR


def test_the_readme_error_table_lists_every_reason_with_its_code():
    from tests.support import ROOT

    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Errors") :]
    table = table[: table.index("\n## ", 5)]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    for reason in Reason:
        matching = [row for row in rows if reason.value in row.split("|")[3]]
        assert matching, f"README error table has no row for {reason.value}"
        assert any(STATUS_CODES[reason].name in row.split("|")[2] for row in matching), reason
