"""The hot command of the PostgreSQL frontend/backend protocol: one lone
statement outside a transaction, with the pool's session reset in the same
socket write.

asyncpg opens the connection, authenticates, prepares statements (its cache
keeps each one's server-side name), and runs transactions, cursors and every
rare path. For a statement that asyncpg has prepared and whose parameter and
result types are all in a small well-known set, :class:`Exchange` instead
writes Bind/Execute/Sync for that statement followed by the session reset,
in one write, and reads both answers; the pool then skips its own reset round
trip (see ``PostgresConnection.is_reset``). The reset's statements are
prepared on the connection once (:func:`execute_message` runs them), so
PostgreSQL does not parse and plan its text on every call.

asyncpg's protocol refuses messages it did not ask for, so while an exchange
runs it owns the socket: the transport's protocol is the exchange's (set
with ``transport.set_protocol``) from the write until the reset's
ReadyForQuery, and asyncpg's again afterwards. It is borrowed only while
asyncpg's protocol is idle outside a transaction, not cancelling, its link
open: then asyncpg has read everything up to its last ReadyForQuery, and
nothing else is due (a pooled connection listens to no channel, so the only
unsolicited messages PostgreSQL might send between calls are a
ParameterStatus after a configuration reload, or a FATAL goodbye). The
asynchronous messages that arrive during the exchange (ParameterStatus,
notices, notifications) and any bytes after its last answer are handed to
asyncpg's protocol afterwards, which takes them in any state: its record of
the server's settings stays the server's.

Values are decoded into exactly the Python objects asyncpg's codecs give
(its infinities, its UUID class, intervals as the (months, days,
microseconds) tuples of the gateway's interval codec), so
:mod:`dbgateway_server.values` converts them as it always has. Parameters
are encoded only when their Python type is the one the gateway's parameter
decoder gives for that PostgreSQL type; anything else makes the call go
through asyncpg, which encodes (or refuses) it as before.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import struct
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import asyncpg.exceptions as pgexc
import asyncpg.exceptions._base as pgbase
from asyncpg.pgproto.pgproto import UUID as PgUUID

from ..statements import first_keyword

#: The message that ends an extended-protocol command.
SYNC = b"S\x00\x00\x00\x04"

_I16 = struct.Struct("!h")
#: SQLSTATE 26000: no prepared statement of that name.
INVALID_STATEMENT_NAME = "26000"
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_I64 = struct.Struct("!q")
_F32 = struct.Struct("!f")
_F64 = struct.Struct("!d")
_HEADER = struct.Struct("!ci")
_INTERVAL = struct.Struct("!qii")
_NULL = b"\xff\xff\xff\xff"

# asyncpg's epochs and infinities (asyncpg/pgproto/codecs/datetime.pyx).
_PG_EPOCH = dt.datetime(2000, 1, 1)
_PG_EPOCH_UTC = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_PG_EPOCH_ORDINAL = dt.date(2000, 1, 1).toordinal()
_DATE_INFINITY = 0x7FFFFFFF
_DATE_NEG_INFINITY = -0x80000000
_TIME_INFINITY = 0x7FFFFFFFFFFFFFFF
_TIME_NEG_INFINITY = -0x8000000000000000
_MAX_DATE_ORDINAL = dt.date.max.toordinal()
_MIN_DATE_ORDINAL = dt.date.min.toordinal()
_MAX_DATETIME = dt.datetime.max
_MIN_DATETIME = dt.datetime.min
_MAX_DATETIME_TS = 252455615999999999  # datetime.max, in microseconds from the epoch
_MIN_DATETIME_TS = -63082281600000000  # datetime.min
_ONE_US = dt.timedelta(microseconds=1)
_Decimal = decimal.Decimal
#: A numeric parameter is sent as text; beyond this many digits or this
#: exponent it goes through asyncpg instead (its limits, its errors).
_NUMERIC_LIMIT = 1000


class Unsupported(Exception):
    """A parameter value the lean path does not encode: use asyncpg."""


# -- decoders: (message, position, length) -> what asyncpg's codec gives ----

Decoder = Callable[[bytes, int, int], Any]


def _int2(d: bytes, p: int, n: int) -> int:
    return _I16.unpack_from(d, p)[0]  # type: ignore[no-any-return]


def _int4(d: bytes, p: int, n: int) -> int:
    return _I32.unpack_from(d, p)[0]  # type: ignore[no-any-return]


def _int8(d: bytes, p: int, n: int) -> int:
    return _I64.unpack_from(d, p)[0]  # type: ignore[no-any-return]


def _oid(d: bytes, p: int, n: int) -> int:
    return _U32.unpack_from(d, p)[0]  # type: ignore[no-any-return]


def _float4(d: bytes, p: int, n: int) -> float:
    return _F32.unpack_from(d, p)[0]  # type: ignore[no-any-return]


def _float8(d: bytes, p: int, n: int) -> float:
    return _F64.unpack_from(d, p)[0]  # type: ignore[no-any-return]


def _bool(d: bytes, p: int, n: int) -> bool:
    return d[p] == 1


def _text(d: bytes, p: int, n: int) -> str:
    return d[p : p + n].decode()


def _bytea(d: bytes, p: int, n: int) -> bytes:
    return d[p : p + n]


def _numeric_text(d: bytes, p: int, n: int) -> decimal.Decimal:
    # Requested in text form: numeric_out is exact (NaN and ±Infinity included).
    return _Decimal(d[p : p + n].decode())


def _uuid(d: bytes, p: int, n: int) -> Any:
    return PgUUID(d[p : p + n])


def _date(d: bytes, p: int, n: int) -> dt.date:
    days = _I32.unpack_from(d, p)[0]
    if days == _DATE_INFINITY:
        return dt.date.max
    if days == _DATE_NEG_INFINITY:
        return dt.date.min
    return dt.date.fromordinal(days + _PG_EPOCH_ORDINAL)


def _timestamp(d: bytes, p: int, n: int) -> dt.datetime:
    us = _I64.unpack_from(d, p)[0]
    if us == _TIME_INFINITY:
        return _MAX_DATETIME
    if us == _TIME_NEG_INFINITY:
        return _MIN_DATETIME
    return _PG_EPOCH + dt.timedelta(microseconds=us)


def _timestamptz(d: bytes, p: int, n: int) -> dt.datetime:
    us = _I64.unpack_from(d, p)[0]
    if us == _TIME_INFINITY:  # naive, as asyncpg gives them
        return _MAX_DATETIME
    if us == _TIME_NEG_INFINITY:
        return _MIN_DATETIME
    return _PG_EPOCH_UTC + dt.timedelta(microseconds=us)


def _jsonb(d: bytes, p: int, n: int) -> str:
    if d[p] != 1:
        raise ValueError(f"unexpected JSONB format: {d[p]}")
    return d[p + 1 : p + n].decode()


def _interval(d: bytes, p: int, n: int) -> tuple[int, int, int]:
    us, days, months = _INTERVAL.unpack_from(d, p)
    return (months, days, us)


# -- encoders: Python value -> the parameter's bytes, length first ----------

Encoder = Callable[[Any], bytes]


def _packer(packer: struct.Struct, kind: type) -> Encoder:
    pack = packer.pack
    length = _I32.pack(packer.size)

    def encode(v: Any) -> bytes:
        if type(v) is not kind:
            raise Unsupported
        try:
            return length + pack(v)
        except (struct.error, OverflowError):
            raise Unsupported from None

    return encode


def _enc_bool(v: Any) -> bytes:
    if type(v) is not bool:
        raise Unsupported
    return b"\x00\x00\x00\x01\x01" if v else b"\x00\x00\x00\x01\x00"


def _enc_text(v: Any) -> bytes:
    if type(v) is not str:
        raise Unsupported
    try:
        data = v.encode()
    except UnicodeEncodeError:
        raise Unsupported from None
    return _I32.pack(len(data)) + data


def _enc_jsonb(v: Any) -> bytes:
    text = _enc_text(v)  # length, then the text: jsonb's binary form adds a version byte
    return _I32.pack(len(text) - 3) + b"\x01" + text[4:]


def _enc_bytea(v: Any) -> bytes:
    if type(v) is not bytes:
        raise Unsupported
    return _I32.pack(len(v)) + v


def _enc_numeric_text(v: Any) -> bytes:
    if type(v) is not _Decimal or not v.is_finite():
        if type(v) is _Decimal and v.is_qnan() and not v.is_signed():
            return b"\x00\x00\x00\x03NaN"
        raise Unsupported
    _, digits, exponent = v.as_tuple()
    assert isinstance(exponent, int)
    if len(digits) > _NUMERIC_LIMIT or abs(exponent) > _NUMERIC_LIMIT:
        raise Unsupported
    data = format(v, "f").encode()
    return _I32.pack(len(data)) + data


def _enc_uuid(v: Any) -> bytes:
    if type(v) is not uuid.UUID:
        raise Unsupported
    return b"\x00\x00\x00\x10" + v.bytes


def _enc_date(v: Any) -> bytes:
    if type(v) is not dt.date:
        raise Unsupported
    ordinal = v.toordinal()
    if ordinal == _MAX_DATE_ORDINAL:
        days = _DATE_INFINITY
    elif ordinal == _MIN_DATE_ORDINAL:
        days = _DATE_NEG_INFINITY
    else:
        days = ordinal - _PG_EPOCH_ORDINAL
    return b"\x00\x00\x00\x04" + _I32.pack(days)


def _time_bytes(us: int) -> bytes:
    if us == _MAX_DATETIME_TS:
        us = _TIME_INFINITY
    elif us == _MIN_DATETIME_TS:
        us = _TIME_NEG_INFINITY
    return b"\x00\x00\x00\x08" + _I64.pack(us)


def _enc_timestamp(v: Any) -> bytes:
    if type(v) is not dt.datetime or v.tzinfo is not None:
        raise Unsupported
    return _time_bytes((v - _PG_EPOCH) // _ONE_US)


def _enc_timestamptz(v: Any) -> bytes:
    if type(v) is not dt.datetime:
        raise Unsupported
    if v.tzinfo is None:
        # asyncpg binds a naive datetime.max/min as ±infinity, and any other
        # naive one in the gateway process's local time zone: its business.
        if v == _MAX_DATETIME:
            return b"\x00\x00\x00\x08" + _I64.pack(_TIME_INFINITY)
        if v == _MIN_DATETIME:
            return b"\x00\x00\x00\x08" + _I64.pack(_TIME_NEG_INFINITY)
        raise Unsupported
    return _time_bytes((v.astimezone(dt.UTC) - _PG_EPOCH_UTC) // _ONE_US)


def _enc_interval(v: Any) -> bytes:
    if type(v) is not tuple or len(v) != 3 or any(type(x) is not int for x in v):
        raise Unsupported
    months, days, us = v
    try:
        return b"\x00\x00\x00\x10" + _INTERVAL.pack(us, days, months)
    except struct.error:
        raise Unsupported from None


#: Built-in type OID -> (decoder, result format, encoder, parameter format);
#: format 1 is binary, 0 text.
TYPES: dict[int, tuple[Decoder, int, Encoder, int]] = {
    16: (_bool, 1, _enc_bool, 1),
    17: (_bytea, 1, _enc_bytea, 1),
    19: (_text, 1, _enc_text, 1),  # name
    20: (_int8, 1, _packer(_I64, int), 1),
    21: (_int2, 1, _packer(_I16, int), 1),
    23: (_int4, 1, _packer(_I32, int), 1),
    25: (_text, 1, _enc_text, 1),  # text
    26: (_oid, 1, _packer(_U32, int), 1),
    114: (_text, 1, _enc_text, 1),  # json: its text in either format
    700: (_float4, 1, _packer(_F32, float), 1),
    701: (_float8, 1, _packer(_F64, float), 1),
    1042: (_text, 1, _enc_text, 1),  # bpchar
    1043: (_text, 1, _enc_text, 1),  # varchar
    1082: (_date, 1, _enc_date, 1),
    1114: (_timestamp, 1, _enc_timestamp, 1),
    1184: (_timestamptz, 1, _enc_timestamptz, 1),
    1186: (_interval, 1, _enc_interval, 1),
    1700: (_numeric_text, 0, _enc_numeric_text, 0),
    2950: (_uuid, 1, _enc_uuid, 1),
    3802: (_jsonb, 1, _enc_jsonb, 1),
}


def _format_codes(codes: Sequence[int]) -> bytes:
    if not any(codes):
        return b"\x00\x00"  # none given: all text
    if all(codes):
        return b"\x00\x01\x00\x01"  # one given: all binary
    return _I16.pack(len(codes)) + b"".join(_I16.pack(c) for c in codes)


class Plan:
    """How one prepared statement runs on the lean path: the Bind message's
    fixed parts, each parameter's encoder and each column's decoder."""

    __slots__ = ("_bind_head", "_bind_tail", "decoders", "encoders", "query")

    def __init__(
        self,
        name: str,
        query: str,
        encoders: list[Encoder],
        param_formats: list[int],
        decoders: list[Decoder],
        result_formats: list[int],
    ) -> None:
        self.query = query
        self.encoders = encoders
        self.decoders = decoders
        # Bind: the unnamed portal, the statement, parameter formats, count.
        self._bind_head = (
            b"\x00"
            + name.encode()
            + b"\x00"
            + _format_codes(param_formats)
            + _I16.pack(len(encoders))
        )
        self._bind_tail = _format_codes(result_formats)

    def message(self, args: Sequence[Any], limit: int, after: bytes) -> bytes:
        """Bind, Execute (at most ``limit`` rows; 0: all) and Sync, then
        ``after``; raises :class:`Unsupported` for a value it does not encode."""
        parts = [self._bind_head]
        for encode, value in zip(self.encoders, args, strict=True):
            parts.append(_NULL if value is None else encode(value))
        parts.append(self._bind_tail)
        body = b"".join(parts)
        return b"".join(
            (
                b"B",
                _I32.pack(len(body) + 4),
                body,
                b"E\x00\x00\x00\x09\x00",
                _I32.pack(limit),
                SYNC,
                after,
            )
        )


def plan(state: Any, parameter_oids: Sequence[int], column_oids: Sequence[int]) -> Plan | None:
    """The lean plan of an asyncpg statement state, or None when a type is
    outside the set (or the statement has no server-side name)."""
    name = state.name
    if not name or first_keyword(state.query) == "COPY":
        # (COPY's data phase is asyncpg's: it answers with no columns.)
        return None
    encoders: list[Encoder] = []
    param_formats: list[int] = []
    for oid in parameter_oids:
        entry = TYPES.get(oid)
        if entry is None:
            return None
        encoders.append(entry[2])
        param_formats.append(entry[3])
    decoders: list[Decoder] = []
    result_formats: list[int] = []
    for oid in column_oids:
        entry = TYPES.get(oid)
        if entry is None:
            return None
        decoders.append(entry[0])
        result_formats.append(entry[1])
    return Plan(name, state.query, encoders, param_formats, decoders, result_formats)


def query_message(sql: str) -> bytes:
    """A simple-protocol Query message."""
    data = sql.encode() + b"\x00"
    return b"Q" + _I32.pack(len(data) + 4) + data


def prepare_message(statements: Iterable[tuple[str, str]]) -> bytes:
    """Parse for each ``(name, sql)`` (no parameter types), then one Sync:
    prepared in one round trip, and the implicit transaction their Parses
    begin ends at the Sync."""
    parts = []
    for name, sql in statements:
        body = name.encode() + b"\x00" + sql.encode() + b"\x00" + _I16.pack(0)
        parts.append(b"P" + _I32.pack(len(body) + 4) + body)
    return b"".join(parts) + SYNC


def prepare_plan(what: str) -> Plan:
    """The plan of an exchange whose command is a :func:`prepare_message`:
    no rows, ``what`` naming it in an error."""
    return Plan("", what, [], [], [], [])


def execute_message(names: Sequence[str]) -> bytes:
    """Bind and Execute for each of the prepared statements ``names`` (no
    parameters, rows in text), then one Sync: they run in one implicit
    transaction, as the statements of one simple-protocol Query do."""
    parts = []
    for name in names:
        # The unnamed portal, the statement, no parameter formats, no
        # parameters, no result formats; then Execute it to the end.
        bind = b"\x00" + name.encode() + b"\x00" + _I16.pack(0) * 3
        parts.append(b"B" + _I32.pack(len(bind) + 4) + bind)
        parts.append(b"E\x00\x00\x00\x09\x00" + _I32.pack(0))
    return b"".join(parts) + SYNC


def _fields(data: bytes, start: int, end: int) -> dict[str, str]:
    """An ErrorResponse's fields, keyed as asyncpg keys them."""
    fields: dict[str, str] = {}
    pos = start
    while pos < end and data[pos]:
        stop = data.index(b"\x00", pos + 1)
        fields[chr(data[pos])] = data[pos + 1 : stop].decode()
        pos = stop + 1
    return fields


