"""MySQL and MariaDB through aiomysql (PyMySQL underneath): aiomysql opens,
authenticates and escapes; statements' answers are read by :mod:`.mysql_wire`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiomysql
import aiomysql.cursors
import pymysql
import pymysql.err
from pymysql.constants import CLIENT

from dbgateway.v1 import value_pb2

from ..config import mysql_address
from ..errors import GatewayError, Reason, invalid_request, reason_for_mysql_errno
from ..results import UNARY_FETCH_ROWS, read_result
from ..values import MYSQL_PARAMS, Column, Converter, convert_rows, mysql_column
from .base import (
    Backend,
    DriverConnection,
    ExecResult,
    ResultLimits,
    ResultSet,
    RowStream,
    TransactionMode,
    Translating,
)
from .mysql_wire import (
    COM_QUERY,
    COM_RESET_CONNECTION,
    MAX_PACKET,
    ColumnInfo,
    Outcome,
    Wire,
)

ENGINE = "mysql"
#: Statements that only read: a result set, but no rows affected.
_READS = frozenset({"SELECT", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "VALUES", "TABLE", "HELP"})
#: Rows an abandoned unbuffered result may still be read to keep its
#: connection; beyond that the statement is killed and the connection dropped.
DRAIN_ROWS = 1000
log = logging.getLogger(__name__)


def translate(exc: BaseException, database: str) -> GatewayError | None:
    """The GatewayError for a PyMySQL/aiomysql (or socket) exception; None for others."""
    meta: dict[str, str | int | None] = {"engine": ENGINE, "database": database}
    if isinstance(exc, pymysql.err.Error):
        args = exc.args
        errno = args[0] if args and isinstance(args[0], int) else 0
        message = str(args[1]) if len(args) > 1 else str(exc)
        reason = reason_for_mysql_errno(errno, type(exc).__name__)
        if errno:
            meta["vendor_code"] = errno
        meta["sqlstate"] = getattr(exc, "sqlstate", None)  # PyMySQL >= 1.1.1
        return GatewayError(reason, message or "connection to MySQL lost", metadata=meta)
    if isinstance(exc, OSError | ConnectionError | EOFError):
        return GatewayError(
            Reason.DATABASE_UNAVAILABLE, f"cannot reach MySQL: {exc}", metadata=meta
        )
    return None


def translate_errors(database: str) -> contextlib.AbstractContextManager[None]:
    """The one place PyMySQL/aiomysql exceptions become GatewayErrors."""
    return Translating(translate, database)


_SERVER_STATUS_IN_TRANS = 1
#: What every connection's session starts with; COM_RESET_CONNECTION undoes it.
_SESSION_SETUP = "SET NAMES utf8mb4, time_zone = '+00:00', autocommit = 1"
#: The session reset, as commands for one write: COM_RESET_CONNECTION (MySQL
#: 5.7.3+, MariaDB 10.2.4+) and the setup again.
_RESET_COMMANDS = ((COM_RESET_CONNECTION, b""), (COM_QUERY, _SESSION_SETUP.encode()))


class _SingleStatementConnection(aiomysql.Connection):  # type: ignore[misc]
    """aiomysql's connection without CLIENT_MULTI_STATEMENTS, which aiomysql
    always asks for: with it, ``SELECT 1; DROP TABLE t`` runs both, and no
    text guard can be the boundary. Without it the server refuses a second
    statement in one string with a syntax error."""

    #: Nothing was sent since the session was last reset (or opened).
    fresh = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client_flag &= ~CLIENT.MULTI_STATEMENTS

    async def _execute_command(self, command: int, sql: Any) -> None:
        # Every command aiomysql sends itself (a ping, say) passes here.
        self.fresh = False
        await super()._execute_command(command, sql)


#: A MariaDB GTID list: domain-server-seq, comma-separated.
_MARIADB_GTID_RE = re.compile(r"^\d{1,10}-\d{1,10}-\d{1,20}(,\d{1,10}-\d{1,10}-\d{1,20})*$")
#: A MySQL GTID set: uuid:interval[:interval...], comma-separated.
_MYSQL_GTID_RE = re.compile(
    r"^[0-9a-fA-F-]{36}(:\d+(-\d+)?)+(,\s*[0-9a-fA-F-]{36}(:\d+(-\d+)?)+)*$"
)


class MySQLConnection(DriverConnection):
    # After a cancelled statement the protocol state is unknown: discard.
    reusable_after_interrupt = False

    def __init__(self, conn: Any, backend: MySQLBackend) -> None:
        self._conn = conn
        self._backend = backend
        self._database = backend.config.name
        self._broken = False
        self._wire = Wire(conn)
        #: A transaction was begun through begin() and not yet ended.
        self._transaction = False

    def _statement(self, sql: str, params: Sequence[value_pb2.Value]) -> str:
        return self._bind(sql, MYSQL_PARAMS.decode_all(params)) if params else sql

    def _lone(self) -> bool:
        """Outside a transaction a statement is its call's only one: the
        connection goes back to the pool right after it, so its reset can
        travel in the same write."""
        return not self._transaction and not self.in_transaction()

    async def _start(self, statement: str, *, reset: bool) -> _MySQLRows:
        """Sends ``statement`` (with the session reset right behind it when
        ``reset``) and reads the start of its answer. The rows, further
        results and the reset's answers are :meth:`_finish`'s to read; when
        the statement fails, the reset's answers are read before its error
        is raised, so the connection is clean and usable."""
        wire = self._wire
        data = statement.encode(self._conn.encoding, "surrogateescape")
        with translate_errors(self._database):
            if len(data) + 1 >= MAX_PACKET:
                await wire.send_long(COM_QUERY, data)
                reset = False
            else:
                wire.send(((COM_QUERY, data), *_RESET_COMMANDS) if reset else ((COM_QUERY, data),))
            try:
                start = await wire.result()
            except pymysql.err.Error:
                if reset and not self.is_closed():
                    # The caller's answer is the statement's error; a reset
                    # that fails marks the connection for discarding.
                    with contextlib.suppress(pymysql.err.Error, GatewayError):
                        await self._read_reset()
                if self.is_closed():
                    self._broken = True
                raise
            except asyncio.CancelledError:
                await self._interrupt()
                raise
            except BaseException:
                self._broken = True
                raise
        if isinstance(start, Outcome):
            return _MySQLRows(self, [], start, reset)
        return _MySQLRows(self, start, None, reset)

    async def _read_reset(self) -> None:
        """Reads the answers of the session reset (COM_RESET_CONNECTION, then
        the session setup); the connection is then as fresh as a new one."""
        wire = self._wire
        try:
            wire.next_answer()
            await wire.ok()
            wire.next_answer()
            await wire.ok()
        except BaseException:
            self._broken = True
            raise
        if not wire.idle():
            self._broken = True
            raise GatewayError(
                Reason.DATABASE_UNAVAILABLE,
                "MySQL sent more than the session reset's answer",
                metadata={"engine": ENGINE, "database": self._database},
            )
        self._conn.fresh = True

    async def _finish(self, rows: _MySQLRows) -> None:
        """Reads the rest of an answer: rows nobody read (a short rest is
        read and dropped, a long one killed with the connection), further
        results of a multi-result CALL, and the reset sent behind it. A
        connection whose answer cannot be read to the end is discarded; the
        caller's own answer (or error) stands either way."""
        if self._broken:
            return
        try:
            with translate_errors(self._database):
                if not rows.exhausted:
                    await self._abandon(rows)
                    if self._broken:
                        return
                more = rows.more
                while more:
                    more = await self._wire.skip_result()
                if rows.reset_pending:
                    rows.reset_pending = False
                    await self._read_reset()
        except asyncio.CancelledError:
            await self._interrupt()
            raise
        except GatewayError:
            self._broken = True

    async def _run(self, statement: str, *, reset: bool = False) -> _Answer:
        """Runs ``statement`` and reads its whole answer."""
        rows = await self._start(statement, reset=reset)
        try:
            records = await rows.fetch_all()
        finally:
            await self._finish(rows)
        outcome = rows.outcome
        if outcome is None:  # a result set: its rows are what it counts
            return _Answer(rows.infos, records, len(records), None)
        return _Answer(rows.infos, records, outcome.affected_rows, outcome.insert_id)

    async def _interrupt(self) -> None:
        """Stops the running statement; the protocol state is unknown
        afterwards, so the connection is marked for discarding. The KILL runs
        in the background: the caller's answer must not wait for it."""
        self._broken = True
        self._backend.kill_query_soon(self._conn.thread_id())

    def _bind(self, sql: str, args: Sequence[Any]) -> str:
        """Interpolates escaped parameters into ``%s`` placeholders, as PyMySQL
        does, but with our own bytes literal: aiomysql's escaping of bytes
        broke with PyMySQL 1.2."""
        escaped = tuple(
            f"_binary X'{bytes(a).hex()}'"
            if isinstance(a, bytes | bytearray)
            else self._conn.escape(a)
            for a in args
        )
        try:
            return sql % escaped
        except (TypeError, ValueError) as exc:
            raise invalid_request(
                "params",
                f"{len(args)} parameter(s) do not fit the statement's %s placeholders ({exc}); "
                "write a literal % as %%",
            ) from None

    async def query(
        self,
        sql: str,
        params: Sequence[value_pb2.Value],
        *,
        limits: ResultLimits,
    ) -> ResultSet:
        # Rows are read as they are wanted, so that a result beyond the caps
        # is never read whole.
        rows = await self._start(self._statement(sql, params), reset=self._lone())
        try:
            records, truncated, batches = await read_result(rows, limits)
        finally:
            await self._finish(rows)
        return ResultSet(rows.columns, records, truncated, batches)

    @contextlib.asynccontextmanager
    async def stream(self, sql: str, params: Sequence[value_pb2.Value]) -> AsyncIterator[RowStream]:
        rows = await self._start(self._statement(sql, params), reset=self._lone())
        try:
            yield rows
        except asyncio.CancelledError:
            if not rows.exhausted and not self._broken:
                await self._interrupt()
            raise
        finally:
            await self._finish(rows)

    async def _abandon(self, rows: _MySQLRows) -> None:
        """The caller stopped reading a result. The rest must be read before
        the connection can run anything else: a short rest is read and
        dropped, a long one is killed (and the connection with it)."""
        if self.is_closed():
            # Lost with the link: nothing to read, nobody to kill. The error
            # that ended the stream is the caller's answer, not this cleanup.
            self._broken = True
            return
        try:
            await rows.fetch_records(DRAIN_ROWS)
            if rows.exhausted:
                return
        except GatewayError:
            if self.is_closed():
                self._broken = True
                return
        await self._interrupt()

    async def execute(self, sql: str, params: Sequence[value_pb2.Value]) -> ExecResult:
        answer = await self._run(self._statement(sql, params), reset=self._lone())
        rowcount = answer.rowcount
        if answer.columns and sql.lstrip(" \t\r\n(").split(None, 1)[0].upper() in _READS:
            rowcount = 0  # MySQL's rowcount of a read is the rows it returned
        columns, converters = _describe(answer.columns)
        return ExecResult(
            rows_affected=max(rowcount, 0),
            last_insert_id=answer.lastrowid or None,
            columns=columns,
            rows=convert_rows(answer.records, converters),
        )

    async def execute_many(
        self, sql: str, param_sets: Sequence[Sequence[value_pb2.Value]]
    ) -> int | None:
        # aiomysql's executemany, with our own parameter binding (see _bind):
        # INSERT ... VALUES (...) becomes multi-row INSERTs of at most
        # max_stmt_length bytes; anything else runs once per parameter set.
        args = [MYSQL_PARAMS.decode_all(params) for params in param_sets]
        match = aiomysql.cursors.RE_INSERT_VALUES.match(sql)
        if match is None:
            total = 0
            for row in args:
                total += max((await self._run(self._bind(sql, row) if row else sql)).rowcount, 0)
            return total
        prefix, values, postfix = match.group(1) % (), match.group(2).rstrip(), match.group(3)
        limit = aiomysql.cursors.Cursor.max_stmt_length
        total, chunk = 0, ""
        for row in args:
            value = self._bind(values, row)
            if chunk and len(chunk) + len(value) + len(postfix) + 1 > limit:
                total += max((await self._run(chunk + postfix)).rowcount, 0)
                chunk = ""
            chunk = f"{chunk},{value}" if chunk else prefix + value
        if chunk:
            total += max((await self._run(chunk + postfix)).rowcount, 0)
        return total

    async def begin(self, mode: TransactionMode) -> None:
        if mode.deferrable:
            raise GatewayError(Reason.UNSUPPORTED, "MySQL has no DEFERRABLE transactions")
        self._transaction = True
        if mode.isolation is not None:
            await self._run(f"SET TRANSACTION ISOLATION LEVEL {mode.isolation.value}")
        await self._run("START TRANSACTION READ ONLY" if mode.read_only else "START TRANSACTION")

    async def commit(self) -> None:
        await self._end("COMMIT")

    async def rollback(self) -> None:
        await self._end("ROLLBACK")

    async def _end(self, sql: str) -> None:
        # The transaction's connection goes back to the pool next: its reset
        # travels with the COMMIT (or ROLLBACK), in one round trip.
        self._transaction = False
        await self._run(sql, reset=True)

    def is_reset(self) -> bool:
        return bool(self._conn.fresh) and not self.is_closed()

    async def reset(self) -> None:
        """COM_RESET_CONNECTION: the server rolls back, releases named and
        table locks, drops temporary tables and user variables and restores
        every session variable (autocommit, sql_mode, ...) to its global
        value, as a new connection has it; then the gateway's own session
        setup runs again. Both commands go out in one write (one round trip).
        A lone statement and a COMMIT or ROLLBACK carry this reset in their
        own write already (see :meth:`is_reset`). (An interrupted call never
        gets here: its connection is discarded, since the protocol state is
        unknown.)"""
        self._transaction = False
        with translate_errors(self._database):
            self._wire.send(_RESET_COMMANDS)
            await self._read_reset()

    def in_transaction(self) -> bool:
        return bool(self._conn.server_status & _SERVER_STATUS_IN_TRANS)

    def is_closed(self) -> bool:
        if self._broken or self._conn.closed:
            return True
        # aiomysql notices a connection the server (or the network) closed only
        # when it next reads; the stream reader already knows.
        reader = self._conn._reader
        return reader is not None and (reader.at_eof() or reader.exception() is not None)

    async def ping(self, limit: float) -> None:
        fresh = self._conn.fresh
        with translate_errors(self._database):
            await asyncio.wait_for(self._conn.ping(reconnect=False), limit)
        self._conn.fresh = fresh  # a ping changes nothing in the session

    @property
    def _mariadb(self) -> bool:
        return "mariadb" in self._backend.server_version.lower()

    async def _scalar(self, statement: str) -> Any:
        records = (await self._run(statement)).records
        return records[0][0] if records else None

    async def replication_position(self) -> str:
        # GTIDs of everything committed so far: MariaDB's binlog position
        # (one domain-server-seq per replication domain), MySQL's executed set.
        sql = (
            "SELECT @@global.gtid_binlog_pos" if self._mariadb else "SELECT @@global.gtid_executed"
        )
        position = await self._scalar(sql)
        return "" if position is None else str(position).replace("\n", "")

    async def replica_lag(self) -> float | None:
        statement = "SHOW SLAVE STATUS" if self._mariadb else "SHOW REPLICA STATUS"
        answer = await self._run(statement)
        if not answer.records:
            return None  # not a replica
        names = [c.name for c in answer.columns]
        status = dict(zip(names, answer.records[0], strict=False))
        lag = status.get("Seconds_Behind_Master", status.get("Seconds_Behind_Source"))
        # NULL while the SQL (or IO) thread is stopped or broken.
        return None if lag is None else float(lag)

    async def replayed(self, position: str, wait: float) -> bool:
        pattern = _MARIADB_GTID_RE if self._mariadb else _MYSQL_GTID_RE
        if len(position) > 4096 or not pattern.match(position):
            raise invalid_request("options.read_after", "not a read_token of this MySQL database")
        quoted = self._conn.escape(position)
        if self._mariadb:
            # MASTER_GTID_WAIT: 0 once replayed, -1 when the wait timed out.
            done = await self._scalar(f"SELECT MASTER_GTID_WAIT({quoted}, {wait:.3f})")
            return bool(done == 0)
        done = await self._scalar(f"SELECT WAIT_FOR_EXECUTED_GTID_SET({quoted}, {wait:.3f})")
        return bool(done == 0)

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._conn.ensure_closed(), 2)
        except Exception:
            self._conn.close()

    def terminate(self) -> None:
        self._conn.close()


