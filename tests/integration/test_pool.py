"""Pool limits seen from callers: a saturated pool answers RESOURCE_EXHAUSTED
quickly instead of letting callers hang."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc
from tests.support import ServerProcess, call_error

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def small_pools(
    tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str
) -> Iterator[database_service_pb2_grpc.DatabaseServiceStub]:
    config = f"""
[databases.two]
dsn = "{postgres_dsn}"
pool = {{ min_size = 1, max_size = 2, acquire_timeout = 0.3 }}

[databases.queue]
dsn = "{postgres_dsn}"
pool = {{ min_size = 1, max_size = 1, max_waiting = 2, acquire_timeout = 10 }}
"""
    server = ServerProcess(tmp_path_factory.mktemp("pool"), config=config).start()
    try:
        with server.channel() as channel:
            yield database_service_pb2_grpc.DatabaseServiceStub(channel)
    finally:
        server.stop()


def concurrently(n: int, call) -> list[tuple[float, grpc.StatusCode, str]]:
    """Starts ``n`` calls at the same moment; (elapsed, code, reason) of each."""
    barrier = threading.Barrier(n)

    def one(_: int) -> tuple[float, grpc.StatusCode, str]:
        barrier.wait()
        started = time.monotonic()
        try:
            call()
            return time.monotonic() - started, grpc.StatusCode.OK, ""
        except grpc.RpcError as exc:
            err = call_error(exc)
            assert err.code != grpc.StatusCode.RESOURCE_EXHAUSTED or err.retry_delay is not None
            return time.monotonic() - started, err.code, err.reason

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n), timeout=30))


def test_pool_of_two_serves_two_of_twelve_slow_callers_and_refuses_the_rest(small_pools):
    slow = pb.QueryRequest(database="two", sql="SELECT pg_sleep(1)")
    results = concurrently(12, lambda: small_pools.Query(slow, timeout=10))
    served = [r for r in results if r[1] == grpc.StatusCode.OK]
    refused = [r for r in results if r[1] != grpc.StatusCode.OK]
    assert len(served) == 2
    assert {(code, reason) for _, code, reason in refused} == {
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "POOL_EXHAUSTED")
    }
    # Refused after acquire_timeout (0.3 s), long before the slow calls end.
    assert max(elapsed for elapsed, _, _ in refused) < 0.9
    assert small_pools.Query(pb.QueryRequest(database="two", sql="SELECT 1"), timeout=5).rows


def test_callers_beyond_max_waiting_are_refused_at_once(small_pools):
    slow = pb.QueryRequest(database="queue", sql="SELECT pg_sleep(0.5)")
    results = concurrently(6, lambda: small_pools.Query(slow, timeout=10))
    served = [r for r in results if r[1] == grpc.StatusCode.OK]
    refused = [r for r in results if r[1] != grpc.StatusCode.OK]
    # One runs, two wait their turn, the other three are not even queued.
    assert len(served) == 3
    assert len(refused) == 3
    assert all(code == grpc.StatusCode.RESOURCE_EXHAUSTED for _, code, _ in refused)
    assert max(elapsed for elapsed, _, _ in refused) < 0.4


def test_acquire_never_waits_past_the_callers_deadline(small_pools):
    slow = pb.QueryRequest(database="queue", sql="SELECT pg_sleep(1)")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        busy = pool.submit(small_pools.Query, slow, timeout=10)
        time.sleep(0.2)
        started = time.monotonic()
        quick = pb.QueryRequest(
            database="queue",
            sql="SELECT 1",
            options=pb.RequestOptions(timeout={"nanos": 300_000_000}),
        )
        with pytest.raises(grpc.RpcError) as info:
            small_pools.Query(quick, timeout=10)
        elapsed = time.monotonic() - started
        busy.result()
    # acquire_timeout is 10 s; the call's own 0.3 s is what bounds the wait.
    assert elapsed < 0.8
    assert call_error(info.value).code == grpc.StatusCode.RESOURCE_EXHAUSTED
