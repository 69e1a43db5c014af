"""PostgreSQL through asyncpg."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import asyncpg
import asyncpg.exceptions as pgexc
import asyncpg.exceptions._base as pgbase

from dbgateway.v1 import value_pb2

from ..errors import (
    GatewayError,
    Reason,
    invalid_parameter,
    invalid_request,
    reason_for_sqlstate,
)
from ..results import collect_rows
from ..values import POSTGRES_PARAMS, Column, Converter, convert_rows, pg_converter
from . import pg_text, pg_wire
from .base import (
    Backend,
    DriverConnection,
    ExecResult,
    ListeningConnection,
    LostCallback,
    NotificationCallback,
    ResultLimits,
    ResultSet,
    RowStream,
    TransactionMode,
    Translating,
)

ENGINE = "postgresql"
#: The application_name of the one listening connection per database.
LISTEN_APPLICATION_NAME = "dbgateway-listen"

#: asyncpg client-side errors that are not PostgresError, and what they mean.
_CLIENT_ERRORS: tuple[tuple[type[BaseException], Reason], ...] = (
    # A parameter the codec cannot encode. (asyncpg.exceptions.DataError is
    # another class: the server's SQLSTATE 22000, handled by the SQLSTATE table.)
    (pgbase.DataError, Reason.INVALID_PARAMETER),
    (pgexc.ConnectionDoesNotExistError, Reason.DATABASE_UNAVAILABLE),
    (pgexc.ClientCannotConnectError, Reason.DATABASE_UNAVAILABLE),
    (pgexc.ClientConfigurationError, Reason.DATABASE_UNAVAILABLE),
    (pgexc.UnsupportedClientFeatureError, Reason.UNSUPPORTED),
    (pgexc.UnsupportedServerFeatureError, Reason.UNSUPPORTED),
    (pgexc.OutdatedSchemaCacheError, Reason.SERIALIZATION_FAILURE),
    (pgexc.TargetServerAttributeNotMatched, Reason.DATABASE_UNAVAILABLE),
    (pgexc.ProtocolError, Reason.DATABASE_UNAVAILABLE),
    (pgexc.InterfaceError, Reason.INVALID_REQUEST),
    (pgexc.InternalClientError, Reason.DATABASE_ERROR),
)


def translate(exc: BaseException, database: str) -> GatewayError | None:
    """The GatewayError for an asyncpg (or socket) exception; None for others."""
    if isinstance(exc, pgexc.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None)
        reason = reason_for_sqlstate(sqlstate) or Reason.DATABASE_ERROR
        message = getattr(exc, "message", None) or str(exc)
        detail = getattr(exc, "detail", None)
        if detail:
            message = f"{message} ({detail})"
        return GatewayError(
            reason,
            message,
            metadata={
                "sqlstate": sqlstate,
                "engine": ENGINE,
                "database": database,
                "constraint": getattr(exc, "constraint_name", None),
                "table": getattr(exc, "table_name", None),
                "column": getattr(exc, "column_name", None),
            },
        )
    if type(exc) is pgexc.InterfaceError and "connection is closed" in str(exc):
        # asyncpg has no class of its own for using a connection it already
        # closed (after a lost link or a terminate): that is a lost connection.
        return GatewayError(
            Reason.DATABASE_UNAVAILABLE, str(exc), metadata={"engine": ENGINE, "database": database}
        )
    if type(exc) is pgexc.InternalClientError and "cannot switch to state" in str(exc):
        # What asyncpg raises when the server's FATAL goodbye (a crashed or
        # killed postmaster: 57P02) lands while another operation is under
        # way on the connection: it is gone, as lost as a reset socket.
        return GatewayError(
            Reason.DATABASE_UNAVAILABLE, str(exc), metadata={"engine": ENGINE, "database": database}
        )
    for cls, reason in _CLIENT_ERRORS:
        if isinstance(exc, cls):
            return GatewayError(reason, str(exc), metadata={"engine": ENGINE, "database": database})
    if isinstance(exc, OSError | ConnectionError | EOFError):
        return GatewayError(
            Reason.DATABASE_UNAVAILABLE,
            f"cannot reach PostgreSQL: {exc}",
            metadata={"engine": ENGINE, "database": database},
        )
    return None


#: asyncpg's words for a parameter it could not encode as the statement's type.
_BAD_ARGUMENT = re.compile(r"^invalid input for query argument \$(\d+): .*?(\(([^()]*)\))?$", re.S)
#: The Value kind that carries each common PostgreSQL type.
_KIND_FOR_TYPE: Mapping[str, str] = {
    **dict.fromkeys(("int2", "int4", "int8", "oid"), "int_value"),
    **dict.fromkeys(("float4", "float8"), "double_value"),
    "numeric": "decimal_value",
    "bool": "bool_value",
    **dict.fromkeys(("text", "varchar", "bpchar", "name"), "string_value"),
    "bytea": "bytes_value",
    "date": "date_value",
    "time": "time_value",
    "timestamptz": "timestamp_value",
    "timestamp": "datetime_value",
    "interval": "interval_value",
    "uuid": "uuid_value",
    **dict.fromkeys(("json", "jsonb"), "json_value"),
}


def parameter_type_error(
    exc: pgexc.DataError, stmt: Any, params: Sequence[value_pb2.Value]
) -> GatewayError | None:
    """INVALID_PARAMETER naming the parameter, the type the statement expects
    and the kind that was sent, for a value asyncpg could not encode (its own
    message shows the value and a Python error instead); None when ``exc``
    is another data error."""
    match = _BAD_ARGUMENT.match(str(exc))
    if match is None:
        return None
    index = int(match.group(1)) - 1
    types = stmt.get_parameters()
    if not 0 <= index < min(len(types), len(params)):
        return None
    expected = types[index].name
    sent = params[index].WhichOneof("kind") or "an empty Value"
    wanted = _KIND_FOR_TYPE.get(expected)
    fix = f"send {wanted}" if wanted else "send a value of that type"
    if sent == "string_value":
        fix += f", or have PostgreSQL convert the text: ${index + 1}::text::{expected}"
    error = invalid_parameter(
        index, f"${index + 1} is {expected} in this statement, but {sent} was sent; {fix}"
    )
    return error.with_metadata(sqlstate="22000", expected_type=expected, sent_kind=sent)


def translate_errors(database: str) -> contextlib.AbstractContextManager[None]:
    """The one place asyncpg exceptions become GatewayErrors."""
    return Translating(translate, database)


_LSN_RE = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
_REPLAY_POLL = 0.005
_REPLAYED_SQL = "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)"
#: A standby that replayed all it received from a walsender that is still
#: streaming is current (an idle primary sends nothing, so the age of the
#: last replayed transaction says nothing then). Otherwise its lag is the age
#: of the last transaction it replayed. Not in recovery (a promoted or
#: mistaken "replica"), or nothing replayed yet: unknown, so it is not used.
_REPLICA_LAG_SQL = """
SELECT CASE
    WHEN NOT pg_is_in_recovery() THEN NULL
    WHEN pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn()
         AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') THEN 0
    ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())
