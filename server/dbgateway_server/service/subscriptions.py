"""``DatabaseService/Subscribe``: a database's notifications, streamed."""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf import timestamp_pb2

from dbgateway.v1 import subscription_pb2

from ..call import Deadline
from ..errors import invalid_request
from ..gateway import Gateway
from ..subscriptions import Notice
from .calls import Servicer, rpc

#: Most channels one subscription may name.
MAX_CHANNELS = 256
#: PostgreSQL's identifier limit (NAMEDATALEN - 1): a longer name would be
#: truncated by the server and its notifications would never match.
MAX_CHANNEL_BYTES = 63


def check_channels(channels: list[str]) -> list[str]:
    """The channels of a request, or INVALID_ARGUMENT naming the bad one."""
    if not channels:
        raise invalid_request("channels", "name at least one channel")
    if len(channels) > MAX_CHANNELS:
        raise invalid_request("channels", f"more than {MAX_CHANNELS} channels")
    for i, channel in enumerate(channels):
        field = f"channels[{i}]"
        if not channel:
            raise invalid_request(field, "must not be empty")
        if "\x00" in channel:
            raise invalid_request(field, "must not contain NUL")
        if len(channel.encode()) > MAX_CHANNEL_BYTES:
            raise invalid_request(field, f"longer than {MAX_CHANNEL_BYTES} bytes")
    return channels


def notification(notice: Notice) -> subscription_pb2.Notification:
    received = timestamp_pb2.Timestamp()
    received.FromNanoseconds(int(notice.received_at * 1e9))
    if notice.gap:
        return subscription_pb2.Notification(gap=True, received_at=received)
    return subscription_pb2.Notification(
        channel=notice.channel,
        payload=notice.payload,
        sender_pid=notice.sender_pid,
        received_at=received,
    )


class SubscriptionRpcs(Servicer):
    """Mixed into the DatabaseService servicer."""

    _gateway: Gateway

    @rpc
    async def Subscribe(
        self, request: subscription_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> None:
        channels = check_channels(list(request.channels))
        sub = await self._gateway.subscribe(
            request.database, channels, Deadline(context.time_remaining())
        )
        try:
            await context.write(subscription_pb2.Notification(ready=True))
            while True:
                # Each write waits for gRPC flow control, so a subscriber that
                # does not read leaves its notices in its bounded queue, and
                # overflowing it ends the call (see Subscription.end).
                await context.write(notification(await sub.next()))
        except asyncio.CancelledError:
            error = sub.error
            if error is None:
                raise  # the caller went away
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            raise error from None
        finally:
            sub.close()
