"""The subscription fan-out, gaps and queue bounds, over a fake listening
connection (the real one is tested against PostgreSQL in
tests/integration/test_subscriptions.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from dbgateway_server.backends.base import (
    Backend,
    DriverConnection,
    ListeningConnection,
    LostCallback,
    NotificationCallback,
)
from dbgateway_server.call import Deadline
from dbgateway_server.config import DatabaseConfig, Engine, RetrySettings
from dbgateway_server.database import Database
from dbgateway_server.errors import GatewayError, Reason
from dbgateway_server.subscriptions import Subscription, SubscriptionHub


class FakeListening(ListeningConnection):
    def __init__(self, notify: NotificationCallback, lost: LostCallback) -> None:
        self.notify = notify
        self.lost = lost
        self.channels: list[str] = []
        self.closed = False

    async def listen(self, channel: str) -> None:
        self.channels.append(channel)

    async def unlisten(self, channel: str) -> None:
        self.channels.remove(channel)

    async def ping(self, limit: float) -> None:
        pass

    def is_closed(self) -> bool:
        return self.closed

    async def close(self) -> None:
        self.closed = True

    def drop(self) -> None:
        """The database went away."""
        self.closed = True
        self.lost()


class FakeBackend(Backend):
    def __init__(self, config: DatabaseConfig) -> None:
        super().__init__(config)
        self.connections: list[FakeListening] = []
        self.refuse = 0

    async def connect(self) -> DriverConnection:  # pragma: no cover - not used here
        raise AssertionError("the listener must not use pooled connections")

    async def connect_listener(
        self, on_notification: NotificationCallback, on_lost: LostCallback
    ) -> ListeningConnection:
        if self.refuse:
            self.refuse -= 1
            raise GatewayError(Reason.DATABASE_UNAVAILABLE, "refused", sent=False)
        conn = FakeListening(on_notification, on_lost)
        self.connections.append(conn)
        return conn


def database(max_attempts: int = 3) -> tuple[Database, FakeBackend]:
    config = DatabaseConfig(
        name="pg",
        dsn="postgresql://x@127.0.0.1/x",
        engine=Engine.POSTGRES,
        retry=RetrySettings(max_attempts=max_attempts, initial_backoff=0.001, max_backoff=0.01),
    )
    backend = FakeBackend(config)
    return Database(config, backend, lambda name, serving: None), backend


async def subscribe(hub: SubscriptionHub, db: Database, channels: list[str]) -> Subscription:
    """Subscribes from a task of its own, as a server call does: ending a
    subscription cancels the task that made it (here done already)."""
    return await asyncio.create_task(hub.subscribe(db, channels, Deadline(None)))


async def wait_for(condition: Callable[[], bool], limit: float = 5.0) -> None:
    async with asyncio.timeout(limit):
        while True:
            if condition():
                return
            await asyncio.sleep(0.001)


async def test_notifications_fan_out_to_the_subscribers_of_their_channel_in_order():
    db, backend = database()
    hub = SubscriptionHub(queue_size=100)
    a = await subscribe(hub, db, ["a"])
    ab = await subscribe(hub, db, ["a", "b"])
    (conn,) = backend.connections
    assert sorted(conn.channels) == ["a", "b"]
    for i in range(5):
        conn.notify("b" if i % 2 else "a", str(i), 7)
    assert [(await a.next()).payload for _ in range(3)] == ["0", "2", "4"]
    assert [(await ab.next()).payload for _ in range(5)] == ["0", "1", "2", "3", "4"]
    await hub.close()


async def test_a_full_queue_ends_its_subscriber_only():
    db, backend = database()
    hub = SubscriptionHub(queue_size=3)
    slow = await subscribe(hub, db, ["c"])
    fast = await subscribe(hub, db, ["c"])
    conn = backend.connections[0]
    for i in range(4):
        conn.notify("c", str(i), 1)
        assert (await fast.next()).payload == str(i)
    with pytest.raises(GatewayError) as raised:
        await slow.next()
    assert raised.value.reason is Reason.SUBSCRIBER_TOO_SLOW
    conn.notify("c", "later", 1)
    assert (await fast.next()).payload == "later"
    await hub.close()


async def test_a_lost_connection_gives_each_subscriber_one_gap_before_new_notifications():
    db, backend = database()
    hub = SubscriptionHub(queue_size=10)
    one = await subscribe(hub, db, ["x"])
    two = await subscribe(hub, db, ["x", "y"])
    first = backend.connections[0]
    backend.refuse = 2  # the database is still away for the first two attempts
    first.drop()
    await wait_for(lambda: len(backend.connections) == 2)
    second = backend.connections[1]
    assert sorted(second.channels) == ["x", "y"]
    second.notify("x", "after", 1)
    for sub in (one, two):
        gap = await sub.next()
        assert gap.gap
        assert (await sub.next()).payload == "after"
    # Exactly one gap each: nothing else is queued.
    assert one.queued == 0
    assert two.queued == 0
    await hub.close()


async def test_the_last_subscriber_leaving_unlistens_and_a_new_one_listens_again():
    db, backend = database()
    hub = SubscriptionHub(queue_size=10)
    sub = await subscribe(hub, db, ["z"])
    conn = backend.connections[0]
    sub.close()
    await wait_for(lambda: conn.channels == [])
    again = await subscribe(hub, db, ["z"])
    assert conn.channels == ["z"]
    assert len(backend.connections) == 1
    again.close()
    await hub.close()


async def test_closing_the_hub_ends_subscribers_and_refuses_new_ones():
    db, backend = database()
    hub = SubscriptionHub(queue_size=10)
    sub = await subscribe(hub, db, ["d"])

    async def reader() -> None:
        await sub.next()

    task = asyncio.create_task(reader())
    await asyncio.sleep(0)
    await hub.close()
    assert backend.connections[0].closed
    with pytest.raises(GatewayError) as raised:
        await task
    assert raised.value.reason is Reason.SERVER_DRAINING
    with pytest.raises(GatewayError) as raised:
        await subscribe(hub, db, ["d"])
    assert raised.value.reason is Reason.SERVER_DRAINING


async def test_a_database_that_cannot_be_reached_fails_the_subscribe_after_the_retries():
    db, backend = database(max_attempts=2)
    backend.refuse = 2
    hub = SubscriptionHub(queue_size=10)
    with pytest.raises(GatewayError) as raised:
        await subscribe(hub, db, ["e"])
    assert raised.value.reason is Reason.DATABASE_UNAVAILABLE
    assert raised.value.metadata["attempts"] == "2"
    await hub.close()
