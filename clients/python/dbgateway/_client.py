"""``AsyncClient`` and ``Client``: the same methods over grpc.aio and sync gRPC.

Both build requests and read responses with the same functions and share
everything that does not wait in :class:`_BaseClient` (arguments, channel
settings, the retry decision); they differ only in how they wait. Every call
goes through one retry loop per class, the one place where a
``grpc.RpcError`` becomes a :class:`DbGatewayError`, and ``query`` /
``execute`` / ``execute_batch`` / ``run_transaction`` go through one
``_call`` that picks the transport (a Session stream, or one RPC each).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, Self, TypeVar

import grpc
import grpc.aio

from ._config import ClientConfig, TLSConfig
from ._errors import DbGatewayError, DeadlineExceeded, from_rpc_error
from ._health import CHECK_METHOD, HealthStatus, decode_response, encode_request
from ._replicas import ReadPreference, ReadYourWrites, read_after, read_preference_value, remember
from ._result import (
    ExecuteResult,
    Result,
    TransactionResult,
    columns_of,
    rows_of,
    rows_of_batches,
)
from ._session import AsyncSession, SessionUnsupported, SyncSession
from ._stream import AsyncRowStream, RowStream, no_columns_error
from ._subscription import AsyncSubscription, Subscription, subscribe_request
from ._tracing import with_trace_context
from ._transaction import (
    AsyncTransaction,
    Isolation,
    Transaction,
    begin_request,
    statement_result,
    statements_of,
    transaction_options,
)
from ._values import to_values
from .v1 import admin_service_pb2 as admin_pb
from .v1 import admin_service_pb2_grpc as admin_pb_grpc
from .v1 import database_service_pb2 as pb
from .v1 import database_service_pb2_grpc as pb_grpc

__all__ = ["DEFAULT_TARGET", "AsyncClient", "Client"]

DEFAULT_TARGET = "127.0.0.1:50051"

log = logging.getLogger("dbgateway.client")

T = TypeVar("T")
Metadata = tuple[tuple[str, str], ...]


# ---------------------------------------------------------------------------
# Requests and responses (shared by both clients)
# ---------------------------------------------------------------------------


def _options(
    *,
    max_rows: int | None = None,
    idempotent: bool = False,
    tag: str | None = None,
    columnar: bool = False,
    read_preference: ReadPreference | str | None = None,
    read_after: str = "",
) -> pb.RequestOptions:
    options = pb.RequestOptions(
        idempotent=idempotent,
        tag=tag or "",
        read_preference=read_preference_value(read_preference),
        read_after=read_after,
    )
    if columnar:
        options.encoding = pb.RESULT_ENCODING_COLUMNS_V2
    if max_rows is not None:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        options.max_rows = max_rows
    return options


def _query_request(
    sql: str,
    params: Sequence[Any],
    database: str | None,
    max_rows: int | None,
    tag: str | None,
    columnar: bool = False,
    preference: ReadPreference | str | None = None,
    token: str | None = None,
) -> pb.QueryRequest:
    return pb.QueryRequest(
        database=database or "",
        sql=sql,
        params=to_values(params),
        options=_options(
            max_rows=max_rows,
            tag=tag,
            columnar=columnar,
            read_preference=preference,
            read_after=read_after(database, token),
        ),
    )


def _execute_request(
    sql: str, params: Sequence[Any], database: str | None, idempotent: bool, tag: str | None
) -> pb.ExecuteRequest:
    return pb.ExecuteRequest(
        database=database or "",
        sql=sql,
        params=to_values(params),
        options=_options(idempotent=idempotent, tag=tag),
    )


def _batch_request(
    sql: str,
    param_sets: Iterable[Sequence[Any]],
    database: str | None,
    tag: str | None,
) -> pb.ExecuteBatchRequest:
    sets = []
    for params in param_sets:
        if isinstance(params, str | bytes):
            raise TypeError(f"each parameter set must be a sequence, not {type(params)}")
        sets.append(pb.ParamSet(params=to_values(params)))
    return pb.ExecuteBatchRequest(
        database=database or "", sql=sql, param_sets=sets, options=_options(tag=tag)
    )


def _run_transaction_request(
    statements: Iterable[tuple[str, Sequence[Any]] | str],
    database: str | None,
    isolation: Isolation | str | None,
    read_only: bool,
    deferrable: bool,
    max_attempts: int | None,
) -> pb.RunTransactionRequest:
    if max_attempts is not None and max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    return pb.RunTransactionRequest(
        database=database or "",
        statements=statements_of(statements),
        options=transaction_options(isolation, read_only, deferrable),
        max_attempts=max_attempts or 0,
    )


def _batch_result(response: pb.ExecuteBatchResponse, database: str | None) -> ExecuteResult:
    remember(database, response.read_token)
    return ExecuteResult(
        rows_affected=response.rows_affected if response.HasField("rows_affected") else None,
        read_token=response.read_token,
    )


def _transaction_result(
    response: pb.RunTransactionResponse, database: str | None
) -> TransactionResult:
    remember(database, response.read_token)
    return TransactionResult(
        tuple(statement_result(r) for r in response.results),
        response.attempts,
        read_token=response.read_token,
    )


def _result(response: pb.QueryResponse) -> Result:
    columns = columns_of(response.columns)
    if response.column_batches:
        return Result(
            columns, rows_of_batches(response.column_batches, columns), response.truncated
        )
    return Result(columns, rows_of(response.rows, columns), response.truncated)


def _execute_result(response: pb.ExecuteResponse, database: str | None) -> ExecuteResult:
    remember(database, response.read_token)
    columns = columns_of(response.columns)
    return ExecuteResult(
        rows_affected=response.rows_affected,
        last_insert_id=response.last_insert_id if response.HasField("last_insert_id") else None,
        column_info=columns,
        rows=rows_of(response.rows, columns),
        read_token=response.read_token,
    )


def _metadata(token: str | None) -> Metadata:
    if token is None:
        return ()
    if not token or any(c in token for c in "\r\n"):
        raise ValueError("token must be a non-empty single line")
    return (("authorization", f"Bearer {token}"),)


def _target(target: str) -> str:
    if not target or target.isspace():
        raise ValueError("target must be HOST:PORT (or a gRPC target URI)")
    return target


def _tls(tls: TLSConfig | bool | None) -> TLSConfig | None:
    if tls is True:
        return TLSConfig()
    if tls is False or tls is None:
        return None
    return tls


def _tls_options(tls: TLSConfig | None) -> list[tuple[str, Any]]:
    if tls is not None and tls.server_name:
        return [("grpc.ssl_target_name_override", tls.server_name)]
    return []


class _Deadline:
    """The whole call's deadline, across client-side retries."""

    __slots__ = ("_at",)

    def __init__(self, timeout: float | None) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive")
        self._at = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        return None if self._at is None else self._at - time.monotonic()

    def allows_wait(self, seconds: float) -> bool:
        remaining = self.remaining()
        return remaining is None or remaining > seconds


