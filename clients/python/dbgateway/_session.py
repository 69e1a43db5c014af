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
  more, a write only when ``idempotent``).
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
from google.protobuf import duration_pb2

from ._errors import DbGatewayError, error_class, from_rpc_error, from_status_message
from ._tracing import with_trace_context
from .v1 import database_service_pb2 as pb

__all__ = ["AsyncSession", "SessionUnsupported", "SyncSession"]


class SessionUnsupported(Exception):
    """The server has no Session RPC (UNIMPLEMENTED): use unary calls."""


def _call(call_id: int, kind: str, request: Any, timeout: float | None) -> pb.SessionCall:
    call = pb.SessionCall(id=call_id, **{kind: request})
    if timeout is not None:
        call.timeout.CopyFrom(_duration(timeout))
    trace = with_trace_context(())
    if trace:
        # The caller's current span, as a unary call would send it in metadata.
        call.trace_context.update(trace)
    return call


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(max(int(seconds * 1e9), 1))
    return value


def _response(result: pb.SessionResult) -> Any:
    """The unary response a result carries, or the error it failed with."""
    kind = result.WhichOneof("result")
    if kind == "error":
        raise from_status_message(result.error)
    return getattr(result, kind or "query")


def _ending(error: grpc.RpcError, established: bool) -> Exception:
    """What a stream's end means for the calls still waiting on it;
    ``established``: the server had accepted the stream (its initial
    metadata came), so calls may have reached it."""
    code: grpc.StatusCode = error.code()
    if code is grpc.StatusCode.UNIMPLEMENTED:
        return SessionUnsupported()
    decoded = from_rpc_error(error)
    if not established:
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

    def __init__(self, stub: Any, metadata: Any) -> None:
        self._rpc = stub.Session(metadata=metadata)
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[pb.SessionResult]] = {}
        self._calls: list[pb.SessionCall] = []
        self._cancels: list[int] = []
        self._wake = asyncio.Event()
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
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = waiter
        self._calls.append(_call(call_id, kind, request, timeout))
        self._wake.set()
        try:
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

    def _response(self, result: pb.SessionResult) -> Any:
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
                cancels, self._cancels = self._cancels, []
                await self._rpc.write(pb.SessionRequest(calls=calls, cancel=cancels))
        except (grpc.RpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
            return  # the reader sees the stream's end and settles the calls

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
                for result in message.results:
                    waiter = waiting.pop(result.id, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(result)
            ended = _closed_error()  # a failed stream raises from read()
        except grpc.RpcError as exc:
            ended = _ending(exc, established)
        except asyncio.CancelledError:
            self._settle(_closed_error())
            raise
        self._settle(ended)

    def _settle(self, ended: Exception) -> None:
        self.ended = ended
        self._tasks[0].cancel()
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

    def __init__(self, stub: Any, metadata: Any) -> None:
        self._stub = stub
        self._metadata = metadata
        self._stream: _AsyncStream | None = None

    async def call(self, kind: str, request: Any, timeout: float | None) -> Any:  # noqa: ASYNC109
        """The unary response to ``request`` (a ``kind`` call: ``query``,
        ``execute``, ``execute_batch``, ``run_transaction``). Raises
        :class:`DbGatewayError` (``SESSION_ENDED``: it never ran) or
        :class:`SessionUnsupported`."""
        stream = self._stream
        if stream is None or stream.ended is not None or stream.retiring:
            stream = self._stream = _AsyncStream(self._stub, self._metadata)
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

    def __init__(self, stub: Any, metadata: Any) -> None:
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._waiting: dict[int, futures.Future[pb.SessionResult]] = {}
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.ended: Exception | None = None
        #: See :attr:`_AsyncStream.retiring`.
        self.retiring = False
        self._responses = stub.Session(self._requests(), metadata=metadata)
        self._reader = threading.Thread(
            target=self._read, name="dbgateway-session-reader", daemon=True
        )
        self._reader.start()

    def _requests(self) -> Iterator[pb.SessionRequest]:
        outbox = self._outbox
        while True:
            item = outbox.get()
            calls: list[pb.SessionCall] = []
            cancels: list[int] = []
            while True:
                if item is _STOP:
                    if calls or cancels:
                        yield pb.SessionRequest(calls=calls, cancel=cancels)
                    return
                if isinstance(item, int):
                    cancels.append(item)
                else:
                    calls.append(item)
                try:
                    item = outbox.get_nowait()
                except queue.Empty:
                    break
            yield pb.SessionRequest(calls=calls, cancel=cancels)

    def call(self, kind: str, request: Any, timeout: float | None) -> Any:
        waiter: futures.Future[pb.SessionResult] = futures.Future()
        with self._lock:
            if self.ended is not None:
                raise self.ended
            call_id = next(self._ids)
            self._waiting[call_id] = waiter
        self._outbox.put(_call(call_id, kind, request, timeout))
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
            self._responses.initial_metadata()
            established = not self._responses.done()
            for message in self._responses:
                with self._lock:
                    for result in message.results:
                        waiter = self._waiting.pop(result.id, None)
                        if waiter is not None:
                            waiter.set_result(result)
            ended = _closed_error()
        except grpc.RpcError as exc:
            ended = _ending(exc, established)
        with self._lock:
            self.ended = ended
            waiting, self._waiting = self._waiting, {}
        self._outbox.put(_STOP)
        for waiter in waiting.values():
            waiter.set_exception(ended)

    def close(self) -> None:
        self._outbox.put(_STOP)
        self._responses.cancel()
        self._reader.join(5)


class SyncSession:
    """The thread-safe session transport of one sync channel (see
    :class:`AsyncSession`)."""

    def __init__(self, stub: Any, metadata: Any) -> None:
        self._stub = stub
        self._metadata = metadata
        self._lock = threading.Lock()
        self._stream: _SyncStream | None = None

    def call(self, kind: str, request: Any, timeout: float | None) -> Any:
        """See :meth:`AsyncSession.call`."""
        with self._lock:
            stream = self._stream
            if stream is None or stream.ended is not None or stream.retiring:
                stream = self._stream = _SyncStream(self._stub, self._metadata)
        return stream.call(kind, request, timeout)

    def close(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()
