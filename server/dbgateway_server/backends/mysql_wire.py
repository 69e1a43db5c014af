"""The command phase of the MySQL client/server protocol, for the commands the
gateway sends on every call: a COM_QUERY and its text result, and the session
reset, written together when they go together.

aiomysql (PyMySQL's protocol code, made asynchronous) opens the connection,
authenticates and still runs the rare commands. Its result reading costs
more than the statement: two awaits and a packet object per packet, every
column definition parsed on every result, a cursor with futures per call,
and a SHOW WARNINGS round trip whenever the server reports a warning (which
nobody reads here). :class:`Wire` reads what has arrived from a buffer,
awaiting only when a packet is incomplete, keeps each connection's column
definitions parsed by their bytes, and can put commands in one socket write
whose answers it then reads in order (the server runs a connection's
commands one after the other, and numbers each answer from 1 as it would
alone).

Rows are decoded into exactly the Python values PyMySQL gives, with the
connection's own decoders, so :mod:`dbgateway_server.values` converts them
as it always has.
"""

from __future__ import annotations

import asyncio
import datetime
import struct
from collections.abc import Callable, Sequence
from typing import Any

import pymysql.err
from pymysql.connections import TEXT_TYPES
from pymysql.constants import CR, FIELD_TYPE
from pymysql.converters import convert_datetime, through

#: Commands the protocol numbers (PyMySQL names COM_QUERY; the reset it does not).
COM_QUERY = 0x03
COM_RESET_CONNECTION = 0x1F
#: A packet this long continues in the next one.
MAX_PACKET = 0xFFFFFF
#: SERVER_STATUS flags: another result follows this one / a transaction is open.
MORE_RESULTS = 0x0008
#: How much one read from the socket may take.
READ_SIZE = 256 * 1024
#: Column definitions kept parsed per connection (a connection sees the same
#: few statements again and again; beyond this many the oldest are dropped).
COLUMN_CACHE_SIZE = 256

_BINARY_CHARSET = 63
_COLUMN_TAIL = struct.Struct("<xHIBHBxx")

Decoder = Callable[[bytes], Any]


class ColumnInfo:
    """One result column as its definition packet gave it."""

    __slots__ = ("charsetnr", "decoder", "described", "flags", "name", "scale", "type_code")

    def __init__(
        self, name: str, charsetnr: int, type_code: int, flags: int, scale: int, decoder: Decoder
    ) -> None:
        self.name = name
        self.charsetnr = charsetnr
        self.type_code = type_code
        self.flags = flags
        self.scale = scale
        #: The column's bytes -> the Python value PyMySQL would give.
        self.decoder = decoder
        #: What the backend makes of the column (kept with the definition).
        self.described: Any = None


class Outcome:
    """What a statement without a result set reported (its OK packet)."""

    __slots__ = ("affected_rows", "insert_id", "more")

    def __init__(self, affected_rows: int, insert_id: int, more: bool) -> None:
        self.affected_rows = affected_rows
        self.insert_id = insert_id
        self.more = more


def _lost(detail: str = "") -> pymysql.err.OperationalError:
    suffix = f" ({detail})" if detail else ""
    return pymysql.err.OperationalError(
        CR.CR_SERVER_LOST, f"Lost connection to MySQL server during query{suffix}"
    )


def _out_of_sync(what: str) -> pymysql.err.InternalError:
    return pymysql.err.InternalError(f"MySQL protocol out of sync: {what}")


def _lenenc(data: bytes, pos: int) -> tuple[int, int]:
    """A length-encoded integer at ``pos``: (value, position after it); -1 for NULL."""
    first = data[pos]
    if first < 251:
        return first, pos + 1
    if first == 251:
        return -1, pos + 1
    if first == 252:
        return data[pos + 1] | data[pos + 2] << 8, pos + 3
    if first == 253:
        return int.from_bytes(data[pos + 1 : pos + 4], "little"), pos + 4
    return int.from_bytes(data[pos + 1 : pos + 9], "little"), pos + 9


def is_eof(packet: bytes) -> bool:
    return packet[0] == 0xFE and len(packet) < 9


def is_error(packet: bytes) -> bool:
    return packet[0] == 0xFF


def raise_error(packet: bytes) -> None:
    """Raises the PyMySQL exception of an ERR packet (sqlstate and all)."""
    pymysql.err.raise_mysql_exception(packet)