END::float8
"""

#: (database, SQL) -> the statement that runs a batch of it returning one row
#: per row affected, or None when there is none (see PostgresConnection.execute_many).
_COUNTING_FORMS: dict[tuple[str, str], str | None] = {}
_COUNTING_FORMS_LIMIT = 1024
_PROBE_SAVEPOINT = "dbgateway_probe"


#: What a prepared statement's description holds: (asyncpg's statement state,
#: parameter count, result columns, their converters, parameter coercions,
#: its lean plan or None).
_Description = tuple[
    Any,
    int,
    list[value_pb2.Column],
    list[Converter],
    list[tuple[int, Callable[[Any], Any]]],
    pg_wire.Plan | None,
]


#: What asyncpg's own pool resets (advisory locks, cursors, LISTEN, settings),
#: plus what it leaves: the session's role and authorization (RESET ALL
#: skips them) and its temporary tables.
RESET_STATEMENTS = (
    "SELECT pg_advisory_unlock_all()",
    "CLOSE ALL",
    "UNLISTEN *",
    "SET SESSION AUTHORIZATION DEFAULT",
    "RESET ALL",
    "DISCARD TEMP",
)
#: The pool's own reset: one simple-protocol round trip.
RESET_QUERY = "; ".join(RESET_STATEMENTS)
#: The names of the reset's statements, prepared on each connection the lean
#: path uses; behind a statement they run as Bind/Execute, with no Parse
#: (about a fifth of PostgreSQL's CPU per pooled point select went to parsing
#: and planning the reset's text on every call).
RESET_STATEMENT_PREFIX = "dbgateway_reset_"
#: Their names' generations, counted per process: a name is never used
#: twice on a connection, even by a second object over the same link.
_RESET_GENERATIONS = itertools.count(1)
#: The plan of the exchange that prepares them (it has no rows).
_PREPARE_RESET = pg_wire.prepare_plan("the session reset's statements")


def quote_identifier(name: str) -> str:
    """``name`` as a double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _rows_affected(status: str | None) -> int:
    # "INSERT 0 3", "UPDATE 2", "SELECT 5", "CREATE TABLE"
    if not status:
        return 0
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def _check_arity(entry: _Description, nparams: int) -> None:
    if entry[1] != nparams:
        raise invalid_request(
            "params", f"the statement takes {entry[1]} parameter(s), {nparams} given"
        )


