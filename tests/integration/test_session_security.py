"""A Session stream goes through the same authentication, rights and
per-principal limits as unary calls: a refused token ends the stream, and a
right or limit a call lacks fails that call alone."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import duration_pb2

from dbgateway.v1 import database_service_pb2 as pb
from tests.integration.test_security import (  # noqa: F401 - fixtures
    LIMITED_CALLS,
    bearer,
    certs,
    channel,
    db,
    secure,
    tables,
)
from tests.support import V

FOREVER = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


def session(db, metadata, *calls: pb.SessionCall) -> dict[int, pb.SessionResult]:  # noqa: F811
    responses = db.Session(iter([pb.SessionRequest(calls=calls)]), metadata=metadata, timeout=30)
    return {r.id: r for response in responses for r in response.results}


def test_a_session_with_a_refused_token_ends_unauthenticated(db):  # noqa: F811
    with pytest.raises(grpc.RpcError) as info:
        session(
            db,
            [("authorization", "Bearer wrong")],
            pb.SessionCall(id=1, query=pb.QueryRequest(database="lite", sql="SELECT 1")),
        )
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_read_principal_writing_over_a_session_is_refused_for_that_call(db):  # noqa: F811
    got = session(
        db,
        bearer("reader"),
        pb.SessionCall(id=1, query=pb.QueryRequest(database="lite", sql="SELECT 1")),
        pb.SessionCall(
            id=2,
            execute=pb.ExecuteRequest(database="lite", sql="DELETE FROM t WHERE 1 = 0"),
        ),
    )
    assert got[1].query.rows[0].values[0] == V.of(int_value=1)
    assert got[2].error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]


def test_session_calls_count_toward_max_concurrent_calls(db):  # noqa: F811
    timeout = duration_pb2.Duration(seconds=1)
    calls = [
        pb.SessionCall(id=i, timeout=timeout, query=pb.QueryRequest(database="lite", sql=FOREVER))
        for i in range(LIMITED_CALLS + 2)
    ]
    got = session(db, bearer("limited"), *calls)
    codes = sorted(
        grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] == r.error.code for r in got.values()
    )
    assert len(got) == LIMITED_CALLS + 2
    assert codes.count(True) == 2  # the calls beyond the principal's limit