class _Answer:
    """A statement's whole answer: its columns and rows, or what its OK said."""

    __slots__ = ("columns", "lastrowid", "records", "rowcount")

    def __init__(
        self, columns: list[ColumnInfo], records: list[Any], rowcount: int, lastrowid: int | None
    ) -> None:
        self.columns = columns
        self.records = records
        self.rowcount = rowcount
        self.lastrowid = lastrowid


def _describe(infos: Sequence[ColumnInfo]) -> tuple[list[value_pb2.Column], list[Converter]]:
    """The result columns and their converters, worked out once per column
    definition (the connection keeps its definitions parsed)."""
    columns = []
    converters = []
    for info in infos:
        described = info.described
        if described is None:
            db_type, conv = mysql_column(info.type_code, info.flags, info.charsetnr)
            described = info.described = (Column(name=info.name, db_type=db_type), conv)
        columns.append(described[0])
        converters.append(described[1])
    return columns, converters


class _MySQLRows(RowStream):
    """A statement's answer being read: its rows as they are wanted."""

    __slots__ = (
        "_connection",
        "columns",
        "converters",
        "exhausted",
        "infos",
        "more",
        "outcome",
        "reset_pending",
    )

    def __init__(
        self,
        connection: MySQLConnection,
        infos: list[ColumnInfo],
        outcome: Outcome | None,
        reset_pending: bool,
    ) -> None:
        self._connection = connection
        self.infos = infos
        self.columns, self.converters = _describe(infos)
        #: The OK of a statement without a result set.
        self.outcome = outcome
        self.exhausted = outcome is not None
        #: Another result follows (a multi-result CALL).
        self.more = outcome.more if outcome is not None else False
        #: The session reset went behind the statement; its answer follows.
        self.reset_pending = reset_pending

    async def fetch_all(self) -> list[Any]:
        records: list[Any] = []
        while not self.exhausted:
            records.extend(await self.fetch_records(UNARY_FETCH_ROWS))
        return records

    async def fetch_records(self, n: int) -> Sequence[Sequence[Any]]:
        if self.exhausted or n <= 0:
            return []
        connection = self._connection
        if connection.is_closed():
            raise GatewayError(
                Reason.DATABASE_UNAVAILABLE,
                "the connection to MySQL was lost while the result was being read",
                metadata={"engine": ENGINE, "database": connection._database},
            )
        wire = connection._wire
        records: list[Any] = []
        try:
            with translate_errors(connection._database):
                try:
                    while True:
                        got = wire.rows(self.infos, n - len(records), records)
                        if got < 0:
                            self.exhausted = True
                            self.more = got == -2
                            break
                        if len(records) >= n:
                            break
                        await wire.wait()
                except asyncio.CancelledError:
                    # Cut off mid-packet (a cancel, a timeout): nothing more can
                    # be read from this connection.
                    await connection._interrupt()
                    raise
                except pymysql.err.Error:
                    # An ERR packet (the statement failed or was killed while
                    # sending rows) ends the answer; a lost link ends it too.
                    self.exhausted = True
                    raise
        except GatewayError as exc:
            if exc.is_infrastructure or connection.is_closed():
                # Lost mid-result: the protocol state is gone with the link.
                connection._broken = True
            raise
        return records


