"""How big a result may get: the caps on unary results, and the byte-bounded
chunks of a streamed one.

Both count the encoded size of each ``Row`` as it is converted, so neither
ever holds more than its bound (plus one fetch) in memory, whatever the
database would return. With the columnar encoding (``ResultLimits.columnar``)
they count the encoded size of each ``ColumnBatch`` instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

from dbgateway.v1 import value_pb2

from .backends.base import ResultLimits, RowStream
from .config import STREAM_MESSAGE_LIMIT_BYTES
from .errors import GatewayError, Reason
from .values import Converter, column_kinds, convert_rows, pack_columns

#: Rows fetched by the first fetch of a stream, before any row size is known.
FIRST_FETCH_ROWS = 256
#: Rows fetched at most at once (a stream of tiny rows needs no bigger batches).
MAX_FETCH_ROWS = 8192


def framed_size(size: int) -> int:
    """Bytes a message of ``size`` bytes takes as one element of a repeated
    field: a one-byte tag, the varint length, the message."""
    if size < 0x80:
        return size + 2
    if size < 0x4000:
        return size + 3
    if size < 0x200000:
        return size + 4
    if size < 0x10000000:
        return size + 5
    return size + 6


def too_large(why: str) -> GatewayError:
    return GatewayError(
        Reason.RESULT_TOO_LARGE,
        f"the result is too large for a unary Query: {why}; read it with StreamQuery, "
        "or set options.max_rows to take only the first rows",
    )


class ResultCollector:
    """Gathers converted rows into a unary result while enforcing
    :class:`ResultLimits`; backends feed it what they fetched until it says
    it has enough."""

    __slots__ = ("_budget", "_limits", "rows", "truncated")

    def __init__(self, limits: ResultLimits) -> None:
        self._limits = limits
        self._budget = limits.max_result_bytes
        self.rows: list[value_pb2.Row] = []
        self.truncated = False

    def wanted(self) -> int:
        """How many more rows to fetch at most."""
        return self._limits.fetch_rows - len(self.rows)

    def add(self, batch: Sequence[value_pb2.Row]) -> bool:
        """Takes ``batch``; False once no more rows are wanted."""
        limits = self._limits
        rows = self.rows
        caller_limit = limits.max_rows if limits.max_rows <= limits.max_result_rows else 0
        for row in batch:
            if caller_limit and len(rows) == caller_limit:
                self.truncated = True
                return False
            if len(rows) == limits.max_result_rows:
                raise too_large(f"more than max_result_rows={limits.max_result_rows} rows")
            self._budget -= framed_size(row.ByteSize())
            if self._budget < 0:
                raise too_large(
                    f"its rows take more than max_result_bytes={limits.max_result_bytes} "
                    f"bytes (at row {len(rows) + 1})"
                )
            rows.append(row)
        return True


class ColumnCollector:
    """:class:`ResultCollector` for the columnar encoding: takes driver
    records, packs them into one ``ColumnBatch`` per :meth:`add`, and counts
    the encoded size of each batch against ``max_result_bytes``."""

    __slots__ = ("_budget", "_converters", "_kinds", "_limits", "batches", "count", "truncated")

    def __init__(self, limits: ResultLimits, converters: Sequence[Converter]) -> None:
        self._limits = limits
        self._budget = limits.max_result_bytes
        self._converters = converters
        self._kinds = column_kinds(converters, v2=limits.columns_v2)
        self.batches: list[value_pb2.ColumnBatch] = []
        self.count = 0
        self.truncated = False

    def wanted(self) -> int:
        return self._limits.fetch_rows - self.count

    def add(self, records: Sequence[Sequence[Any]]) -> bool:
        """Takes ``records``; False once no more rows are wanted."""
        limits = self._limits
        caller_limit = limits.max_rows if limits.max_rows <= limits.max_result_rows else 0
        more = True
        if caller_limit and self.count + len(records) > caller_limit:
            records = records[: caller_limit - self.count]
            self.truncated = True
            more = False
        if self.count + len(records) > limits.max_result_rows:
            raise too_large(f"more than max_result_rows={limits.max_result_rows} rows")
        if records:
            batch = pack_columns(records, self._converters, self._kinds)
            self._budget -= framed_size(batch.ByteSize())
            if self._budget < 0:
                raise too_large(
                    f"its rows take more than max_result_bytes={limits.max_result_bytes} "
                    f"bytes (by row {self.count + len(records)})"
                )
            self.batches.append(batch)
            self.count += len(records)
        return more


#: Rows a unary read fetches at once, so that the byte cap is checked as the
#: result grows rather than after all of it has arrived.
UNARY_FETCH_ROWS = 1000


async def read_result(
    stream: RowStream, limits: ResultLimits
) -> tuple[list[value_pb2.Row], bool, list[value_pb2.ColumnBatch] | None]:
    """The rows (and whether they were truncated) of a unary result read from
    an open cursor, within ``limits``; with ``limits.columnar``, no rows but
    their batches."""
    collector: ResultCollector | ColumnCollector
    if limits.columnar:
        # The first fetch before any collector: most results are whole in it,
        # and the smallest go out as rows (no columns to work out for them).
        wanted = min(limits.fetch_rows, UNARY_FETCH_ROWS)
        records = await stream.fetch_records(wanted)
        if len(records) < wanted and _as_rows(records, limits):
            return _rows_of(records, stream.converters, limits)
        collector = ColumnCollector(limits, stream.converters)
        while records and collector.add(records):
            wanted = min(collector.wanted(), UNARY_FETCH_ROWS)
            records = await stream.fetch_records(wanted)
        return [], collector.truncated, collector.batches
    collector = ResultCollector(limits)
    while True:
        batch = await stream.fetch(min(collector.wanted(), UNARY_FETCH_ROWS))
        if not batch or not collector.add(batch):
            break
    return collector.rows, collector.truncated, None


def collect_rows(
    records: Sequence[Sequence[Any]], converters: Sequence[Converter], limits: ResultLimits
) -> tuple[list[value_pb2.Row], bool, list[value_pb2.ColumnBatch] | None]:
    """A unary result from rows the driver already fetched (at most
    ``limits.fetch_rows`` of them), converted a slice at a time so the byte
    cap stops the conversion early (see :func:`read_result` for what it returns)."""
    if limits.columnar and not _as_rows(records, limits):
        columns = ColumnCollector(limits, converters)
        for start in range(0, len(records), UNARY_FETCH_ROWS):
            if not columns.add(records[start : start + UNARY_FETCH_ROWS]):
                break
        return [], columns.truncated, columns.batches
    return _rows_of(records, converters, limits)


def _as_rows(records: Sequence[Sequence[Any]], limits: ResultLimits) -> bool:
    """A whole columnar result of ``records`` goes out as rows: with
    RESULT_ENCODING_COLUMNS_V2, a result of at most one row (one Row costs
    about half of a batch of one-value columns to send and to read)."""
    return limits.columns_v2 and len(records) <= 1


def _rows_of(
    records: Sequence[Sequence[Any]], converters: Sequence[Converter], limits: ResultLimits
) -> tuple[list[value_pb2.Row], bool, None]:
    collector = ResultCollector(limits)
    for start in range(0, len(records), UNARY_FETCH_ROWS):
        batch = convert_rows(records[start : start + UNARY_FETCH_ROWS], converters)
        if not collector.add(batch):
            break
    return collector.rows, collector.truncated, None


class RowChunker:
    """Cuts a stream of rows into chunks whose encoded size stays under
    ``chunk_bytes``, and sizes each fetch from the rows seen so far so that
    one fetch is about one chunk. A single row larger than the target travels
    alone; one too large for any message fails the stream."""

    __slots__ = (
        "_chunk_bytes",
        "_max_rows",
        "_message_limit",
        "_row_bytes",
        "rows_seen",
        "truncated",
    )

    def __init__(
        self,
        chunk_bytes: int,
        max_rows: int = 0,
        *,
        message_limit: int = STREAM_MESSAGE_LIMIT_BYTES - 1024,
    ) -> None:
        self._chunk_bytes = chunk_bytes
        self._max_rows = max_rows
        self._message_limit = message_limit
        self._row_bytes = 0  # encoded bytes of the rows seen, for the average
        self.rows_seen = 0
        self.truncated = False

    def next_fetch(self, pending_bytes: int) -> int:
        """How many rows the next fetch should ask for."""
        if self.rows_seen:
            average = max(self._row_bytes // self.rows_seen, 1)
            want = max((self._chunk_bytes - pending_bytes) // average, 1)
            want = min(want, MAX_FETCH_ROWS)
        else:
            want = FIRST_FETCH_ROWS
        if self._max_rows:
            # One beyond the caller's limit, to know whether it truncated.
            want = min(want, self._max_rows - self.rows_seen + 1)
        return want

    async def chunks(
        self, fetch: Callable[[int], Awaitable[list[value_pb2.Row]]]
    ) -> AsyncIterator[list[value_pb2.Row]]:
        """Chunks of the rows ``fetch(n)`` returns (an empty list ends them)."""
        limit = self._message_limit
        pending: list[value_pb2.Row] = []
        pending_bytes = 0
        target = self._chunk_bytes
        while True:
            batch = await fetch(self.next_fetch(pending_bytes))
            if not batch:
                break
            for row in batch:
                if self._max_rows and self.rows_seen == self._max_rows:
                    self.truncated = True
                    break
                size = framed_size(row.ByteSize())
                if size > limit:
                    raise GatewayError(
                        Reason.RESULT_TOO_LARGE,
                        f"row {self.rows_seen + 1} takes {size} bytes, more than a "
                        f"StreamQuery message may carry ({limit})",
                    )
                if pending and pending_bytes + size > target:
                    yield pending
                    pending, pending_bytes = [], 0
                pending.append(row)
                pending_bytes += size
                self._row_bytes += size
                self.rows_seen += 1
            if self.truncated:
                break
        if pending:
            yield pending

    async def batches(
        self,
        fetch: Callable[[int], Awaitable[Sequence[Sequence[Any]]]],
        converters: Sequence[Converter],
        *,
        v2: bool = False,
    ) -> AsyncIterator[value_pb2.ColumnBatch]:
        """:meth:`chunks` for the columnar encoding: each fetch of driver
        records (sized from the bytes per row so far to be about one chunk)
        becomes one ``ColumnBatch``, split in halves while it is larger than
        the chunk target. ``v2``: see :func:`column_kinds`."""
        kinds = column_kinds(converters, v2=v2)
        while True:
            records = await fetch(self.next_fetch(0))
            if not records:
                break
            if self._max_rows and self.rows_seen + len(records) > self._max_rows:
                records = records[: self._max_rows - self.rows_seen]
                self.truncated = True
            for batch in self._pack(records, converters, kinds):
                yield batch
            if self.truncated:
                break

    def _pack(
        self,
        records: Sequence[Sequence[Any]],
        converters: Sequence[Converter],
        kinds: Sequence[str],
    ) -> Iterator[value_pb2.ColumnBatch]:
        if not records:
            return
        batch = pack_columns(records, converters, kinds)
        size = batch.ByteSize()
        if size > self._chunk_bytes and len(records) > 1:
            half = len(records) // 2
            yield from self._pack(records[:half], converters, kinds)
            yield from self._pack(records[half:], converters, kinds)
            return
        if size > self._message_limit:
            raise GatewayError(
                Reason.RESULT_TOO_LARGE,
                f"row {self.rows_seen + 1} takes {size} bytes, more than a "
                f"StreamQuery message may carry ({self._message_limit})",
            )
        self.rows_seen += len(records)
        self._row_bytes += size
        yield batch
