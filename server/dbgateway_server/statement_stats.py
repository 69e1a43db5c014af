"""Per-statement statistics: what each distinct statement costs the databases.

Statements are told apart by database and *normalized* text: every literal
(string, number, hex, boolean-free constants) becomes ``?`` and whitespace
collapses, so ``WHERE id = 1`` and ``WHERE id = 2`` are one statement, and no
value a caller inlined is kept. Placeholders (``$1``, ``%s``, ``?``) stay as
written: they already carry no value.

Memory is bounded twice: the table keeps at most ``capacity`` statements,
forgetting the least recently executed one beyond it (an LRU, as
pg_stat_statements does with ``pg_stat_statements.max``), and each entry's
latency distribution is a sparse histogram of logarithmic buckets (at most
:data:`_BUCKETS` counters), so a statement executed a billion times costs what
one executed twice does.
"""

from __future__ import annotations

import collections
import functools
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

#: Longest normalized text kept; longer statements are cut (and still told
#: apart by what is kept).
MAX_TEXT = 4096
#: Statements longer than this are normalized on every call instead of cached,
#: so the cache cannot hold more than ~4 MiB of SQL.
_CACHED_SQL = 4096

# Each bucket spans a factor of _GROWTH: a percentile read from a bucket's
# geometric middle is within ~5% of the true value.
_GROWTH = 1.1
_SMALLEST = 1e-6  # 1 µs: below it everything is one bucket
_BUCKETS = 220  # 1 µs * 1.1**220 ≈ 1.3 hours: beyond it, the last bucket
_LOG_GROWTH = math.log(_GROWTH)

_TOKENS = re.compile(
    r"""
      (?P<comment>\s*(?:--[^\n]*|/\*.*?\*/)\s*)
    | (?P<quoted_ident>"(?:[^"]|"")*"|`(?:[^`]|``)*`)
    | (?P<string>(?:[eEnNbB]|_[A-Za-z0-9]+)?'(?:[^'\\]|\\.|'')*'
                 |\$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$)
    | (?P<hex>\b[xX]'[0-9a-fA-F]*'|\b0[xX][0-9a-fA-F]+\b)
    | (?P<number>(?<![\w$.])(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![\w$]))
    | (?P<space>\s+)
    """,
    re.VERBOSE | re.DOTALL,
)
# After folding: a parenthesized list of folded values ("IN (?, ?, ?)",
# "VALUES (?, ?), (?, ?)") is one statement whatever its length.
_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")
_ROWS = re.compile(r"\(\?\)(?:\s*,\s*\(\?\))+")