class Wire:
    """The reading and writing side of one aiomysql connection's socket."""

    __slots__ = ("_buffer", "_columns", "_conn", "_pos", "_seq")

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._buffer = b""
        self._pos = 0
        self._seq = 0  # the sequence number the next packet must carry
        self._columns: dict[bytes, ColumnInfo] = {}

    # -- writing --

    def send(self, commands: Sequence[tuple[int, bytes]]) -> None:
        """Writes ``commands`` (command byte, argument) in one socket write.
        An argument of 16 MiB or more (a huge statement) goes alone, split
        over packets by aiomysql's own writer."""
        conn = self._conn
        self._check_idle()
        conn._ensure_alive()
        conn.fresh = False
        parts = []
        for command, argument in commands:
            length = len(argument) + 1
            if length >= MAX_PACKET:
                raise ValueError("a command of 16 MiB or more cannot be pipelined")
            parts.append(length.to_bytes(3, "little") + b"\x00" + bytes((command,)) + argument)
        conn._writer.write(b"".join(parts))
        self._seq = 1

    async def send_long(self, command: int, argument: bytes) -> None:
        """Sends one command of any size (aiomysql splits it over packets)."""
        self._check_idle()
        await self._conn._execute_command(command, argument)
        self._seq = self._conn._next_seq_id

    def _check_idle(self) -> None:
        if self._pos != len(self._buffer):
            # Answers would be read as the wrong command's: never reuse it.
            self._conn.close()
            raise _out_of_sync("a command was sent before the last answer was read")

    def next_answer(self) -> None:
        """The next pipelined command's answer follows: numbered from 1 again."""
        self._seq = 1

    # -- reading --

    def idle(self) -> bool:
        """Nothing read but not yet taken: every answer so far is consumed."""
        return self._pos == len(self._buffer)

    def _take(self) -> bytes | None:
        """The next whole packet's payload from what has arrived; None when
        it has not all arrived (nothing is consumed then)."""
        buf, pos, seq = self._buffer, self._pos, self._seq
        size = len(buf)
        if size - pos >= 4:  # the common case: one whole packet of the answer
            length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            end = pos + 4 + length
            if length < MAX_PACKET and end <= size and buf[pos + 3] == seq:
                self._pos, self._seq = end, (seq + 1) & 0xFF
                return buf[pos + 4 : end]
        payload = b""
        while True:
            if len(buf) - pos < 4:
                return None
            length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            end = pos + 4 + length
            if len(buf) < end:
                return None
            if buf[pos + 3] != seq:
                self._conn.close()
                raise _out_of_sync(f"packet number {buf[pos + 3]}, expected {seq}")
            seq = (seq + 1) & 0xFF
            payload += buf[pos + 4 : end]
            pos = end
            if length < MAX_PACKET:
                break
        self._pos, self._seq = pos, seq
        return payload

    async def _fill(self) -> None:
        """Waits for more bytes from the server."""
        reader = self._conn._reader
        rest = self._buffer[self._pos :]
        missing = _missing(rest)
        try:
            if missing > READ_SIZE:
                # A large packet: wait for all of it at once rather than
                # copying what has arrived again on every read.
                data = await reader.readexactly(missing)
            else:
                data = await reader.read(READ_SIZE)
        except asyncio.IncompleteReadError:
            data = b""
        except OSError as exc:
            self._conn.close()
            raise _lost(str(exc)) from exc
        if not data:
            self._conn.close()
            raise _lost()
        self._buffer = rest + data if rest else data
        self._pos = 0

    async def packet(self) -> bytes:
        while True:
            packet = self._take()
            if packet is not None:
                return packet
            await self._fill()

    async def ok(self) -> Outcome:
        """Reads an OK packet (an ERR raises its error)."""
        packet = self._take()
        if packet is None:
            packet = await self.packet()
        if is_error(packet):
            raise_error(packet)
        if packet[0] != 0 or len(packet) < 7:
            self._conn.close()
            raise _out_of_sync("expected an OK packet")
        return self._outcome(packet)

    def _outcome(self, packet: bytes) -> Outcome:
        affected, pos = _lenenc(packet, 1)
        insert_id, pos = _lenenc(packet, pos)
        status = packet[pos] | packet[pos + 1] << 8
        self._conn.server_status = status
        return Outcome(affected, insert_id, bool(status & MORE_RESULTS))

    async def result(self) -> Outcome | list[ColumnInfo]:
        """The start of a statement's answer: its OK, or the columns of its
        result set (whose rows follow). An ERR raises its error, after which
        nothing of this answer is left to read."""
        take = self._take
        packet = take()
        if packet is None:
            packet = await self.packet()
        first = packet[0]
        if first == 0 and len(packet) >= 7:
            return self._outcome(packet)
        if first == 0xFF:
            raise_error(packet)
        if first == 0xFB:
            # LOCAL INFILE, which this client never announces it could serve.
            self._conn.close()
            raise _out_of_sync("the server asked for a local file")
        count, _ = _lenenc(packet, 0)
        column = self._column
        columns = []
        for _ in range(count):
            packet = take()
            columns.append(column(packet if packet is not None else await self.packet()))
        packet = take()
        if not is_eof(packet if packet is not None else await self.packet()):
            self._conn.close()
            raise _out_of_sync("expected the end of the column definitions")
        return columns

    def _column(self, packet: bytes) -> ColumnInfo:
        known = self._columns.get(packet)
        if known is not None:
            return known
        encoding = self._conn.encoding
        pos = 0
        texts = []
        for _ in range(6):  # catalog, schema, table, org_table, name, org_name
            length, pos = _lenenc(packet, pos)
            texts.append(packet[pos : pos + length])
            pos += length
        charsetnr, _, type_code, flags, scale = _COLUMN_TAIL.unpack_from(packet, pos)
        info = ColumnInfo(
            texts[4].decode(encoding),
            charsetnr,
            type_code,
            flags,
            scale,
            self._decoder(type_code, charsetnr),
        )
        if len(self._columns) >= COLUMN_CACHE_SIZE:
            del self._columns[next(iter(self._columns))]
        self._columns[packet] = info
        return info

    def _decoder(self, type_code: int, charsetnr: int) -> Decoder:
        """bytes -> the value PyMySQL's reader gives for such a column."""
        conn = self._conn
        if type_code == FIELD_TYPE.JSON:
            encoding: str | None = conn.encoding
        elif type_code in TEXT_TYPES:  # PyMySQL's: decoded unless binary
            encoding = None if charsetnr == _BINARY_CHARSET else conn.encoding
        else:
            encoding = "ascii"
        convert = conn.decoders.get(type_code)
        if convert is through:
            convert = None
        if convert is convert_datetime:
            return _datetime
        if convert in (int, float):
            return convert  # type: ignore[no-any-return]  # both take the digits as bytes
        if encoding is None:
            return bytes if convert is None else convert
        if convert is None:
            return lambda data: data.decode(encoding)
        return lambda data: convert(data.decode(encoding))

    def rows(self, columns: Sequence[ColumnInfo], limit: int, into: list[Any]) -> int:
        """Appends to ``into`` the rows that have arrived, at most ``limit``;
        returns how many it took, or -1 once the result's end was read (its
        server status taken; -2 when another result follows). An ERR packet
        (a statement killed, or failing mid-result) raises its error."""
        decoders = [c.decoder for c in columns]
        taken = 0
        take = self._take
        while taken < limit:
            packet = take()
            if packet is None:
                return taken
            first = packet[0]
            if first == 0xFE and len(packet) < 9:
                status = packet[3] | packet[4] << 8
                self._conn.server_status = status
                return -2 if status & MORE_RESULTS else -1
            if first == 0xFF:
                raise_error(packet)
            into.append(_row(packet, decoders))
            taken += 1
        return taken

    async def wait(self) -> None:
        """Waits for more of the answer to arrive."""
        await self._fill()

    async def skip_result(self) -> bool:
        """Reads one whole further result (of a multi-result CALL) and drops
        it; returns whether yet another follows."""
        start = await self.result()
        if isinstance(start, Outcome):
            return start.more
        sink: list[Any] = []
        while True:
            got = self.rows(start, 1000, sink)
            sink.clear()
            if got < 0:
                return got == -2
            if got == 0:
                await self._fill()


