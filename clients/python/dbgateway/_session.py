"""The session transport: many calls on one ``Session`` stream per channel.

Each call gets an id; whatever calls are waiting go out in one message and
the server's results come back in completion order, so one slow call never
holds back the others. What the two clients share (building a call, reading
its result, deciding what a stream's end means for the calls still waiting)
lives here once; :class:`AsyncSession` and :class:`SyncSession` differ only
in how they wait.

When a stream ends, a call still waiting on it is settled by what the end
says:

- ``UNAVAILABLE`` / ``SESSION_ENDED`` (drain, ``max_session_age``): the server
  answered every call it read, so the call never ran; it fails with that
  error, which the client's retry rules send again on a new stream, write or
  not;
- ``UNIMPLEMENTED``: the server has no ``Session``; the client switches to
  unary calls for good and the call is sent that way;
- anything else (a lost connection): the call may have run, so it fails with
  ``UNAVAILABLE`` and the client's retry rules decide (a read is tried once
  more, a write only when ``idempotent``); but a call known never to have
  left the client (not yet written, or its message not yet taken by gRPC's
  request thread) fails ``SESSION_ENDED`` and is sent again.

The stream carries bytes, not messages: each call's request is serialized
once, by its caller, and framed as one element of ``SessionRequest.calls``
(protobuf's wire format for a repeated message field is just the elements one
after another), so a message is the concatenation of what is waiting, kept
under the size the server accepts. The other way, the reader only finds
where each result of a ``SessionResponse`` lies and hands its bytes to its
caller, which parses its own response: a large result in a message delays
no other call's result by being parsed first.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections.abc import Iterable, Iterator
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
from google.protobuf import duration_pb2
from google.rpc import status_pb2

from ._errors import DbGatewayError, error_class, from_rpc_error, from_status_message
from ._tracing import with_trace_context
from ._wire import length_delimited, varint
from .v1 import database_service_pb2 as pb

__all__ = ["SESSION_METHOD", "AsyncSession", "SessionUnsupported", "SyncSession"]

SESSION_METHOD = "/dbgateway.v1.DatabaseService/Session"

#: SessionCall's field number for each kind of call.
_CALL_FIELDS = {
    kind: pb.SessionCall.DESCRIPTOR.fields_by_name[kind].number
    for kind in ("query", "execute", "execute_batch", "run_transaction")
}
#: SessionResult's field number -> the parser of what it carries.
_RESULT_PARSERS: dict[int, Any] = {
    pb.SessionResult.DESCRIPTOR.fields_by_name[kind].number: parse
    for kind, parse in (
        ("query", pb.QueryResponse.FromString),
        ("execute", pb.ExecuteResponse.FromString),
        ("execute_batch", pb.ExecuteBatchResponse.FromString),
        ("run_transaction", pb.RunTransactionResponse.FromString),
    )
}
_ERROR_FIELD = pb.SessionResult.DESCRIPTOR.fields_by_name["error"].number
_CALLS_KEY = 1 << 3 | 2  # SessionRequest.calls / SessionResponse.results, length-delimited
_CANCEL_FIELD = pb.SessionRequest.DESCRIPTOR.fields_by_name["cancel"].number
_ID_KEY = 1 << 3  # SessionResult.id, a varint

#: What a result hands its caller: (SessionResult field number, its bytes).
Result = tuple[int, memoryview]


class SessionUnsupported(Exception):
    """The server has no Session RPC (UNIMPLEMENTED): use unary calls."""


def _call(call_id: int, kind: str, request: Any, timeout: float | None) -> bytes:
    """One call as a ``SessionRequest.calls`` element (wire format)."""
    head = pb.SessionCall(id=call_id)
    if timeout is not None:
        head.timeout.CopyFrom(_duration(timeout))
    trace = with_trace_context(())
    if trace:
        # The caller's current span, as a unary call would send it in metadata.
        head.trace_context.update(trace)
    body = length_delimited(_CALL_FIELDS[kind], request.SerializeToString())
    return length_delimited(1, head.SerializeToString() + body)


def _cancels(call_ids: list[int]) -> bytes:
    """``SessionRequest.cancel`` (packed) for ``call_ids``."""
    return length_delimited(_CANCEL_FIELD, b"".join(map(varint, call_ids)))


def _messages(elements: list[bytes], limit: int) -> Iterator[tuple[bytes, int]]:
    """``elements`` joined into messages of at most ``limit`` bytes each (an
    element is never split; one over the limit was refused when it was made),
    each with how many elements it carries."""
    batch: list[bytes] = []
    size = 0
    for element in elements:
        if batch and size + len(element) > limit:
            yield b"".join(batch), len(batch)
            batch, size = [], 0
        batch.append(element)
        size += len(element)
    if batch:
        yield b"".join(batch), len(batch)


def _never_sent() -> DbGatewayError:
    return error_class(grpc.StatusCode.UNAVAILABLE, "SESSION_ENDED")(
        grpc.StatusCode.UNAVAILABLE,
        "the session stream had ended before the call was written on it; "
        "the call never reached the server",
        reason="SESSION_ENDED",
    )


def _broke(ended: Exception) -> bool:
    """The stream broke under its calls (they may have run), rather than
    being refused or ended by the server: then those never written are
    known not to have reached it (see :func:`_fail_never_sent`)."""
    return isinstance(ended, DbGatewayError) and ended.reason == "SESSION_BROKEN"


def _fail_never_sent(waiting: dict[int, Any], call_ids: Iterable[int]) -> None:
    """Fail each of ``call_ids`` still waiting with :func:`_never_sent`: its
    message never left the client, so it is sent again on a new stream."""
    for call_id in call_ids:
        waiter = waiting.pop(call_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_exception(_never_sent())


def _too_large(size: int, limit: int) -> DbGatewayError:
    # As a unary call fails when its request is over the channel's send limit.
    return error_class(grpc.StatusCode.RESOURCE_EXHAUSTED, "")(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"the request is {size} bytes, more than the {limit} a message may carry "
        "(ClientConfig.max_send_bytes)",
    )


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    byte = data[pos]
    if byte < 0x80:
        return byte, pos + 1
    value, shift = byte & 0x7F, 7
    while True:
        pos += 1
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos + 1
        shift += 7


def _skip(data: bytes, pos: int, key: int) -> int:
    """The position after the value of a field this reader does not want."""
    wire = key & 7
    if wire == 0:
        return _read_varint(data, pos)[1]
    if wire == 2:
        length, pos = _read_varint(data, pos)
        return pos + length
    if wire == 1:
        return pos + 8
    if wire == 5:
        return pos + 4
    raise ValueError(f"unexpected wire type {wire} in a SessionResponse")


def _results(message: bytes) -> Iterator[tuple[int, Result]]:
    """(call id, result) for each result of a serialized ``SessionResponse``,
    without parsing what the results carry."""
    view = memoryview(message)
    pos, end = 0, len(message)
    while pos < end:
        key, pos = _read_varint(message, pos)
        if key != _CALLS_KEY:
            pos = _skip(message, pos, key)
            continue
        length, pos = _read_varint(message, pos)
        stop = pos + length
        call_id, field, payload = 0, 0, view[0:0]
        while pos < stop:
            key, pos = _read_varint(message, pos)
            if key == _ID_KEY:
                call_id, pos = _read_varint(message, pos)
            elif key & 7 == 2:
                field = key >> 3
                size, pos = _read_varint(message, pos)
                payload = view[pos : pos + size]
                pos += size
            else:
                pos = _skip(message, pos, key)
        yield call_id, (field, payload)


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(max(int(seconds * 1e9), 1))
    return value


def _response(result: Result) -> Any:
    """The unary response a result carries, or the error it failed with."""
    field, payload = result
    if field == _ERROR_FIELD:
        raise from_status_message(status_pb2.Status.FromString(payload))
    return _RESULT_PARSERS.get(field, pb.QueryResponse.FromString)(payload)


def _ending(error: grpc.RpcError, established: bool, *, sent: bool = True) -> Exception:
    """What a stream's end means for the calls still waiting on it;
    ``established``: the server had accepted the stream (its initial
    metadata came), so calls may have reached it; ``sent``: the client wrote
    something on it."""
    code: grpc.StatusCode = error.code()
    if code is grpc.StatusCode.UNIMPLEMENTED:
        return SessionUnsupported()
    decoded = from_rpc_error(error)
    if not established:
        if code is grpc.StatusCode.CANCELLED and not sent:
            # Cancelled by the server before it accepted the stream (a server
            # beginning to shut down cancels the streams it has not started)
            # and nothing was written on it: no call reached the server, so
            # each is sent again, as after the server ended a session.
            return error_class(grpc.StatusCode.UNAVAILABLE, "SESSION_ENDED")(
                grpc.StatusCode.UNAVAILABLE,
                "the session stream was cancelled before the server accepted it; "
                "the call never reached the server",
                reason="SESSION_ENDED",
            )
        return decoded  # nothing reached the server: as a unary call would fail
    if decoded.reason and code is grpc.StatusCode.UNAVAILABLE:
        return decoded  # the server's own answer (SESSION_ENDED)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return decoded
    # A lost connection (UNAVAILABLE from the transport), a reset or anything
    # else: the call's fate is unknown.
    return error_class(grpc.StatusCode.UNAVAILABLE, "SESSION_BROKEN")(
        grpc.StatusCode.UNAVAILABLE,
        f"the session stream broke ({code.name}: {decoded.message}); the call may have run",
        reason="SESSION_BROKEN",
    )


def _deadline_exceeded() -> DbGatewayError:
    return error_class(grpc.StatusCode.DEADLINE_EXCEEDED, "")(
        grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"
    )


def _closed_error() -> DbGatewayError:
    return error_class(grpc.StatusCode.UNAVAILABLE, "SESSION_BROKEN")(
        grpc.StatusCode.UNAVAILABLE,
        "the session stream ended before answering the call; it may have run",
        reason="SESSION_BROKEN",
    )


# ---------------------------------------------------------------------------
# asyncio
# ---------------------------------------------------------------------------


class _AsyncStream:
    """One Session stream and the calls waiting on it."""

    def __init__(self, session: Any, metadata: Any, max_bytes: int) -> None:
        self._rpc = session(metadata=metadata)
        self._max_bytes = max_bytes
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Result]] = {}
        self._calls: list[bytes] = []
        self._call_ids: list[int] = []  # of self._calls, in order
        #: The calls the writer took and has not written yet, in order; the
        #: first ``_in_write`` of them are in the write under way.
        self._unwritten: list[int] = []
        self._in_write = 0
        self._cancels: list[int] = []
        self._wake = asyncio.Event()
        self._sent = False  # anything written on the stream yet
        self.ended: Exception | None = None
        #: The server said it takes no more calls here: new ones go to a new
        #: stream while this one delivers what it still owes.
        self.retiring = False
        loop = asyncio.get_running_loop()
        self._tasks = (
            loop.create_task(self._write(), name="dbgateway-session-writer"),
            loop.create_task(self._read(), name="dbgateway-session-reader"),
        )

    async def call(self, kind: str, request: Any, timeout: float | None) -> Any:  # noqa: ASYNC109
        if self.ended is not None:
            raise self.ended
        call_id = next(self._ids)
        element = _call(call_id, kind, request, timeout)
        if len(element) > self._max_bytes:
            raise _too_large(len(element), self._max_bytes)
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = waiter
        self._calls.append(element)
        self._call_ids.append(call_id)
        self._wake.set()
        try:
            if timeout is None:
                result = await waiter
            else:
                async with asyncio.timeout(timeout):
                    result = await waiter
        except BaseException as exc:
            # Cancelled or past its deadline: stop it on the server too.
            if self._waiting.pop(call_id, None) is not None and self.ended is None:
                self._cancels.append(call_id)
                self._wake.set()
            if isinstance(exc, TimeoutError):
                raise _deadline_exceeded() from None
            raise
        return self._response(result)

    def _response(self, result: Result) -> Any:
        try:
            return _response(result)
        except DbGatewayError as exc:
            if exc.reason == "SESSION_ENDED":
                self.retiring = True
            raise

    async def _write(self) -> None:
        try:
            # Nothing is written before the server accepted the stream: one
            # that refuses it at once (draining, a bad token) would otherwise
            # race our first write, and grpc.aio then reports the failed write
            # ("Internal error from Core") instead of the server's status.
            await self._rpc.initial_metadata()
            if self._rpc.done():
                return
            while True:
                await self._wake.wait()
                self._wake.clear()
                if not self._calls and not self._cancels:
                    continue
                calls, self._calls = self._calls, []
                self._unwritten, self._call_ids = self._call_ids, []
                cancels, self._cancels = self._cancels, []
                if cancels:
                    calls.append(_cancels(cancels))
                for message, count in _messages(calls, self._max_bytes):
                    self._sent = True
                    self._in_write = count
                    await self._rpc.write(message)
                    # (the cancels' element has no id: past the end)
                    del self._unwritten[:count]
                    self._in_write = 0
        except (grpc.RpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
            # A write refused because the stream had ended (grpc.aio then
            # reports INTERNAL for the whole stream, hiding the server's own
            # status): the calls it carried, and those not taken yet, never
            # reached the server and may be sent again. The reader settles
            # the rest, those written before, whose fate the stream's end tells.
            self._not_sent([*self._unwritten, *self._call_ids])
            self._unwritten = []
            return

    def _not_sent(self, call_ids: list[int]) -> None:
        self._call_ids = []
        _fail_never_sent(self._waiting, call_ids)

    async def _read(self) -> None:
        ended: Exception
        established = False
        try:
            await self._rpc.initial_metadata()
            established = not self._rpc.done()
            while True:
                message = await self._rpc.read()
                if message is grpc.aio.EOF:
                    break
                waiting = self._waiting
                for call_id, result in _results(message):
                    waiter = waiting.pop(call_id, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(result)
            ended = _closed_error()  # a failed stream raises from read()
        except grpc.RpcError as exc:
            ended = _ending(exc, established, sent=self._sent)
        except asyncio.CancelledError:
            self._settle(_closed_error())
            raise
        self._settle(ended, broke=_broke(ended))

    def _settle(self, ended: Exception, *, broke: bool = False) -> None:
        """Fails the calls still waiting with ``ended``; ``broke``: the
        stream broke under them, yet those the writer had not begun to write
        never reached the server, and fail SESSION_ENDED to be sent again (a
        client closing sends nothing again)."""
        self.ended = ended
        self._tasks[0].cancel()
        if broke:
            _fail_never_sent(self._waiting, [*self._unwritten[self._in_write :], *self._call_ids])
        self._unwritten, self._call_ids = [], []
        waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            if not waiter.done():
                waiter.set_exception(ended)

    async def close(self) -> None:
        if self.ended is None:
            self._settle(_closed_error())
        self._rpc.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class AsyncSession:
    """The asyncio session transport of one channel: a stream opened on first
    use and opened again after it ended."""

    def __init__(self, channel: grpc.aio.Channel, metadata: Any, max_bytes: int) -> None:
        # Bytes both ways: requests arrive serialized, results are parsed by their callers.
        self._session = channel.stream_stream(SESSION_METHOD)
        self._metadata = metadata
        self._max_bytes = max_bytes
        self._stream: _AsyncStream | None = None

    async def call(self, kind: str, request: Any, timeout: float | None) -> Any:  # noqa: ASYNC109
        """The unary response to ``request`` (a ``kind`` call: ``query``,
        ``execute``, ``execute_batch``, ``run_transaction``). Raises
        :class:`DbGatewayError` (``SESSION_ENDED``: it never ran) or
        :class:`SessionUnsupported`."""
        stream = self._stream
        if stream is None or stream.ended is not None or stream.retiring:
            stream = self._stream = _AsyncStream(self._session, self._metadata, self._max_bytes)
        return await stream.call(kind, request, timeout)

    async def close(self) -> None:
        if self._stream is not None:
            await self._stream.close()
            self._stream = None


# ---------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------

_STOP = object()


class _SyncStream:
    """One Session stream for the sync client: callers in any thread put their
    calls on a queue, gRPC's request thread sends whatever has gathered in one
    message, and a reader thread hands each result to its caller."""

    def __init__(self, session: Any, metadata: Any, max_bytes: int) -> None:
        self._ids = itertools.count(1)
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._waiting: dict[int, futures.Future[Result]] = {}
        #: The calls queued whose message gRPC has not taken yet (see _requests).
        self._unsent: set[int] = set()
        #: (call id, element), a call id to cancel, or _STOP.
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.ended: Exception | None = None
        #: See :attr:`_AsyncStream.retiring`.
        self.retiring = False
        #: Set once the server accepted the stream (or it ended first).
        self._accepted = threading.Event()
        #: Something was written on the stream (see :func:`_ending`).
        self._sent = False
        self._responses = session(self._requests(), metadata=metadata)
        self._reader = threading.Thread(
            target=self._read, name="dbgateway-session-reader", daemon=True
        )
        self._reader.start()

    def _requests(self) -> Iterator[bytes]:
        # As the async stream: nothing is written before the server accepted
        # the stream, so that a stream it cancels first (a server beginning
        # to shut down) is known to have carried no call.
        self._accepted.wait()
        if self._responses.done():
            return
        outbox = self._outbox
        while True:
            item = outbox.get()
            calls: list[bytes] = []
            call_ids: list[int] = []  # of calls, in order
            cancels: list[int] = []
            stop = False
            while True:
                if item is _STOP:
                    stop = True
                    break
                if isinstance(item, int):
                    cancels.append(item)
                else:
                    call_ids.append(item[0])
                    calls.append(item[1])
                try:
                    item = outbox.get_nowait()
                except queue.Empty:
                    break
            if cancels:
                calls.append(_cancels(cancels))
            for message, count in _messages(calls, self._max_bytes):
                # gRPC's request thread takes a message from here, sends it
                # and only then asks for the next; once the stream has ended
                # it asks for none. A call whose message it never took never
                # left the client (the reader fails it SESSION_ENDED); one it
                # took may have been sent.
                with self._lock:
                    if self.ended is not None:
                        return
                    self._unsent.difference_update(call_ids[:count])
                    self._sent = True
                del call_ids[:count]  # (the cancels' element has no id: past the end)
                yield message
            if stop:
                return

    def call(self, kind: str, request: Any, timeout: float | None) -> Any:
        waiter: futures.Future[Result] = futures.Future()
        with self._lock:
            if self.ended is not None:
                raise self.ended
            call_id = next(self._ids)
        element = _call(call_id, kind, request, timeout)
        if len(element) > self._max_bytes:
            raise _too_large(len(element), self._max_bytes)
        with self._lock:
            if self.ended is not None:
                raise self.ended
            self._waiting[call_id] = waiter
            self._unsent.add(call_id)
        self._outbox.put((call_id, element))
        try:
            result = waiter.result(timeout)
        except futures.TimeoutError:
            with self._lock:
                self._waiting.pop(call_id, None)
            if not waiter.done():
                self._outbox.put(call_id)
                raise _deadline_exceeded() from None
            result = waiter.result()
        try:
            return _response(result)
        except DbGatewayError as exc:
            if exc.reason == "SESSION_ENDED":
                self.retiring = True
            raise

    def _read(self) -> None:
        ended: Exception
        established = False
        try:
            try:
                self._responses.initial_metadata()
                established = not self._responses.done()
            finally:
                self._accepted.set()
            for message in self._responses:
                with self._lock:
                    for call_id, result in _results(message):
                        waiter = self._waiting.pop(call_id, None)
                        if waiter is not None:
                            waiter.set_result(result)
            ended = _closed_error()
        except grpc.RpcError as exc:
            ended = _ending(exc, established, sent=self._sent)
        self._settle(ended, broke=_broke(ended))

    def _settle(self, ended: Exception, *, broke: bool) -> None:
        """Fail the calls still waiting with ``ended``; ``broke``: the stream
        broke, so ``ended`` says they may have run, yet those gRPC never took
        never reached the server and fail SESSION_ENDED, to be sent again."""
        with self._lock:
            if self.ended is not None:
                return  # closed first
            self.ended = ended
            waiting, self._waiting = self._waiting, {}
            unsent, self._unsent = self._unsent, set()
        self._outbox.put(_STOP)
        if broke:
            _fail_never_sent(waiting, unsent)
        for waiter in waiting.values():
            waiter.set_exception(ended)

    def close(self) -> None:
        # As the async stream: the calls still waiting fail as cut off by
        # the close, not as never sent (a client closing sends nothing again).
        self._settle(_closed_error(), broke=False)
        self._responses.cancel()
        self._reader.join(5)


class SyncSession:
    """The thread-safe session transport of one sync channel (see
    :class:`AsyncSession`)."""

    def __init__(self, channel: grpc.Channel, metadata: Any, max_bytes: int) -> None:
        self._session = channel.stream_stream(SESSION_METHOD)  # bytes both ways
        self._metadata = metadata
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._stream: _SyncStream | None = None

    def call(self, kind: str, request: Any, timeout: float | None) -> Any:
        """See :meth:`AsyncSession.call`."""
        with self._lock:
            stream = self._stream
            if stream is None or stream.ended is not None or stream.retiring:
                stream = self._stream = _SyncStream(self._session, self._metadata, self._max_bytes)
        return stream.call(kind, request, timeout)

    def close(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()
