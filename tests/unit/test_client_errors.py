"""The client's error decoding and retry decisions, against the server's own
error table: every reason the server can send becomes the right exception."""

from __future__ import annotations

import json
import pickle

import grpc
import pytest

import dbgateway
from dbgateway._client import _should_retry
from dbgateway._config import ClientConfig, KeepaliveConfig, RetryPolicy, TLSConfig
from dbgateway._errors import from_status
from dbgateway._health import HealthStatus, decode_response, encode_request
from dbgateway_server.drain import refusal
from dbgateway_server.errors import STATUS_CODES, GatewayError, Reason, to_rpc_status

#: What a caller catches for each reason (anything unlisted: the root only).
EXPECTED = {
    Reason.UNKNOWN_DATABASE: dbgateway.NotFound,
    Reason.TRANSACTION_NOT_FOUND: dbgateway.NotFound,
    Reason.INVALID_REQUEST: dbgateway.SqlError,
    Reason.SQL_ERROR: dbgateway.SqlError,
    Reason.INVALID_PARAMETER: dbgateway.SqlError,
    Reason.UNIQUE_VIOLATION: dbgateway.UniqueViolation,
    Reason.CONSTRAINT_VIOLATION: dbgateway.IntegrityError,
    Reason.SERIALIZATION_FAILURE: dbgateway.TransactionAborted,
    Reason.DEADLOCK: dbgateway.TransactionAborted,
    Reason.LOCK_TIMEOUT: dbgateway.TransactionAborted,
    Reason.TRANSACTION_EXPIRED: dbgateway.TransactionAborted,
    Reason.STATEMENT_TIMEOUT: dbgateway.DeadlineExceeded,
    Reason.PERMISSION_DENIED: dbgateway.PermissionDenied,
    Reason.UNAUTHENTICATED: dbgateway.PermissionDenied,
    Reason.READ_ONLY: dbgateway.PermissionDenied,
    Reason.DATABASE_UNAVAILABLE: dbgateway.Unavailable,
    Reason.CIRCUIT_OPEN: dbgateway.Unavailable,
    Reason.NO_REPLICA_AVAILABLE: dbgateway.Unavailable,
    Reason.TRANSACTION_OWNER_UNAVAILABLE: dbgateway.Unavailable,
    Reason.POOL_EXHAUSTED: dbgateway.ResourceExhausted,
    Reason.RESULT_TOO_LARGE: dbgateway.ResourceExhausted,
    Reason.TOO_MANY_CALLS: dbgateway.ResourceExhausted,
    Reason.STREAM_STALLED: dbgateway.ResourceExhausted,
    Reason.SESSION_ENDED: dbgateway.Unavailable,
    Reason.SUBSCRIBER_TOO_SLOW: dbgateway.ResourceExhausted,
    Reason.SERVER_DRAINING: dbgateway.Unavailable,
}


def decode(error: GatewayError) -> dbgateway.DbGatewayError:
    status = to_rpc_status(error)
    return from_status(STATUS_CODES[error.reason], status.message, status)


@pytest.mark.parametrize("reason", list(Reason), ids=str)
def test_every_server_reason_decodes_to_a_typed_error_with_its_code(reason):
    error = decode(GatewayError(reason, "the database's message", metadata={"engine": "x"}))
    assert isinstance(error, dbgateway.DbGatewayError)
    assert type(error) is EXPECTED.get(reason, dbgateway.DbGatewayError)
    assert error.code == STATUS_CODES[reason]
    assert error.reason == reason.value
    assert error.message == "the database's message"
    assert error.metadata == {"engine": "x"}
    assert str(error) == f"{error.code.name} {reason.value}: the database's message"


def test_unique_violation_is_an_integrity_error_with_sqlstate():
    error = decode(
        GatewayError(
            Reason.UNIQUE_VIOLATION, "dup", metadata={"sqlstate": "23505", "constraint": "t_pkey"}
        )
    )
    assert isinstance(error, dbgateway.IntegrityError)
    assert error.sqlstate == "23505"
    assert error.metadata["constraint"] == "t_pkey"


