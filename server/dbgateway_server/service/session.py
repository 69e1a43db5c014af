"""The ``Session`` stream: many logical calls on one gRPC stream.

A session is a transport, not a second implementation: each logical call is
handed to the very servicer method its unary RPC runs (``Query``,
``Execute``, ``ExecuteBatch``, ``RunTransaction``) with a
:class:`SessionCallContext` in place of gRPC's servicer context. So
authentication, authorization, per-principal limits, retries, the breaker,
the error table, the access log and the metrics are the unary ones; the
context only changes where the deadline comes from, where the request id
comes from and where a failure goes (into the call's ``SessionResult``
instead of the stream's status).

Flow control: a call holds one of the session's ``max_session_calls`` slots
from the moment it is read until gRPC has taken its result. With every slot
taken the session stops reading, so an unread stream pushes back on its
client through HTTP/2 flow control, and the results a session holds in
memory never exceed ``max_session_calls``.

Each result is serialized once, by its call's task, as soon as it is ready:
a ``SessionResponse`` is only the concatenation of its results' bytes (each
an element of its repeated ``results`` field), which the stream sends as they
are (see :func:`session_response_bytes`). Copying a result into a wrapping
message, or sizing it, would cost as much again as serializing it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.rpc import code_pb2, status_pb2

from dbgateway._wire import length_delimited, varint
from dbgateway.v1 import database_service_pb2 as pb

from ..call import Timeout
from ..config import STREAM_MESSAGE_LIMIT_BYTES, ServerConfig
from ..errors import GatewayError, Reason, to_rpc_status
from ..observability import REQUEST_ID_HEADER, Metrics
from ..security import Guard
from .calls import abort, duration_seconds

log = logging.getLogger("dbgateway_server.session")

#: The unary servicer method that runs each kind of session call.
CALL_METHODS = {
    "query": "Query",
    "execute": "Execute",
    "execute_batch": "ExecuteBatch",
    "run_transaction": "RunTransaction",
}

_STATUS_DETAILS_KEY = "grpc-status-details-bin"
#: Stream metadata a logical call does not inherit: the trace context that was
#: current when the stream opened is no parent of the calls made on it later.
_STREAM_ONLY = frozenset({"traceparent", "tracestate", "baggage"})
#: What a call's ``trace_context`` may carry (nothing else becomes metadata).
_TRACE_KEYS = _STREAM_ONLY
#: Results that are ready together travel in one message of at most this
#: size: gRPC's default receive limit, so that coalescing never makes a message
#: a client with default settings cannot read (one result bigger than this
#: travels alone, as its unary response would).
MESSAGE_BYTES = STREAM_MESSAGE_LIMIT_BYTES
#: A result up to this size is small: the small results that are ready go
#: out before the big ones, in a message of their own (see _next_message).
SMALL_RESULT_BYTES = 256 * 1024

#: SessionResult's field number for each kind of call's response (and errors).
_RESULT_FIELDS = {
    kind: pb.SessionResult.DESCRIPTOR.fields_by_name[kind].number
    for kind in (*CALL_METHODS, "error")
}


def result_element(call_id: int, kind: str, payload: bytes) -> bytes:
    """One ``SessionResponse.results`` element, in protobuf's wire format:
    the ``SessionResult`` of ``call_id`` carrying ``payload`` (a serialized
    response, or a ``google.rpc.Status`` for ``kind="error"``)."""
    result = b"\x08" + varint(call_id) + length_delimited(_RESULT_FIELDS[kind], payload)
    return length_delimited(1, result)


def session_response_bytes(message: bytes | pb.SessionResponse) -> bytes:
    """The Session stream's response serializer: a message of prebuilt
    result elements goes out as it is."""
    if isinstance(message, bytes):
        return message
    return message.SerializeToString()


def _error_element(call_id: int, status: status_pb2.Status) -> bytes:
    return result_element(call_id, "error", status.SerializeToString())


def _next_message(ready: list[bytes], limit: int = MESSAGE_BYTES) -> list[bytes]:
    """Takes from ``ready`` what goes out next, at most ``limit`` bytes:
    every small result that is ready, oldest first; when none is, the big
    ones, oldest first (the first one whatever its size). So a big result
    never holds back the small ones ready with it or while it waited, and
    big ones ready together still share a message: each write waits for a
    turn of the event loop, and a turn is long when results are big."""
    small = [e for e in ready if len(e) <= SMALL_RESULT_BYTES]
    batch: list[bytes] = []
    size = 0
    for element in small or ready:
        if batch and size + len(element) > limit:
            break
        batch.append(element)
        size += len(element)
    taken = set(map(id, batch))
    ready[:] = [e for e in ready if id(e) not in taken]
    return batch


class SessionAbort(grpc.aio.AbortError):  # type: ignore[misc]
    """A logical call failed: ``status`` is what its unary RPC would have
    ended with."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.status = status