def _missing(data: bytes) -> int:
    """How many bytes the packet that ``data`` begins (or continues over
    16 MiB pieces) still lacks; 0 while its header has not arrived."""
    pos = 0
    while len(data) - pos >= 4:
        end = pos + 4 + (data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16)
        if len(data) < end:
            return end - len(data)
        pos = end
    return 0


def _datetime(data: bytes) -> Any:
    """A DATETIME / TIMESTAMP value as PyMySQL's ``convert_datetime`` gives it,
    parsed by ``datetime.fromisoformat`` when it has the form the server sends
    (``YYYY-MM-DD hh:mm:ss``, with 6 or no fractional digits); anything else
    (zero dates, other precisions) goes to PyMySQL's own converter."""
    size = len(data)
    canonical = (size == 19 or (size == 26 and data[19] == 46)) and (
        data[4] == data[7] == 45 and data[10] == 32 and data[13] == data[16] == 58
    )
    if canonical:
        try:
            return datetime.datetime.fromisoformat(data.decode("ascii"))
        except ValueError:
            pass
    return convert_datetime(data)


def _row(packet: bytes, decoders: list[Decoder]) -> tuple[Any, ...]:
    values: list[Any] = []
    pos = 0
    for decode in decoders:
        length = packet[pos]
        if length < 251:
            pos += 1
        elif length == 251:
            values.append(None)
            pos += 1
            continue
        else:
            length, pos = _lenenc(packet, pos)
        values.append(decode(packet[pos : pos + length]))
        pos += length
    return tuple(values)
