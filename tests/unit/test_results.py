"""Result size rules, without a database: the unary caps and the stream's
byte-bounded chunks."""

from __future__ import annotations

import pytest

from dbgateway.v1 import value_pb2
from dbgateway_server.backends.base import ResultLimits
from dbgateway_server.errors import GatewayError, Reason
from dbgateway_server.results import (
    FIRST_FETCH_ROWS,
    ResultCollector,
    RowChunker,
    framed_size,
)


def row(text: str) -> value_pb2.Row:
    return value_pb2.Row(values=[value_pb2.Value(string_value=text)])


def rows(n: int, width: int = 10) -> list[value_pb2.Row]:
    return [row(str(i).rjust(width, "x")) for i in range(n)]


@pytest.mark.parametrize("size", [0, 1, 120, 128, 16380, 16384, 2**21 - 5, 2**21])
def test_framed_size_is_what_a_repeated_field_element_takes(size):
    message = value_pb2.ListValue(values=[value_pb2.Value(bytes_value=b"")])
    inner = value_pb2.Value(bytes_value=b"x" * size)
    message.values[0].CopyFrom(inner)
    assert framed_size(inner.ByteSize()) == message.ByteSize()


def test_fetch_rows_is_one_beyond_the_first_limit_that_applies():
    assert ResultLimits(max_rows=0, max_result_rows=100).fetch_rows == 101
    assert ResultLimits(max_rows=10, max_result_rows=100).fetch_rows == 11
    assert ResultLimits(max_rows=100, max_result_rows=100).fetch_rows == 101
    assert ResultLimits(max_rows=500, max_result_rows=100).fetch_rows == 101


def test_collector_truncates_at_the_callers_max_rows():
    collector = ResultCollector(ResultLimits(max_rows=3, max_result_rows=100))
    assert collector.add(rows(2))
    assert not collector.add(rows(5))
    assert len(collector.rows) == 3
    assert collector.truncated


def test_collector_without_max_rows_never_truncates():
    collector = ResultCollector(ResultLimits(max_result_rows=10))
    assert collector.add(rows(10))
    assert not collector.truncated


def test_collector_refuses_a_row_beyond_max_result_rows():
    collector = ResultCollector(ResultLimits(max_result_rows=10))
    with pytest.raises(GatewayError) as info:
        collector.add(rows(11))
    assert info.value.reason is Reason.RESULT_TOO_LARGE
    assert "StreamQuery" in info.value.message


def test_collector_refuses_rows_beyond_max_result_bytes():
    one = framed_size(row("x" * 100).ByteSize())
    collector = ResultCollector(ResultLimits(max_result_rows=1000, max_result_bytes=one * 5))
    assert collector.add(rows(5, width=100))
    with pytest.raises(GatewayError) as info:
        collector.add(rows(1, width=100))
    assert "max_result_bytes" in info.value.message


class FakeCursor:
    """Hands out ``total`` rows, recording the fetch sizes asked for."""

    def __init__(self, total: int, width: int = 10) -> None:
        self.rows = rows(total, width)
        self.asked: list[int] = []

    async def fetch(self, n: int) -> list[value_pb2.Row]:
        self.asked.append(n)
        batch, self.rows = self.rows[:n], self.rows[n:]
        return batch


async def chunks_of(chunker: RowChunker, cursor: FakeCursor) -> list[list[value_pb2.Row]]:
    return [chunk async for chunk in chunker.chunks(cursor.fetch)]


async def test_chunks_stay_under_the_target_and_keep_the_order():
    cursor = FakeCursor(10_000, width=50)
    chunks = await chunks_of(RowChunker(4096), cursor)
    assert [r for c in chunks for r in c] == rows(10_000, width=50)
    sizes = [
        value_pb2.ListValue(values=[]).ByteSize() + sum(framed_size(r.ByteSize()) for r in c)
        for c in chunks
    ]
    assert all(size <= 4096 for size in sizes)
    assert all(size > 4096 - 60 for size in sizes[:-1])


async def test_fetches_are_sized_to_about_one_chunk_after_the_first():
    cursor = FakeCursor(10_000, width=50)
    await chunks_of(RowChunker(4096), cursor)
    assert cursor.asked[0] == FIRST_FETCH_ROWS
    # 4096 bytes of 56-byte rows: about 73 rows a fetch, never thousands.
    assert max(cursor.asked[1:]) <= 4096 // 50


async def test_a_row_larger_than_the_target_travels_alone():
    cursor = FakeCursor(0)
    cursor.rows = [row("a"), row("b" * 5000), row("c")]
    chunks = await chunks_of(RowChunker(1024), cursor)
    assert [len(c) for c in chunks] == [1, 1, 1]


async def test_a_row_too_large_for_any_message_fails_the_stream():
    cursor = FakeCursor(0)
    cursor.rows = [row("a"), row("b" * 5000)]
    with pytest.raises(GatewayError) as info:
        await chunks_of(RowChunker(1024, message_limit=4096), cursor)
    assert info.value.reason is Reason.RESULT_TOO_LARGE


async def test_max_rows_stops_the_stream_and_marks_it_truncated():
    cursor = FakeCursor(1000)
    chunker = RowChunker(1 << 20, max_rows=300)
    chunks = await chunks_of(chunker, cursor)
    assert sum(len(c) for c in chunks) == 300
    assert chunker.truncated
    assert sum(cursor.asked) <= 301


async def test_max_rows_equal_to_the_result_is_not_truncated():
    chunker = RowChunker(1 << 20, max_rows=300)
    await chunks_of(chunker, FakeCursor(300))
    assert chunker.rows_seen == 300
    assert not chunker.truncated
