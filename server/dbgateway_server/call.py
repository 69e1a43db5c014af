"""What a call to the core carries and gets back: its deadline and options,
its outcome, a streamed read in progress. The bottom of the core: it imports
no other part of it, so the gateway, transactions, replicas and servicers can
all depend on it."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from dbgateway.v1 import value_pb2

from .backends.base import ExecResult, ResultSet, RowStream
from .config import ReadPreference
from .results import RowChunker


class Deadline:
    """The absolute monotonic time by which a call must be answered."""

    __slots__ = ("_at", "_budget")

    def __init__(self, budget: float | None) -> None:
        self._budget = budget
        self._at = None if budget is None else time.monotonic() + budget

    @classmethod
    def sooner(cls, *budgets: float | None) -> Deadline:
        known = [b for b in budgets if b is not None]
        return cls(min(known) if known else None)

    def remaining(self) -> float | None:
        return None if self._at is None else self._at - time.monotonic()

    def bounded(self, cap: float) -> float:
        """What is left, but at most ``cap``."""
        left = self.remaining()
        return cap if left is None else min(left, cap)


class _Timers:
    """The :class:`Timeout` blocks in flight on one event loop, served by one
    loop timer armed at the earliest of their deadlines. Every statement has
    a deadline, and a loop timer of its own for each (made and cancelled on
    every call) costs more than the statement's own bookkeeping; here a
    block's entry and exit are a set insertion and removal, and the one
    timer is moved only for a deadline sooner than the one it is set for."""

    __slots__ = ("_armed_at", "_handle", "_live", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._live: set[Timeout] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = float("inf")

    def add(self, timeout: Timeout) -> None:
        self._live.add(timeout)
        when = timeout.when
        if when < self._armed_at:
            if self._handle is not None:
                self._handle.cancel()
            self._armed_at = when
            self._handle = self.loop.call_at(when, self._fire)

    def discard(self, timeout: Timeout) -> None:
        self._live.discard(timeout)

    def _fire(self) -> None:
        # Due: what the loop timer was set for (it fires when the loop's own
        # clock says so, as the timer of asyncio.timeout would), and anything
        # already past by the loop's clock.
        due = max(self._armed_at, self.loop.time())
        self._handle = None
        self._armed_at = float("inf")
        live = self._live
        expired = [t for t in live if t.when <= due]
        for timeout in expired:
            live.discard(timeout)
            timeout.expire()
        if live:
            when = min(t.when for t in live)
            self._armed_at = when
            self._handle = self.loop.call_at(when, self._fire)


class _LoopTimers(threading.local):
    timers: _Timers | None = None


_loop_timers = _LoopTimers()


def _timers(loop: asyncio.AbstractEventLoop) -> _Timers:
    timers = _loop_timers.timers
    if timers is None or timers.loop is not loop:
        timers = _loop_timers.timers = _Timers(loop)
    return timers


class Timeout:
    """``asyncio.timeout(delay)`` with the same behaviour (the task is
    cancelled at the deadline, and the block's CancelledError becomes
    TimeoutError unless someone else cancelled it too), on the loop's one
    shared timer (:class:`_Timers`). Not reusable; ``delay`` None: no limit."""

    __slots__ = ("_cancelling", "_delay", "_expired", "_task", "_timers", "when")

    def __init__(self, delay: float | None) -> None:
        self.when = float("inf") if delay is None else 0.0
        self._delay = delay
        self._expired = False
        self._task: asyncio.Task[Any] | None = None
        self._timers: _Timers | None = None

    async def __aenter__(self) -> Timeout:
        delay = self._delay
        if delay is None:
            return self
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Timeout should be used inside a task")
        loop = task.get_loop()
        self._task = task
        self._cancelling = task.cancelling()
        self.when = loop.time() + delay
        timers = self._timers = _timers(loop)
        timers.add(self)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if self._expired:
            assert self._task is not None
            if self._task.uncancel() <= self._cancelling and kind is asyncio.CancelledError:
                raise TimeoutError from exc
        elif self._timers is not None:
            self._timers.discard(self)

    def expire(self) -> None:
        """The deadline passed (called by the loop's timer)."""
        assert self._task is not None
        self._expired = True
        self._task.cancel()

    def expired(self) -> bool:
        return self._expired


@dataclass(frozen=True, slots=True)
class CallOptions:
    deadline: Deadline
    max_rows: int = 0
    idempotent: bool = False
    tag: str = ""
    #: Outside a transaction, run the statement in a read-only one (the
    #: caller may only read); inside a transaction its own mode decides.
    read_only: bool = False
    #: A read's rows go out as ColumnBatches (RESULT_ENCODING_COLUMNS).
    columnar: bool = False
    #: ... with the packed lists of RESULT_ENCODING_COLUMNS_V2 (decimals, timestamps).
    columns_v2: bool = False
    #: Where a read outside a transaction runs; None: the database's default.
    read_preference: ReadPreference | None = None
    #: A read_token: read only from an endpoint that has replayed past it.
    read_after: str = ""
    #: The caller's database role (PostgreSQL ``SET LOCAL ROLE``): outside a
    #: transaction the statement then runs in one of its own, as that role.
    role: str = ""


@dataclass(frozen=True, slots=True)
class OpenTransaction:
    """A transaction in the transactions table, as operators see it."""

    #: The table's own key; used to tell transactions apart, never logged.
    key: str
    database: str
    #: Seconds since it began.
    age: float
    tag: str = ""
    #: The request id of the call that began it.
    request_id: str = ""


@dataclass(slots=True)
class Outcome:
    """What a statement RPC returns, plus how it ran."""

    result: ResultSet | ExecResult
    elapsed: float
    attempts: int = 1
    #: A committed write on a database with replicas: its place in the
    #: replication stream (see :meth:`Database.read_token`).
    read_token: str = ""


@dataclass(slots=True)
class BatchOutcome:
    """What ExecuteBatch returns; ``rows_affected`` is None when the engine's
    bulk path does not report it."""

    rows_affected: int | None
    elapsed: float
    attempts: int = 1
    read_token: str = ""


class ResultStream:
    """A streamed read in progress: its columns, then its rows in chunks of
    bounded encoded size, each fetched only when the previous one was taken."""

    __slots__ = ("_chunker", "_fetch_timeout", "_rows", "started")

    def __init__(
        self,
        rows: RowStream,
        chunker: RowChunker,
        fetch_timeout: Callable[[], float],
        started: float,
    ) -> None:
        self._rows = rows
        self._chunker = chunker
        self._fetch_timeout = fetch_timeout
        self.started = started

    @property
    def columns(self) -> list[value_pb2.Column]:
        return self._rows.columns

    @property
    def rows(self) -> int:
        """Rows handed out so far."""
        return self._chunker.rows_seen

    @property
    def truncated(self) -> bool:
        """The caller's ``max_rows`` cut the result short."""
        return self._chunker.truncated

    def chunks(self) -> AsyncIterator[list[value_pb2.Row]]:
        return self._chunker.chunks(self._fetch)

    def batches(self, *, v2: bool = False) -> AsyncIterator[value_pb2.ColumnBatch]:
        """The rows as ColumnBatches (the columnar encoding; ``v2``: with the
        packed lists of RESULT_ENCODING_COLUMNS_V2), each of bounded size."""
        return self._chunker.batches(self._fetch_records, self._rows.converters, v2=v2)

    async def _fetch(self, n: int) -> list[value_pb2.Row]:
        async with Timeout(self._fetch_timeout()):
            return await self._rows.fetch(n)

    async def _fetch_records(self, n: int) -> Sequence[Sequence[Any]]:
        async with Timeout(self._fetch_timeout()):
            return await self._rows.fetch_records(n)


class Named(Protocol):
    """Anything with a configured name (a database)."""

    @property
    def name(self) -> str: ...


class LiveTransaction(Protocol):
    """An open transaction as its database keeps count of it (every kind:
    handle-based, streams, RunTransaction and batches)."""

    @property
    def id(self) -> str: ...

    @property
    def database(self) -> Named: ...

    @property
    def started_at(self) -> float: ...

    @property
    def tag(self) -> str: ...

    @property
    def request_id(self) -> str: ...


@dataclass(slots=True)
class Call:
    """One RPC in progress: what the access log and the metrics report."""

    method: str
    request_id: str
    #: The name the caller asked for, for the log (may be unknown or empty;
    #: None when the RPC is about no database).
    database: str | None
    #: The bounded form of ``database``, for metrics.
    database_label: str
    tag: str = ""
    sql: str = ""
    params: int = 0
    #: The parameter values as text: only with ``log_parameters = true``.
    parameters: tuple[str, ...] = ()
    #: Who is calling: a configured principal's name, ``anonymous`` without
    #: principals, empty until authenticated.
    principal: str = ""
    #: How the call arrived: ``unary`` (its own RPC) or ``session`` (a
    #: logical call on a Session stream).
    transport: str = "unary"
    started: float = field(default_factory=time.monotonic)
    rows: int = 0
    attempts: int = 1
    code: grpc.StatusCode = grpc.StatusCode.OK
    reason: str = ""
    #: The address of the gateway process that served it, when it was forwarded there.
    forwarded_to: str = ""
    #: The call's server span and its context token, while tracing is on.
    span: Any = None
    trace_token: Any = None

    def failed(self, code: grpc.StatusCode, reason: str = "") -> None:
        self.code = code
        self.reason = reason

    @property
    def retries(self) -> int:
        return max(self.attempts - 1, 0)


_current_call: contextvars.ContextVar[Call | None] = contextvars.ContextVar(
    "dbgateway_call", default=None
)


def current_call() -> Call | None:
    """The call being served by the current task, if any."""
    return _current_call.get()