class MySQLBackend(Backend):
    engine = ENGINE
    #: MySQL and MariaDB have no notification channels for a client to listen on.
    no_notifications = (
        "MySQL/MariaDB has no LISTEN/NOTIFY (the server cannot push notifications "
        "to a client); subscriptions need a PostgreSQL database"
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._address = mysql_address(self.config.dsn)
        self._kills: set[asyncio.Task[None]] = set()

    async def _open(self) -> Any:
        a = self._address
        conn = _SingleStatementConnection(
            host=a.host,
            port=a.port,
            user=a.user,
            password=a.password,
            db=a.database,
            unix_socket=a.unix_socket,
            autocommit=True,
            charset="utf8mb4",
            connect_timeout=self.config.connect_timeout,
            # Instants travel as UTC; TIMESTAMP columns then read back exactly.
            init_command=_SESSION_SETUP,
        )
        await conn._connect()
        conn.fresh = True
        return conn

    async def connect(self) -> DriverConnection:
        with translate_errors(self.config.name):
            try:
                conn = await asyncio.wait_for(self._open(), self.config.connect_timeout)
            except TimeoutError:
                raise GatewayError(
                    Reason.DATABASE_UNAVAILABLE,
                    f"connecting to MySQL timed out after {self.config.connect_timeout}s",
                    metadata={"engine": ENGINE, "database": self.config.name},
                ) from None
            except pymysql.err.Error as exc:
                error = translate(exc, self.config.name)
                assert error is not None
                error.reason = Reason.DATABASE_UNAVAILABLE
                raise error from exc
        self.server_version = conn.get_server_info()
        return MySQLConnection(conn, self)

    def kill_query_soon(self, thread_id: int) -> None:
        """Starts :meth:`kill_query` in the background."""
        task = asyncio.get_running_loop().create_task(
            self.kill_query(thread_id), name=f"kill-query-{thread_id}"
        )
        self._kills.add(task)
        task.add_done_callback(self._kills.discard)

    async def close(self) -> None:
        """Lets KILL QUERY requests in flight finish (each is bounded in time)."""
        if self._kills:
            await asyncio.gather(*self._kills, return_exceptions=True)

    async def kill_query(self, thread_id: int) -> None:
        """Stops a running statement from a second connection (MySQL has no
        in-band cancel); best effort, bounded in time."""
        try:
            conn = await asyncio.wait_for(self._open(), self.config.connect_timeout)
        except Exception as exc:  # the database may be the reason we are here
            log.warning("could not open a connection to KILL QUERY %s: %s", thread_id, exc)
            return
        try:
            async with conn.cursor() as cur:
                await asyncio.wait_for(cur.execute(f"KILL QUERY {int(thread_id)}"), 5)
        except Exception as exc:
            log.warning("KILL QUERY %s failed: %s", thread_id, exc)
        finally:
            conn.close()
