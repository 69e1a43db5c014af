"""Column packing without a database: the list each column travels in, NULLs,
the fallback to Values, and the client's decoding back to the row encoding's
values; the columnar unary caps and stream chunks."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbgateway._values import from_column_batch, from_row
from dbgateway_server.backends.base import ResultLimits
from dbgateway_server.errors import GatewayError, Reason
from dbgateway_server.results import ColumnCollector, RowChunker
from dbgateway_server.values import (
    column_kinds,
    convert_rows,
    decimal_text,
    from_python,
    mysql_column,
    pack_columns,
    pg_converter,
)

PG_TYPES = ["int8", "float8", "text", "bytea", "bool", "numeric", "timestamptz", "_int4"]
PG_ROWS = [
    (1, 0.5, "a", b"\x00", True, decimal.Decimal("1.50"), dt.datetime(2024, 1, 1, tzinfo=dt.UTC), [1]),
    (None, None, None, None, None, None, None, None),
    (-(2**63), float("inf"), "é✓", b"", False, decimal.Decimal("-0.5"), None, [None, 2]),
]  # fmt: skip


LISTS = ("ints", "doubles", "strings", "bytes", "bools", "decimals", "timestamps", "values")


def which(column) -> str | None:
    for name in LISTS:
        if len(getattr(column, name)):
            return name
    return None


def decoded(records, converters, db_types, *, v2=False):
    batch = pack_columns(records, converters, column_kinds(converters, v2=v2))
    return batch, from_column_batch(batch, db_types)


def as_rows(records, converters, db_types):
    return [from_row(r.values, db_types) for r in convert_rows(records, converters)]


def test_postgres_columns_pick_their_lists_and_decode_like_rows():
    converters = [pg_converter(t, "array" if t.startswith("_") else "scalar") for t in PG_TYPES]
    batch, rows = decoded(PG_ROWS, converters, PG_TYPES)
    assert [which(c) for c in batch.columns] == [
        "ints", "doubles", "strings", "bytes", "bools", "values", "values", "values",
    ]  # fmt: skip
    assert batch.row_count == 3
    assert list(batch.columns[0].null_indexes) == [1]
    assert list(batch.columns[6].null_indexes) == [1, 2]
    assert rows == as_rows(PG_ROWS, converters, PG_TYPES)
    assert rows[1] == (None,) * 8


def test_a_value_that_does_not_fit_its_list_falls_back_to_values():
    # An int8 column can not hold more than int64; text may get bytes from a driver.
    converters = [pg_converter("int8", "scalar"), pg_converter("text", "scalar")]
    records = [(2**63, 1.5), (1, "x")]
    batch, rows = decoded(records, converters, ["int8", "text"])
    assert [which(c) for c in batch.columns] == ["values", "values"]
    assert rows == as_rows(records, converters, ["int8", "text"])
    assert rows == [(2**63, 1.5), (1, "x")]


def test_python_typed_columns_use_a_list_only_when_every_value_agrees():
    converters = [from_python] * 4
    records = [(1, 1.0, "a", 1), (None, 2.0, "b", "two"), (3, None, None, b"3")]
    batch, rows = decoded(records, converters, [""] * 4)
    assert [which(c) for c in batch.columns] == ["ints", "doubles", "strings", "values"]
    assert rows == as_rows(records, converters, [""] * 4)


def test_mysql_unsigned_bigint_and_time_keep_their_row_encoding():
    big = mysql_column(8, 32, 63)[1]  # BIGINT UNSIGNED
    time = mysql_column(11, 0, 63)[1]
    records = [(2**64 - 1, dt.timedelta(hours=-30)), (5, None)]
    batch, rows = decoded(records, [big, time], ["BIGINT UNSIGNED", "TIME"])
    assert [which(c) for c in batch.columns] == ["values", "values"]
    assert rows == [(2**64 - 1, dt.timedelta(hours=-30)), (5, None)]


def test_all_null_and_empty_batches():
    converters = [pg_converter("int8", "scalar")]
    batch, rows = decoded([(None,), (None,)], converters, ["int8"])
    assert which(batch.columns[0]) is None
    assert rows == [(None,), (None,)]
    assert decoded([], converters, ["int8"])[1] == []


def test_column_collector_truncates_and_enforces_the_caps():
    converters = [pg_converter("int8", "scalar")]
    collector = ColumnCollector(ResultLimits(max_rows=3, max_result_rows=100), converters)
    assert collector.add([(1,), (2,)])
    assert not collector.add([(3,), (4,), (5,)])
    assert collector.truncated
    assert collector.count == 3
    assert [list(b.columns[0].ints) for b in collector.batches] == [[1, 2], [3]]

    collector = ColumnCollector(ResultLimits(max_result_rows=2), converters)
    with pytest.raises(GatewayError) as info:
        collector.add([(1,), (2,), (3,)])
    assert info.value.reason is Reason.RESULT_TOO_LARGE

    text = [pg_converter("text", "scalar")]
    collector = ColumnCollector(ResultLimits(max_result_bytes=1000), text)
    with pytest.raises(GatewayError) as info:
        collector.add([("x" * 100,)] * 20)
    assert "max_result_bytes" in info.value.message


async def test_stream_batches_stay_under_the_chunk_target_in_order():
    records = [(i, "x" * 40) for i in range(5000)]
    converters = [pg_converter("int4", "scalar"), pg_converter("text", "scalar")]

    async def fetch(n: int):
        nonlocal records
        batch, records = records[:n], records[n:]
        return batch

    chunker = RowChunker(4096)
    batches = [b async for b in chunker.batches(fetch, converters)]
    assert len(batches) > 10
    assert all(b.ByteSize() <= 4096 for b in batches)
    assert [n for b in batches for n in b.columns[0].ints] == list(range(5000))
    assert chunker.rows_seen == 5000
    assert not chunker.truncated


async def test_stream_batches_truncate_at_max_rows_and_refuse_a_huge_row():
    converters = [pg_converter("text", "scalar")]
    rows = [("x",)] * 1000

    async def fetch(n: int):
        return rows[:n]

    chunker = RowChunker(1 << 20, max_rows=300)
    batches = [b async for b in chunker.batches(fetch, converters)]
    assert sum(b.row_count for b in batches) == 300
    assert chunker.truncated

    async def huge(n: int):
        return [("y" * 10_000,)]

    with pytest.raises(GatewayError) as info:
        [b async for b in RowChunker(1024, message_limit=4096).batches(huge, converters)]
    assert info.value.reason is Reason.RESULT_TOO_LARGE


def test_v2_packs_decimals_and_instants_and_decodes_like_rows():
    converters = [pg_converter(t, "array" if t.startswith("_") else "scalar") for t in PG_TYPES]
    batch, rows = decoded(PG_ROWS, converters, PG_TYPES, v2=True)
    assert [which(c) for c in batch.columns] == [
        "ints", "doubles", "strings", "bytes", "bools", "decimals", "timestamps", "values",
    ]  # fmt: skip
    assert list(batch.columns[5].decimals) == ["1.50", "-0.5"]
    assert list(batch.columns[6].timestamps) == [1_704_067_200_000_000]
    assert rows == as_rows(PG_ROWS, converters, PG_TYPES)


def test_v2_sends_postgres_infinite_instants_as_values():
    # asyncpg reads timestamptz 'infinity' as a naive datetime.max: no instant.
    converters = [pg_converter("timestamptz", "scalar")]
    records = [(dt.datetime(1, 1, 1, tzinfo=dt.UTC),), (dt.datetime.max,), (dt.datetime.min,)]
    batch, rows = decoded(records, converters, ["timestamptz"], v2=True)
    assert which(batch.columns[0]) == "values"
    assert rows == as_rows(records, converters, ["timestamptz"])
    assert rows[1] == (dt.datetime.max,)


def test_v2_reads_mysql_timestamps_as_utc_like_rows():
    timestamp = mysql_column(7, 0, 63)[1]  # TIMESTAMP: naive, in the UTC session zone
    decimal_ = mysql_column(246, 0, 63)[1]  # NEWDECIMAL
    records = [
        (dt.datetime(1970, 1, 1, 0, 0, 1, 5), decimal.Decimal("12345678901234567890.123")),
        (dt.datetime(2038, 1, 19, 3, 14, 7), None),
    ]
    batch, rows = decoded(records, [timestamp, decimal_], ["TIMESTAMP", "DECIMAL"], v2=True)
    assert [which(c) for c in batch.columns] == ["timestamps", "decimals"]
    assert list(batch.columns[0].timestamps) == [1_000_005, 2_147_483_647_000_000]
    assert rows == as_rows(records, [timestamp, decimal_], ["TIMESTAMP", "DECIMAL"])
    assert rows[0][0] == dt.datetime(1970, 1, 1, 0, 0, 1, 5, tzinfo=dt.UTC)


def test_without_v2_decimals_and_instants_stay_values():
    # A caller that asked for RESULT_ENCODING_COLUMNS does not know the new
    # lists: it must never be sent them.
    converters = [pg_converter("numeric", "scalar"), pg_converter("timestamptz", "scalar")]
    records = [(decimal.Decimal("1.5"), dt.datetime(2024, 1, 1, tzinfo=dt.UTC))]
    batch, _ = decoded(records, converters, ["numeric", "timestamptz"])
    assert [which(c) for c in batch.columns] == ["values", "values"]


@given(
    st.decimals(allow_nan=True, allow_infinity=True)
    | st.builds(
        decimal.Decimal,
        st.tuples(
            st.integers(0, 1),
            st.lists(st.integers(0, 9), min_size=1, max_size=40).map(tuple),
            st.integers(-60, 60),
        ),
    )
)
def test_decimal_text_is_the_plain_exact_form(value):
    assert decimal_text(value) == format(value, "f")
