"""A call's deadline (or ``options.timeout``) really stops the statement on the
database server, not only the caller's wait."""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from dbgateway.v1 import database_service_pb2 as pb
from tests.integration.polling import eventually
from tests.support import V, call_error, mysql_fetch, pg_fetch

#: The deadline used throughout; the answer must come within about a second.
DEADLINE = 0.5
ANSWER_WITHIN = 1.5  # generous: the machine is shared


def timeout(seconds: float) -> pb.RequestOptions:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return pb.RequestOptions(timeout=d)


def pg_running(dsn: str, marker: str) -> list[Any]:
    return pg_fetch(
        dsn,
        "SELECT pid FROM pg_stat_activity WHERE state = 'active' "
        f"AND query LIKE '%{marker}%' AND pid <> pg_backend_pid()",
    )


def mysql_running(dsn: str, marker: str) -> list[Any]:
    return mysql_fetch(
        dsn,
        "SELECT id FROM information_schema.processlist "
        f"WHERE info LIKE '%{marker}%' AND info NOT LIKE '%processlist%'",
    )


def timed_failure(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        call()
    return time.monotonic() - started, call_error(info.value)


@pytest.mark.postgres
@pytest.mark.parametrize("how", ["grpc_deadline", "options_timeout"])
def test_postgres_sleep_is_cancelled_on_the_server(db, postgres_dsn, how):
    marker = uuid.uuid4().hex
    request = pb.QueryRequest(database="pg", sql=f"SELECT pg_sleep(20), '{marker}'")
    if how == "grpc_deadline":
        elapsed, err = timed_failure(lambda: db.Query(request, timeout=DEADLINE))
    else:
        request.options.CopyFrom(timeout(DEADLINE))
        elapsed, err = timed_failure(lambda: db.Query(request, timeout=30))
        assert err.reason == "STATEMENT_TIMEOUT"
    assert err.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < ANSWER_WITHIN
    time.sleep(1.0)
    assert pg_running(postgres_dsn, marker) == []


@pytest.mark.mysql
@pytest.mark.parametrize("how", ["grpc_deadline", "options_timeout"])
def test_mariadb_sleep_is_killed_and_its_connection_dropped(db, mysql_dsn, how):
    marker = uuid.uuid4().hex
    request = pb.QueryRequest(database="mysql", sql=f"SELECT SLEEP(20), '{marker}'")
    kwargs: dict[str, float] = {"timeout": DEADLINE}
    if how == "options_timeout":
        request.options.CopyFrom(timeout(DEADLINE))
        kwargs = {"timeout": 30}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        future = pool.submit(db.Query, request, **kwargs)
        # Keep the rows of the poll that saw it: by a second look, the
        # deadline may already have killed it.
        seen: list[tuple[int, ...]] = []
        assert eventually(
            lambda: bool(seen.extend(mysql_running(mysql_dsn, marker)) or seen), within=DEADLINE
        )
        (thread_id,) = seen[0]
        with pytest.raises(grpc.RpcError) as info:
            future.result()
        elapsed = time.monotonic() - started
    err = call_error(info.value)
    assert err.code == grpc.StatusCode.DEADLINE_EXCEEDED
    if how == "options_timeout":
        assert err.reason == "STATEMENT_TIMEOUT"
    assert elapsed < ANSWER_WITHIN
    time.sleep(1.0)
    assert mysql_running(mysql_dsn, marker) == []
    # The connection's protocol state was unknown, so it was closed, not pooled.
    ids = mysql_fetch(mysql_dsn, "SELECT id FROM information_schema.processlist")
    assert (thread_id,) not in ids
    assert db.Query(pb.QueryRequest(database="mysql", sql="SELECT 1")).rows


def test_sqlite_statement_is_interrupted(db):
    forever = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    )
    request = pb.QueryRequest(database="lite", sql=forever, options=timeout(DEADLINE))
    elapsed, err = timed_failure(lambda: db.Query(request, timeout=30))
    assert err.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert err.reason == "STATEMENT_TIMEOUT"
    assert elapsed < ANSWER_WITHIN
    # Every pooled connection answers at once: none is still busy counting.
    for _ in range(12):
        reply = db.Query(pb.QueryRequest(database="lite", sql="SELECT 1"), timeout=2)
        assert reply.rows[0].values[0] == V.of(int_value=1)