class PostgresConnection(DriverConnection):
    # asyncpg sends a cancel request and waits for it; so does the lean path
    # (its exchange is read to the end before the connection is used again).
    reusable_after_interrupt = True
    has_roles = True

    #: Described statements kept per connection (beyond it, the cache starts over).
    DESCRIBED_LIMIT = 1024

    def __init__(self, conn: Any, database: str) -> None:
        self._conn = conn
        self._database = database
        # id(asyncpg statement state) -> (state, parameter count, columns,
        # converters): decided once per prepared statement, not per call. The
        # state is held, so its id cannot be reused while the entry lives; a
        # re-prepared statement is a new state and gets a new entry.
        self._described: dict[int, _Description] = {}
        #: SQL -> the description of its named statement in asyncpg's cache,
        #: for statements the lean path runs: a repeated call finds its plan
        #: here without asyncpg's prepare (a coroutine, a statement object
        #: and its finalizer on every call). An entry whose statement asyncpg
        #: has since closed (evicted, expired, the schema changed) is not used.
        self._lean_by_sql: dict[str, _Description] = {}
        #: The session was reset behind the last statement, nothing sent since.
        self._fresh = False
        #: A lean exchange cut off mid-way, and the cancel request sent for
        #: it: the next use waits for both (see :meth:`_resync`).
        self._interrupted: tuple[pg_wire.Exchange, asyncio.Future[None]] | None = None
        #: What the session reset answers when it goes as planned (learned
        #: from the first lean exchange; see pg_wire.Exchange).
        self._reset_answer: bytes | None = None
        #: The message that runs the reset's statements prepared on this
        #: connection (asyncpg knows nothing of them); none until
        #: :meth:`prepare_reset`, and none again once a reset found them gone
        #: (a caller's DEALLOCATE): the next lean call prepares new ones.
        self._reset_message: bytes | None = None
        #: Statements run on the lean path (for tests and measurements).
        self.lean_calls = 0
        # The lean path borrows plain TCP (or Unix socket) transports only: a
        # TLS transport's set_protocol is not exercised by any test here.
        self.lean_allowed = not getattr(conn._protocol, "is_ssl", True)

    async def _prepare(self, sql: str, nparams: int) -> Any:
        # The private _prepare(use_cache=True) reuses the driver's statement
        # cache (one Parse per distinct SQL per connection), while the public
        # prepare() would Parse on every call.
        stmt = await self._conn._prepare(sql, use_cache=True)
        _check_arity(self._description(stmt), nparams)
        return stmt

    def _lean_entry(self, sql: str, nparams: int) -> _Description | None:
        """The description of ``sql``'s statement when it is still prepared
        under its name on this connection and runs on the lean path."""
        entry = self._lean_by_sql.get(sql)
        if entry is None or entry[0].closed:
            return None
        _check_arity(entry, nparams)
        return entry

    def _description(self, stmt: Any) -> _Description:
        state = stmt._state
        entry = self._described.get(id(state))
        if entry is None or entry[0] is not state:
            columns = []
            converters = []
            for attr in stmt.get_attributes():
                columns.append(Column(name=attr.name, db_type=attr.type.name))
                converters.append(pg_converter(attr.type.name, attr.type.kind))
            if len(self._described) >= self.DESCRIBED_LIMIT:
                self._described.clear()
                self._lean_by_sql.clear()
            parameters = stmt.get_parameters()
            coercions = pg_text.coercions(parameters)
            lean = None
            if not coercions:
                lean = pg_wire.plan(
                    state,
                    [t.oid for t in parameters],
                    [attr.type.oid for attr in stmt.get_attributes()],
                )
            entry = (state, len(parameters), columns, converters, coercions, lean)
            self._described[id(state)] = entry
            # Only a named statement stays prepared: an unnamed one is
            # replaced by the next Parse.
            if lean is not None and state.name:
                self._lean_by_sql[stmt._query] = entry
        return entry

    def _describe(self, stmt: Any) -> tuple[list[value_pb2.Column], list[Converter]]:
        """The result columns and their converters (shared: do not mutate)."""
        _, _, columns, converters, _, _ = self._description(stmt)
        return columns, converters

    def _bindable(self, stmt: Any, args: list[Any]) -> list[Any]:
        """``args`` with the parameters given in text form that asyncpg binds
        only from its own objects (ranges, bit strings, ...) parsed."""
        plan = self._description(stmt)[4]
        return pg_text.apply(args, plan) if plan else args

    async def _run(
        self, sql: str, params: Sequence[value_pb2.Value], limit: int
    ) -> tuple[_Description, Sequence[Sequence[Any]], str | None]:
        """Runs ``sql`` and fetches at most ``limit`` rows (0: all): the
        statement's description, its rows and its command tag. A limit needs no cursor or
        transaction: Execute with a row count on the unnamed portal, as
        asyncpg's own fetchrow() does. A lone statement (outside a
        transaction) goes the lean way when it can, with the session reset
        behind it (see :mod:`.pg_wire`)."""
        if self._interrupted is not None:
            await self._resync()
        args = POSTGRES_PARAMS.decode_all(params)
        for attempt in (1, 2):
            # (A lean attempt that failed on a changed schema reset the
            # session, but the retry's statement comes after that reset.)
            self._fresh = False
            try:
                stmt = None
                entry = self._lean_entry(sql, len(args))
                if entry is None:
                    stmt = await self._prepare(sql, len(args))
                    entry = self._description(stmt)
                lean = entry[5]
                if lean is not None and self._lean_ready():
                    answer = await self._lean(lean, args, limit)
                    if answer is not None:
                        return entry, answer[0], answer[1]
                if stmt is None:
                    stmt = await self._prepare(sql, len(args))
                    entry = self._description(stmt)
                args = self._bindable(stmt, args)
                try:
                    if limit:
                        records = await stmt._PreparedStatement__bind_execute(args, limit, None)
                    else:
                        records = await stmt.fetch(*args)
                except pgexc.DataError as exc:
                    better = parameter_type_error(exc, stmt, params)
                    if better is None:
                        raise
                    raise better from exc
                return entry, records, stmt.get_statusmsg()
            except (pgexc.InvalidCachedStatementError, pgexc.OutdatedSchemaCacheError):
                # The schema changed under a cached plan: drop the cache and,
                # outside a transaction, re-prepare once (asyncpg's own rule).
                self._conn._drop_local_statement_cache()
                self._lean_by_sql.clear()
                if attempt == 2 or self._conn.is_in_transaction():
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _lean_ready(self) -> bool:
        """asyncpg's protocol is idle outside a transaction, its link open."""
        conn = self._conn
        protocol = conn._protocol
        return (
            self.lean_allowed
            and protocol is not None
            and conn._transport is not None
            and not conn._transport.is_closing()
            and not protocol.is_in_transaction()
            and not protocol._is_cancelling()
            and not conn.is_closed()
        )

    async def _lean(
        self, plan: pg_wire.Plan, args: Sequence[Any], limit: int
    ) -> tuple[list[tuple[Any, ...]], str | None] | None:
        """Runs the statement with the session reset behind it, in one write
        and one round trip: its rows and tag, or None when a parameter value
        is not one the lean path encodes (nothing was sent then). Once both
        answers are read the session is what the pool's reset would make it,
        unless the reset failed; the statement's error is raised after that."""
        reset = self._reset_message
        if reset is None:
            reset = await self.prepare_reset()
        try:
            message = plan.message(args, limit, reset)
        except pg_wire.Unsupported:
            return None
        conn = self._conn
        loop = asyncio.get_running_loop()
        exchange = pg_wire.Exchange(conn._transport, conn._protocol, plan, loop, self._reset_answer)
        exchange.start(message)
        self.lean_calls += 1
        try:
            await exchange.finished
        except asyncio.CancelledError:
            if not exchange.over:
                # As asyncpg does: ask the server to cancel the statement, and
                # let the next use of the connection wait until the cancel
                # request was delivered and both answers were read.
                drained: asyncio.Future[None] = loop.create_future()
                exchange.finished = drained
                sent: asyncio.Future[None] = loop.create_future()
                conn._cancel_current_command(sent, drained)
                self._interrupted = (exchange, sent)
            raise
        self._fresh = exchange.lost is None and exchange.reset_ok
        if exchange.learned is not None:
            self._reset_answer = exchange.learned
        if exchange.reset_missing:
            # The pool's reset (its own round trip, from text) follows; the
            # next lean call prepares the reset's statements again.
            self._reset_message = None
        return exchange.outcome()

    async def prepare_reset(self) -> bytes:
        """Prepares the reset's statements on this connection (under names
        not used on it before) and returns the message that runs them: their
        Parses and a Sync, then the reset itself, in one write and one round
        trip (asyncpg's prepare would take one each, and its Flush would leave
        the implicit transaction of the Parses, with its snapshot, open)."""
        generation = next(_RESET_GENERATIONS)
        names = [f"{RESET_STATEMENT_PREFIX}{generation}_{i}" for i in range(len(RESET_STATEMENTS))]
        execute = pg_wire.execute_message(names)
        conn = self._conn
        loop = asyncio.get_running_loop()
        exchange = pg_wire.Exchange(conn._transport, conn._protocol, _PREPARE_RESET, loop)
        prepare = pg_wire.prepare_message(zip(names, RESET_STATEMENTS, strict=True))
        exchange.start(prepare + execute)
        try:
            await exchange.finished
        except asyncio.CancelledError:
            if not exchange.over:
                conn.terminate()  # cut off mid-exchange: nobody can trust the link
            raise
        with translate_errors(self._database):
            exchange.outcome()
            if not exchange.reset_ok:
                await conn.execute(RESET_QUERY)  # its error, if it fails again
        if exchange.learned is not None:
            self._reset_answer = exchange.learned
        self._reset_message = execute
        return execute

    async def _resync(self) -> None:
        """Waits for a lean exchange cut off mid-way: its cancel request
        delivered and both its answers read (then the socket is asyncpg's
        again). Raises when the connection was lost meanwhile."""
        interrupted = self._interrupted
        if interrupted is None:
            return
        exchange, sent = interrupted
        await asyncio.shield(sent)
        await asyncio.shield(exchange.finished)
        self._interrupted = None
        if exchange.lost is not None:
            raise exchange.lost

    async def query(
        self,
        sql: str,
        params: Sequence[value_pb2.Value],
        *,
        limits: ResultLimits,
    ) -> ResultSet:
        with translate_errors(self._database):
            entry, records, _ = await self._run(sql, params, limits.fetch_rows)
        columns, converters = entry[2], entry[3]
        rows, truncated, batches = collect_rows(records, converters, limits)
        return ResultSet(columns, rows, truncated, batches)

    @contextlib.asynccontextmanager
    async def stream(self, sql: str, params: Sequence[value_pb2.Value]) -> AsyncIterator[RowStream]:
        self._fresh = False
        with translate_errors(self._database):
            await self._resync()
        args = POSTGRES_PARAMS.decode_all(params)
        # A cursor lives in a transaction: the caller's, or our own read-only
        # one. Ours is plain SQL rather than asyncpg's Transaction object,
        # whose client-side marker outlives a BEGIN cut off by a cancel and
        # then turns every later transaction() on the connection into a
        # SAVEPOINT outside any transaction.
        own = not self._conn.is_in_transaction()
        with translate_errors(self._database):
            if own:
                await self._conn.execute("BEGIN READ ONLY")
            try:
                stmt = await self._prepare(sql, len(args))
                columns, converters = self._describe(stmt)
                cursor = await stmt.cursor(*self._bindable(stmt, args))
            except BaseException:
                if own:
                    await self._rollback_quietly()
                raise
        rows = _PostgresRows(cursor, columns, converters, self._database)
        try:
            yield rows
        except BaseException:
            # A cancel mid-fetch was already sent to the server by asyncpg;
            # rolling back closes the portal. Inside the caller's transaction
            # the portal is closed and the transaction left to its owner.
            if own:
                await self._rollback_quietly()
            else:
                await self._close_quietly(cursor)
            raise
        with translate_errors(self._database):
            if own:
                await self._conn.execute("COMMIT")
            elif not rows.exhausted:
                await cursor._close_portal(None)

    async def _rollback_quietly(self) -> None:
        # Should the rollback fail or be cut off, the pool's reset finds the
        # connection's real state and rolls back or discards it.
        with contextlib.suppress(Exception):
            await self._conn.execute("ROLLBACK")

    @staticmethod
    async def _close_quietly(cursor: Any) -> None:
        with contextlib.suppress(Exception):
            await cursor._close_portal(None)

    async def execute(self, sql: str, params: Sequence[value_pb2.Value]) -> ExecResult:
        with translate_errors(self._database):
            entry, records, status = await self._run(sql, params, 0)
            columns, converters = entry[2], entry[3]
        # A read's tag counts the rows it returned ("SELECT 3"), not rows it
        # changed; CREATE TABLE AS also says SELECT, but returns no columns.
        read = bool(columns) and (status or "").split(" ", 1)[0] in ("SELECT", "FETCH")
        return ExecResult(
            rows_affected=0 if read else _rows_affected(status),
            columns=columns,
            rows=convert_rows(records, converters),
        )

    async def execute_many(
        self, sql: str, param_sets: Sequence[Sequence[value_pb2.Value]]
    ) -> int | None:
        """Runs ``sql`` once per parameter set and returns the rows affected.

        asyncpg's pipelined executemany keeps only the last command tag, so a
        statement that can return rows runs pipelined through fetchmany (one
        round trip per batch, as executemany) and its rows are counted: an
        INSERT / UPDATE / DELETE with ``RETURNING 1`` appended (one small row
        per row changed, which is what its tag would count), one that already
        has RETURNING (or a SELECT) as it is. Any other statement runs once
        per parameter set, reading each tag."""
        self._fresh = False
        args = [POSTGRES_PARAMS.decode_all(params) for params in param_sets]
        with translate_errors(self._database):
            await self._resync()
            if args:
                stmt = await self._prepare(sql, len(args[0]))
                if self._description(stmt)[4]:
                    args = [self._bindable(stmt, one) for one in args]
            counting = await self._counting_form(sql)
            if counting is not None:
                return len(await self._conn.fetchmany(counting, args))
            total = 0
            for one in args:
                stmt = await self._prepare(sql, len(one))
                await stmt.fetch(*one)
                total += _rows_affected(stmt.get_statusmsg())
            return total

    async def _counting_form(self, sql: str) -> str | None:
        """The statement that runs ``sql`` and returns one row per row it
        affects (see :meth:`execute_many`), or None; decided once per SQL text."""
        key = (self._database, sql)
        if key in _COUNTING_FORMS:
            return _COUNTING_FORMS[key]
        # A newline ends a trailing -- comment; a trailing ; would end the statement.
        body = sql.rstrip().removesuffix(";").rstrip()
        returning = f"{body}\nRETURNING 1"
        found: str | None = returning
        if not await self._prepares(returning):
            stmt = await self._prepared_quietly(sql)
            if stmt is None:
                # The statement itself is wrong (a missing table, say): its
                # own error comes from running it; decide again next time.
                return None
            found = sql if stmt.get_attributes() else None
        if len(_COUNTING_FORMS) >= _COUNTING_FORMS_LIMIT:
            _COUNTING_FORMS.clear()
        _COUNTING_FORMS[key] = found
        return found

    async def _prepares(self, sql: str) -> bool:
        return await self._prepared_quietly(sql) is not None

    async def _prepared_quietly(self, sql: str) -> Any:
        """``sql`` prepared, or None when PostgreSQL refuses it, leaving the
        caller's transaction as it was (a failed Parse would abort it)."""
        guarded = self._conn.is_in_transaction()
        if guarded:
            await self._conn.execute(f"SAVEPOINT {_PROBE_SAVEPOINT}")
        try:
            return await self._conn._prepare(sql, use_cache=True)
        except pgexc.PostgresError:
            if guarded:
                await self._conn.execute(f"ROLLBACK TO SAVEPOINT {_PROBE_SAVEPOINT}")
            return None
        finally:
            if guarded:
                await self._conn.execute(f"RELEASE SAVEPOINT {_PROBE_SAVEPOINT}")

    async def begin(self, mode: TransactionMode) -> None:
        parts = ["BEGIN"]
        if mode.isolation is not None:
            parts.append(f"ISOLATION LEVEL {mode.isolation.value}")
        if mode.read_only:
            parts.append("READ ONLY")
        if mode.deferrable:
            parts.append("DEFERRABLE")
        sql = " ".join(parts)
        if mode.role:
            # Same round trip (simple protocol, our own text): the role lasts
            # until the transaction ends, whatever ends it.
            sql += f"; SET LOCAL ROLE {quote_identifier(mode.role)}"
        self._fresh = False
        with translate_errors(self._database):
            await self._resync()
            await self._conn.execute(sql)

    async def commit(self) -> None:
        self._fresh = False
        with translate_errors(self._database):
            status = await self._conn.execute("COMMIT")
        if status == "ROLLBACK":
            # PostgreSQL answers COMMIT of a failed transaction with a rollback,
            # not an error; the caller must not believe its writes were kept.
            raise GatewayError(
                Reason.INVALID_TRANSACTION_STATE,
                "the transaction was rolled back, not committed: a statement in it had "
                "failed (ROLLBACK TO SAVEPOINT after an error keeps a transaction usable)",
                metadata={"sqlstate": "25P02", "engine": ENGINE, "database": self._database},
            )

    async def rollback(self) -> None:
        self._fresh = False
        with translate_errors(self._database):
            await self._conn.execute("ROLLBACK")

    def is_reset(self) -> bool:
        return self._fresh and not self._conn.is_closed()

    async def reset(self) -> None:
        """asyncpg's ``Connection.reset()``, made safe against interrupted
        calls: asyncpg decides whether to roll back from its last
        ReadyForQuery, which a BEGIN still on the wire (PostgreSQL cannot
        cancel one) has not sent yet. Here the reset runs first; its own
        round trip waits for whatever was in flight, so the status it ends
        with is the server's; a transaction found then is rolled back and the
        reset, whose settings a rollback would undo, runs again. A lean
        exchange cut off mid-way is waited for first (:meth:`_resync`)."""
        self._fresh = False
        with translate_errors(self._database):
            await self._resync()
            if self._conn.is_in_transaction():
                await self._conn.execute("ROLLBACK")
            for _ in range(2):
                # A stray transaction that failed refuses the reset: rolled back below.
                with contextlib.suppress(pgexc.InFailedSQLTransactionError):
                    await self._conn.execute(RESET_QUERY)
                if not self._conn.is_in_transaction():
                    return
                await self._conn.execute("ROLLBACK")
        raise GatewayError(
            Reason.INVALID_TRANSACTION_STATE,
            "the connection stayed in a transaction after ROLLBACK",
            metadata={"engine": ENGINE, "database": self._database},
        )

    def in_transaction(self) -> bool:
        return bool(self._conn.is_in_transaction())

    def is_closed(self) -> bool:
        return bool(self._conn.is_closed())

    async def ping(self, limit: float) -> None:
        self._fresh = False
        with translate_errors(self._database):
            async with asyncio.timeout(limit):
                await self._resync()
            await self._conn.execute("SELECT 1", timeout=limit)

    async def replication_position(self) -> str:
        # The insert position, not the write one: with synchronous_commit off
        # a commit record may still sit in the WAL buffers, behind which the
        # write position would point.
        self._fresh = False
        with translate_errors(self._database):
            await self._resync()
            return str(await self._conn.fetchval("SELECT pg_current_wal_insert_lsn()::text"))

    async def replica_lag(self) -> float | None:
        self._fresh = False
        with translate_errors(self._database):
            await self._resync()
            lag = await self._conn.fetchval(_REPLICA_LAG_SQL)
        return None if lag is None else max(float(lag), 0.0)

    async def replayed(self, position: str, wait: float) -> bool:
        if not _LSN_RE.match(position):
            raise invalid_request(
                "options.read_after", "not a read_token of this PostgreSQL database"
            )
        until = time.monotonic() + wait
        self._fresh = False
        with translate_errors(self._database):
            await self._resync()
            while True:
                # PostgreSQL has no wait-for-LSN function before 17; a replica
                # replays continuously, so a short poll finds the moment.
                if await self._conn.fetchval(_REPLAYED_SQL, position):
                    return True
                left = until - time.monotonic()
                if left <= 0:
                    return False
                await asyncio.sleep(min(_REPLAY_POLL, left))

    async def close(self) -> None:
        try:
            await self._conn.close(timeout=2)
        except Exception:
            self._conn.terminate()

    def terminate(self) -> None:
        self._conn.terminate()