def _status_of(status: grpc.Status) -> status_pb2.Status:
    for key, value in status.trailing_metadata or ():
        if key == _STATUS_DETAILS_KEY:
            return status_pb2.Status.FromString(value)
    return status_pb2.Status(code=status.code.value[0], message=status.details or "")


class SessionCallContext:
    """The servicer context a logical session call runs with: its own
    deadline, the stream's metadata with a request id of its own, and a
    failure that becomes the call's result instead of ending the stream."""

    __slots__ = ("_deadline", "_metadata", "_stream")

    #: Labels the call's metrics and access-log line.
    transport = "session"

    def __init__(
        self,
        stream: grpc.aio.ServicerContext,
        metadata: tuple[tuple[str, Any], ...],
        timeout: float | None,
    ) -> None:
        self._stream = stream
        self._metadata = metadata
        self._deadline = None if timeout is None else time.monotonic() + timeout

    def time_remaining(self) -> float | None:
        own = None if self._deadline is None else self._deadline - time.monotonic()
        stream: float | None = self._stream.time_remaining()
        if own is None:
            return stream
        return own if stream is None else min(own, stream)

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._metadata

    async def send_initial_metadata(self, metadata: Sequence[tuple[str, str]]) -> None:
        """A logical call has no metadata of its own: its result carries its id."""

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str]]) -> None:
        """See :meth:`send_initial_metadata`."""

    async def abort_with_status(self, status: grpc.Status) -> None:
        raise SessionAbort(_status_of(status))

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> None:
        raise SessionAbort(status_pb2.Status(code=code.value[0], message=details))

    def peer(self) -> str:
        return str(self._stream.peer())

    def auth_context(self) -> Any:
        return self._stream.auth_context()


def _ended(message: str) -> GatewayError:
    return GatewayError(Reason.SESSION_ENDED, message)


_DEADLINE_EXCEEDED = status_pb2.Status(code=code_pb2.DEADLINE_EXCEEDED, message="deadline exceeded")
_CANCELLED = status_pb2.Status(code=code_pb2.CANCELLED, message="cancelled by the client")


