"""``AsyncClient`` and ``Client``: the same methods over grpc.aio and sync gRPC.

Both build requests and read responses with the same functions; they differ
only in how they wait. Every call goes through one retry loop per class, the
one place where a ``grpc.RpcError`` becomes a :class:`DbGatewayError`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Self, TypeVar

import grpc
import grpc.aio

from ._config import ClientConfig, TLSConfig
from ._errors import DbGatewayError, DeadlineExceeded, from_rpc_error
from ._health import CHECK_METHOD, HealthStatus, decode_response, encode_request
from ._result import ExecuteResult, Result, columns_of, rows_of
from ._values import to_values
from .v1 import database_service_pb2 as pb
from .v1 import database_service_pb2_grpc as pb_grpc

__all__ = ["DEFAULT_TARGET", "AsyncClient", "Client"]

DEFAULT_TARGET = "127.0.0.1:50051"

T = TypeVar("T")
Metadata = tuple[tuple[str, str], ...]


# ---------------------------------------------------------------------------
# Requests and responses (shared by both clients)
# ---------------------------------------------------------------------------


def _options(
    *, max_rows: int | None = None, idempotent: bool = False, tag: str | None = None
) -> pb.RequestOptions:
    options = pb.RequestOptions(idempotent=idempotent, tag=tag or "")
    if max_rows is not None:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        options.max_rows = max_rows
    return options


def _query_request(
    sql: str, params: Sequence[Any], database: str | None, max_rows: int | None, tag: str | None
) -> pb.QueryRequest:
    return pb.QueryRequest(
        database=database or "",
        sql=sql,
        params=to_values(params),
        options=_options(max_rows=max_rows, tag=tag),
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


def _result(response: pb.QueryResponse) -> Result:
    columns = columns_of(response.columns)
    return Result(columns, rows_of(response.rows, columns), response.truncated)


def _execute_result(response: pb.ExecuteResponse) -> ExecuteResult:
    columns = columns_of(response.columns)
    return ExecuteResult(
        rows_affected=response.rows_affected,
        last_insert_id=response.last_insert_id if response.HasField("last_insert_id") else None,
        column_info=columns,
        rows=rows_of(response.rows, columns),
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


def _should_retry(error: DbGatewayError, *, write: bool, idempotent: bool) -> bool:
    """Whether the client itself tries a failed call again (see RetryPolicy)."""
    if error.code is not grpc.StatusCode.UNAVAILABLE:
        return False
    if write:
        # The channel never retries writes: a lost connection may have run it.
        return idempotent or error.reason == "CIRCUIT_OPEN"
    # The channel already retried reads with backoff; what is left is the
    # server's explicit "come back later", which the channel cannot read.
    return error.retry_after is not None


def _deadline_error() -> DeadlineExceeded:
    return DeadlineExceeded(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")


# ---------------------------------------------------------------------------
# AsyncClient
# ---------------------------------------------------------------------------


class AsyncClient:
    """An asyncio client for one dbgateway server.

    ``target`` is ``HOST:PORT``. ``tls`` is a :class:`TLSConfig` (``True`` for
    the system roots); ``token`` is sent as ``authorization: Bearer``;
    ``timeout`` (seconds) is the default deadline of every call. Use it as
    ``async with AsyncClient(...) as db:`` or call :meth:`close`.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        tls: TLSConfig | bool | None = None,
        token: str | None = None,
        timeout: float | None = None,
        config: ClientConfig | None = None,
    ) -> None:
        self._config = config or ClientConfig()
        self._timeout = timeout
        _Deadline(timeout)  # validates
        self._metadata = _metadata(token)
        tls_config = _tls(tls)
        options = self._config.channel_options() + _tls_options(tls_config)
        if tls_config is None:
            self._channel = grpc.aio.insecure_channel(_target(target), options=options)
        else:
            self._channel = grpc.aio.secure_channel(
                _target(target), tls_config.credentials(), options=options
            )
        self._stub = pb_grpc.DatabaseServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._health = self._channel.unary_unary(
            CHECK_METHOD, request_serializer=encode_request, response_deserializer=decode_response
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        await self._channel.close()

    async def _call(
        self,
        method: Callable[..., Awaitable[T]],
        request: Any,
        timeout: float | None,  # noqa: ASYNC109 - a gRPC deadline, not an asyncio timeout
        *,
        write: bool = False,
        idempotent: bool = False,
    ) -> T:
        deadline = _Deadline(timeout if timeout is not None else self._timeout)
        policy = self._config.retry
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline.remaining()
            if remaining is not None and remaining <= 0:
                raise _deadline_error()
            try:
                return await method(request, timeout=remaining, metadata=self._metadata)
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
            wait = max(policy.backoff(attempt), error.retry_after or 0.0)
            if (
                attempt >= policy.max_attempts
                or not _should_retry(error, write=write, idempotent=idempotent)
                or not deadline.allows_wait(wait)
            ):
                raise error
            await asyncio.sleep(wait)

    async def query(
        self,
        sql: str,
        *params: Any,
        database: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
        max_rows: int | None = None,
        tag: str | None = None,
    ) -> Result:
        """Runs a read and returns its rows as native Python values.

        Parameters are positional, written with the engine's own placeholder
        (``$1`` PostgreSQL, ``%s`` MySQL, ``?`` SQLite).
        """
        request = _query_request(sql, params, database, max_rows, tag)
        return _result(await self._call(self._stub.Query, request, timeout))

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
        which lets the server and the client retry it after a lost connection."""
        request = _execute_request(sql, params, database, idempotent, tag)
        response = await self._call(
            self._stub.Execute, request, timeout, write=True, idempotent=idempotent
        )
        return _execute_result(response)

    async def health(
        self,
        service: str = "",
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> HealthStatus:
        """The server's health status for ``service``: ``""`` for the server,
        ``"db/NAME"`` for one database. An unknown service is SERVICE_UNKNOWN."""
        try:
            status: HealthStatus = await self._call(self._health, service, timeout)
            return status
        except DbGatewayError as exc:
            if exc.code is grpc.StatusCode.NOT_FOUND:
                return HealthStatus.SERVICE_UNKNOWN
            raise


# ---------------------------------------------------------------------------
# Client (synchronous)
# ---------------------------------------------------------------------------


class Client:
    """The synchronous client: the methods of :class:`AsyncClient`, blocking.

    Use it as ``with Client(...) as db:`` or call :meth:`close`. It is safe to
    share between threads.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        tls: TLSConfig | bool | None = None,
        token: str | None = None,
        timeout: float | None = None,
        config: ClientConfig | None = None,
    ) -> None:
        self._config = config or ClientConfig()
        self._timeout = timeout
        _Deadline(timeout)
        self._metadata = _metadata(token)
        tls_config = _tls(tls)
        options = self._config.channel_options() + _tls_options(tls_config)
        if tls_config is None:
            self._channel = grpc.insecure_channel(_target(target), options=options)
        else:
            self._channel = grpc.secure_channel(
                _target(target), tls_config.credentials(), options=options
            )
        self._stub = pb_grpc.DatabaseServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._health = self._channel.unary_unary(
            CHECK_METHOD, request_serializer=encode_request, response_deserializer=decode_response
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        self._channel.close()

    def _call(
        self,
        method: Callable[..., T],
        request: Any,
        timeout: float | None,
        *,
        write: bool = False,
        idempotent: bool = False,
    ) -> T:
        deadline = _Deadline(timeout if timeout is not None else self._timeout)
        policy = self._config.retry
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline.remaining()
            if remaining is not None and remaining <= 0:
                raise _deadline_error()
            try:
                return method(request, timeout=remaining, metadata=self._metadata)
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
            wait = max(policy.backoff(attempt), error.retry_after or 0.0)
            if (
                attempt >= policy.max_attempts
                or not _should_retry(error, write=write, idempotent=idempotent)
                or not deadline.allows_wait(wait)
            ):
                raise error
            time.sleep(wait)

    def query(
        self,
        sql: str,
        *params: Any,
        database: str | None = None,
        timeout: float | None = None,
        max_rows: int | None = None,
        tag: str | None = None,
    ) -> Result:
        """Runs a read and returns its rows (see :meth:`AsyncClient.query`)."""
        request = _query_request(sql, params, database, max_rows, tag)
        return _result(self._call(self._stub.Query, request, timeout))

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
        response = self._call(
            self._stub.Execute, request, timeout, write=True, idempotent=idempotent
        )
        return _execute_result(response)

    def health(self, service: str = "", *, timeout: float | None = None) -> HealthStatus:
        """The server's health status for ``service`` (see :meth:`AsyncClient.health`)."""
        try:
            status: HealthStatus = self._call(self._health, service, timeout)
            return status
        except DbGatewayError as exc:
            if exc.code is grpc.StatusCode.NOT_FOUND:
                return HealthStatus.SERVICE_UNKNOWN
            raise
