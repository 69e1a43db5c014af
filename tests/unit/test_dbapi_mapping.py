"""The DB-API driver's pure pieces: every gateway reason has its PEP 249
class, SQLSTATE class 22 is DataError, and dialect URLs become client
arguments."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy.engine import make_url

from dbgateway import DbGatewayError, TLSConfig, dbapi
from dbgateway.dbapi._common import _BY_REASON, error_class, is_read, translate
from dbgateway.sqlalchemy._base import TOKEN_ENV, connect_args
from dbgateway_server.errors import STATUS_CODES, Reason


@pytest.mark.parametrize("reason", list(Reason))
def test_every_gateway_reason_has_a_pep_249_class(reason: Reason) -> None:
    assert reason.value in _BY_REASON
    error = DbGatewayError(STATUS_CODES[reason], "boom", reason=reason.value)
    exc = translate(error)
    assert isinstance(exc, dbapi.DatabaseError)
    assert exc.reason == reason.value
    assert exc.gateway_error is error


@pytest.mark.parametrize(
    ("reason", "sqlstate", "expected"),
    [
        ("UNIQUE_VIOLATION", "23505", dbapi.IntegrityError),
        ("CONSTRAINT_VIOLATION", "23503", dbapi.IntegrityError),
        ("SQL_ERROR", "42601", dbapi.ProgrammingError),
        ("INVALID_PARAMETER", "22P02", dbapi.DataError),
        ("SQL_ERROR", "22012", dbapi.DataError),
        ("DATABASE_UNAVAILABLE", None, dbapi.OperationalError),
        ("SERIALIZATION_FAILURE", "40001", dbapi.OperationalError),
        ("UNSUPPORTED_STATEMENT", None, dbapi.NotSupportedError),
        ("INTERNAL", None, dbapi.InternalError),
    ],
)
def test_reasons_and_sqlstates_choose_the_class(
    reason: str, sqlstate: str | None, expected: type[dbapi.DatabaseError]
) -> None:
    metadata = {"sqlstate": sqlstate} if sqlstate else {}
    error = DbGatewayError(grpc.StatusCode.UNKNOWN, "x", reason=reason, metadata=metadata)
    assert error_class(error) is expected
    assert translate(error).sqlstate == sqlstate


def test_errors_that_never_reached_the_gateway_follow_the_grpc_code() -> None:
    lost = DbGatewayError(grpc.StatusCode.UNAVAILABLE, "connection refused")
    assert isinstance(translate(lost), dbapi.OperationalError)


@pytest.mark.parametrize(
    ("sql", "read"),
    [
        ("SELECT 1", True),
        ("  -- note\n with x AS (SELECT 1) SELECT * FROM x", True),
        ("(SELECT 1) UNION (SELECT 2)", True),
        ("SHOW VARIABLES", True),
        ("INSERT INTO t VALUES (1)", False),
        ("/* c */ UPDATE t SET x = 1", False),
        ("", False),
    ],
)
def test_reads_go_as_query_and_the_rest_as_execute(sql: str, read: bool) -> None:
    assert is_read(sql) is read


def test_dialect_url_becomes_client_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    args = connect_args(make_url("postgresql+dbgateway://gw:6000/orders?timeout=2.5&token=t"))
    assert args == {
        "target": "gw:6000",
        "database": "orders",
        "tls": None,
        "token": "t",
        "timeout": 2.5,
    }
    defaults = connect_args(make_url("sqlite+dbgateway://"))
    assert defaults["target"] == "127.0.0.1:50051"
    assert defaults["database"] is None
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert connect_args(make_url("mysql+dbgateway://gw/legacy?tls=true")) == {
        "target": "gw:50051",
        "database": "legacy",
        "tls": True,
        "token": "from-env",
        "timeout": None,
    }
    mutual = connect_args(make_url("mysql+dbgateway://gw/x?tls_ca=/ca&tls_cert=/c&tls_key=/k"))
    assert mutual["tls"] == TLSConfig(ca_file="/ca", cert_file="/c", key_file="/k")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+dbgateway://gw/x?colour=blue",
        "postgresql+dbgateway://gw/x?tls=maybe",
        "postgresql+dbgateway://gw/x?timeout=soon",
        "postgresql+dbgateway://gw/x?tls_cert=/c",
    ],
)
def test_bad_dialect_urls_raise_interface_error(url: str) -> None:
    with pytest.raises(dbapi.InterfaceError):
        connect_args(make_url(url))


def test_positional_parameters_only() -> None:
    from dbgateway.dbapi._common import params_of

    with pytest.raises(dbapi.ProgrammingError, match="positional"):
        params_of({"a": 1})  # type: ignore[arg-type]
    with pytest.raises(dbapi.ProgrammingError):
        params_of("abc")
    assert params_of(None) == ()