class _PostgresRows(RowStream):
    __slots__ = ("_cursor", "_database", "columns", "converters", "exhausted")

    def __init__(
        self,
        cursor: Any,
        columns: list[value_pb2.Column],
        converters: list[Converter],
        database: str,
    ) -> None:
        self._cursor = cursor
        self.columns = columns
        self.converters = converters
        self._database = database
        self.exhausted = False

    async def fetch_records(self, n: int) -> Sequence[Sequence[Any]]:
        if self.exhausted:
            return []
        with translate_errors(self._database):
            records = await self._cursor.fetch(n)
        if len(records) < n:
            self.exhausted = True
        return records  # type: ignore[no-any-return]


def _interval_identity(value: Any) -> Any:
    return value


class PostgresListeningConnection(ListeningConnection):
    """An asyncpg connection that only LISTENs. asyncpg hands each
    notification to the callback through the event loop in the order the
    server sent them, and calls the termination listener once the
    connection is gone, however it went."""

    def __init__(
        self,
        conn: Any,
        database: str,
        on_notification: NotificationCallback,
        on_lost: LostCallback,
    ) -> None:
        self._conn = conn
        self._database = database
        self._on_notification = on_notification
        self._on_lost = on_lost
        conn.add_termination_listener(self._terminated)

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self._on_notification(channel, payload, pid)

    def _terminated(self, conn: Any) -> None:
        self._on_lost()

    async def listen(self, channel: str) -> None:
        # asyncpg quotes the channel as an identifier before it sends LISTEN.
        with translate_errors(self._database):
            await self._conn.add_listener(channel, self._notified)

    async def unlisten(self, channel: str) -> None:
        with translate_errors(self._database):
            await self._conn.remove_listener(channel, self._notified)

    async def ping(self, limit: float) -> None:
        with translate_errors(self._database):
            await self._conn.execute("SELECT 1", timeout=limit)

    def is_closed(self) -> bool:
        return bool(self._conn.is_closed())

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._conn.close(), 2.0)
        except Exception:
            self._conn.terminate()


