"""``subscribe()``: PostgreSQL notifications (LISTEN/NOTIFY) through the gateway.

    async with dbgateway.AsyncClient() as client:
        async for n in client.subscribe("orders", "orders", "payments"):
            if n.gap:
                ...  # the gateway re-established its connection: re-read state
            else:
                print(n.channel, n.payload)

The server's first message says LISTEN is in place; :meth:`AsyncSubscription.ready`
(or entering ``async with``) waits for it, so whatever is sent afterwards is
delivered. Iteration yields every later message, gaps included, and ends only
with an error (a drain: :class:`~dbgateway.Unavailable`; falling behind:
:class:`~dbgateway.ResourceExhausted`) or when the caller stops it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Self

import grpc
import grpc.aio

from ._errors import DbGatewayError, from_rpc_error
from .v1 import subscription_pb2 as spb

__all__ = ["AsyncSubscription", "Notification", "Subscription"]


@dataclass(frozen=True, slots=True)
class Notification:
    """One message of a subscription: a notification, or (``gap``) word that
    some may have been missed while the gateway reconnected to the database."""

    channel: str
    payload: str
    #: The PostgreSQL backend pid of the session that sent it.
    sender_pid: int
    #: When the gateway received it (UTC).
    received_at: dt.datetime | None
    gap: bool = False


def subscribe_request(database: str, channels: Sequence[str]) -> spb.SubscribeRequest:
    if not channels:
        raise ValueError("subscribe needs at least one channel")
    for channel in channels:
        if not isinstance(channel, str):
            raise TypeError(f"channel names are str, not {type(channel).__name__}")
    return spb.SubscribeRequest(database=database, channels=list(channels))


def _notification(message: spb.Notification) -> Notification:
    received = (
        message.received_at.ToDatetime(tzinfo=dt.UTC) if message.HasField("received_at") else None
    )
    return Notification(
        channel=message.channel,
        payload=message.payload,
        sender_pid=message.sender_pid,
        received_at=received,
        gap=message.gap,
    )


def _not_ready(message: Any) -> DbGatewayError:
    return DbGatewayError(
        grpc.StatusCode.UNKNOWN, f"Subscribe's first message was not ready: {message!r}"
    )


class AsyncSubscription:
    """An async iterator of :class:`Notification` from ``AsyncClient.subscribe``.
    ``async with`` it (or call :meth:`aclose`) to unsubscribe."""

    __slots__ = ("_call", "_open", "_ready")

    def __init__(self, open_call: Callable[[], Any]) -> None:
        self._open = open_call
        self._call: Any = None
        self._ready = False

    async def ready(self) -> None:
        """Waits until LISTEN is in place: every notification sent from now on
        is delivered. Raises DbGatewayError when the subscription is refused."""
        if self._ready:
            return
        if self._call is None:
            self._call = self._open()
        try:
            first = await self._call.read()
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        if first is grpc.aio.EOF or not first.ready:
            raise _not_ready(first)
        self._ready = True

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Notification:
        await self.ready()
        try:
            message = await self._call.read()
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        if message is grpc.aio.EOF:
            raise StopAsyncIteration
        return _notification(message)

    async def aclose(self) -> None:
        """Unsubscribes (cancels the call)."""
        if self._call is not None:
            self._call.cancel()

    async def __aenter__(self) -> Self:
        await self.ready()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class Subscription:
    """An iterator of :class:`Notification` from ``Client.subscribe`` (see
    :class:`AsyncSubscription`); ``with`` it or call :meth:`close` to unsubscribe."""

    __slots__ = ("_call", "_open")

    def __init__(self, open_call: Callable[[], Any]) -> None:
        self._open = open_call
        self._call: Any = None

    def ready(self) -> None:
        """Waits until LISTEN is in place (see :meth:`AsyncSubscription.ready`)."""
        if self._call is not None:
            return
        self._call = self._open()
        try:
            first = next(self._call, None)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        if first is None or not first.ready:
            self._call.cancel()
            raise _not_ready(first)

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Notification:
        self.ready()
        try:
            message = next(self._call)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return _notification(message)

    def close(self) -> None:
        """Unsubscribes (cancels the call)."""
        if self._call is not None:
            self._call.cancel()

    def __enter__(self) -> Self:
        self.ready()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
