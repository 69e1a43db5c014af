"""What the clients decide when a Session stream ends or a call on it fails:
pure logic, no server."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_status import rpc_status

import dbgateway
from dbgateway._client import _should_retry
from dbgateway._session import SessionUnsupported, _AsyncStream, _ending
from dbgateway.v1 import database_service_pb2 as pb
from dbgateway_server.errors import GatewayError, Reason, to_rpc_status


def stream_error(code: grpc.StatusCode, reason: str | None = None) -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata()
    if reason is not None:
        status = rpc_status.to_status(to_rpc_status(GatewayError(Reason(reason), "ended")))
        for key, value in status.trailing_metadata:
            trailing.add(key, value)
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, "ended")


def test_a_server_without_session_means_unary_calls():
    assert isinstance(
        _ending(stream_error(grpc.StatusCode.UNIMPLEMENTED), True), SessionUnsupported
    )


def test_a_session_the_server_ended_on_purpose_is_resent_write_or_not():
    ended = _ending(stream_error(grpc.StatusCode.UNAVAILABLE, "SESSION_ENDED"), True)
    assert isinstance(ended, dbgateway.Unavailable)
    assert ended.reason == "SESSION_ENDED"
    assert _should_retry(ended, write=True, idempotent=False)


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED])
def test_a_lost_connection_retries_reads_and_idempotent_writes_only(code):
    broken = _ending(stream_error(code), True)
    assert isinstance(broken, dbgateway.Unavailable)
    assert broken.reason == "SESSION_BROKEN"
    assert _should_retry(broken, write=False, idempotent=False)
    assert _should_retry(broken, write=True, idempotent=True)
    assert not _should_retry(broken, write=True, idempotent=False)


def test_a_stream_that_never_opened_fails_as_a_unary_call_would():
    refused = _ending(stream_error(grpc.StatusCode.UNAVAILABLE), False)
    assert isinstance(refused, dbgateway.Unavailable)
    assert refused.reason == ""
    assert not _should_retry(refused, write=True, idempotent=False)


def test_a_refused_token_ends_every_call_with_its_own_error():
    denied = _ending(stream_error(grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"), True)
    assert isinstance(denied, dbgateway.PermissionDenied)
    assert denied.reason == "UNAUTHENTICATED"


def test_transport_is_checked_when_the_client_is_made():
    with pytest.raises(ValueError, match="transport must be one of session, unary"):
        dbgateway.AsyncClient(transport="udp")
    assert dbgateway.AsyncClient(transport="unary").transport == "unary"


def test_a_stream_cancelled_before_it_was_accepted_and_written_resends_its_calls():
    # Nothing reached the server: each call is sent again, writes included.
    unsent = _ending(stream_error(grpc.StatusCode.CANCELLED), False, sent=False)
    assert isinstance(unsent, dbgateway.DbGatewayError)
    assert (unsent.code, unsent.reason) == (grpc.StatusCode.UNAVAILABLE, "SESSION_ENDED")
    assert _should_retry(unsent, write=True, idempotent=False)
    # Once something was written, a call may have run: not a resend.
    written = _ending(stream_error(grpc.StatusCode.CANCELLED), False, sent=True)
    assert isinstance(written, dbgateway.DbGatewayError)
    assert written.reason != "SESSION_ENDED"


class _SyncStreamError(grpc.RpcError):
    """How sync gRPC reports a failed stream: a code and details, no metadata."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[()]:
        return ()


def _refused_before_accepting() -> _SyncStreamError:
    """A stream the server cancelled before accepting it."""
    return _SyncStreamError(grpc.StatusCode.CANCELLED, "Cancelling all calls")


def _lost_connection() -> _SyncStreamError:
    """A Session stream whose connection was lost."""
    return _SyncStreamError(grpc.StatusCode.UNAVAILABLE, "Socket closed")


class _SyncStreamDouble:
    """What the sync stream-stream doubles share: gRPC's request thread
    consumes the request iterator (``_consume``), and the responses end with
    ``_error()`` once the stream has ended (``ended``)."""

    def __init__(self, requests: Iterator[bytes], error: Callable[[], _SyncStreamError]) -> None:
        self.ended = threading.Event()
        self._error = error
        self._consumer = threading.Thread(target=self._consume, args=(requests,), daemon=True)
        self._consumer.start()

    def _consume(self, requests: Iterator[bytes]) -> None:
        raise NotImplementedError

    def done(self) -> bool:
        return self.ended.is_set()

    def __iter__(self) -> _SyncStreamDouble:
        return self

    def __next__(self) -> bytes:
        self.ended.wait()
        raise self._error()

    def cancel(self) -> None:
        self.ended.set()


class _StreamCancelledAtOnce(_SyncStreamDouble):
    """A sync stream-stream call the server cancels before sending its
    initial metadata; gRPC's request thread consumes the request iterator
    meanwhile, as grpc does, and records what would have been sent."""

    def __init__(self, requests: Iterator[bytes], metadata: object = None) -> None:
        self.sent: list[bytes] = []
        super().__init__(requests, _refused_before_accepting)

    def _consume(self, requests: Iterator[bytes]) -> None:
        for message in requests:
            self.sent.append(message)

    def initial_metadata(self) -> tuple[()]:
        time.sleep(0.2)  # the caller's call is queued by now
        self.ended.set()
        return ()