class PostgresBackend(Backend):
    engine = ENGINE

    async def _open(self, application_name: str) -> Any:
        """A new asyncpg connection, or the GatewayError that says why not."""
        name = self.config.name
        with translate_errors(name):
            try:
                return await asyncpg.connect(
                    self.config.dsn,
                    timeout=self.config.connect_timeout,
                    server_settings={"application_name": application_name},
                )
            except TimeoutError:
                raise GatewayError(
                    Reason.DATABASE_UNAVAILABLE,
                    f"connecting to PostgreSQL timed out after {self.config.connect_timeout}s",
                    metadata={"engine": ENGINE, "database": name},
                ) from None
            except pgexc.PostgresError as exc:
                # Whatever the server says while we log in (bad password, no
                # such database, too many clients) the caller cannot fix it.
                raise GatewayError(
                    Reason.DATABASE_UNAVAILABLE,
                    f"cannot connect to PostgreSQL: {exc}",
                    metadata={"sqlstate": exc.sqlstate, "engine": ENGINE, "database": name},
                ) from exc

    async def connect(self) -> DriverConnection:
        name = self.config.name
        conn = await self._open("dbgateway")
        try:
            with translate_errors(name):
                # Intervals as (months, days, microseconds): exact, unlike timedelta.
                await conn.set_type_codec(
                    "interval",
                    schema="pg_catalog",
                    encoder=_interval_identity,
                    decoder=_interval_identity,
                    format="tuple",
                )
            version = conn.get_server_version()
            # Since PostgreSQL 10 a version has two parts, and asyncpg keeps the
            # second in ``micro`` ("15.4" is major 15, minor 0, micro 4).
            second = version.micro if version.major >= 10 else version.minor
            self.server_version = f"{version.major}.{second}"
            connection = PostgresConnection(conn, name)
            if connection.lean_allowed:
                await connection.prepare_reset()  # here rather than on a caller's time
        except BaseException:
            # Failed or cut off (the pool's connect timeout) after the link
            # opened: nobody else holds it, so it is closed here.
            conn.terminate()
            raise
        return connection

    async def connect_listener(
        self, on_notification: NotificationCallback, on_lost: LostCallback
    ) -> ListeningConnection:
        # Its own application_name, so operators tell it from pooled connections.
        conn = await self._open(LISTEN_APPLICATION_NAME)
        return PostgresListeningConnection(conn, self.config.name, on_notification, on_lost)
