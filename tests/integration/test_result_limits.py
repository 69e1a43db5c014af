"""A unary Query is bounded: beyond the database's ``max_result_rows`` or
``max_result_bytes`` it fails with RESOURCE_EXHAUSTED / RESULT_TOO_LARGE and
points to StreamQuery; ``options.max_rows`` is the caller's own limit, which
truncates and says so."""

from __future__ import annotations

import grpc
import pytest

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc as pb_grpc
from dbgateway_server.config import MAX_MESSAGE_BYTES
from tests.integration.conftest import SMALL_MAX_RESULT_BYTES, SMALL_MAX_RESULT_ROWS
from tests.integration.rows import ENGINES, wide
from tests.support import ServerProcess, call_error

MiB = 1024 * 1024


def too_large(call, request):
    with pytest.raises(grpc.RpcError) as info:
        call(request)
    err = call_error(info.value)
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.reason == "RESULT_TOO_LARGE"
    assert "StreamQuery" in err.message
    return err


def still_serving(stub, database: str) -> None:
    reply = stub.Query(pb.QueryRequest(database=database, sql="SELECT 1 AS one"))
    assert reply.rows[0].values[0].int_value == 1


# -- The row cap ------------------------------------------------------------------


@pytest.mark.parametrize("database", ENGINES)
def test_result_of_exactly_max_result_rows_is_returned_whole(tight, database):
    reply = tight.Query(wide(database, 1, SMALL_MAX_RESULT_ROWS))
    assert len(reply.rows) == SMALL_MAX_RESULT_ROWS
    assert not reply.truncated


@pytest.mark.parametrize("database", ENGINES)
def test_result_beyond_max_result_rows_is_result_too_large(tight, database):
    err = too_large(tight.Query, wide(database, 1, SMALL_MAX_RESULT_ROWS + 1))
    assert f"max_result_rows={SMALL_MAX_RESULT_ROWS}" in err.message
    assert err.metadata["database"] == database
    still_serving(tight, database)


@pytest.mark.parametrize("database", ENGINES)
def test_far_larger_result_fails_the_same_way_and_the_connection_is_reusable(tight, database):
    too_large(tight.Query, wide(database, 1, 100_000))
    for _ in range(3):  # more calls than the pool has connections
        still_serving(tight, database)


def test_default_cap_is_100000_rows(db):
    request = pb.QueryRequest(
        database="pg", sql="SELECT g FROM generate_series(1, $1::int) AS g", params=[]
    )
    request.params.add(int_value=100_000)
    assert len(db.Query(request).rows) == 100_000
    request.params[0].int_value = 100_001
    too_large(db.Query, request)


# -- The byte cap -----------------------------------------------------------------


@pytest.mark.parametrize("database", ENGINES)
def test_result_beyond_max_result_bytes_is_result_too_large(tight, database):
    # 100 rows of 1,000 bytes: well under the row cap, over the 64 KiB byte cap.
    err = too_large(tight.Query, wide(database, 1000, 100))
    assert f"max_result_bytes={SMALL_MAX_RESULT_BYTES}" in err.message
    still_serving(tight, database)


@pytest.mark.parametrize("database", ENGINES)
def test_result_under_max_result_bytes_is_returned_whole(tight, database):
    reply = tight.Query(wide(database, 1000, 50))
    assert len(reply.rows) == 50
    assert reply.ByteSize() < SMALL_MAX_RESULT_BYTES


def test_default_byte_cap_is_16_mib_and_such_a_result_reaches_a_client_that_accepts_it(
    server: ServerProcess,
):
    # A client reading unary results up to the cap raises gRPC's 4 MiB default
    # receive limit to the server's MAX_MESSAGE_BYTES.
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    with grpc.insecure_channel(server.address, options=options) as channel:
        stub = pb_grpc.DatabaseServiceStub(channel)
        reply = stub.Query(wide("pg", 10_000, 1_600))  # about 15.3 MiB
        assert len(reply.rows) == 1_600
        assert 15 * MiB < reply.ByteSize() < 16 * MiB
        too_large(stub.Query, wide("pg", 10_000, 1_700))  # about 16.2 MiB


# -- The caller's own limit --------------------------------------------------------


@pytest.mark.parametrize("database", ENGINES)
def test_max_rows_truncates_and_sets_truncated(tight, database):
    request = wide(database, 1, 50)
    request.options.max_rows = 10
    reply = tight.Query(request)
    assert [r.values[0].int_value for r in reply.rows] == list(range(1, 11))
    assert reply.truncated
    assert reply.stats.rows == 10


@pytest.mark.parametrize("database", ENGINES)
def test_max_rows_equal_to_the_result_does_not_set_truncated(tight, database):
    request = wide(database, 1, 10)
    request.options.max_rows = 10
    reply = tight.Query(request)
    assert len(reply.rows) == 10
    assert not reply.truncated


@pytest.mark.parametrize("database", ENGINES)
def test_max_rows_under_the_cap_reads_the_start_of_a_result_larger_than_the_cap(tight, database):
    request = wide(database, 1, 100_000)
    request.options.max_rows = SMALL_MAX_RESULT_ROWS
    reply = tight.Query(request)
    assert len(reply.rows) == SMALL_MAX_RESULT_ROWS
    assert reply.truncated
    still_serving(tight, database)


@pytest.mark.parametrize("database", ENGINES)
def test_max_rows_above_the_cap_does_not_lift_it(tight, database):
    request = wide(database, 1, SMALL_MAX_RESULT_ROWS + 1)
    request.options.max_rows = SMALL_MAX_RESULT_ROWS * 10
    too_large(tight.Query, request)


@pytest.mark.parametrize("database", ENGINES)
def test_max_rows_does_not_lift_the_byte_cap(tight, database):
    request = wide(database, 1000, 100)
    request.options.max_rows = 99
    too_large(tight.Query, request)
