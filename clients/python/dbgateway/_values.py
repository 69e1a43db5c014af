"""Python values <-> ``dbgateway.v1.Value``, both directions.

The mirror of the server's ``values.py``: parameters go out by their Python
type, result values come back by their ``Value`` kind (and, for the one kind
that is ambiguous, by the column's engine type)::

    None              <-> null_value
    bool              <-> bool_value
    int               <-> int_value (int64), uint_value above int64
    float             <-> double_value
    str               <-> string_value
    bytes             <-> bytes_value (bytearray, memoryview go out too)
    Decimal           <-> decimal_value (exact text)
    aware datetime    <-> timestamp_value (an instant; comes back in UTC)
    naive datetime    <-> datetime_value ("infinity" / "-infinity" <-> datetime.max / min)
    date              <-> date_value ("infinity" / "-infinity" <-> date.max / min)
    time              <-> time_value (MySQL TIME columns come back as timedelta)
    UUID              <-> uuid_value
    timedelta         <-> interval_value (months == 0)
    Interval          <-> interval_value (months != 0)
    dict, Json(x)     <-> json_value (parsed on the way back)
    list, tuple       <-> list_value (arrays; comes back as list)
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import timestamp_pb2

from .v1 import value_pb2

__all__ = ["Interval", "Json", "from_column_batch", "from_value", "to_value", "to_values"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1

_UTC = dt.UTC
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=_UTC)
_NULL = value_pb2.Value(null_value="NULL_VALUE")

#: MySQL/MariaDB report TIME under this engine type name; it is a signed
#: duration (up to 838 hours, may be negative), so it reads back as timedelta.
MYSQL_TIME_TYPE = "TIME"


@dataclass(frozen=True, slots=True)
class Interval:
    """A PostgreSQL interval that :class:`datetime.timedelta` cannot hold
    (it has months, whose length depends on the date)."""

    months: int = 0
    days: int = 0
    microseconds: int = 0


@dataclass(frozen=True, slots=True)
class Json:
    """Sends ``value`` as JSON. Needed for a JSON array or scalar: a bare
    ``list`` is an SQL array and a bare ``str`` is text. A ``dict`` is JSON
    without this wrapper."""

    value: Any


# ---------------------------------------------------------------------------
# Python -> Value (parameters)
# ---------------------------------------------------------------------------


def _int(v: int) -> value_pb2.Value:
    if INT64_MIN <= v <= INT64_MAX:
        return value_pb2.Value(int_value=v)
    if 0 <= v <= UINT64_MAX:
        return value_pb2.Value(uint_value=v)
    # Beyond 64 bits only an exact decimal keeps it (for NUMERIC columns).
    return value_pb2.Value(decimal_value=str(v))


def _timestamp(v: dt.datetime) -> value_pb2.Value:
    delta = v - _EPOCH
    return value_pb2.Value(
        timestamp_value=timestamp_pb2.Timestamp(
            seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000
        )
    )


def _datetime(v: dt.datetime) -> value_pb2.Value:
    if v.utcoffset() is not None:
        return _timestamp(v)
    return value_pb2.Value(datetime_value=v.isoformat())


def _interval(v: dt.timedelta | Interval) -> value_pb2.Value:
    if isinstance(v, Interval):
        months, days, micros = v.months, v.days, v.microseconds
    else:
        months, days, micros = 0, v.days, v.seconds * 1_000_000 + v.microseconds
    return value_pb2.Value(
        interval_value=value_pb2.Interval(months=months, days=days, microseconds=micros)
    )


def _list(v: Iterable[Any]) -> value_pb2.Value:
    return value_pb2.Value(list_value=value_pb2.ListValue(values=[to_value(x) for x in v]))


def _json(v: Any) -> value_pb2.Value:
    if isinstance(v, Json):
        v = v.value
    try:
        return value_pb2.Value(json_value=json.dumps(v, ensure_ascii=False, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot send as JSON: {exc}") from None


_ENCODERS: dict[type, Callable[[Any], value_pb2.Value]] = {
    bool: lambda v: value_pb2.Value(bool_value=v),
    int: _int,
    float: lambda v: value_pb2.Value(double_value=v),
    str: lambda v: value_pb2.Value(string_value=v),
    bytes: lambda v: value_pb2.Value(bytes_value=v),
    bytearray: lambda v: value_pb2.Value(bytes_value=bytes(v)),
    memoryview: lambda v: value_pb2.Value(bytes_value=v.tobytes()),
    decimal.Decimal: lambda v: value_pb2.Value(decimal_value=format(v, "f")),
    dt.datetime: _datetime,
    dt.date: lambda v: value_pb2.Value(date_value=v.isoformat()),
    dt.time: lambda v: value_pb2.Value(time_value=v.isoformat()),
    dt.timedelta: _interval,
    Interval: _interval,
    uuid.UUID: lambda v: value_pb2.Value(uuid_value=str(v)),
    dict: _json,
    Json: _json,
    list: _list,
    tuple: _list,
}


def to_value(v: Any) -> value_pb2.Value:
    """One Python value as a ``Value``; ``TypeError`` names a type with no mapping."""
    if v is None:
        return _NULL
    encode = _ENCODERS.get(type(v))
    if encode is None:
        # Subclasses (IntEnum, a str subclass, ...) map like their base; bool
        # is listed before int so it is never taken for one.
        for base, candidate in _ENCODERS.items():
            if isinstance(v, base):
                encode = candidate
                break
        else:
            raise TypeError(
                f"dbgateway cannot send a value of type {type(v).__module__}."
                f"{type(v).__qualname__}; convert it to one of: None, bool, int, float, str, "
                "bytes, Decimal, datetime, date, time, timedelta, UUID, dict, Json, list"
            )
    return encode(v)


def to_values(params: Sequence[Any]) -> list[value_pb2.Value]:
    """Positional parameters as ``Value`` messages."""
    values = []
    for index, param in enumerate(params):
        try:
            values.append(to_value(param))
        except TypeError as exc:
            raise TypeError(f"parameter {index + 1}: {exc}") from None
    return values


# ---------------------------------------------------------------------------
# Value -> Python (results)
# ---------------------------------------------------------------------------

_DURATION = re.compile(r"^(-)?(\d+):(\d{2}):(\d{2})(?:\.(\d{1,6}))?$")


def _duration(text: str) -> dt.timedelta:
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"time_value {text!r} is not [-]HH:MM:SS[.ffffff]")
    sign, hours, minutes, seconds, fraction = match.groups()
    delta = dt.timedelta(
        hours=int(hours),
        minutes=int(minutes),
        seconds=int(seconds),
        microseconds=int((fraction or "0").ljust(6, "0")),
    )
    return -delta if sign else delta


def _time(text: str, db_type: str) -> dt.time | dt.timedelta:
    if db_type == MYSQL_TIME_TYPE:
        return _duration(text)
    try:
        return dt.time.fromisoformat(text)
    except ValueError:
        # A duration beyond a day or below zero from an engine we did not name.
        return _duration(text)


def _from_interval(i: value_pb2.Interval) -> dt.timedelta | Interval:
    if i.months:
        return Interval(i.months, i.days, i.microseconds)
    return dt.timedelta(days=i.days, microseconds=i.microseconds)


def _from_timestamp(ts: timestamp_pb2.Timestamp) -> dt.datetime:
    return _EPOCH + dt.timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def _from_list(v: value_pb2.Value, db_type: str) -> list[Any]:
    return [from_value(x, db_type) for x in v.list_value.values]


#: PostgreSQL's ±infinity dates and timestamps, as asyncpg reads (and
#: writes) them: the largest and smallest Python values.
_INFINITE_DATETIMES = {"infinity": dt.datetime.max, "-infinity": dt.datetime.min}
_INFINITE_DATES = {"infinity": dt.date.max, "-infinity": dt.date.min}

#: Value kind -> its Python object, one dict lookup per value.
_DECODERS: dict[str | None, Callable[[value_pb2.Value, str], Any]] = {
    None: lambda v, t: None,
    "null_value": lambda v, t: None,
    "string_value": lambda v, t: v.string_value,
    "int_value": lambda v, t: v.int_value,
    "double_value": lambda v, t: v.double_value,
    "bool_value": lambda v, t: v.bool_value,
    "bytes_value": lambda v, t: v.bytes_value,
    "uint_value": lambda v, t: v.uint_value,
    "decimal_value": lambda v, t: decimal.Decimal(v.decimal_value),
    "timestamp_value": lambda v, t: _from_timestamp(v.timestamp_value),
    "datetime_value": lambda v, t: (
        _INFINITE_DATETIMES.get(v.datetime_value) or dt.datetime.fromisoformat(v.datetime_value)
    ),
    "date_value": lambda v, t: (
        _INFINITE_DATES.get(v.date_value) or dt.date.fromisoformat(v.date_value)
    ),
    "time_value": lambda v, t: _time(v.time_value, t),
    "json_value": lambda v, t: json.loads(v.json_value),
    "uuid_value": lambda v, t: uuid.UUID(v.uuid_value),
    "interval_value": lambda v, t: _from_interval(v.interval_value),
    "list_value": _from_list,
}


def from_value(v: value_pb2.Value, db_type: str = "") -> Any:
    """A ``Value`` as its natural Python object. ``db_type`` is the column's
    engine type name; it only matters for MySQL TIME."""
    kind = v.WhichOneof("kind")
    decode = _DECODERS.get(kind)
    if decode is None:  # pragma: no cover - a newer server
        raise ValueError(f"unknown Value kind {kind!r}")
    return decode(v, db_type)


def from_row(values: Sequence[value_pb2.Value], db_types: Sequence[str]) -> tuple[Any, ...]:
    """One result row as a tuple of Python values."""
    decoders = _DECODERS
    try:
        return tuple(
            decoders[v.WhichOneof("kind")](v, t) for v, t in zip(values, db_types, strict=False)
        )
    except KeyError as exc:  # pragma: no cover - a newer server
        raise ValueError(f"unknown Value kind {exc.args[0]!r}") from None


def _column(column: value_pb2.ColumnValues, db_type: str) -> list[Any]:
    """The non-NULL values of one column of a ColumnBatch, in row order."""
    if column.ints:
        return list(column.ints)
    if column.doubles:
        return list(column.doubles)
    if column.strings:
        return list(column.strings)
    if column.bytes:
        return list(column.bytes)
    if column.bools:
        return list(column.bools)
    if column.decimals:
        return list(map(decimal.Decimal, column.decimals))
    if column.timestamps:
        epoch, micros = _EPOCH, dt.timedelta(microseconds=1)
        return [epoch + micros * us for us in column.timestamps]
    if column.values:
        decoders = _DECODERS
        try:
            return [decoders[v.WhichOneof("kind")](v, db_type) for v in column.values]
        except KeyError as exc:  # pragma: no cover - a newer server
            raise ValueError(f"unknown Value kind {exc.args[0]!r}") from None
    return []


def from_column_batch(
    batch: value_pb2.ColumnBatch, db_types: Sequence[str]
) -> list[tuple[Any, ...]]:
    """The rows of a ColumnBatch (the columnar encoding) as tuples of Python
    values: the same values the row encoding gives."""
    count = batch.row_count
    if not batch.columns:
        return [()] * count
    columns = []
    for column, db_type in zip(batch.columns, db_types, strict=True):
        values = _column(column, db_type)
        nulls = column.null_indexes
        if nulls:
            full: list[Any] = [None] * count
            null_rows = set(nulls)
            present = [i for i in range(count) if i not in null_rows]
            if len(present) != len(values):
                raise ValueError("a ColumnBatch column has the wrong number of values")
            for i, v in zip(present, values, strict=True):
                full[i] = v
            values = full
        elif len(values) != count:
            raise ValueError("a ColumnBatch column has the wrong number of values")
        columns.append(values)
    return list(zip(*columns, strict=True))
