"""The MySQL answer reader against canned server bytes (pure protocol logic):
however the bytes arrive, a result reads the same, with the values PyMySQL
would give."""

from __future__ import annotations

import asyncio
import decimal
import struct
from typing import Any

import pymysql.converters
import pymysql.err
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymysql.constants import FIELD_TYPE

from dbgateway_server.backends.mysql_wire import COLUMN_CACHE_SIZE, Outcome, Wire

UTF8MB4 = 45
BINARY = 63


class FakeConnection:
    """What the reader uses of an aiomysql connection."""

    encoding = "utf8"
    decoders = pymysql.converters.decoders

    def __init__(self) -> None:
        self._reader = asyncio.StreamReader()
        self.written: list[bytes] = []
        self._writer = self
        self.server_status = 0
        self.fresh = True
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def _ensure_alive(self) -> None:
        assert not self.closed

    def close(self) -> None:
        self.closed = True


def packet(seq: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes((seq,)) + payload


def lenenc(data: bytes | None) -> bytes:
    if data is None:
        return b"\xfb"
    n = len(data)
    if n < 251:
        return bytes((n,)) + data
    if n < 1 << 16:
        return b"\xfc" + n.to_bytes(2, "little") + data
    if n < 1 << 24:
        return b"\xfd" + n.to_bytes(3, "little") + data
    return b"\xfe" + n.to_bytes(8, "little") + data


def column(name: str, type_code: int, charset: int = UTF8MB4, flags: int = 0) -> bytes:
    texts = b"".join(lenenc(t) for t in (b"def", b"db", b"t", b"t", name.encode(), name.encode()))
    return texts + b"\x0c" + struct.pack("<HIBHBxx", charset, 255, type_code, flags, 0)


def eof(status: int = 0x0002) -> bytes:
    return b"\xfe" + struct.pack("<HH", 0, status)


def ok(affected: int = 0, insert_id: int = 0, status: int = 0x0002) -> bytes:
    return b"\x00" + bytes((affected, insert_id)) + struct.pack("<HH", status, 0)


def result_set(columns: list[bytes], rows: list[list[bytes | None]]) -> list[bytes]:
    payloads = [bytes((len(columns),)), *columns, eof()]
    payloads += [b"".join(lenenc(v) for v in row) for row in rows]
    return [*payloads, eof()]


def answer(payloads: list[bytes]) -> bytes:
    return b"".join(packet(seq, p) for seq, p in enumerate(payloads, start=1))


async def read_all(wire: Wire) -> tuple[list[str], list[Any], bool]:
    start = await wire.result()
    assert not isinstance(start, Outcome)
    rows: list[Any] = []
    while (got := wire.rows(start, 1000, rows)) >= 0:
        if got == 0:
            await wire.wait()
    return [c.name for c in start], rows, got == -2


COLUMNS = [
    column("id", FIELD_TYPE.LONG),
    column("note", FIELD_TYPE.VAR_STRING),
    column("price", FIELD_TYPE.NEWDECIMAL),
    column("raw", FIELD_TYPE.BLOB, charset=BINARY),
]
ROWS: list[list[bytes | None]] = [
    [b"1", "é".encode() * 300, b"1.50", b"\x00\xff"],
    [None, b"", b"-2.00", None],
    [b"3", b"x" * 70_000, b"0.00", b"\x01" * 300],
]
EXPECTED = [
    (1, "é" * 300, decimal.Decimal("1.50"), b"\x00\xff"),
    (None, "", decimal.Decimal("-2.00"), None),
    (3, "x" * 70_000, decimal.Decimal("0.00"), b"\x01" * 300),
]


async def test_a_result_reads_to_the_values_pymysql_gives():
    conn = FakeConnection()
    wire = Wire(conn)
    wire.send([(0x03, b"SELECT ...")])
    conn._reader.feed_data(answer(result_set(COLUMNS, ROWS)))
    names, rows, more = await read_all(wire)
    assert names == ["id", "note", "price", "raw"]
    assert rows == EXPECTED
    assert not more
    assert wire.idle()


async def test_a_result_arriving_a_byte_at_a_time_reads_as_one_that_arrived_at_once():
    conn = FakeConnection()
    wire = Wire(conn)
    wire.send([(0x03, b"SELECT ...")])
    data = answer(result_set(COLUMNS, ROWS))

    async def trickle() -> None:
        for i in range(len(data)):
            conn._reader.feed_data(data[i : i + 1])
            if i % 97 == 0:
                await asyncio.sleep(0)

    feeding = asyncio.create_task(trickle())
    _, rows, _ = await read_all(wire)
    await feeding
    assert rows == EXPECTED


async def test_a_row_of_more_than_16_mib_spans_packets():
    conn = FakeConnection()
    wire = Wire(conn)
    wire.send([(0x03, b"SELECT big")])
    big = b"y" * (16 * 1024 * 1024 + 10)
    row = lenenc(big)
    head = [bytes((1,)), column("big", FIELD_TYPE.LONG_BLOB), eof()]
    data = answer(head)
    seq = len(head) + 1
    while True:  # one logical packet cut into 16 MiB - 1 pieces
        piece, row = row[:0xFFFFFF], row[0xFFFFFF:]
        data += packet(seq, piece)
        seq += 1
        if len(piece) < 0xFFFFFF:
            break
    data += packet(seq, eof())
    conn._reader.feed_data(data)
    _, rows, _ = await read_all(wire)
    assert rows == [(big.decode(),)]


async def test_pipelined_answers_are_each_numbered_from_one():
    conn = FakeConnection()
    wire = Wire(conn)
    wire.send([(0x03, b"SELECT 1"), (0x1F, b""), (0x03, b"SET ...")])
    assert len(conn.written) == 1  # one write for the three commands
    assert not conn.fresh
    answers = answer(result_set([column("1", FIELD_TYPE.LONGLONG)], [[b"1"]]))
    conn._reader.feed_data(answers + packet(1, ok()) + packet(1, ok(status=0x0003)))
    _, rows, _ = await read_all(wire)
    assert rows == [(1,)]
    wire.next_answer()
    await wire.ok()
    wire.next_answer()
    await wire.ok()
    assert conn.server_status == 0x0003
    assert wire.idle()


async def test_an_error_packet_raises_the_servers_error_with_its_sqlstate():
    conn = FakeConnection()
    wire = Wire(conn)
    wire.send([(0x03, b"SELECT nope")])
    conn._reader.feed_data(packet(1, b"\xff" + struct.pack("<H", 1054) + b"#42S22Unknown column"))
    with pytest.raises(pymysql.err.OperationalError) as raised:
        await wire.result()
    assert raised.value.args[0] == 1054
    assert wire.idle()


async def test_a_packet_out_of_sequence_closes_the_connection():
    conn = FakeConnection()
    wire = Wire(conn)
    wire.send([(0x03, b"SELECT 1")])
    conn._reader.feed_data(packet(2, ok()))
    with pytest.raises(pymysql.err.InternalError):
        await wire.result()
    assert conn.closed


async def test_a_connection_closed_mid_answer_is_a_lost_connection():
    conn = FakeConnection()
    wire = Wire(conn)
    wire.send([(0x03, b"SELECT 1")])
    conn._reader.feed_data(answer(result_set(COLUMNS, ROWS))[:40])
    conn._reader.feed_eof()
    with pytest.raises(pymysql.err.OperationalError) as raised:
        await read_all(wire)
    assert raised.value.args[0] == 2013  # CR_SERVER_LOST
    assert conn.closed


async def test_the_column_definitions_kept_per_connection_are_bounded():
    conn = FakeConnection()
    wire = Wire(conn)
    for i in range(COLUMN_CACHE_SIZE + 50):
        wire.send([(0x03, b"SELECT")])
        conn._reader.feed_data(answer(result_set([column(f"c{i}", FIELD_TYPE.LONG)], [[b"7"]])))
        names, rows, _ = await read_all(wire)
        assert (names, rows) == ([f"c{i}"], [(7,)])
    assert len(wire._columns) == COLUMN_CACHE_SIZE


_DATETIME_TEXT = st.one_of(
    # What the server sends: DATETIME / TIMESTAMP of every precision.
    st.builds(
        lambda moment, digits: moment.isoformat(" ", "microseconds")[: 20 + digits].rstrip("."),
        st.datetimes(),
        st.integers(0, 6),
    ),
    # Zero dates, invalid days and times, other separators, stray text.
    st.sampled_from(
        [
            "0000-00-00 00:00:00",
            "2024-02-30 12:00:00",
            "2024-01-31 24:00:00",
            "2024-01-31T23:59:59",
            "2024-01-31 23:59:59.123456+01",
            "2024-W01-1 00:00:00",
        ]
    ),
    st.text("0123456789-: .T", min_size=19, max_size=26),
)


@settings(max_examples=300)
@given(_DATETIME_TEXT)
def test_a_datetime_reads_as_pymysql_reads_it(text: str):
    async def read() -> Any:
        conn = FakeConnection()
        wire = Wire(conn)
        wire.send([(0x03, b"SELECT ...")])
        columns = [column("at", FIELD_TYPE.DATETIME), column("ts", FIELD_TYPE.TIMESTAMP)]
        conn._reader.feed_data(answer(result_set(columns, [[text.encode()] * 2])))
        return (await read_all(wire))[1]

    try:
        expected = pymysql.converters.convert_datetime(text)
    except Exception as exc:  # text PyMySQL cannot read at all: it fails alike
        with pytest.raises(type(exc)):
            asyncio.run(read())
        return
    got = asyncio.run(read())
    assert got == [(expected, expected)]
    assert {type(value) for value in got[0]} == {type(expected)}
