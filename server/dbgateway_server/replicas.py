"""Read replicas of one database: their health, their lag, and which one a read goes to.

Each replica is an endpoint of its own: a :class:`~.gateway.Database` (its own
pool, circuit breaker and background prober, the same classes as the
primary's) plus a lag monitor. A replica is *usable* while its circuit is
closed and its last measured lag is known and within ``max_replica_lag``; a
failed measurement (unreachable, replication stopped: MariaDB reports NULL)
makes its lag unknown, so it takes no reads until a measurement succeeds
again. Nothing bans a replica for good: it is used again as soon as it
answers and has caught up.

:class:`ReplicaSet` picks, among the usable replicas, the one with the fewest
calls in flight; when none is usable the caller's preference decides
(``replica_preferred`` reads the primary, ``replica`` fails
UNAVAILABLE / NO_REPLICA_AVAILABLE), as pgcat and Vitess do: health and lag
decide, and a failsafe keeps reads answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from .config import ReadPreference
from .errors import GatewayError, Reason
from .resilience.breaker import CircuitState

if TYPE_CHECKING:
    from .call import Deadline
    from .database import Database

log = logging.getLogger(__name__)

PRIMARY = "primary"

#: Longest pause between two lag measurements of a replica.
MAX_LAG_INTERVAL = 1.0

_routed: contextvars.ContextVar[str] = contextvars.ContextVar("dbgateway_endpoint", default="")


def routed_to(endpoint: str) -> None:
    """Records the endpoint the current call runs on (for its metrics and
    access-log line); the last one recorded wins, as a call that failed over
    ran on the last one."""
    _routed.set(endpoint)


def routed_endpoint() -> str:
    """The endpoint :func:`routed_to` recorded for the current call ("" if none)."""
    return _routed.get()


def replica_name(index: int) -> str:
    """The endpoint name of replica ``index`` (0-based): ``replica-1``, ..."""
    return f"replica-{index + 1}"


class Replica:
    """One replica endpoint: its database (pool, breaker, prober) and its lag."""

    __slots__ = ("_on_change", "_task", "database", "in_flight", "lag", "max_lag", "name")

    def __init__(
        self, name: str, database: Database, max_lag: float, on_change: Callable[[], None]
    ) -> None:
        self.name = name
        self.database = database
        self.max_lag = max_lag
        #: Seconds behind the primary at the last measurement; None: unknown.
        self.lag: float | None = None
        #: Calls running on it right now (reads and open read-only transactions).
        self.in_flight = 0
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None

    @property
    def usable(self) -> bool:
        return (
            self.database.breaker.state is CircuitState.CLOSED
            and self.lag is not None
            and self.lag <= self.max_lag
        )

    @property
    def interval(self) -> float:
        """How often the lag is measured: often enough that a replica falls
        out of use well within ``max_replica_lag`` of falling behind."""
        return min(MAX_LAG_INTERVAL, self.max_lag / 4)

    async def measure(self) -> None:
        """Measures the lag once, through the replica's circuit breaker (a
        replica that stopped answering opens its circuit without traffic)."""
        db = self.database
        limit = min(db.config.connect_timeout, max(self.interval * 2, 0.5))
        lag: float | None = None
        try:
            async with db.admitted(), db.pool.connection(limit) as conn:
                async with asyncio.timeout(limit):
                    lag = await conn.replica_lag()
        except GatewayError as exc:
            if exc.reason is Reason.POOL_EXHAUSTED:
                # Every connection is busy with reads: the replica is alive and
                # answering, so the last measurement stands until the next one.
                return
            self._unknown(exc)
        except (TimeoutError, OSError) as exc:
            self._unknown(exc)
        else:
            if lag is None and self.lag is not None:
                log.warning(
                    "replica %s of database %s: replication is stopped or broken; "
                    "not used for reads",
                    self.name,
                    db.name,
                )
        was = self.usable
        self.lag = lag
        if self.usable != was:
            log.info(
                "replica %s of database %s is %s (lag %s, max_replica_lag %gs)",
                self.name,
                db.name,
                "usable" if self.usable else "not usable",
                "unknown" if lag is None else f"{lag:.3f}s",
                self.max_lag,
            )
            self._on_change()

    def _unknown(self, exc: BaseException) -> None:
        if self.lag is not None:
            log.warning(
                "replica %s of database %s: lag unknown, not used for reads: %s",
                self.name,
                self.database.name,
                getattr(exc, "message", None) or str(exc) or type(exc).__name__,
            )

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.measure()
            except Exception:  # a bug here must not stop the monitor
                log.exception("measuring replica %s of %s failed", self.name, self.database.name)

    async def start(self) -> None:
        await self.database.start()
        if self.database.serving:
            await self.measure()
        self._task = asyncio.get_running_loop().create_task(
            self._monitor(), name=f"lag-{self.database.name}-{self.name}"
        )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.database.close()


class ReplicaSet:
    """The replicas of one database and the routing of its reads."""

    def __init__(
        self,
        primary: Database,
        replicas: Sequence[Database],
        on_health: Callable[[bool], None],
    ) -> None:
        self.primary = primary
        self.replicas = [
            Replica(replica_name(i), db, primary.config.max_replica_lag, self.changed)
            for i, db in enumerate(replicas)
        ]
        self._on_health = on_health
        self._serving = False

    def __bool__(self) -> bool:
        return bool(self.replicas)

    @property
    def serving(self) -> bool:
        """At least one replica is usable (the ``db/<name>/replicas`` health entry)."""
        return any(r.usable for r in self.replicas)

    def changed(self) -> None:
        """Re-evaluates ``serving`` after a replica's circuit or lag changed."""
        serving = self.serving
        if serving != self._serving:
            self._serving = serving
            self._on_health(serving)

    async def start(self) -> None:
        await asyncio.gather(*(r.start() for r in self.replicas))
        self._serving = self.serving

    async def close(self) -> None:
        await asyncio.gather(*(r.close() for r in self.replicas))

    def preference(self, asked: ReadPreference | None) -> ReadPreference:
        """What the caller asked for, or the database's default."""
        if not self.replicas:
            return ReadPreference.PRIMARY
        return asked or self.primary.config.read_preference

    def choose(self, exclude: Sequence[Replica] = ()) -> Replica | None:
        """The usable replica with the fewest calls in flight (None: none is)."""
        usable = [r for r in self.replicas if r.usable and r not in exclude]
        return min(usable, key=lambda r: r.in_flight) if usable else None

    def no_replica(self) -> GatewayError:
        states = ", ".join(
            f"{r.name}: "
            + (
                f"circuit {r.database.breaker.state.value}"
                if r.database.breaker.state is not CircuitState.CLOSED
                else "lag unknown"
                if r.lag is None
                else f"lag {r.lag:.3g}s > max_replica_lag {r.max_lag:g}s"
            )
            for r in self.replicas
        )
        return GatewayError(
            Reason.NO_REPLICA_AVAILABLE,
            f"no replica of database {self.primary.name} is usable ({states}); "
            "READ_PREFERENCE_REPLICA_PREFERRED would read the primary",
            metadata={"database": self.primary.name, "engine": self.primary.engine},
            retry_after=self.primary.config.breaker.open_time,
        )

    async def caught_up(self, replica: Replica, token: str, deadline: Deadline) -> bool:
        """Whether ``replica`` has replayed past ``token``, waiting at most
        ``replica_wait`` (and never past the caller's deadline). A replica
        that fails to answer has not caught up, as far as this read knows."""
        db = replica.database
        wait = deadline.bounded(self.primary.config.replica_wait)
        limit = deadline.bounded(db.config.statement_timeout)
        try:
            async with db.admitted(), db.pool.connection(limit) as conn:
                async with asyncio.timeout(limit):
                    return await conn.replayed(token, max(wait, 0.0))
        except GatewayError as exc:
            if exc.is_infrastructure or exc.reason in (Reason.CIRCUIT_OPEN, Reason.POOL_EXHAUSTED):
                return False
            raise
        except TimeoutError:
            return False

    @contextlib.contextmanager
    def running(self, replica: Replica) -> Iterator[None]:
        """Counts a call in flight on ``replica`` for the block."""
        replica.in_flight += 1
        try:
            yield
        finally:
            replica.in_flight -= 1