def _never_ran(error: DbGatewayError) -> bool:
    """The server refused the call before running it, because it is shutting
    down (``not_run`` in its ErrorInfo)."""
    return error.reason == "SERVER_DRAINING" and error.metadata.get("not_run") == "true"


def _should_retry(error: DbGatewayError, *, write: bool, idempotent: bool) -> bool:
    """Whether the client itself tries a failed call again (see RetryPolicy)."""
    if error.code is not grpc.StatusCode.UNAVAILABLE:
        return False
    if error.reason == "SESSION_ENDED" or _never_ran(error):
        # The server ended its session on purpose and answered every call it
        # had read, or refused the call as it shut down: this one never ran,
        # so it is sent again, write or not.
        return True
    if error.reason == "SESSION_BROKEN":
        # The session's connection was lost with the call in flight: it may
        # have run, so only a read or an idempotent write goes again.
        return not write or idempotent
    if write:
        # The channel never retries writes: a lost connection may have run it.
        return idempotent or error.reason == "CIRCUIT_OPEN"
    # The channel already retried reads with backoff; what is left is the
    # server's explicit "come back later", which the channel cannot read.
    return error.retry_after is not None


def _deadline_error() -> DeadlineExceeded:
    return DeadlineExceeded(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")


#: The unary RPC of each kind of session call.
_UNARY = {
    "query": "Query",
    "execute": "Execute",
    "execute_batch": "ExecuteBatch",
    "run_transaction": "RunTransaction",
}

TRANSPORTS = ("session", "unary")
#: Tries in all for a call the server never ran because its session ended
#: or it was shutting down.
_MAX_RESENDS = 8


# ---------------------------------------------------------------------------
# What both clients share
# ---------------------------------------------------------------------------


class _BaseClient:
    """Everything that does not wait: arguments, channel settings, the retry
    decision. :class:`AsyncClient` and :class:`Client` add only the waiting."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        tls: TLSConfig | bool | None = None,
        token: str | None = None,
        timeout: float | None = None,
        config: ClientConfig | None = None,
        transport: str = "session",
        fail_fast: bool = False,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
        self._config = config or ClientConfig()
        self._timeout = timeout
        _Deadline(timeout)  # validates
        self._token_metadata = _metadata(token)
        self._target = _target(target)
        self._tls = _tls(tls)
        self._options = self._config.channel_options() + _tls_options(self._tls)
        self._transport = transport
        self._fail_fast = fail_fast
        # False once the server refused RESULT_ENCODING_COLUMNS_V2 (an older
        # server): columnar reads ask it for RESULT_ENCODING_COLUMNS instead.
        self._columns_v2 = True

    @property
    def _metadata(self) -> Metadata:
        # Built per call, so each call carries the caller's current trace context.
        return with_trace_context(self._token_metadata)

    @property
    def transport(self) -> str:
        """``session`` (calls share one Session stream) or ``unary`` (one RPC
        per call; also what a client falls back to against a server without
        Session)."""
        return self._transport

    def _unsupported_session(self) -> None:
        log.info("the server at %s has no Session RPC; using unary calls", self._target)
        self._transport = "unary"

    def _fit_encoding(self, request: Any) -> None:
        """Asks a server that refused RESULT_ENCODING_COLUMNS_V2 before for
        the columnar encoding it knows (same values, fewer packed lists)."""
        if (
            not self._columns_v2
            and isinstance(request, pb.QueryRequest)
            and request.options.encoding == pb.RESULT_ENCODING_COLUMNS_V2
        ):
            request.options.encoding = pb.RESULT_ENCODING_COLUMNS

    def _encoding_refused(self, error: DbGatewayError, request: Any) -> bool:
        """The server is older than RESULT_ENCODING_COLUMNS_V2 and refused
        ``request`` for it (the read did not run): from now on this client
        asks for RESULT_ENCODING_COLUMNS, and ``request`` is changed to."""
        if not (
            isinstance(request, pb.QueryRequest)
            and request.options.encoding == pb.RESULT_ENCODING_COLUMNS_V2
            and error.code is grpc.StatusCode.INVALID_ARGUMENT
            and any(field == "options.encoding" for field, _ in error.field_violations)
        ):
            return False
        if self._columns_v2:
            log.info(
                "the server at %s has no RESULT_ENCODING_COLUMNS_V2; using RESULT_ENCODING_COLUMNS",
                self._target,
            )
            self._columns_v2 = False
        self._fit_encoding(request)
        return True

    def _retry_wait(
        self,
        error: DbGatewayError,
        tries: int,
        deadline: _Deadline,
        *,
        write: bool,
        idempotent: bool,
        request: Any = None,
    ) -> float:
        """How long to sleep before trying a failed call again; raises
        ``error`` when it must not be tried again. The wait never outlasts the
        caller's deadline, a wait the server asked for (RetryInfo) is logged,
        and ``fail_fast`` clients never wait on one. A read an older server
        refused for its encoding (``request``) is sent again at once in the
        encoding it knows."""
        if tries <= _MAX_RESENDS and self._encoding_refused(error, request):
            return 0.0
        policy = self._config.retry
        if error.reason == "SESSION_ENDED" and tries <= _MAX_RESENDS:
            # Never ran (the server ended its session on purpose): sent again
            # at once on a new stream, up to _MAX_RESENDS tries in all.
            return 0.0
        # A draining server refuses calls until its calls in flight are done
        # (within its shutdown_grace); a channel that reconnects to the same
        # address meets it again until then, so those get more tries.
        limit = _MAX_RESENDS if _never_ran(error) else policy.max_attempts
        if tries >= limit or not _should_retry(error, write=write, idempotent=idempotent):
            raise error
        if error.retry_after is not None and self._fail_fast:
            raise error
        wait = max(policy.backoff(tries), error.retry_after or 0.0)
        if not deadline.allows_wait(wait):
            raise error
        if error.retry_after is not None:
            log.warning(
                "%s; the server asked to retry in %.3gs: waiting, then try %d of %d",
                error,
                wait,
                tries + 1,
                limit,
            )
        else:
            log.debug("%s; retrying in %.3gs (try %d)", error, wait, tries + 1)
        return wait


# ---------------------------------------------------------------------------
# AsyncClient
# ---------------------------------------------------------------------------


class _AsyncChannel:
    """The channel, stubs and session of an AsyncClient on one event loop."""

    __slots__ = ("admin", "channel", "health", "loop", "session", "stub")

    def __init__(self, client: _BaseClient) -> None:
        self.loop = asyncio.get_running_loop()
        tls = client._tls
        if tls is None:
            self.channel = grpc.aio.insecure_channel(client._target, options=client._options)
        else:
            self.channel = grpc.aio.secure_channel(
                client._target, tls.credentials(), options=client._options
            )
        self.stub = pb_grpc.DatabaseServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.admin = admin_pb_grpc.AdminServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.health = self.channel.unary_unary(
            CHECK_METHOD, request_serializer=encode_request, response_deserializer=decode_response
        )
        # The stream outlives any one caller's trace context: it carries none.
        self.session = AsyncSession(
            self.channel, client._token_metadata, client._config.max_send_bytes
        )

    async def close(self) -> None:
        await self.session.close()
        await self.channel.close()


class AsyncClient(_BaseClient):
    """An asyncio client for one dbgateway server.

    ``target`` is ``HOST:PORT``. ``tls`` is a :class:`TLSConfig` (``True`` for
    the system roots); ``token`` is sent as ``authorization: Bearer``;
    ``timeout`` (seconds) is the default deadline of every call.
    ``transport="session"`` (the default) carries ``query``, ``execute``,
    ``execute_batch`` and ``run_transaction`` as logical calls on one Session
    stream, which costs far less per call than an RPC each;
    ``transport="unary"`` makes one RPC per call. ``fail_fast=True`` raises
    at once when the server says to come back later (an open circuit)
    instead of waiting and retrying within the deadline.

    The client binds to the event loop it is first used in, so one created
    at module level works under ``asyncio.run``; used in a later loop, it
    opens a new channel there. Use it as ``async with AsyncClient(...) as
    db:`` or call :meth:`close`.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        tls: TLSConfig | bool | None = None,
        token: str | None = None,
        timeout: float | None = None,
        config: ClientConfig | None = None,
        transport: str = "session",
        fail_fast: bool = False,
    ) -> None:
        super().__init__(
            target,
            tls=tls,
            token=token,
            timeout=timeout,
            config=config,
            transport=transport,
            fail_fast=fail_fast,
        )
        self._bound: _AsyncChannel | None = None

    def _channel(self) -> _AsyncChannel:
        bound = self._bound
        if bound is None or bound.loop is not asyncio.get_running_loop():
            # A channel belongs to the loop it was made in; one left by an
            # earlier (now closed) loop cannot be used or even closed here.
            bound = self._bound = _AsyncChannel(self)
        return bound

    @property
    def _stub(self) -> Any:
        return self._channel().stub

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        bound, self._bound = self._bound, None
        if bound is not None and bound.loop is asyncio.get_running_loop():
            await bound.close()

    async def _retrying(
        self,
        attempt: Callable[[float | None], Awaitable[T]],
        timeout: float | None,  # noqa: ASYNC109 - a gRPC deadline, not an asyncio timeout
        *,
        write: bool = False,
        idempotent: bool = False,
        request: Any = None,
    ) -> T:
        """Runs ``attempt(remaining seconds)`` under the retry rules (see
        RetryPolicy); the one place a ``grpc.RpcError`` becomes a
        :class:`DbGatewayError`."""
        deadline = _Deadline(timeout if timeout is not None else self._timeout)
        self._fit_encoding(request)
        tries = 0
        while True:
            tries += 1
            remaining = deadline.remaining()
            if remaining is not None and remaining <= 0:
                raise _deadline_error()
            try:
                return await attempt(remaining)
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
            except DbGatewayError as exc:
                error = exc
            wait = self._retry_wait(
                error, tries, deadline, write=write, idempotent=idempotent, request=request
            )
            await asyncio.sleep(wait)

    async def _unary(
        self,
        method: Callable[..., Awaitable[T]],
        request: Any,
        timeout: float | None,  # noqa: ASYNC109 - a gRPC deadline, not an asyncio timeout
        *,
        write: bool = False,
        idempotent: bool = False,
    ) -> T:
        def attempt(remaining: float | None) -> Awaitable[T]:
            return method(request, timeout=remaining, metadata=self._metadata)

        return await self._retrying(
            attempt, timeout, write=write, idempotent=idempotent, request=request
        )

    async def _call(
        self,
        kind: str,
        request: Any,
        timeout: float | None,  # noqa: ASYNC109 - a gRPC deadline, not an asyncio timeout
        *,
        write: bool = False,
        idempotent: bool = False,
    ) -> Any:
        """A ``query`` / ``execute`` / ``execute_batch`` / ``run_transaction``
        call, over the client's transport."""
        bound = self._channel()

        async def attempt(remaining: float | None) -> Any:
            if self._transport == "session":
                try:
                    return await bound.session.call(kind, request, remaining)
                except SessionUnsupported:
                    self._unsupported_session()
            method = getattr(bound.stub, _UNARY[kind])
            return await method(request, timeout=remaining, metadata=self._metadata)

        return await self._retrying(
            attempt, timeout, write=write, idempotent=idempotent, request=request
        )

    async def query(
        self,
        sql: str,
        *params: Any,
        database: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
        max_rows: int | None = None,
        tag: str | None = None,
        columnar: bool = True,
        read_preference: ReadPreference | str | None = None,
        read_after: str | None = None,
    ) -> Result:
        """Runs a read and returns its rows as native Python values.

        Parameters are positional, written with the engine's own placeholder
        (``$1`` PostgreSQL, ``%s`` MySQL, ``?`` SQLite). The rows travel in
        the columnar encoding (RESULT_ENCODING_COLUMNS_V2), which is cheaper to
        send and decode on both sides from a few rows on;
        ``columnar=False`` asks for the row encoding, with the same values
        back. Raises a :class:`DbGatewayError` subclass for the failure.

        On a database with replicas, ``read_preference`` (``"primary"``,
        ``"replica_preferred"``, ``"replica"``; None: the database's default)
        says where the read runs, and ``read_after`` (a write's
        ``read_token``) that it must see that write; inside
        :meth:`read_your_writes` the latest token is sent for you.
        """
        request = _query_request(
            sql, params, database, max_rows, tag, columnar, read_preference, read_after
        )
        return _result(await self._call("query", request, timeout))

    async def execute(
        self,
        sql: str,
        *params: Any,
        database: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
        idempotent: bool = False,
        tag: str | None = None,
    ) -> ExecuteResult:
        """Runs a write. ``idempotent=True`` declares it safe to run twice,
        which lets the server and the client retry it after a lost
        connection. Raises a :class:`DbGatewayError` subclass for the failure."""
        request = _execute_request(sql, params, database, idempotent, tag)
        response = await self._call("execute", request, timeout, write=True, idempotent=idempotent)
        return _execute_result(response, database)

    def stream(
        self,
        sql: str,
        *params: Any,
        database: str | None = None,
        timeout: float | None = None,
        max_rows: int | None = None,
        tag: str | None = None,
        columnar: bool = False,
        read_preference: ReadPreference | str | None = None,
        read_after: str | None = None,
    ) -> AsyncRowStream:
        """Runs a read of any size and yields its rows one at a time
        (``StreamQuery``): ``async for row in db.stream(...)``. The server
        reads from a cursor and the client holds one chunk at a time.
        ``timeout`` bounds the whole stream. ``async with db.stream(...) as
        rows:`` stops the query on the database at once when the block is
        left early. ``columnar=True``: see :meth:`query`."""
        request = _query_request(
            sql, params, database, max_rows, tag, columnar, read_preference, read_after
        )

        async def attempt(remaining: float | None) -> tuple[Any, pb.StreamQueryResponse]:
            call = self._stub.StreamQuery(request, timeout=remaining, metadata=self._metadata)
            try:
                first = await call.read()
            except BaseException:
                call.cancel()
                raise
            if first is grpc.aio.EOF:
                raise no_columns_error()
            return call, first

        return AsyncRowStream(lambda: self._retrying(attempt, timeout, request=request))

    def subscribe(self, database: str, *channels: str) -> AsyncSubscription:
        """Listens on PostgreSQL notification channels (``Subscribe``):
        ``async for n in db.subscribe("orders", "orders", "payments")`` yields
        a :class:`Notification` per NOTIFY, in the order PostgreSQL sent them
        (``n.gap`` after the gateway had to reconnect). ``async with`` it to
        wait until LISTEN is in place and to unsubscribe on leaving. Raises
        DbGatewayError: UNIMPLEMENTED on an engine without LISTEN/NOTIFY,
        ResourceExhausted when the caller fell too far behind, Unavailable
        when the server drains."""
        request = subscribe_request(database, channels)
        return AsyncSubscription(lambda: self._stub.Subscribe(request, metadata=self._metadata))

    async def execute_batch(
        self,
        sql: str,
        param_sets: Iterable[Sequence[Any]],
        *,
        database: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
        tag: str | None = None,
    ) -> ExecuteResult:
        """Runs ``sql`` once per parameter set, atomically, through the
        driver's bulk path. ``rows_affected`` is the total over every
        parameter set. Raises a :class:`DbGatewayError` subclass for the
        failure."""
        request = _batch_request(sql, param_sets, database, tag)
        response = await self._call("execute_batch", request, timeout, write=True)
        return _batch_result(response, database)

    async def run_transaction(
        self,
        statements: Iterable[tuple[str, Sequence[Any]] | str],
        database: str | None = None,
        isolation: Isolation | str | None = None,
        read_only: bool = False,
        *,
        deferrable: bool = False,
        max_attempts: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> TransactionResult:
        """Runs ``[(sql, params), ...]`` atomically in one round trip, and
        returns one result per statement. The server runs the whole
        transaction again on a serialization failure or deadlock, until the
        call's deadline (or at most ``max_attempts`` times, when given;
        ``attempts`` says how many it took). A
        failing statement rolls everything back and raises, with its index in
        ``statement_index``."""
        request = _run_transaction_request(
            statements, database, isolation, read_only, deferrable, max_attempts
        )
        response = await self._call("run_transaction", request, timeout, write=True)
        return _transaction_result(response, database)

    @contextlib.asynccontextmanager
    async def transaction(
        self,
        database: str | None = None,
        isolation: Isolation | str | None = None,
        read_only: bool = False,
        *,
        deferrable: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> AsyncIterator[AsyncTransaction]:
        """An interactive transaction: ``async with db.transaction() as tx:``,
        then ``await tx.query(...)`` / ``await tx.execute(...)``. Leaving the
        block commits; an exception rolls back and propagates. A failing
        statement raises but leaves the transaction open. ``timeout`` bounds
        the whole transaction (the client's default when omitted)."""
        begin = begin_request(database, transaction_options(isolation, read_only, deferrable))

        async def attempt(remaining: float | None) -> AsyncTransaction:
            tx = AsyncTransaction(
                self._stub.Transaction(timeout=remaining, metadata=self._metadata)
            )
            await tx._begin(begin)
            return tx

        # Nothing has run before `begun`: beginning again is always safe.
        tx = await self._retrying(attempt, timeout, write=True, idempotent=True)
        try:
            yield tx
        except BaseException as exc:
            await tx._abandon(exc)
            raise
        if not tx.ended:
            await tx.commit()

    def read_your_writes(self) -> ReadYourWrites:
        """A block (``with`` or ``async with``) in which every read sees the
        block's own earlier writes, even from a replica: each committed
        write's ``read_token`` is kept (per database) and sent as
        ``read_after`` by the reads that follow. Raises nothing itself."""
        return ReadYourWrites()

    async def _list_databases(
        self,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> admin_pb.ListDatabasesResponse:
        """AdminService/ListDatabases, for the ``dbgateway databases`` command."""
        return await self._unary(
            self._channel().admin.ListDatabases, admin_pb.ListDatabasesRequest(), timeout
        )

    async def health(
        self,
        service: str = "",
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> HealthStatus:
        """The server's health status for ``service``: ``""`` for the server,
        ``"db/NAME"`` for one database. An unknown service is SERVICE_UNKNOWN."""
        try:
            status: HealthStatus = await self._unary(self._channel().health, service, timeout)
            return status
        except DbGatewayError as exc:
            if exc.code is grpc.StatusCode.NOT_FOUND:
                return HealthStatus.SERVICE_UNKNOWN
            raise


# ---------------------------------------------------------------------------
# Client (synchronous)
# ---------------------------------------------------------------------------


class Client(_BaseClient):
    """The synchronous client: the methods of :class:`AsyncClient` (and its
    ``transport`` and ``fail_fast`` options), blocking.

    Use it as ``with Client(...) as db:`` or call :meth:`close`. It is safe to
    share between threads: calls from every thread share one Session stream,
    and each waits only for its own result.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        tls: TLSConfig | bool | None = None,
        token: str | None = None,
        timeout: float | None = None,
        config: ClientConfig | None = None,
        transport: str = "session",
        fail_fast: bool = False,
    ) -> None:
        super().__init__(
            target,
            tls=tls,
            token=token,
            timeout=timeout,
            config=config,
            transport=transport,
            fail_fast=fail_fast,
        )
        if self._tls is None:
            self._channel = grpc.insecure_channel(self._target, options=self._options)
        else:
            self._channel = grpc.secure_channel(
                self._target, self._tls.credentials(), options=self._options
            )
        self._stub = pb_grpc.DatabaseServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._admin = admin_pb_grpc.AdminServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._health = self._channel.unary_unary(
            CHECK_METHOD, request_serializer=encode_request, response_deserializer=decode_response
        )
        self._session = SyncSession(  # see _AsyncChannel
            self._channel, self._token_metadata, self._config.max_send_bytes
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        self._session.close()
        self._channel.close()

    def _retrying(
        self,
        attempt: Callable[[float | None], T],
        timeout: float | None,
        *,
        write: bool = False,
        idempotent: bool = False,
        request: Any = None,
    ) -> T:
        """Runs ``attempt(remaining seconds)`` under the retry rules (see
        :meth:`AsyncClient._retrying`)."""
        deadline = _Deadline(timeout if timeout is not None else self._timeout)
        self._fit_encoding(request)
        tries = 0
        while True:
            tries += 1
            remaining = deadline.remaining()
            if remaining is not None and remaining <= 0:
                raise _deadline_error()
            try:
                return attempt(remaining)
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
            except DbGatewayError as exc:
                error = exc
            wait = self._retry_wait(
                error, tries, deadline, write=write, idempotent=idempotent, request=request
            )
            time.sleep(wait)

    def _unary(
        self,
        method: Callable[..., T],
        request: Any,
        timeout: float | None,
        *,
        write: bool = False,
        idempotent: bool = False,
    ) -> T:
        def attempt(remaining: float | None) -> T:
            return method(request, timeout=remaining, metadata=self._metadata)

        return self._retrying(attempt, timeout, write=write, idempotent=idempotent, request=request)

    def _call(
        self,
        kind: str,
        request: Any,
        timeout: float | None,
        *,
        write: bool = False,
        idempotent: bool = False,
    ) -> Any:
        """See :meth:`AsyncClient._call`."""

        def attempt(remaining: float | None) -> Any:
            if self._transport == "session":
                try:
                    return self._session.call(kind, request, remaining)
                except SessionUnsupported:
                    self._unsupported_session()
            method = getattr(self._stub, _UNARY[kind])
            return method(request, timeout=remaining, metadata=self._metadata)

        return self._retrying(attempt, timeout, write=write, idempotent=idempotent, request=request)

    def query(
        self,
        sql: str,
        *params: Any,
        database: str | None = None,
        timeout: float | None = None,
        max_rows: int | None = None,
        tag: str | None = None,
        columnar: bool = True,
        read_preference: ReadPreference | str | None = None,
        read_after: str | None = None,
    ) -> Result:
        """Runs a read and returns its rows (see :meth:`AsyncClient.query`)."""
        request = _query_request(
            sql, params, database, max_rows, tag, columnar, read_preference, read_after
        )
        return _result(self._call("query", request, timeout))

    def execute(
        self,
        sql: str,
        *params: Any,
        database: str | None = None,
        timeout: float | None = None,
        idempotent: bool = False,
        tag: str | None = None,
    ) -> ExecuteResult:
        """Runs a write (see :meth:`AsyncClient.execute`)."""
        request = _execute_request(sql, params, database, idempotent, tag)
        response = self._call("execute", request, timeout, write=True, idempotent=idempotent)
        return _execute_result(response, database)

    def stream(
        self,
        sql: str,
        *params: Any,
        database: str | None = None,
        timeout: float | None = None,
        max_rows: int | None = None,
        tag: str | None = None,
        columnar: bool = False,
        read_preference: ReadPreference | str | None = None,
        read_after: str | None = None,
    ) -> RowStream:
        """Runs a read of any size and yields its rows one at a time (see
        :meth:`AsyncClient.stream`); ``with db.stream(...) as rows:`` stops it
        at once when the block is left early."""
        request = _query_request(
            sql, params, database, max_rows, tag, columnar, read_preference, read_after
        )

        def attempt(remaining: float | None) -> tuple[Any, pb.StreamQueryResponse]:
            call = self._stub.StreamQuery(request, timeout=remaining, metadata=self._metadata)
            try:
                first = next(call)
            except StopIteration:
                raise no_columns_error() from None
            except BaseException:
                call.cancel()
                raise
            return call, first

        return RowStream(lambda: self._retrying(attempt, timeout, request=request))

    def subscribe(self, database: str, *channels: str) -> Subscription:
        """Listens on PostgreSQL notification channels (see
        :meth:`AsyncClient.subscribe`): ``for n in db.subscribe(...)``."""
        request = subscribe_request(database, channels)
        return Subscription(lambda: self._stub.Subscribe(request, metadata=self._metadata))

    def execute_batch(
        self,
        sql: str,
        param_sets: Iterable[Sequence[Any]],
        *,
        database: str | None = None,
        timeout: float | None = None,
        tag: str | None = None,
    ) -> ExecuteResult:
        """Runs ``sql`` once per parameter set, atomically (see
        :meth:`AsyncClient.execute_batch`)."""
        request = _batch_request(sql, param_sets, database, tag)
        response = self._call("execute_batch", request, timeout, write=True)
        return _batch_result(response, database)

    def run_transaction(
        self,
        statements: Iterable[tuple[str, Sequence[Any]] | str],
        database: str | None = None,
        isolation: Isolation | str | None = None,
        read_only: bool = False,
        *,
        deferrable: bool = False,
        max_attempts: int | None = None,
        timeout: float | None = None,
    ) -> TransactionResult:
        """Runs ``[(sql, params), ...]`` atomically in one round trip (see
        :meth:`AsyncClient.run_transaction`)."""
        request = _run_transaction_request(
            statements, database, isolation, read_only, deferrable, max_attempts
        )
        response = self._call("run_transaction", request, timeout, write=True)
        return _transaction_result(response, database)

    @contextlib.contextmanager
    def transaction(
        self,
        database: str | None = None,
        isolation: Isolation | str | None = None,
        read_only: bool = False,
        *,
        deferrable: bool = False,
        timeout: float | None = None,
    ) -> Iterator[Transaction]:
        """An interactive transaction: ``with db.transaction() as tx:`` (see
        :meth:`AsyncClient.transaction`)."""
        begin = begin_request(database, transaction_options(isolation, read_only, deferrable))

        def attempt(remaining: float | None) -> Transaction:
            tx = Transaction(self._stub, remaining, self._metadata)
            tx._begin(begin)
            return tx

        tx = self._retrying(attempt, timeout, write=True, idempotent=True)
        try:
            yield tx
        except BaseException as exc:
            tx._abandon(exc)
            raise
        if not tx.ended:
            tx.commit()

    def read_your_writes(self) -> ReadYourWrites:
        """A block (``with`` or ``async with``) in which every read sees the
        block's own earlier writes, even from a replica: each committed
        write's ``read_token`` is kept (per database) and sent as
        ``read_after`` by the reads that follow. Raises nothing itself."""
        return ReadYourWrites()

    def _list_databases(self, timeout: float | None = None) -> admin_pb.ListDatabasesResponse:
        """AdminService/ListDatabases, for the ``dbgateway databases`` command."""
        response: admin_pb.ListDatabasesResponse = self._unary(
            self._admin.ListDatabases, admin_pb.ListDatabasesRequest(), timeout
        )
        return response

    def _list_statements(
        self, database: str = "", limit: int = 0, timeout: float | None = None
    ) -> admin_pb.ListStatementsResponse:
        """AdminService/ListStatements, for the ``dbgateway statements`` command."""
        request = admin_pb.ListStatementsRequest(database=database, limit=limit)
        response: admin_pb.ListStatementsResponse = self._unary(
            self._admin.ListStatements, request, timeout
        )
        return response

    def _reset_statements(
        self, database: str = "", timeout: float | None = None
    ) -> admin_pb.ResetStatementsResponse:
        """AdminService/ResetStatements, for ``dbgateway statements --reset``."""
        request = admin_pb.ResetStatementsRequest(database=database)
        response: admin_pb.ResetStatementsResponse = self._unary(
            self._admin.ResetStatements, request, timeout
        )
        return response

    def health(self, service: str = "", *, timeout: float | None = None) -> HealthStatus:
        """The server's health status for ``service`` (see :meth:`AsyncClient.health`)."""
        try:
            status: HealthStatus = self._unary(self._health, service, timeout)
            return status
        except DbGatewayError as exc:
            if exc.code is grpc.StatusCode.NOT_FOUND:
                return HealthStatus.SERVICE_UNKNOWN
            raise
