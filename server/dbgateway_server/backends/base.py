"""The small contract every engine implements.

A :class:`Backend` opens :class:`DriverConnection` objects; the engine-neutral
:mod:`dbgateway_server.pool` keeps them. Every method of a driver connection
raises only :class:`~dbgateway_server.errors.GatewayError` (translated in the
engine's single ``translate_errors`` context manager), ``asyncio.CancelledError``
when the call was cancelled, or ``TimeoutError`` from an expired timeout.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dbgateway.v1 import value_pb2

from ..config import DatabaseConfig
from ..errors import GatewayError, Reason
from ..values import Converter, convert_rows

__all__ = ["ResultSet"]  # defined with the result rules, in ..results

#: An engine's translation of one driver exception (None: not the driver's).
Translator = Callable[[BaseException, str], GatewayError | None]


class Translating:
    """A block in which a driver exception becomes the GatewayError its engine's
    ``translate`` gives; anything ``translate`` does not know passes through.
    A class, not a generator context manager: every statement enters one."""

    __slots__ = ("_database", "_translate")

    def __init__(self, translate: Translator, database: str) -> None:
        self._translate = translate
        self._database = database

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is None or isinstance(exc, GatewayError) or not isinstance(exc, Exception):
            return
        error = self._translate(exc, self._database)
        if error is not None:
            raise error from exc


@dataclass(frozen=True, slots=True)
class ResultLimits:
    """What a unary result may hold.

    ``max_rows`` is the caller's own limit: beyond it the result is truncated
    (and says so). ``max_result_rows`` and ``max_result_bytes`` are the
    database's caps: beyond them the call fails with RESULT_TOO_LARGE, because
    a silently cut result would look complete.
    """

    max_rows: int = 0
    max_result_rows: int = 100_000
    max_result_bytes: int = 16 * 1024 * 1024
    #: The caller asked for RESULT_ENCODING_COLUMNS: the result is ColumnBatches.
    columnar: bool = False
    #: ... in RESULT_ENCODING_COLUMNS_V2, with its packed decimals and timestamps.
    columns_v2: bool = False

    @property
    def fetch_rows(self) -> int:
        """How many rows to fetch at most: one more than the first limit that
        applies, which tells "exactly at the limit" from "more"."""
        if self.max_rows and self.max_rows <= self.max_result_rows:
            return self.max_rows + 1
        return self.max_result_rows + 1


@dataclass(slots=True)
class ResultSet:
    """A read's result: ``rows``, or with the columnar encoding ``batches``
    (and then no ``rows``)."""

    columns: list[value_pb2.Column]
    rows: list[value_pb2.Row]
    truncated: bool = False
    batches: list[value_pb2.ColumnBatch] | None = None

    @property
    def row_count(self) -> int:
        if self.batches is not None:
            return sum(b.row_count for b in self.batches)
        return len(self.rows)


class IsolationLevel(StrEnum):
    READ_UNCOMMITTED = "READ UNCOMMITTED"
    READ_COMMITTED = "READ COMMITTED"
    REPEATABLE_READ = "REPEATABLE READ"
    SERIALIZABLE = "SERIALIZABLE"


@dataclass(frozen=True, slots=True)
class TransactionMode:
    """How a transaction begins; ``None`` isolation means the database default."""

    isolation: IsolationLevel | None = None
    read_only: bool = False
    deferrable: bool = False
    #: PostgreSQL: the role the transaction runs as (``SET LOCAL ROLE``);
    #: empty: the DSN's own. Other engines ignore it.
    role: str = ""


@dataclass(slots=True)
class ExecResult:
    rows_affected: int
    last_insert_id: int | None = None
    columns: list[value_pb2.Column] = field(default_factory=list)
    rows: list[value_pb2.Row] = field(default_factory=list)


class RowStream(ABC):
    """An open server-side cursor: its columns are known, its rows are fetched
    on demand, so only what was fetched is in memory."""

    columns: list[value_pb2.Column]
    #: One per column: how a driver value becomes a ``Value``.
    converters: list[Converter]

    @abstractmethod
    async def fetch_records(self, n: int) -> Sequence[Sequence[Any]]:
        """The next rows (at most ``n``) as the driver gives them; empty once
        the result is exhausted."""

    async def fetch(self, n: int) -> list[value_pb2.Row]:
        """The next rows (at most ``n``), converted; empty once the result is
        exhausted."""
        return convert_rows(await self.fetch_records(n), self.converters)


class DriverConnection(ABC):
    """One open connection to a database."""

    #: After a statement was cancelled or timed out, can this connection be
    #: used again? (asyncpg and sqlite3 settle the cancel themselves; MySQL's
    #: protocol state is unknown, so those connections are discarded.)
    reusable_after_interrupt: bool = True
    #: The engine runs a transaction as another role (``TransactionMode.role``).
    has_roles: bool = False

    @abstractmethod
    async def query(
        self,
        sql: str,
        params: Sequence[value_pb2.Value],
        *,
        limits: ResultLimits,
    ) -> ResultSet:
        """Runs ``sql`` and returns its rows within ``limits``: truncated at the
        caller's ``max_rows``, RESULT_TOO_LARGE beyond the database's caps.
        Fetches at most ``limits.fetch_rows`` rows from the database."""

    @abstractmethod
    def stream(
        self, sql: str, params: Sequence[value_pb2.Value]
    ) -> AbstractAsyncContextManager[RowStream]:
        """Runs the read ``sql`` through a server-side cursor, for the duration
        of the block. Inside an open transaction the cursor belongs to it;
        otherwise the engine gives the cursor whatever it needs (PostgreSQL:
        a read-only transaction, ended with the block).

        Leaving the block before the rows are exhausted (an error, a cancel, a
        caller that stopped reading) stops the statement on the database; the
        connection is then reusable unless ``is_closed()`` says otherwise."""

    @abstractmethod
    async def execute(self, sql: str, params: Sequence[value_pb2.Value]) -> ExecResult:
        """Runs ``sql`` and reports rows affected, last insert id and RETURNING rows."""

    @abstractmethod
    async def execute_many(
        self, sql: str, param_sets: Sequence[Sequence[value_pb2.Value]]
    ) -> int | None:
        """Runs ``sql`` once per parameter set through the driver's bulk path and
        returns the total rows affected, or None when the driver does not say.
        Atomicity is the caller's business (it wraps this in a transaction)."""

    @abstractmethod
    async def begin(self, mode: TransactionMode) -> None:
        """Starts a transaction on this connection."""

    @abstractmethod
    async def commit(self) -> None: ...

    @abstractmethod
    async def rollback(self) -> None: ...

    async def reset(self) -> None:
        """Brings the session back to what a fresh connection has, before the
        pool hands it to the next caller: first re-synchronised with the
        server (whatever an interrupted call left on the wire has finished,
        and the transaction status is the server's, not a client-side flag),
        then anything a statement could have changed undone. Raises when that
        cannot be done; the pool then discards the connection. Engines
        override this; the base rolls back an open transaction only."""
        if self.in_transaction():
            await self.rollback()

    def is_reset(self) -> bool:
        """True while the session is already what :meth:`reset` would make
        it, with nothing sent since: the engine reset it right behind the
        caller's last statement (in the same write, its answer read with the
        statement's). The pool then puts the connection back as it is.

        An engine may do that behind a statement outside a transaction (the
        only statement of its call: its connection goes back next) and
        behind COMMIT or ROLLBACK. The base never does."""
        return False

    @abstractmethod
    def in_transaction(self) -> bool:
        """True while a transaction is open (tracked by the driver, no round trip)."""

    @abstractmethod
    def is_closed(self) -> bool: ...

    @abstractmethod
    async def ping(self, limit: float) -> None:
        """A cheap round trip proving the connection works."""

    # -- replication: where writes are, and how far a replica has replayed --

    async def replication_position(self) -> str:
        """On a primary: a position in its replication stream at or past every
        transaction committed so far (the ``read_token`` of a write)."""
        raise GatewayError(Reason.UNSUPPORTED, "this engine has no replicas")

    async def replica_lag(self) -> float | None:
        """On a replica: seconds it is behind its primary (0 when it has
        replayed all it received and is still receiving); None when
        replication is broken, stopped or not set up."""
        raise GatewayError(Reason.UNSUPPORTED, "this engine has no replicas")

    async def replayed(self, position: str, wait: float) -> bool:
        """On a replica: whether it has replayed up to ``position`` (from
        :meth:`replication_position`), waiting at most ``wait`` seconds for
        it. A position the engine cannot parse is INVALID_REQUEST."""
        raise GatewayError(Reason.UNSUPPORTED, "this engine has no replicas")

    @abstractmethod
    async def close(self) -> None:
        """Closes politely; never raises."""

    @abstractmethod
    def terminate(self) -> None:
        """Drops the connection at once; never raises."""