class _Session:
    """One open Session stream (see the module docstring)."""

    def __init__(
        self,
        servicer: Any,
        context: grpc.aio.ServicerContext,
        config: ServerConfig,
        on_end: Callable[[_Session], None],
        on_peak: Callable[[int], None],
    ) -> None:
        self._servicer = servicer
        self._context = context
        self._limit = config.max_session_calls
        self._tasks: dict[int, asyncio.Task[None]] = {}
        #: Serialized results (``SessionResponse.results`` elements) to send.
        self._ready: list[bytes] = []
        #: Calls read and not yet handed to gRPC (running, or their result waiting).
        self._held = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._eof = False
        #: The stream itself is over: a cancelled call gets no result.
        self._closing = False
        #: Why the session takes no more calls (drain, age); None while it does.
        self.ending: str | None = None
        self._on_end = on_end
        self._on_peak = on_peak
        rid = ""
        metadata: list[tuple[str, Any]] = []
        for key, value in context.invocation_metadata() or ():
            if key == REQUEST_ID_HEADER:
                rid = str(value)[:96]
            elif key not in _STREAM_ONLY:
                metadata.append((key, value))
        self._metadata = tuple(metadata)
        self._request_id = rid or uuid.uuid4().hex
        self.peak_held = 0

    # -- ending ---------------------------------------------------------------

    def end(self, why: str) -> None:
        """Takes no more calls; the stream ends with UNAVAILABLE / SESSION_ENDED
        once the calls in flight are answered."""
        if self.ending is None:
            self.ending = why
            self._wake.set()
            self._room.set()

    def _done(self) -> bool:
        return (self._eof or self.ending is not None) and self._held == 0

    # -- serving --------------------------------------------------------------

    async def serve(self, max_age: float) -> None:
        loop = asyncio.get_running_loop()
        why = f"the session reached max_session_age {max_age:g}s"
        aging = loop.call_later(max_age, self.end, why)
        reader = loop.create_task(self._read(), name="session-reader")
        reader.add_done_callback(lambda _: self._wake.set())
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._ready:
                    await self._write_ready()
                if reader.done() and not self._eof and self.ending is None:
                    reader.result()  # the client's side failed: end with that
                if self._done():
                    break
        finally:
            self._closing = True
            aging.cancel()
            reader.cancel()
            for task in self._tasks.values():
                task.cancel()
            self._on_end(self)
        if self.ending is not None:
            error = _ended(
                f"{self.ending}: every call it read was answered; open a new session for the others"
            )
            await abort(self._context, error)

    async def _write_ready(self) -> None:
        batch = _next_message(self._ready)
        await self._context.write(batch[0] if len(batch) == 1 else b"".join(batch))
        self._held -= len(batch)
        if self._held < self._limit:
            self._room.set()

    async def _read(self) -> None:
        context = self._context
        while True:
            request = await context.read()
            if request is grpc.aio.EOF:
                self._eof = True
                self._wake.set()
                return
            for call_id in request.cancel:
                task = self._tasks.get(call_id)
                if task is not None:
                    task.cancel()
            for call in request.calls:
                while self._held >= self._limit and self.ending is None:
                    self._room.clear()
                    await self._room.wait()
                self._start(call)

    def _answer(self, element: bytes) -> None:
        self._ready.append(element)
        self._wake.set()

    def _start(self, call: pb.SessionCall) -> None:
        self._held += 1
        if self._held > self.peak_held:
            self.peak_held = self._held
            self._on_peak(self._held)
        if self.ending is not None:
            self._answer(_error_element(call.id, to_rpc_status(_ended(f"{self.ending}: not run"))))
            return
        kind = call.WhichOneof("call")
        if kind is None or call.id in self._tasks:
            problem = "must carry one of query, execute, execute_batch, run_transaction"
            if kind is not None:
                problem = f"id {call.id} is already in flight on this session"
            error = GatewayError(
                Reason.INVALID_REQUEST,
                f"invalid session call: {problem}",
                field_violations=[("calls.call" if kind is None else "calls.id", problem)],
            )
            self._answer(_error_element(call.id, to_rpc_status(error)))
            return
        timeout: float | None = None
        if call.HasField("timeout"):
            try:
                timeout = duration_seconds("calls.timeout", call.timeout)
            except GatewayError as exc:
                self._answer(_error_element(call.id, to_rpc_status(exc)))
                return
        handler = getattr(self._servicer, CALL_METHODS[kind])
        metadata = (*self._metadata, (REQUEST_ID_HEADER, f"{self._request_id}.{call.id}"))
        if call.trace_context:
            metadata = (
                *metadata,
                *((k, v) for k, v in call.trace_context.items() if k in _TRACE_KEYS),
            )
        ctx = SessionCallContext(self._context, metadata, timeout)
        self._tasks[call.id] = asyncio.get_running_loop().create_task(
            self._run(call.id, kind, handler(getattr(call, kind), ctx), timeout)
        )

    async def _run(
        self, call_id: int, kind: str, work: Awaitable[Any], budget: float | None
    ) -> None:
        element: bytes
        try:
            if budget is None:
                response = await work
            elif budget <= 0:
                raise TimeoutError
            else:
                async with Timeout(budget):
                    response = await work
            element = result_element(call_id, kind, response.SerializeToString())
        except SessionAbort as exc:
            element = _error_element(call_id, exc.status)
        except TimeoutError:
            element = _error_element(call_id, _DEADLINE_EXCEEDED)
        except asyncio.CancelledError:
            if self._closing:
                raise
            element = _error_element(call_id, _CANCELLED)
        finally:
            if asyncio.iscoroutine(work):
                work.close()
            self._tasks.pop(call_id, None)
        self._answer(element)


class SessionRegistry:
    """The open sessions, so that a drain can end them all."""

    def __init__(self, metrics: Metrics) -> None:
        self._open: set[_Session] = set()
        self._metrics = metrics
        self._peak = 0
        self.draining = False

    def __len__(self) -> int:
        return len(self._open)

    def drain(self) -> None:
        """Every open session finishes its calls and ends with UNAVAILABLE;
        sessions opened from now on end at once."""
        self.draining = True
        for session in list(self._open):
            session.end("the server is draining")

    async def serve(
        self, servicer: Any, context: grpc.aio.ServicerContext, config: ServerConfig, guard: Guard
    ) -> None:
        """Serves one Session stream until the client half-closes (OK), the
        session ends (UNAVAILABLE / SESSION_ENDED) or the client goes away."""
        try:
            # A token that is refused ends the stream at once; each call is
            # authenticated and authorized again, as its unary RPC would be.
            guard.authenticate(context.invocation_metadata())
        except GatewayError as exc:
            await abort(context, exc)
        # Tells the client the stream is open: a failure before this point
        # means no call on it reached the server.
        await context.send_initial_metadata(())
        session = _Session(servicer, context, config, self._ended, self._held)
        self._open.add(session)
        self._metrics.sessions_open.set(len(self._open))
        if self.draining:
            session.end("the server is draining")
        await session.serve(config.max_session_age)

    def _ended(self, session: _Session) -> None:
        self._open.discard(session)
        self._metrics.sessions_open.set(len(self._open))

    def _held(self, held: int) -> None:
        if held > self._peak:
            self._peak = held
            self._metrics.session_calls_held_peak.set(held)
