"""The Session stream's wire framing and write order: results serialized once
and framed by hand read back exactly as protobuf's own messages; calls
framed by the client parse as the server expects; results that are ready
together travel small ones first, and a big one alone."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from google.protobuf import duration_pb2
from google.rpc import status_pb2

import dbgateway
from dbgateway._session import _call, _cancels, _messages, _response, _results
from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import value_pb2
from dbgateway_server.config import ServerConfig
from dbgateway_server.service.session import (
    MESSAGE_BYTES,
    SMALL_RESULT_BYTES,
    _next_message,
    _Session,
    result_element,
)


def rows(count: int, width: int = 0) -> pb.QueryResponse:
    """``count`` rows of one integer, or of ``width`` characters of text."""
    return pb.QueryResponse(
        columns=[value_pb2.Column(name="n", db_type="text" if width else "int8")],
        rows=[
            value_pb2.Row(
                values=[
                    value_pb2.Value(string_value="x" * width)
                    if width
                    else value_pb2.Value(int_value=i)
                ]
            )
            for i in range(count)
        ],
    )


def test_hand_framed_results_are_what_protobuf_would_send():
    query = rows(3)
    error = status_pb2.Status(code=5, message="no such table")
    framed = result_element(7, "query", query.SerializeToString()) + result_element(
        300, "error", error.SerializeToString()
    )
    expected = pb.SessionResponse(
        results=[pb.SessionResult(id=7, query=query), pb.SessionResult(id=300, error=error)]
    )
    assert pb.SessionResponse.FromString(framed) == expected
    # And the client reads either form back to the same results.
    for message in (framed, expected.SerializeToString()):
        (first_id, first), (second_id, second) = _results(message)
        assert (first_id, second_id) == (7, 300)
        assert _response(first) == query
        with pytest.raises(dbgateway.NotFound, match="no such table"):
            _response(second)


def test_client_framed_calls_are_what_the_server_parses():
    request = pb.QueryRequest(database="pg", sql="SELECT 1", params=[value_pb2.Value(int_value=3)])
    batch = pb.ExecuteBatchRequest(database="pg", sql="INSERT", param_sets=[pb.ParamSet()])
    message = b"".join(
        [_call(1, "query", request, 2.5), _call(2, "execute_batch", batch, None), _cancels([9, 10])]
    )
    parsed = pb.SessionRequest.FromString(message)
    assert [c.id for c in parsed.calls] == [1, 2]
    assert parsed.calls[0].query == request
    assert parsed.calls[0].timeout == duration_pb2.Duration(seconds=2, nanos=500_000_000)
    assert parsed.calls[1].execute_batch == batch
    assert not parsed.calls[1].HasField("timeout")
    assert list(parsed.cancel) == [9, 10]


def test_client_messages_stay_under_the_send_limit_and_keep_every_call():
    elements = [_call(i, "query", pb.QueryRequest(sql="x" * 300), None) for i in range(50)]
    framed = list(_messages(elements, 4096))
    messages = [m for m, _ in framed]
    assert all(len(m) <= 4096 for m in messages)
    ids = [c.id for m in messages for c in pb.SessionRequest.FromString(m).calls]
    assert ids == list(range(50))
    # Each message says how many calls it carries (what a failed write did not send).
    assert [n for _, n in framed] == [len(pb.SessionRequest.FromString(m).calls) for m in messages]


def test_ready_small_results_go_first_and_big_ones_after_them_together():
    big = [result_element(i, "query", rows(2_000, 200).SerializeToString()) for i in (1, 2)]
    small = [result_element(i, "query", rows(1).SerializeToString()) for i in (3, 4, 5)]
    assert all(len(b) > SMALL_RESULT_BYTES for b in big)
    ready = [big[0], small[0], big[1], small[1], small[2]]
    assert _next_message(ready) == small
    assert _next_message(ready) == big
    assert ready == []


def test_a_message_stays_under_the_bound_and_a_bigger_result_travels_alone():
    mid = [result_element(i, "query", rows(1, 200_000).SerializeToString()) for i in range(30)]
    huge = result_element(99, "query", rows(1, MESSAGE_BYTES).SerializeToString())
    ready = [*mid, huge]
    sent = []
    while ready:
        batch = _next_message(ready)
        assert sum(map(len, batch)) <= MESSAGE_BYTES or batch == [huge]
        sent.extend(batch)
    assert sent == [*mid, huge]


class _Stream:
    """A Session stream's servicer context: the requests the test queued,
    and writes that wait until the test lets them through."""

    def __init__(self, requests: list[pb.SessionRequest]) -> None:
        self._requests = list(requests)
        self.written: list[bytes] = []
        self.flowing = asyncio.Event()
        self.writing = asyncio.Event()
        self.results = 0
        self.wrote_five = asyncio.Event()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def time_remaining(self) -> float | None:
        return None

    async def read(self) -> Any:
        if self._requests:
            return self._requests.pop(0)
        await asyncio.Event().wait()  # the client keeps its side open

    async def write(self, message: bytes) -> None:
        self.writing.set()
        await self.flowing.wait()  # a client that is slow to read
        self.written.append(message)
        self.results += len(pb.SessionResponse.FromString(message).results)
        if self.results == 5:
            self.wrote_five.set()


class _Servicer:
    """Answers each query with the rows its SQL names, when the test says."""

    def __init__(self) -> None:
        self.release = {sql: asyncio.Event() for sql in ("big 1", "big 2", "small")}
        self.answered = 0
        #: Set as the fourth call returns; its result is ready before anything else runs.
        self.four_answered = asyncio.Event()

    async def Query(self, request: pb.QueryRequest, context: Any) -> pb.QueryResponse:
        await self.release[request.sql].wait()
        self.answered += 1
        if self.answered == 4:
            self.four_answered.set()
        return rows(2_000, 200) if request.sql.startswith("big") else rows(1)


async def test_small_results_are_not_held_back_behind_a_big_one_waiting_to_be_sent():
    def call(call_id: int, sql: str) -> pb.SessionCall:
        return pb.SessionCall(id=call_id, query=pb.QueryRequest(sql=sql))

    assert len(rows(2_000, 200).SerializeToString()) > SMALL_RESULT_BYTES
    servicer = _Servicer()
    calls = [call(1, "big 1"), call(2, "big 2"), *(call(i, "small") for i in (3, 4, 5))]
    stream = _Stream([pb.SessionRequest(calls=calls)])
    config = ServerConfig()
    session = _Session(servicer, stream, config, lambda _: None, lambda _: None)  # type: ignore[arg-type]
    serving = asyncio.create_task(session.serve(300))
    servicer.release["big 1"].set()
    await stream.writing.wait()  # the first big result is on its way, slowly
    servicer.release["big 2"].set()
    servicer.release["small"].set()
    await servicer.four_answered.wait()  # every other result is ready behind it
    assert len(session._ready) == 4
    stream.flowing.set()
    await stream.wrote_five.wait()
    serving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await serving
    order = [[r.id for r in pb.SessionResponse.FromString(m).results] for m in stream.written]
    assert order == [[1], [3, 4, 5], [2]]