def test_the_sync_client_writes_nothing_before_the_stream_is_accepted_so_a_refused_one_resends():
    from dbgateway import _session

    calls: list[_StreamCancelledAtOnce] = []

    def session(requests: Iterator[bytes], metadata: object = None) -> _StreamCancelledAtOnce:
        calls.append(_StreamCancelledAtOnce(requests, metadata))
        return calls[-1]

    stream = _session._SyncStream(session, (), 4 << 20)
    with pytest.raises(dbgateway.DbGatewayError) as caught:
        stream.call("execute", pb.ExecuteRequest(sql="INSERT INTO t VALUES (1)"), 5.0)
    stream.close()
    calls[0]._consumer.join(5)
    assert calls[0].sent == []  # the insert never left the client
    assert (caught.value.code, caught.value.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "SESSION_ENDED",
    )
    assert _should_retry(caught.value, write=True, idempotent=False)


class _EndedStream:
    """A Session stream the server has already ended: accepted, answering
    nothing, and every write refused, as grpc.aio refuses one on a finished
    call (and then reports INTERNAL for the whole stream, hiding the server's
    own status)."""

    def __init__(self) -> None:
        self.refused = asyncio.Event()

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return grpc.aio.Metadata()

    def done(self) -> bool:
        return False

    async def write(self, message: bytes) -> None:
        self.refused.set()
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.INTERNAL,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            "Internal error from Core",
        )

    async def read(self) -> bytes:
        await self.refused.wait()
        await asyncio.sleep(0)  # the writer settles what it knows first
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.INTERNAL,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            "Internal error from Core",
        )

    def cancel(self) -> bool:
        return True


@contextlib.asynccontextmanager
async def _stream_on(double: Any) -> AsyncIterator[_AsyncStream]:
    """The async client's session stream over ``double``, closed afterwards."""
    stream = _AsyncStream(lambda metadata: double, (), 4 * 1024 * 1024)
    try:
        yield stream
    finally:
        await stream.close()


async def test_a_call_whose_write_the_ended_stream_refused_never_ran_and_is_resent():
    async with _stream_on(_EndedStream()) as stream:
        with pytest.raises(dbgateway.Unavailable) as info:
            await stream.call("execute", pb.ExecuteRequest(sql="INSERT INTO t VALUES (1)"), None)
    # Not SESSION_BROKEN ("may have run"): the insert never left the client.
    assert info.value.reason == "SESSION_ENDED"
    assert _should_retry(info.value, write=True, idempotent=False)


class _AsyncLostWhileWriting:
    """An accepted Session stream whose connection is lost while its first
    write is under way: that write never completes, and read() then fails
    as grpc.aio reports a lost connection."""

    def __init__(self) -> None:
        self.writing = asyncio.Event()
        self.lost = asyncio.Event()
        self.written: list[bytes] = []

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return grpc.aio.Metadata()

    def done(self) -> bool:
        return self.lost.is_set()

    async def write(self, message: bytes) -> None:
        self.written.append(message)
        self.writing.set()
        await asyncio.Event().wait()  # cut off by the lost connection

    async def read(self) -> bytes:
        await self.lost.wait()
        raise stream_error(grpc.StatusCode.UNAVAILABLE)

    def cancel(self) -> bool:
        return True


async def _two_inserts(stream: _AsyncStream, lost: _AsyncLostWhileWriting) -> list[Any]:
    """The first insert's write under way, the second queued behind it."""
    first = asyncio.ensure_future(stream.call("execute", _insert(1), None))
    await lost.writing.wait()
    second = asyncio.ensure_future(stream.call("execute", _insert(2), None))
    await asyncio.sleep(0)
    return [first, second]


async def test_an_async_call_queued_behind_the_write_under_way_when_the_connection_broke_is_resent():
    lost = _AsyncLostWhileWriting()
    async with _stream_on(lost) as stream:
        calls = await _two_inserts(stream, lost)
        lost.lost.set()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert len(lost.written) == 1
    assert _sql(lost.written[0]) == ["INSERT INTO t VALUES (1)"]
    broke, never_sent = outcomes
    assert isinstance(broke, dbgateway.Unavailable)
    assert broke.reason == "SESSION_BROKEN"
    assert not _should_retry(broke, write=True, idempotent=False)
    # The second insert was never written: it did not reach the server.
    assert isinstance(never_sent, dbgateway.Unavailable)
    assert never_sent.reason == "SESSION_ENDED"
    assert _should_retry(never_sent, write=True, idempotent=False)


async def test_async_calls_cut_off_by_closing_the_client_are_not_sent_again():
    lost = _AsyncLostWhileWriting()
    async with _stream_on(lost) as stream:
        calls = await _two_inserts(stream, lost)
        await stream.close()
    for outcome in await asyncio.gather(*calls, return_exceptions=True):
        assert isinstance(outcome, dbgateway.Unavailable)
        assert outcome.reason == "SESSION_BROKEN"