class Exchange(asyncio.Protocol):
    """One lean command and the reset behind it, as the transport's protocol
    from the write until the reset's ReadyForQuery (then the transport goes
    back to ``owner``, asyncpg's protocol, by itself)."""

    def __init__(
        self,
        transport: Any,
        owner: Any,
        statement: Plan,
        loop: Any,
        reset_answer: bytes | None = None,
    ) -> None:
        self._transport = transport
        self._owner = owner
        self._decoders = statement.decoders
        self._query = statement.query
        self._pending: list[bytes] = []  # an incomplete message, in pieces
        self._pending_size = 0
        self._needed = 0  # the pieces' size once that message is complete
        self._phase = 0  # 0: the statement's answer, 1: the reset's, 2: done
        #: The rows, the command tag (None if suspended at the row limit).
        self.rows: list[tuple[Any, ...]] = []
        self.status: str | None = None
        #: The statement's ErrorResponse fields, or a value that failed to decode.
        self.error: dict[str, str] | None = None
        self.decode_error: BaseException | None = None
        #: The reset ran without error and left no transaction open.
        self.reset_ok = True
        #: The reset failed because a statement of it was not prepared (a
        #: caller deallocated it): the connection must prepare them again.
        self.reset_missing = False
        #: The asynchronous messages that came meanwhile (ParameterStatus,
        #: notices, notifications), for asyncpg's protocol, which takes them
        #: in any state and keeps its record of the server's settings by them.
        self._asynchronous: list[bytes] = []
        #: Set when the exchange is over: both answers read, or the link lost
        #: (a caller cut off mid-exchange puts a new future here to wait on).
        self.finished: asyncio.Future[None] = loop.create_future()
        self.lost: BaseException | None = None
        #: The reset's whole answer as this connection sent it before, when
        #: known: the same bytes again are taken as they are, unparsed (the
        #: reset's answer is the same every time a reset goes as planned).
        self._reset_answer = reset_answer
        #: The reset's answer of this exchange, when it went as planned and
        #: arrived in one read: what ``reset_answer`` can be next time.
        self.learned: bytes | None = None
        # Where the reset's answer began in this read (-1: not yet, -2: in
        # an earlier read).
        self._reset_from = -1

    @property
    def over(self) -> bool:
        return self._phase == 2

    def start(self, message: bytes) -> None:
        transport = self._transport
        transport.set_protocol(self)
        transport.write(message)

    # -- asyncio callbacks --

    def data_received(self, data: bytes) -> None:
        if self._phase == 2:  # pragma: no cover - the transport is asyncpg's again
            self._owner.data_received(data)
            return
        if self._pending:
            # The rest of a message that did not fit in the last read: the
            # pieces are joined once it is complete, not on every read.
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size < self._needed:
                return
            buffer = b"".join(self._pending)
            self._pending = []
        else:
            buffer = data
        pos = 0
        size = len(buffer)
        needed = 5
        try:
            while True:
                if self._phase == 1 and self._reset_from == -1 and pos < size:
                    # The statement's answer is read: the reset's begins here.
                    known = self._reset_answer
                    if known is not None and buffer.startswith(known, pos):
                        self._phase = 2
                        self._finish(buffer[pos + len(known) :])
                        return
                    self._reset_from = pos
                if size - pos < 5:
                    break
                kind, length = _HEADER.unpack_from(buffer, pos)
                end = pos + 1 + length
                if end > size:
                    needed = end - pos
                    break
                start = pos + 5
                pos = end
                if self._message(kind, buffer, start, end):
                    if self._reset_from >= 0 and self.reset_ok and not self._asynchronous:
                        self.learned = buffer[self._reset_from : pos]
                    self._finish(buffer[pos:])
                    return
        except Exception as exc:  # a protocol violation: nobody can trust the link
            self._fail(exc)
            return
        if self._reset_from >= 0:
            self._reset_from = -2  # it spans reads: not learned from this exchange
        if pos < size:
            rest = buffer[pos:]
            self._pending = [rest]
            self._pending_size = len(rest)
            self._needed = needed

    def _message(self, kind: bytes, data: bytes, start: int, end: int) -> bool:
        """Handles one message; True once the reset's ReadyForQuery was read."""
        if self._phase == 0:
            if kind == b"D":
                if self.error is None and self.decode_error is None:
                    self._row(data, start)
            elif kind == b"2" or kind == b"1":  # BindComplete / ParseComplete
                pass
            elif kind == b"C":
                self.status = data[start : end - 1].decode()
            elif kind == b"s" or kind == b"I":  # suspended at the row limit / empty
                pass
            elif kind == b"E":
                self.error = _fields(data, start, end)
            elif kind == b"Z":
                self._phase = 1
            else:
                self._other(kind, data, start, end)
            return False
        if kind == b"Z":
            if data[start : start + 1] != b"I":
                self.reset_ok = False
            self._phase = 2
            return True
        if kind == b"E":
            self.reset_ok = False
            if _fields(data, start, end).get("C") == INVALID_STATEMENT_NAME:
                self.reset_missing = True
        elif kind not in (b"2", b"T", b"D", b"C"):
            self._other(kind, data, start, end)
        return False

    def _other(self, kind: bytes, data: bytes, start: int, end: int) -> None:
        if kind in (b"S", b"N", b"A"):
            self._asynchronous.append(data[start - 5 : end])
        else:
            raise pgexc.ProtocolError(f"unexpected message {kind!r} from PostgreSQL")

    def _row(self, data: bytes, pos: int) -> None:
        pos += 2
        values: list[Any] = []
        unpack = _I32.unpack_from
        try:
            for decode in self._decoders:
                n = unpack(data, pos)[0]
                pos += 4
                if n < 0:
                    values.append(None)
                else:
                    values.append(decode(data, pos, n))
                    pos += n
        except Exception as exc:  # as asyncpg: the call fails, the link is fine
            self.decode_error = exc
            return
        self.rows.append(tuple(values))

    def _finish(self, rest: bytes) -> None:
        self._transport.set_protocol(self._owner)
        self._done()
        if self._asynchronous:
            rest = b"".join(self._asynchronous) + rest
        if rest:
            self._owner.data_received(rest)

    def _fail(self, exc: BaseException) -> None:
        self.lost = exc
        self._phase = 2
        self._done()
        self._transport.set_protocol(self._owner)
        self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._phase == 0:
            self.lost = self._lost_mid_statement(exc)
        if self._phase != 2:
            # Lost during the reset: the statement's answer is whole and
            # stands; the connection is closed, so the pool drops it.
            self.reset_ok = False
            self._phase = 2
            self._done()
        self._owner.connection_lost(exc)

    def _lost_mid_statement(self, cause: BaseException | None) -> BaseException:
        """What asyncpg raises for a link lost mid-statement: the server's
        error (a FATAL goodbye) kept in the message and as the cause."""
        message = "connection was closed in the middle of operation"
        if self.error is not None:
            server = pgbase.PostgresError.new(self.error, query=self._query)
            if cause is not None:
                server.__cause__ = cause
            cause = server
            message = f"{message}: {server.args[0]}"
        lost: BaseException = pgexc.ConnectionDoesNotExistError(message)
        if cause is not None:
            lost.__cause__ = cause
        return lost

    def _done(self) -> None:
        if not self.finished.done():
            self.finished.set_result(None)

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        self._owner.pause_writing()

    def resume_writing(self) -> None:
        self._owner.resume_writing()

    # -- the outcome --

    def outcome(self) -> tuple[list[tuple[Any, ...]], str | None]:
        """The rows and the command tag, or the exception the statement ends with."""
        if self.lost is not None:
            raise self.lost
        if self.error is not None:
            raise pgbase.PostgresError.new(self.error, query=self._query)
        if self.decode_error is not None:
            raise self.decode_error
        return self.rows, self.status
