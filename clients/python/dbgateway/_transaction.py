"""Interactive transactions over the ``Transaction`` stream, and the request
pieces ``run_transaction`` shares with them.

One stream is one transaction on one pooled connection: ``begin``, then one
statement at a time (each answered before the next is sent), then ``commit``
or ``rollback``. A statement that fails is answered in-band and the
transaction goes on, so :meth:`AsyncTransaction.query` raises the typed
exception and the caller decides (on PostgreSQL, ``ROLLBACK TO SAVEPOINT``).
When the stream itself fails, the transaction is gone (the server rolled it
back) and every later call raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import queue
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import grpc
import grpc.aio

from ._errors import DbGatewayError, from_rpc_error, from_status_message
from ._replicas import remember
from ._result import ExecuteResult, Result, StatementResult, columns_of, rows_of
from ._values import to_values
from .v1 import database_service_pb2 as pb

__all__ = ["AsyncTransaction", "Isolation", "Transaction"]


class Isolation(enum.Enum):
    """Transaction isolation levels; ``transaction()`` and
    ``run_transaction()`` also take the names as text (``"serializable"``,
    ``"repeatable read"``, ``"READ_COMMITTED"``)."""

    READ_UNCOMMITTED = "read uncommitted"
    READ_COMMITTED = "read committed"
    REPEATABLE_READ = "repeatable read"
    SERIALIZABLE = "serializable"


_ISOLATION_LEVELS = {
    Isolation.READ_UNCOMMITTED: pb.ISOLATION_LEVEL_READ_UNCOMMITTED,
    Isolation.READ_COMMITTED: pb.ISOLATION_LEVEL_READ_COMMITTED,
    Isolation.REPEATABLE_READ: pb.ISOLATION_LEVEL_REPEATABLE_READ,
    Isolation.SERIALIZABLE: pb.ISOLATION_LEVEL_SERIALIZABLE,
}


def isolation_of(isolation: Isolation | str | None) -> Isolation | None:
    if isolation is None or isinstance(isolation, Isolation):
        return isolation
    if isinstance(isolation, str):
        words = isolation.replace("_", " ").replace("-", " ").lower().split()
        try:
            return Isolation(" ".join(words))
        except ValueError:
            pass
    choices = ", ".join(repr(i.value) for i in Isolation)
    raise ValueError(f"unknown isolation level {isolation!r}; one of {choices}")


def transaction_options(
    isolation: Isolation | str | None, read_only: bool, deferrable: bool
) -> pb.TransactionOptions:
    level = isolation_of(isolation)
    return pb.TransactionOptions(
        isolation=_ISOLATION_LEVELS[level] if level else pb.ISOLATION_LEVEL_UNSPECIFIED,
        read_only=read_only,
        deferrable=deferrable,
    )


def statement(
    sql: str,
    params: Sequence[Any],
    timeout: float | None = None,
    max_rows: int | None = None,
) -> pb.Statement:
    options = pb.RequestOptions()
    if timeout is not None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        options.timeout.FromNanoseconds(int(timeout * 1e9))
    if max_rows is not None:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        options.max_rows = max_rows
    return pb.Statement(sql=sql, params=to_values(params), options=options)


def statements_of(statements: Iterable[tuple[str, Sequence[Any]] | str]) -> list[pb.Statement]:
    """``run_transaction``'s ``[(sql, params), ...]`` (a bare ``sql`` has no
    parameters)."""
    out = []
    for item in statements:
        if isinstance(item, str):
            out.append(statement(item, ()))
            continue
        sql, params = item
        if isinstance(params, str | bytes):
            raise TypeError(f"the parameters of {sql!r} must be a sequence, not {type(params)}")
        out.append(statement(sql, params))
    if not out:
        raise ValueError("run_transaction needs at least one statement")
    return out


def statement_result(result: pb.StatementResult) -> StatementResult:
    columns = columns_of(result.columns)
    return StatementResult(
        column_info=columns,
        rows=rows_of(result.rows, columns),
        rows_affected=result.rows_affected,
        last_insert_id=result.last_insert_id if result.HasField("last_insert_id") else None,
        truncated=result.truncated,
    )


def begin_request(database: str | None, options: pb.TransactionOptions) -> pb.TransactionRequest:
    return pb.TransactionRequest(
        begin=pb.TransactionRequest.Begin(database=database or "", options=options)
    )


_COMMIT = pb.TransactionRequest(commit=pb.TransactionRequest.Commit())
_ROLLBACK = pb.TransactionRequest(rollback=pb.TransactionRequest.Rollback())


def _ended_error() -> DbGatewayError:
    return DbGatewayError(
        grpc.StatusCode.FAILED_PRECONDITION,
        "the transaction has already ended",
        reason="INVALID_TRANSACTION_STATE",
    )


def _unexpected(response: pb.TransactionResponse | None, wanted: str) -> DbGatewayError:
    got = "the end of the stream" if response is None else response.WhichOneof("event")
    return DbGatewayError(
        grpc.StatusCode.INTERNAL, f"Transaction stream: expected {wanted}, got {got}"
    )


class _TransactionBase:
    """What both transaction classes do with the answers."""

    #: Names the transaction in the server's logs and errors.
    id: str

    def __init__(self) -> None:
        self.id = ""
        self._ended = False
        #: The database the transaction began on, as the caller named it.
        self._database = ""
        #: After commit, on a database with replicas: pass as ``read_after=``.
        self.read_token = ""

    @property
    def ended(self) -> bool:
        """True once committed, rolled back, or lost."""
        return self._ended

    @staticmethod
    def _result(response: pb.TransactionResponse | None) -> pb.StatementResult:
        if response is None or response.WhichOneof("event") != "result":
            raise _unexpected(response, "a statement result")
        if response.result.HasField("error"):
            raise from_status_message(response.result.error)
        return response.result

    @staticmethod
    def _query_result(result: pb.StatementResult) -> Result:
        columns = columns_of(result.columns)
        return Result(columns, rows_of(result.rows, columns), result.truncated)

    @staticmethod
    def _execute_result(result: pb.StatementResult) -> ExecuteResult:
        columns = columns_of(result.columns)
        return ExecuteResult(
            rows_affected=result.rows_affected,
            last_insert_id=result.last_insert_id if result.HasField("last_insert_id") else None,
            column_info=columns,
            rows=rows_of(result.rows, columns),
        )


class AsyncTransaction(_TransactionBase):
    """An open transaction, from ``async with AsyncClient.transaction() as tx``.

    Statements run one at a time, in order (concurrent calls wait their turn).
    A failing statement raises its typed exception and leaves the transaction
    open; :meth:`commit` and :meth:`rollback` end it early, otherwise leaving
    the ``async with`` block does (commit, or rollback on an exception).
    """

    def __init__(self, call: Any) -> None:
        super().__init__()
        self._call = call
        self._lock = asyncio.Lock()

    async def _exchange(self, request: pb.TransactionRequest) -> pb.TransactionResponse | None:
        async with self._lock:
            if self._ended:
                raise _ended_error()
            try:
                await self._call.write(request)
                response = await self._call.read()
            except grpc.RpcError as exc:
                self._lose()
                raise from_rpc_error(exc) from None
            except asyncio.InvalidStateError:
                # The call had already finished OK: the server ended it.
                self._lose()
                raise _unexpected(None, "an answer") from None
            except BaseException:
                # Cancelled mid-exchange: the stream is out of step, drop it
                # (the server rolls the transaction back).
                self._lose()
                raise
            if response is grpc.aio.EOF:
                self._lose()
                return None
            return response  # type: ignore[no-any-return]

    def _lose(self) -> None:
        self._ended = True
        self._call.cancel()

    async def _begin(self, request: pb.TransactionRequest) -> None:
        response = await self._exchange(request)
        if response is None or response.WhichOneof("event") != "begun":
            self._lose()
            raise _unexpected(response, "begun")
        self.id = response.begun.transaction_id
        self._database = request.begin.database

    async def query(
        self,
        sql: str,
        *params: Any,
        timeout: float | None = None,  # noqa: ASYNC109 - the statement's timeout
        max_rows: int | None = None,
    ) -> Result:
        """Runs a read in the transaction (see ``AsyncClient.query``)."""
        response = await self._exchange(
            pb.TransactionRequest(statement=statement(sql, params, timeout, max_rows))
        )
        return self._query_result(self._result(response))

    async def execute(
        self,
        sql: str,
        *params: Any,
        timeout: float | None = None,  # noqa: ASYNC109 - the statement's timeout
    ) -> ExecuteResult:
        """Runs a write in the transaction (see ``AsyncClient.execute``)."""
        response = await self._exchange(
            pb.TransactionRequest(statement=statement(sql, params, timeout))
        )
        return self._execute_result(self._result(response))

    async def commit(self) -> None:
        """Commits now; the transaction is over whether or not it raises."""
        response = await self._exchange(_COMMIT)
        self._lose()
        if response is None or response.WhichOneof("event") != "committed":
            raise _unexpected(response, "committed")
        self.read_token = response.committed.read_token
        remember(self._database, self.read_token)

    async def rollback(self) -> None:
        """Rolls back now (nothing happens if the transaction already ended)."""
        if self._ended:
            return
        try:
            await self._exchange(_ROLLBACK)
        finally:
            self._lose()

    async def _abandon(self, error: BaseException) -> None:
        if isinstance(error, Exception):
            # The server rolls back whatever ends the stream anyway.
            with contextlib.suppress(DbGatewayError):
                await self.rollback()
        self._lose()


class Transaction(_TransactionBase):
    """An open transaction, from ``with Client.transaction() as tx`` (see
    :class:`AsyncTransaction`). Safe to share between threads: statements run
    one at a time."""

    _END = object()

    def __init__(self, stub: Any, timeout: float | None, metadata: Any) -> None:
        super().__init__()
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._call = stub.Transaction(
            iter(self._requests.get, self._END), timeout=timeout, metadata=metadata
        )

    def _exchange(self, request: pb.TransactionRequest) -> pb.TransactionResponse | None:
        with self._lock:
            if self._ended:
                raise _ended_error()
            self._requests.put(request)
            try:
                return next(self._call)  # type: ignore[no-any-return]
            except StopIteration:
                self._lose()
                return None
            except grpc.RpcError as exc:
                self._lose()
                raise from_rpc_error(exc) from None
            except BaseException:
                self._lose()
                raise

    def _lose(self) -> None:
        self._ended = True
        self._requests.put(self._END)
        self._call.cancel()

    def _begin(self, request: pb.TransactionRequest) -> None:
        response = self._exchange(request)
        if response is None or response.WhichOneof("event") != "begun":
            self._lose()
            raise _unexpected(response, "begun")
        self.id = response.begun.transaction_id
        self._database = request.begin.database

    def query(
        self, sql: str, *params: Any, timeout: float | None = None, max_rows: int | None = None
    ) -> Result:
        """Runs a read in the transaction (see ``Client.query``)."""
        response = self._exchange(
            pb.TransactionRequest(statement=statement(sql, params, timeout, max_rows))
        )
        return self._query_result(self._result(response))

    def execute(self, sql: str, *params: Any, timeout: float | None = None) -> ExecuteResult:
        """Runs a write in the transaction (see ``Client.execute``)."""
        response = self._exchange(pb.TransactionRequest(statement=statement(sql, params, timeout)))
        return self._execute_result(self._result(response))

    def commit(self) -> None:
        """Commits now; the transaction is over whether or not it raises."""
        response = self._exchange(_COMMIT)
        self._lose()
        if response is None or response.WhichOneof("event") != "committed":
            raise _unexpected(response, "committed")
        self.read_token = response.committed.read_token
        remember(self._database, self.read_token)

    def rollback(self) -> None:
        """Rolls back now (nothing happens if the transaction already ended)."""
        if self._ended:
            return
        try:
            self._exchange(_ROLLBACK)
        finally:
            self._lose()

    def _abandon(self, error: BaseException) -> None:
        if isinstance(error, Exception):
            with contextlib.suppress(DbGatewayError):
                self.rollback()
        self._lose()
