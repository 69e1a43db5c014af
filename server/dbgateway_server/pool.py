"""One connection pool for every engine.

The drivers' own pools differ (asyncpg's has no queue bound, aiomysql's no
lifetime, aiosqlite has none), so the gateway keeps its own: the same limits,
statistics and hygiene rules for PostgreSQL, MySQL and SQLite.

- Connections are opened lazily up to ``max_size``; ``min_size`` are opened at
  start and kept warm.
- A caller waits at most ``min(acquire_timeout, its own deadline)``; when
  ``max_waiting`` callers already wait it is refused at once.
- A connection is handed to a caller only in a known-clean state. On release
  it is reset by its engine (:meth:`DriverConnection.reset`: the server's real
  transaction status read back, then session state undone) in a task the
  caller's cancellation cannot interrupt, unless the engine already reset it
  behind the caller's last statement (:meth:`DriverConnection.is_reset`:
  MySQL sends its reset in the same write as a lone statement, a COMMIT or a
  ROLLBACK, PostgreSQL in the same write as a lone statement of common types,
  which saves a round trip per call); one the engine cannot settle, or
  whose reset fails, is discarded through :meth:`ConnectionPool.invalidate`,
  which logs why. A pooled connection never carries one caller's state to
  the next.
- Connections older than ``max_lifetime`` or idle longer than
  ``max_idle_time`` are closed; one idle longer than ``validate_after_idle`` is
  pinged before it is handed out. A connection found dead on checkout is
  replaced before use (``dead_on_checkout_total``): the caller never sees it.
- Everything ``acquire`` does (waiting, opening, validating) fits in the time
  it is given, which the core bounds by the caller's deadline. Errors raised
  here are marked as not sent: nothing of the caller's statement reached the
  database, so the retry policy may try again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .backends.base import DriverConnection
from .config import PoolSettings
from .errors import GatewayError, Reason

log = logging.getLogger(__name__)

#: How long a connection may take to reset before it is discarded instead.
RESET_TIMEOUT = 5.0
#: How long a ping on checkout may take.
VALIDATION_TIMEOUT = 2.0
#: How long closing waits for checked-out connections to come back.
CLOSE_GRACE = 5.0


@dataclass(frozen=True, slots=True)
class PoolStats:
    size: int
    idle: int
    in_use: int
    waiting: int
    min_size: int
    max_size: int
    acquired_total: int
    created_total: int
    closed_total: int
    acquire_timeouts_total: int
    dead_on_checkout_total: int


class _Holder:
    """A pooled connection and its bookkeeping."""

    __slots__ = ("conn", "created_at", "released_at")

    def __init__(self, conn: DriverConnection, now: float) -> None:
        self.conn = conn
        self.created_at = now
        self.released_at = now


class Checkout:
    """One checkout, as an ``async with`` block (:meth:`ConnectionPool.connection`):
    the connection goes back when the block ends, or is discarded when the
    block's failure leaves its state unknown. A class rather than a generator
    context manager: every call enters one."""

    __slots__ = ("_holder", "_pool", "_wait")

    def __init__(self, pool: ConnectionPool, wait: float) -> None:
        self._pool = pool
        self._wait = wait
        self._holder: _Holder | None = None

    async def __aenter__(self) -> DriverConnection:
        pool = self._pool
        started = pool._clock()
        try:
            self._holder = await pool._acquire(self._wait)
        finally:
            if pool.acquire_observer is not None:
                pool.acquire_observer(pool._clock() - started)
        return self._holder.conn

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        holder = self._holder
        assert holder is not None, "exited a checkout that was never entered"
        self._holder = None
        why = ""  # non-empty: the connection's state is unknown, discard it
        if isinstance(exc, GatewayError):
            if exc.is_infrastructure:
                why = f"the call failed with {exc.reason.value}"
        elif isinstance(exc, asyncio.CancelledError | TimeoutError):
            if not holder.conn.reusable_after_interrupt:
                what = "cancelled" if isinstance(exc, asyncio.CancelledError) else "timed out"
                why = f"a call on it was {what} mid-protocol"
        elif exc is not None:
            why = "a call on it failed unexpectedly"
        self._pool._release(holder, why)


class ConnectionPool:
    """Connections to one database endpoint."""

    def __init__(
        self,
        name: str,
        connect: Callable[[], Awaitable[DriverConnection]],
        settings: PoolSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._connect = connect
        self._settings = settings
        self._clock = clock
        self._idle: collections.deque[_Holder] = collections.deque()
        # Waiters receive a holder, or None meaning "a slot is free: open one".
        self._waiters: collections.deque[asyncio.Future[_Holder | None]] = collections.deque()
        self._holders: dict[int, _Holder] = {}
        self._size = 0  # open connections plus those being opened
        self._closed = False
        self._acquired_total = 0
        self._created_total = 0
        self._closed_total = 0
        self._acquire_timeouts_total = 0
        self._dead_on_checkout_total = 0
        self._returned = asyncio.Event()  # set whenever a checked-out connection comes back
        self._maintenance: asyncio.Task[None] | None = None
        self._settling: set[asyncio.Task[None]] = set()  # releases under way
        self._resetting = 0  # of which this many are resets (the connection comes back)
        #: Told how many seconds each checkout waited (given up ones included).
        self.acquire_observer: Callable[[float], None] | None = None

    @property
    def settings(self) -> PoolSettings:
        return self._settings

    def stats(self) -> PoolStats:
        idle = len(self._idle)
        return PoolStats(
            size=self._size,
            idle=idle,
            in_use=len(self._holders) - idle,
            waiting=len(self._waiters),
            min_size=self._settings.min_size,
            max_size=self._settings.max_size,
            acquired_total=self._acquired_total,
            created_total=self._created_total,
            closed_total=self._closed_total,
            acquire_timeouts_total=self._acquire_timeouts_total,
            dead_on_checkout_total=self._dead_on_checkout_total,
        )

    async def start(self) -> None:
        """Opens ``min_size`` connections (raising if the first cannot be opened)
        and starts the background upkeep."""
        self._maintenance = asyncio.get_running_loop().create_task(
            self._maintain(), name=f"pool-upkeep-{self.name}"
        )
        await self._fill_to_min()

    def connection(self, wait: float) -> Checkout:
        """Checks a connection out for the duration of an ``async with`` block,
        waiting at most ``wait`` seconds for one."""
        return Checkout(self, wait)

    async def _acquire(self, wait: float) -> _Holder:
        if self._closed:
            raise GatewayError(
                Reason.DATABASE_UNAVAILABLE, f"database {self.name!r} is closing", sent=False
            )
        deadline = self._clock() + max(wait, 0.0)
        try:
            while True:
                holder = await self._checkout(deadline)
                if holder is None:
                    holder = await self._open(deadline)
                    self._acquired_total += 1
                    return holder
                if await self._usable(holder, deadline):
                    self._acquired_total += 1
                    return holder
        except GatewayError as exc:
            exc.not_sent()
            raise

    async def _checkout(self, deadline: float) -> _Holder | None:
        """An idle holder, or None when the caller may open a new connection."""
        if self._idle:
            return self._idle.pop()
        # A connection being reset is back in a moment: waiting for it beats
        # opening another (a caller answered before its connection's reset
        # must not make the next call of a sequence grow the pool).
        resetting = self._resetting > len(self._waiters)
        if not resetting and self._size < self._settings.max_size:
            self._size += 1
            return None
        if not resetting and len(self._waiters) >= self._settings.max_waiting:
            raise self._exhausted(f"{len(self._waiters)} callers are already waiting")
        waiter: asyncio.Future[_Holder | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        budget = max(deadline - self._clock(), 0.0)
        try:
            # A waiter handed a connection just as its wait ends keeps it
            # (cancelling a done future changes nothing): _abandon passes it on.
            async with asyncio.timeout(budget):
                return await waiter
        except TimeoutError:
            self._abandon(waiter)
            self._acquire_timeouts_total += 1
            raise self._exhausted(f"no connection became free within {budget:.3g}s") from None
        except BaseException:
            # Cancelled (or the pool closed) while waiting: whatever was handed
            # over goes to the next caller. On success the caller owns it.
            self._abandon(waiter)
            raise

    def _abandon(self, waiter: asyncio.Future[_Holder | None]) -> None:
        """The caller stopped waiting (timeout, cancel)."""
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        if waiter.done() and not waiter.cancelled():
            # Handed a connection (or a slot) after giving up: pass it on.
            handed = waiter.result()
            if handed is None:
                self._size -= 1
                self._wake_for_slot()
            else:
                self._put_back(handed)
        elif not waiter.done():
            waiter.cancel()

    def _exhausted(self, why: str) -> GatewayError:
        s = self.stats()
        return GatewayError(
            Reason.POOL_EXHAUSTED,
            f"connection pool of database {self.name!r} is exhausted: {why} "
            f"(max_size={s.max_size}, in use={s.in_use}, waiting={s.waiting})",
            metadata={"database": self.name},
            retry_after=0.1,
        )

    async def _open(self, deadline: float | None = None) -> _Holder:
        budget = None if deadline is None else max(deadline - self._clock(), 0.0)
        try:
            conn = await asyncio.wait_for(self._connect(), budget)
        except TimeoutError:
            # The backend gives up after connect_timeout on its own: this is
            # the caller's time running out first.
            self._size -= 1
            self._wake_for_slot()
            raise GatewayError(
                Reason.STATEMENT_TIMEOUT,
                f"no connection to database {self.name!r} could be opened within "
                f"{budget:.3g}s (the call's deadline or the pool's acquire_timeout)",
                metadata={"database": self.name},
            ) from None
        except BaseException:
            self._size -= 1
            self._wake_for_slot()
            raise
        holder = _Holder(conn, self._clock())
        self._holders[id(holder)] = holder
        self._created_total += 1
        return holder

    async def _usable(self, holder: _Holder, deadline: float) -> bool:
        now = self._clock()
        conn = holder.conn
        if now - holder.created_at >= self._settings.max_lifetime:
            await self._discard(holder)
            return False
        if conn.is_closed():
            self._dead_on_checkout_total += 1
            self.invalidate(holder, "found closed on checkout; replaced")
            return False
        if now - holder.released_at >= self._settings.validate_after_idle:
            limit = min(VALIDATION_TIMEOUT, max(deadline - now, 0.0))
            try:
                await conn.ping(limit)
            except (GatewayError, TimeoutError, OSError):
                self._dead_on_checkout_total += 1
                self.invalidate(holder, "failed validation on checkout; replaced")
                return False
            except BaseException:
                self.invalidate(holder, "its validation was cut off")
                raise
        return True

    def _release(self, holder: _Holder, why: str) -> None:
        """Resets the connection and puts it back, or discards it. The reset
        runs in its own task, which the caller does not wait for: its answer
        need not wait a round trip for the next caller's clean session (the
        connection rejoins the pool only once the reset is done), and a caller
        cancelled meanwhile cannot leave a connection half reset nor lose it
        from the pool."""
        conn = holder.conn
        if not why and conn.is_reset() and not self._closed:
            # Reset already, behind the caller's last statement: back at once.
            holder.released_at = self._clock()
            self._put_back(holder)
            self._returned.set()
            return
        if not why:
            self._resetting += 1
        task = asyncio.get_running_loop().create_task(
            self._settle(holder, why), name=f"pool-release-{self.name}"
        )
        # Held until done: a task nobody references may be collected mid-way.
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def settled(self) -> None:
        """Returns once every connection given back so far has been reset and
        put back, or discarded (a release does not wait for that itself)."""
        while self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)

    async def _settle(self, holder: _Holder, why: str) -> None:
        resetting = not why
        try:
            conn = holder.conn
            if not why and conn.is_closed():
                why = "it was found closed"
            if not why and self._closed:
                why = "the pool is closing"
            if not why:
                try:
                    async with asyncio.timeout(RESET_TIMEOUT):
                        await conn.reset()
                except (GatewayError, TimeoutError, OSError) as exc:
                    message = exc.message if isinstance(exc, GatewayError) else repr(exc)
                    why = f"its reset failed ({message})"
                except Exception as exc:  # a driver bug must not lose the connection's slot
                    log.exception("pool %s: unexpected error resetting a connection", self.name)
                    why = f"its reset failed unexpectedly ({exc!r})"
                if not why and conn.is_closed():
                    why = "it was lost during its reset"
                if not why and self._closed:
                    why = "the pool closed during its reset"
            if resetting:  # over, either way: nobody should wait for it any more
                self._resetting -= 1
                resetting = False
            if why:
                self.invalidate(holder, why)
                return
            holder.released_at = self._clock()
            self._put_back(holder)
        finally:
            if resetting:
                self._resetting -= 1
            self._returned.set()

    def _put_back(self, holder: _Holder) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(holder)
                return
        self._idle.append(holder)

    def _wake_for_slot(self) -> None:
        """A connection was closed: let the first waiter open a new one."""
        while self._waiters and self._size < self._settings.max_size:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._size += 1
                waiter.set_result(None)
                return

    def invalidate(self, holder: _Holder, why: str) -> None:
        """Discards a connection that cannot be trusted or used, saying why:
        the one way a connection leaves the pool other than by age, idleness
        or the pool closing."""
        if id(holder) in self._holders:
            log.info("pool %s: discarded a connection: %s", self.name, why)
        self._drop(holder)

    async def _discard(self, holder: _Holder) -> None:
        self._drop(holder)

    def _drop(self, holder: _Holder) -> None:
        if self._holders.pop(id(holder), None) is None:
            return
        self._size -= 1
        self._closed_total += 1
        holder.conn.terminate()
        self._wake_for_slot()

    async def _fill_to_min(self) -> None:
        while not self._closed and self._size < self._settings.min_size:
            self._size += 1
            holder = await self._open()
            self._put_back(holder)

    async def _maintain(self) -> None:
        interval = min(self._settings.max_idle_time, self._settings.max_lifetime, 10.0) / 2
        while not self._closed:
            await asyncio.sleep(interval)
            now = self._clock()
            keep = self._settings.min_size
            for holder in list(self._idle):
                old = now - holder.created_at >= self._settings.max_lifetime
                stale = now - holder.released_at >= self._settings.max_idle_time
                if old or (stale and self._size > keep):
                    with contextlib.suppress(ValueError):
                        self._idle.remove(holder)
                    await self._discard(holder)
            with contextlib.suppress(GatewayError, OSError, TimeoutError):
                await self._fill_to_min()

    async def close(self, grace: float = CLOSE_GRACE) -> None:
        """Closes idle connections now and in-use ones as they come back, waiting
        at most ``grace`` seconds for them; any still out after that are dropped."""
        self._closed = True
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(
                    GatewayError(
                        Reason.DATABASE_UNAVAILABLE,
                        f"database {self.name!r} is closing",
                        sent=False,
                    )
                )
        self._waiters.clear()
        idle, self._idle = list(self._idle), collections.deque()
        for holder in idle:
            self._holders.pop(id(holder), None)
            self._size -= 1
            self._closed_total += 1
            await holder.conn.close()
        # A real wait, so the loop's clock rather than the injectable one
        # (which only ages connections).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._holders and loop.time() < deadline:
            self._returned.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._returned.wait(), deadline - loop.time())
        for holder in list(self._holders.values()):
            log.warning("pool %s: dropping a connection still in use at close", self.name)
            await self._discard(holder)