#: Called with (channel, payload, sender pid) for each notification, in the
#: order the database delivered them.
NotificationCallback = Callable[[str, str, int], None]
#: Called once when a listening connection is lost or closed.
LostCallback = Callable[[], None]


class ListeningConnection(ABC):
    """A connection of its own that receives the database's notifications
    (PostgreSQL LISTEN/NOTIFY): never pooled, never used for statements."""

    @abstractmethod
    async def listen(self, channel: str) -> None:
        """Starts receiving ``channel``'s notifications (the name is quoted as
        an identifier, never spliced)."""

    @abstractmethod
    async def unlisten(self, channel: str) -> None:
        """Stops receiving ``channel``'s notifications."""

    @abstractmethod
    async def ping(self, limit: float) -> None:
        """A cheap round trip proving the connection still works."""

    @abstractmethod
    def is_closed(self) -> bool: ...

    @abstractmethod
    async def close(self) -> None:
        """Closes politely; never raises."""


class Backend(ABC):
    """Opens connections to one configured database."""

    #: Why the engine cannot give subscriptions; an engine that can overrides
    #: :meth:`connect_listener` instead.
    no_notifications = "this engine has no LISTEN/NOTIFY"

    def __init__(self, config: DatabaseConfig) -> None:
        self.config = config
        self.server_version = ""

    async def connect_listener(
        self, on_notification: NotificationCallback, on_lost: LostCallback
    ) -> ListeningConnection:
        """Opens a connection for notifications alone (within
        ``config.connect_timeout``), outside the pool; raises
        GatewayError(UNSUPPORTED) on an engine without them, and
        GatewayError(DATABASE_UNAVAILABLE) when the database cannot be reached."""
        raise GatewayError(
            Reason.UNSUPPORTED,
            f"database {self.config.name!r} cannot take subscriptions: {self.no_notifications}",
            metadata={"database": self.config.name, "engine": str(self.config.engine)},
            sent=False,
        )

    @abstractmethod
    async def connect(self) -> DriverConnection:
        """Opens a connection (within ``config.connect_timeout``) or raises
        GatewayError(DATABASE_UNAVAILABLE)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Releases backend-wide resources (not connections: the pool owns those)."""