def test_retry_info_and_bad_request_are_decoded():
    error = decode(GatewayError(Reason.CIRCUIT_OPEN, "open", retry_after=2.5))
    assert error.retry_after == 2.5
    bad = decode(
        GatewayError(Reason.INVALID_PARAMETER, "p", field_violations=[("params[0]", "no")])
    )
    assert bad.field_violations == (("params[0]", "no"),)
    assert bad.retry_after is None


def test_a_status_without_details_maps_by_code():
    error = from_status(grpc.StatusCode.UNAVAILABLE, "failed to connect", None)
    assert type(error) is dbgateway.Unavailable
    assert error.reason == ""
    assert error.sqlstate is None
    assert str(error) == "UNAVAILABLE: failed to connect"


def test_errors_survive_pickling():
    error = decode(GatewayError(Reason.UNIQUE_VIOLATION, "dup", metadata={"sqlstate": "23505"}))
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is dbgateway.UniqueViolation
    assert copy.sqlstate == "23505"
    assert str(copy) == str(error)


@pytest.mark.parametrize(
    ("reason", "retry_after", "write", "idempotent", "retried"),
    [
        # Reads: the channel retried UNAVAILABLE already; the client adds the RetryInfo wait.
        (Reason.CIRCUIT_OPEN, 1.0, False, False, True),
        (Reason.DATABASE_UNAVAILABLE, None, False, False, False),
        # Writes: never replayed unless safe.
        (Reason.DATABASE_UNAVAILABLE, None, True, False, False),
        (Reason.DATABASE_UNAVAILABLE, None, True, True, True),
        (Reason.CIRCUIT_OPEN, 1.0, True, False, True),
        # No other code is retried, whatever RetryInfo says.
        (Reason.POOL_EXHAUSTED, 1.0, False, False, False),
        (Reason.SERIALIZATION_FAILURE, 1.0, True, True, False),
    ],
)
def test_only_unavailable_is_retried_and_writes_only_when_safe(
    reason, retry_after, write, idempotent, retried
):
    error = decode(GatewayError(reason, "x", retry_after=retry_after))
    assert _should_retry(error, write=write, idempotent=idempotent) is retried


def test_the_service_config_retries_only_unavailable_reads_with_throttling():
    options = dict(ClientConfig().channel_options())
    config = json.loads(options["grpc.service_config"])
    (method,) = config["methodConfig"]
    assert {n["method"] for n in method["name"]} == {"Query", "StreamQuery", "Check"}
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert config["retryThrottling"] == {"maxTokens": 10, "tokenRatio": 0.1}
    assert options["grpc.max_send_message_length"] == 4 * 1024 * 1024
    assert options["grpc.keepalive_time_ms"] >= 10_000


def test_configs_are_validated_on_construction():
    with pytest.raises(ValueError, match="at least 10 s"):
        KeepaliveConfig(time=5)
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=9)
    with pytest.raises(ValueError, match="go together"):
        TLSConfig(cert_file="client.pem")
    with pytest.raises(ValueError, match="timeout"):
        dbgateway.Client("127.0.0.1:1", timeout=0)
    assert RetryPolicy().backoff(1) == 0.05
    assert RetryPolicy().backoff(10) == 1.0


def test_health_messages_match_the_wire_format():
    from grpc_health.v1 import health_pb2

    for service in ("", "db/orders", "x" * 300):
        assert (
            encode_request(service)
            == health_pb2.HealthCheckRequest(service=service).SerializeToString()
        )
    for number, status in [
        (0, "UNKNOWN"),
        (1, "SERVING"),
        (2, "NOT_SERVING"),
        (3, "SERVICE_UNKNOWN"),
    ]:
        data = health_pb2.HealthCheckResponse(status=number).SerializeToString()
        assert decode_response(data) is HealthStatus(status)


def test_a_call_a_draining_server_did_not_run_is_sent_again_even_a_write():
    not_run = decode(refusal())
    assert _should_retry(not_run, write=True, idempotent=False) is True
    # Cut off by the end of the grace period: it may have run.
    cut = decode(GatewayError(Reason.SERVER_DRAINING, "x", retry_after=0.1))
    assert _should_retry(cut, write=True, idempotent=False) is False