class _StreamLostWhileSending(_SyncStreamDouble):
    """A sync stream-stream call whose connection is lost, once the server
    accepted it (``accept``), while gRPC sends the first message it took from
    the request iterator: as gRPC's request thread does, it takes a message,
    asks for the next only once that one was sent, and asks for none after
    the stream ended."""

    def __init__(self, requests: Iterator[bytes], metadata: object = None) -> None:
        self.accept = threading.Event()
        self.taken: list[bytes] = []
        self.took = threading.Event()
        super().__init__(requests, _lost_connection)

    def _consume(self, requests: Iterator[bytes]) -> None:
        self.taken.append(next(requests))
        self.took.set()  # its send never completes: the connection is lost first

    def lose_connection(self) -> None:
        self.ended.set()

    def initial_metadata(self) -> tuple[()]:
        self.accept.wait()
        return ()


class _SyncCalls:
    """Sync session calls made from threads, as a threaded application makes
    them, each keeping the error it failed with."""

    def __init__(self, max_bytes: int = 4 << 20) -> None:
        from dbgateway import _session

        self.streams: list[_StreamLostWhileSending] = []
        self.stream = _session._SyncStream(self._open, (), max_bytes)
        self.errors: dict[str, dbgateway.DbGatewayError] = {}
        self._threads: list[threading.Thread] = []

    def _open(self, requests: Iterator[bytes], metadata: object = None) -> _StreamLostWhileSending:
        self.streams.append(_StreamLostWhileSending(requests, metadata))
        return self.streams[-1]

    def insert(self, value: int) -> None:
        thread = threading.Thread(target=self._insert, args=(value,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def _insert(self, value: int) -> None:
        try:
            self.stream.call("execute", _insert(value), 30.0)
        except dbgateway.DbGatewayError as exc:
            self.errors[f"INSERT INTO t VALUES ({value})"] = exc

    def one_sending_one_queued(self) -> _StreamLostWhileSending:
        """The first insert's message taken by gRPC (and still sending), the
        second's queued behind it; the stream."""
        stream = self.streams[0]
        stream.accept.set()
        self.insert(1)
        assert stream.took.wait(30)
        self.insert(2)
        self.wait_until_queued(1)
        return stream

    def wait_until_queued(self, count: int) -> None:
        # The calls are on the stream's queue, not yet taken by gRPC.
        for _ in range(10_000):
            if self.stream._outbox.qsize() == count:
                return
            time.sleep(0.001)
        raise AssertionError(f"never {count} calls queued")

    def finish(self) -> None:
        for thread in self._threads:
            thread.join(30)
        self.stream.close()


def _insert(value: int) -> pb.ExecuteRequest:
    return pb.ExecuteRequest(sql=f"INSERT INTO t VALUES ({value})")


def _sql(message: bytes) -> list[str]:
    return [call.execute.sql for call in pb.SessionRequest.FromString(message).calls]


def test_a_sync_call_queued_behind_the_message_grpc_was_sending_when_the_stream_broke_is_resent():
    calls = _SyncCalls()
    lost = calls.one_sending_one_queued()
    lost.lose_connection()
    calls.finish()
    assert _sql(lost.taken[0]) == ["INSERT INTO t VALUES (1)"]
    # gRPC took the first insert's message: it may have run.
    sent = calls.errors["INSERT INTO t VALUES (1)"]
    assert sent.reason == "SESSION_BROKEN"
    assert not _should_retry(sent, write=True, idempotent=False)
    # The second never left the client: it is sent again.
    queued = calls.errors["INSERT INTO t VALUES (2)"]
    assert (queued.code, queued.reason) == (grpc.StatusCode.UNAVAILABLE, "SESSION_ENDED")
    assert _should_retry(queued, write=True, idempotent=False)


def test_a_sync_call_in_a_later_message_than_the_one_grpc_took_is_resent_when_the_stream_broke():
    from dbgateway import _session

    # Room for one call a message: two calls queued together go out in two.
    one = len(_session._call(1, "execute", _insert(1), 30.0))
    calls = _SyncCalls(max_bytes=one + one // 2)
    lost = calls.streams[0]
    calls.insert(1)
    calls.insert(2)
    calls.wait_until_queued(2)
    lost.accept.set()
    assert lost.took.wait(30)
    lost.lose_connection()
    calls.finish()
    [taken] = _sql(lost.taken[0])
    [left] = {"INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)"} - {taken}
    assert calls.errors[taken].reason == "SESSION_BROKEN"
    assert calls.errors[left].reason == "SESSION_ENDED"
    assert _should_retry(calls.errors[left], write=True, idempotent=False)


def test_sync_calls_cut_off_by_closing_the_client_are_not_sent_again():
    # As with the async client: a closing client sends nothing again, even a
    # call gRPC never took.
    calls = _SyncCalls()
    calls.one_sending_one_queued()
    calls.stream.close()
    calls.finish()
    for error in calls.errors.values():
        assert error.reason == "SESSION_BROKEN"
    assert len(calls.errors) == 2
