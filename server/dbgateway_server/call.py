"""What a call to the core carries and gets back: its deadline and options,
its outcome, a streamed read in progress. The bottom of the core: it imports
no other part of it, so the gateway, transactions, replicas and servicers can
all depend on it."""

from __future__ import annotations

import asyncio
import contextvars
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
        async with asyncio.timeout(self._fetch_timeout()):
            return await self._rows.fetch(n)

    async def _fetch_records(self, n: int) -> Sequence[Sequence[Any]]:
        async with asyncio.timeout(self._fetch_timeout()):
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
