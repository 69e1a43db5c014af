"""What a call returns: rows of native Python values."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._values import from_column_batch, from_row
from .v1 import value_pb2

__all__ = ["Column", "ExecuteResult", "Result", "StatementResult", "TransactionResult"]

Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Column:
    """A result column: its name and the engine's own type name (``int8``,
    ``BIGINT UNSIGNED``; empty on SQLite)."""

    name: str
    db_type: str = ""


def columns_of(columns: Sequence[value_pb2.Column]) -> tuple[Column, ...]:
    return tuple(Column(c.name, c.db_type) for c in columns)


def rows_of(rows: Sequence[value_pb2.Row], columns: Sequence[Column]) -> list[Row]:
    types = [c.db_type for c in columns]
    return [from_row(r.values, types) for r in rows]


def rows_of_batches(
    batches: Sequence[value_pb2.ColumnBatch], columns: Sequence[Column]
) -> list[Row]:
    """The rows of a columnar result (RESULT_ENCODING_COLUMNS), in order."""
    types = [c.db_type for c in columns]
    rows: list[Row] = []
    for batch in batches:
        rows.extend(from_column_batch(batch, types))
    return rows


class _Rows:
    """Rows plus column names: iteration, ``len``, ``as_dicts``, ``scalar``."""

    __slots__ = ()
    column_info: tuple[Column, ...]
    rows: list[Row]

    @property
    def columns(self) -> tuple[str, ...]:
        """The column names, in order."""
        return tuple(c.name for c in self.column_info)

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def as_dicts(self) -> list[dict[str, Any]]:
        """Each row as ``{column name: value}`` (a later duplicate name wins)."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def scalar(self) -> Any:
        """The first column of the first row, or None when there are no rows."""
        return self.rows[0][0] if self.rows else None


@dataclass(frozen=True, slots=True)
class Result(_Rows):
    """The rows of a query. Iterating yields each row as a tuple.

    ``truncated`` is set when ``max_rows`` cut the result short.
    """

    column_info: tuple[Column, ...] = ()
    rows: list[Row] = field(default_factory=list)
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class ExecuteResult(_Rows):
    """What a write changed; ``rows`` holds the rows of a RETURNING clause.

    ``rows_affected`` is a number for ``execute`` and, the total over every
    parameter set, for ``execute_batch``; None only from a server too old to
    count a PostgreSQL batch.
    """

    rows_affected: int | None = 0
    last_insert_id: int | None = None
    column_info: tuple[Column, ...] = ()
    rows: list[Row] = field(default_factory=list)
    #: On a database with replicas: pass as ``read_after=`` to read this write back.
    read_token: str = ""


@dataclass(frozen=True, slots=True)
class StatementResult(_Rows):
    """What one statement of ``run_transaction`` returned: its rows (a read,
    or RETURNING) and what it changed (a write)."""

    column_info: tuple[Column, ...] = ()
    rows: list[Row] = field(default_factory=list)
    rows_affected: int = 0
    last_insert_id: int | None = None
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class TransactionResult:
    """The results of ``run_transaction``, one per statement, in order
    (iterate or index it), and how many times the transaction ran
    (``attempts``: more than 1 after a serialization failure or deadlock)."""

    results: tuple[StatementResult, ...] = ()
    attempts: int = 1
    #: On a database with replicas: pass as ``read_after=`` to read the writes back.
    read_token: str = ""

    def __iter__(self) -> Iterator[StatementResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> StatementResult:
        return self.results[index]