def _fold(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind == "space":
        return " "
    if kind == "comment":
        return " "
    if kind == "quoted_ident":
        return match.group(0)
    return "?"


def _normalize(sql: str) -> str:
    text = _TOKENS.sub(_fold, sql).strip()
    text = _LIST.sub("(?)", text)
    text = _ROWS.sub("(?)", text)
    return text[:MAX_TEXT]


_normalize_cached = functools.lru_cache(maxsize=1024)(_normalize)


def normalize(sql: str) -> str:
    """``sql`` with literals folded to ``?``, comments dropped and whitespace
    collapsed; lists of literals become one ``?``."""
    if len(sql) > _CACHED_SQL:
        return _normalize(sql)
    return _normalize_cached(sql)


def _bucket(seconds: float) -> int:
    if seconds <= _SMALLEST:
        return 0
    return min(int(math.log(seconds / _SMALLEST) / _LOG_GROWTH) + 1, _BUCKETS - 1)


def _bucket_value(index: int) -> float:
    """The geometric middle of a bucket, in seconds."""
    if index == 0:
        return _SMALLEST
    low = _SMALLEST * _GROWTH ** (index - 1)
    return low * math.sqrt(_GROWTH)


class StatementEntry:
    """One statement's counters."""

    __slots__ = (
        "calls",
        "database",
        "errors",
        "errors_by_reason",
        "histogram",
        "last_seen",
        "rows",
        "text",
        "total_time",
    )

    def __init__(self, database: str, text: str) -> None:
        self.database = database
        self.text = text
        self.calls = 0
        self.errors = 0
        self.errors_by_reason: dict[str, int] = {}
        self.rows = 0
        self.total_time = 0.0
        self.histogram: dict[int, int] = {}
        #: Wall-clock seconds since the epoch.
        self.last_seen = 0.0

    @property
    def mean_time(self) -> float:
        return self.total_time / self.calls if self.calls else 0.0

    def percentile(self, fraction: float) -> float:
        """The execution time below which ``fraction`` of the executions fell."""
        if not self.calls:
            return 0.0
        rank = math.ceil(fraction * self.calls)
        seen = 0
        for index in sorted(self.histogram):
            seen += self.histogram[index]
            if seen >= rank:
                return _bucket_value(index)
        return _bucket_value(max(self.histogram))  # pragma: no cover


@dataclass(frozen=True, slots=True)
class StatementSnapshot:
    """An entry's counters at one moment, detached from the live table."""

    database: str
    text: str
    calls: int
    errors: int
    errors_by_reason: dict[str, int]
    rows: int
    total_time: float
    mean_time: float
    p99_time: float
    last_seen: float


class StatementStatistics:
    """The gateway's statement table: at most ``capacity`` statements, least
    recently executed forgotten first."""

    __slots__ = ("_clock", "_entries", "capacity")

    def __init__(self, capacity: int, *, clock: Callable[[], float] = time.time) -> None:
        self.capacity = capacity
        self._clock = clock
        self._entries: collections.OrderedDict[tuple[str, str], StatementEntry] = (
            collections.OrderedDict()
        )

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[StatementEntry]:
        return iter(list(self._entries.values()))

    def record(
        self, database: str, sql: str, elapsed: float, rows: int, error: str | None = None
    ) -> None:
        """Counts one execution of ``sql`` on ``database``; ``error`` is the
        failure's reason, None when it succeeded."""
        if self.capacity <= 0:
            return
        key = (database, normalize(sql))
        entries = self._entries
        entry = entries.get(key)
        if entry is None:
            entry = entries[key] = StatementEntry(database, key[1])
            if len(entries) > self.capacity:
                entries.popitem(last=False)
        else:
            entries.move_to_end(key)
        entry.calls += 1
        entry.total_time += elapsed
        entry.rows += rows
        index = _bucket(elapsed)
        entry.histogram[index] = entry.histogram.get(index, 0) + 1
        entry.last_seen = self._clock()
        if error is not None:
            entry.errors += 1
            entry.errors_by_reason[error] = entry.errors_by_reason.get(error, 0) + 1

    def top(self, database: str = "", limit: int = 0) -> list[StatementSnapshot]:
        """The statements (of ``database``, or all) by total time, highest
        first; at most ``limit`` of them (0: all)."""
        chosen = [e for e in self._entries.values() if not database or e.database == database]
        chosen.sort(key=lambda e: (-e.total_time, e.database, e.text))
        if limit > 0:
            chosen = chosen[:limit]
        return [
            StatementSnapshot(
                database=e.database,
                text=e.text,
                calls=e.calls,
                errors=e.errors,
                errors_by_reason=dict(e.errors_by_reason),
                rows=e.rows,
                total_time=e.total_time,
                mean_time=e.mean_time,
                p99_time=e.percentile(0.99),
                last_seen=e.last_seen,
            )
            for e in chosen
        ]

    def reset(self, database: str = "") -> int:
        """Forgets the statements of ``database`` (all when empty); returns how many."""
        if not database:
            removed = len(self._entries)
            self._entries.clear()
            return removed
        doomed = [key for key in self._entries if key[0] == database]
        for key in doomed:
            del self._entries[key]
        return len(doomed)
