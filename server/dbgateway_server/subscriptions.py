"""Subscriptions: a database's notifications (PostgreSQL LISTEN/NOTIFY) fanned
out to gRPC subscribers.

A LISTEN belongs to a session, so it cannot live on a pooled connection (the
next caller would inherit it). Each database instead gets one
:class:`ChannelListener`: a connection of its own, outside the pool and not
counted against it, that LISTENs on the union of its subscribers' channels.
A channel is LISTENed when its first subscriber arrives and UNLISTENed when
its last one leaves. Every notification is offered, in the order the
database delivered them, to the bounded queue of each subscriber of its
channel::

    PostgreSQL ──NOTIFY──► listening connection ──► ChannelListener
                                                      │ fan-out by channel
                              Subscription queue ◄────┤ (bounded; full: ended
                              Subscription queue ◄────┘  with RESOURCE_EXHAUSTED)

The listening connection is opened through the database's circuit breaker and
retry policy, like any other connection of it. When it is lost (or stops
answering the keepalive ping) it is re-established with the same policy and
LISTENs again on every wanted channel; each subscriber that was live when it
was lost then gets one gap marker before anything received afterwards.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .backends.base import ListeningConnection
from .errors import GatewayError, Reason
from .resilience.retry import CallKind, run_with_retries

if TYPE_CHECKING:
    from .call import Deadline
    from .database import Database

log = logging.getLogger(__name__)

#: Seconds between the keepalive pings of an idle listening connection: a
#: connection whose peer vanished without a word is found within this.
KEEPALIVE_INTERVAL = 10.0


def _no_deadline() -> float | None:
    return None


@dataclass(frozen=True, slots=True)
class Notice:
    """One message for a subscriber: a notification, or a gap marker."""

    channel: str
    payload: str
    sender_pid: int
    #: Wall-clock seconds when the gateway received it.
    received_at: float
    #: The listening connection was re-established: some may have been missed.
    gap: bool = False


class Subscription:
    """One subscriber: its channels and its bounded queue.

    The subscribing task reads it with :meth:`next`. When the subscription is
    ended from outside (its queue overflowed, the server drains) that task is
    cancelled, so that it stops even while it waits on a slow reader's
    gRPC write; :attr:`error` then says why.
    """

    __slots__ = (
        "_capacity",
        "_items",
        "_listener",
        "_task",
        "_wake",
        "channels",
        "error",
        "missed",
    )

    def __init__(self, listener: ChannelListener, channels: frozenset[str], capacity: int) -> None:
        self._listener = listener
        self.channels = channels
        self._capacity = capacity
        self._items: collections.deque[Notice] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None
        #: Why the subscription was ended by the server; None while it lives.
        self.error: GatewayError | None = None
        #: The listening connection was lost while this subscription was live.
        self.missed = False

    def bind(self, task: asyncio.Task[Any] | None) -> None:
        """``task`` reads this subscription; ending it cancels that task."""
        self._task = task

    def offer(self, notice: Notice) -> None:
        """Queues ``notice``; a subscriber whose queue is full is ended."""
        if self.error is not None:
            return
        if len(self._items) >= self._capacity and not notice.gap:
            self.end(
                GatewayError(
                    Reason.SUBSCRIBER_TOO_SLOW,
                    f"subscriber fell behind: {self._capacity} notifications were waiting "
                    f"to be read (subscription_queue = {self._capacity}); subscribe again",
                    metadata={"database": self._listener.name},
                )
            )
            return
        self._items.append(notice)
        self._wake.set()

    def end(self, error: GatewayError) -> None:
        """Ends the subscription with ``error`` (what its caller receives)."""
        if self.error is not None:
            return
        self.error = error
        self._items.clear()
        self._listener.forget(self)
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        self._wake.set()

    async def next(self) -> Notice:
        """The next notice; raises :attr:`error` once the subscription ended."""
        while not self._items:
            if self.error is not None:
                raise self.error
            self._wake.clear()
            await self._wake.wait()
        if self.error is not None:
            raise self.error
        return self._items.popleft()

    @property
    def queued(self) -> int:
        return len(self._items)

    def close(self) -> None:
        """The subscriber left; its channels are UNLISTENed if nobody else wants them."""
        self._items.clear()
        self._listener.forget(self)


class ChannelListener:
    """The one listening connection of one database, shared by its subscribers."""

    def __init__(self, database: Database, queue_size: int) -> None:
        self.database = database
        self.name = database.name
        self._queue_size = queue_size
        self._conn: ListeningConnection | None = None
        #: Counts connections, so a callback of an old one is told apart.
        self._generation = 0
        self._subscribers: dict[str, set[Subscription]] = {}
        #: Channels LISTENed on the current connection.
        self._listening: set[str] = set()
        # Serialises everything that talks on the connection: asyncpg runs
        # one operation at a time per connection.
        self._lock = asyncio.Lock()
        self._lost = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._ended: GatewayError | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    def subscriptions(self) -> set[Subscription]:
        return {sub for subs in self._subscribers.values() for sub in subs}

    async def subscribe(self, channels: Iterable[str], deadline: Deadline) -> Subscription:
        """A live subscription: once this returns, every notification on
        ``channels`` reaches it."""
        wanted = frozenset(channels)
        async with self._lock:
            self._check_open()
            await self._ensure_connected(deadline.remaining)
            sub = Subscription(self, wanted, self._queue_size)
            for channel in wanted:
                self._subscribers.setdefault(channel, set()).add(sub)
            try:
                await self._listen(wanted - self._listening)
            except BaseException:
                self.forget(sub)
                self._check_open()  # a drain that began meanwhile says so
                raise
            if sub.error is not None:
                raise sub.error
            # Only a live subscription is ended by cancelling its caller's
            # task; until now an ending shows in sub.error.
            sub.bind(asyncio.current_task())
        return sub

    def forget(self, sub: Subscription) -> None:
        """Removes ``sub``; channels nobody wants any more are UNLISTENed in
        the background (a subscriber that was cancelled cannot wait for it)."""
        for channel in sub.channels:
            subs = self._subscribers.get(channel)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscribers[channel]
        if self._ended is None and self._listening - self._subscribers.keys():
            task = asyncio.get_running_loop().create_task(self._unlisten_unwanted())
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def close(self, error: GatewayError) -> None:
        """Ends every subscription with ``error`` and closes the connection."""
        self._ended = error
        for sub in self.subscriptions():
            sub.end(error)
        tasks = [t for t in (self._supervisor, *self._pending) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
            log.info("database %s: listening connection closed", self.name)

    # -- the connection -------------------------------------------------------

    def _check_open(self) -> None:
        if self._ended is not None:
            raise GatewayError(
                self._ended.reason,
                self._ended.message,
                metadata=self._ended.metadata,
                retry_after=self._ended.retry_after,
                sent=False,
            )

    async def _ensure_connected(self, remaining: Callable[[], float | None]) -> None:
        """Opens the listening connection when there is none (or it was lost),
        through the breaker and the retry policy, and LISTENs on every wanted
        channel. Called with the lock held."""
        if self.connected and not self._lost.is_set():
            return
        db = self.database
        try:
            await run_with_retries(
                lambda: db.guarded(self._connect_once),
                kind=CallKind.READ,
                settings=db.config.retry,
                remaining=remaining,
                what=f"listening connection of database {self.name}",
                on_retry=db.retried,
            )
        except GatewayError as exc:
            raise exc.with_metadata(database=self.name, engine=db.engine) from None
        if self._supervisor is None or self._supervisor.done():
            self._supervisor = asyncio.get_running_loop().create_task(
                self._supervise(), name=f"listen-{self.name}"
            )

    async def _connect_once(self) -> None:
        old, self._conn = self._conn, None
        if old is not None:
            await old.close()
        self._listening.clear()
        self._generation += 1
        generation = self._generation
        db = self.database
        conn = await asyncio.wait_for(
            db.backend.connect_listener(self._fan_out, lambda: self._on_lost(generation)),
            db.config.connect_timeout,
        )
        self._conn = conn
        self._lost.clear()
        try:
            await self._listen(self._subscribers.keys())
        except BaseException:
            self._conn = None
            await conn.close()
            raise
        if self._ended is not None:
            self._conn = None
            await conn.close()
            self._check_open()
        # From here on every notification is received again: whoever was
        # subscribed while the connection was away may have missed some.
        now = time.time()
        gapped = 0
        for sub in self.subscriptions():
            if sub.missed:
                sub.missed = False
                sub.offer(Notice("", "", 0, now, gap=True))
                gapped += 1
        if gapped or generation > 1:
            log.warning(
                "database %s: listening connection re-established (%d channels, %d "
                "subscribers told of a gap)",
                self.name,
                len(self._listening),
                gapped,
            )

    async def _listen(self, channels: Iterable[str]) -> None:
        conn = self._conn
        assert conn is not None
        db = self.database
        with db.reporting_errors():
            for channel in sorted(channels):
                async with asyncio.timeout(db.config.statement_timeout):
                    await conn.listen(channel)
                self._listening.add(channel)

    async def _unlisten_unwanted(self) -> None:
        async with self._lock:
            conn = self._conn
            for channel in sorted(self._listening - self._subscribers.keys()):
                self._listening.discard(channel)
                if conn is None or conn.is_closed():
                    continue
                try:
                    async with asyncio.timeout(self.database.config.statement_timeout):
                        await conn.unlisten(channel)
                except (GatewayError, TimeoutError) as exc:
                    # The supervisor finds a broken connection; a new one
                    # LISTENs only on what is wanted.
                    log.info("database %s: UNLISTEN %r failed: %s", self.name, channel, exc)

    def _fan_out(self, channel: str, payload: str, sender_pid: int) -> None:
        subs = self._subscribers.get(channel)
        if not subs:
            return
        notice = Notice(channel, payload, sender_pid, time.time())
        for sub in tuple(subs):
            sub.offer(notice)

    def _on_lost(self, generation: int) -> None:
        if generation != self._generation or self._ended is not None:
            return
        for sub in self.subscriptions():
            sub.missed = True
        self._lost.set()

    async def _supervise(self) -> None:
        """Pings the connection while it is idle and re-establishes it when it
        is lost, for as long as anybody subscribes."""
        settings = self.database.config.retry
        while self._ended is None:
            try:
                async with asyncio.timeout(KEEPALIVE_INTERVAL):
                    await self._lost.wait()
            except TimeoutError:
                await self._ping()
                continue
            if not self._subscribers:
                async with self._lock:
                    conn, self._conn = self._conn, None
                    if conn is not None:
                        await conn.close()
                return  # the next subscriber connects again
            log.warning("database %s: listening connection lost; reconnecting", self.name)
            while self._ended is None and self._subscribers:
                try:
                    async with self._lock:
                        await self._ensure_connected(_no_deadline)
                    break
                except GatewayError as exc:
                    delay = max(exc.retry_after or 0.0, settings.max_backoff)
                    log.warning(
                        "database %s: listening connection not re-established (%s); "
                        "next attempt in %.3gs",
                        self.name,
                        exc.message,
                        delay,
                    )
                    await asyncio.sleep(delay)

    async def _ping(self) -> None:
        async with self._lock:
            conn = self._conn
            if conn is None or conn.is_closed() or self._lost.is_set():
                return
            try:
                await conn.ping(self.database.config.connect_timeout)
            except (GatewayError, TimeoutError, OSError) as exc:
                log.warning("database %s: listening connection failed a ping: %s", self.name, exc)
                self._on_lost(self._generation)


class SubscriptionHub:
    """Every database's listener, created on its first subscriber."""

    def __init__(self, queue_size: int) -> None:
        self._queue_size = queue_size
        self._listeners: dict[str, ChannelListener] = {}
        self._ended: GatewayError | None = None

    def listener(self, database: Database) -> ChannelListener:
        listener = self._listeners.get(database.name)
        if listener is None or listener.database is not database:
            listener = ChannelListener(database, self._queue_size)
            if self._ended is not None:
                listener._ended = self._ended
            self._listeners[database.name] = listener
        return listener

    async def subscribe(
        self, database: Database, channels: Iterable[str], deadline: Deadline
    ) -> Subscription:
        return await self.listener(database).subscribe(channels, deadline)

    async def retire(self, database: Database) -> None:
        """Ends the subscriptions of ``database`` (a reload removed or changed
        it) with UNAVAILABLE and closes its listening connection."""
        listener = self._listeners.get(database.name)
        if listener is None or listener.database is not database:
            return
        del self._listeners[database.name]
        await listener.close(
            GatewayError(
                Reason.DATABASE_UNAVAILABLE,
                f"database {database.name!r} was reconfigured: subscription ended; subscribe again",
                metadata={"database": database.name},
                retry_after=0.1,
            )
        )

    async def close(self) -> None:
        """Ends every subscription with UNAVAILABLE / SERVER_DRAINING and
        closes the listening connections; later subscribers get the same."""
        if self._ended is not None:
            return
        self._ended = GatewayError(
            Reason.SERVER_DRAINING,
            "the server is shutting down: subscription ended; subscribe again",
            retry_after=1.0,
        )
        await asyncio.gather(*(lst.close(self._ended) for lst in self._listeners.values()))
