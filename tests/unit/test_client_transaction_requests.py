"""How the client spells transactions and batches on the wire: isolation
names, statement lists, per-statement options, in-band errors."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

import dbgateway
from dbgateway._errors import from_status_message
from dbgateway._transaction import isolation_of, statement, statements_of, transaction_options
from dbgateway.v1 import database_service_pb2 as pb


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("serializable", dbgateway.Isolation.SERIALIZABLE),
        ("SERIALIZABLE", dbgateway.Isolation.SERIALIZABLE),
        ("repeatable read", dbgateway.Isolation.REPEATABLE_READ),
        ("REPEATABLE_READ", dbgateway.Isolation.REPEATABLE_READ),
        ("read-committed", dbgateway.Isolation.READ_COMMITTED),
        (" Read  Uncommitted ", dbgateway.Isolation.READ_UNCOMMITTED),
        (dbgateway.Isolation.READ_COMMITTED, dbgateway.Isolation.READ_COMMITTED),
        (None, None),
    ],
)
def test_isolation_by_name_or_enum(given, expected):
    assert isolation_of(given) is expected


@pytest.mark.parametrize("given", ["snapshot", "", 4])
def test_an_unknown_isolation_is_refused(given):
    with pytest.raises(ValueError, match="unknown isolation level"):
        isolation_of(given)


def test_transaction_options_on_the_wire():
    options = transaction_options("serializable", True, True)
    assert options.isolation == pb.ISOLATION_LEVEL_SERIALIZABLE
    assert options.read_only
    assert options.deferrable
    assert transaction_options(None, False, False) == pb.TransactionOptions()


def test_statements_take_pairs_or_bare_sql():
    statements = statements_of([("SELECT ?", (1,)), "SELECT 2", ("SELECT ?, ?", ["a", None])])
    assert [s.sql for s in statements] == ["SELECT ?", "SELECT 2", "SELECT ?, ?"]
    assert statements[0].params[0].int_value == 1
    assert not statements[1].params
    assert statements[2].params[1].WhichOneof("kind") == "null_value"


def test_a_string_is_not_a_parameter_list():
    with pytest.raises(TypeError, match="must be a sequence"):
        statements_of([("SELECT ?", "abc")])


def test_an_empty_statement_list_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        statements_of([])


def test_statement_options_carry_timeout_and_max_rows():
    options = statement("SELECT 1", (), timeout=1.5, max_rows=10).options
    assert options.timeout.ToNanoseconds() == 1_500_000_000
    assert options.max_rows == 10
    with pytest.raises(ValueError, match="timeout"):
        statement("SELECT 1", (), timeout=0)
    with pytest.raises(ValueError, match="max_rows"):
        statement("SELECT 1", (), max_rows=0)


def test_an_in_band_error_becomes_the_typed_exception():
    info = error_details_pb2.ErrorInfo(
        domain="dbgateway",
        reason="UNIQUE_VIOLATION",
        metadata={"sqlstate": "23505", "statement_index": "2"},
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=6, message="duplicate key", details=[detail])
    error = from_status_message(status)
    assert isinstance(error, dbgateway.UniqueViolation)
    assert error.code is grpc.StatusCode.ALREADY_EXISTS
    assert (error.sqlstate, error.statement_index) == ("23505", 2)
    assert str(error) == "ALREADY_EXISTS UNIQUE_VIOLATION: duplicate key"
