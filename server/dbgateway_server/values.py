"""Driver values <-> ``dbgateway.v1.Value``, both directions, per engine.

Outbound (rows) is the hot loop: a converter is chosen once per column from
the column's type, and turns one driver value into one ``Value``. Columns whose
type we do not know fall back to :func:`from_python`, which dispatches on the
Python type of each value.

Inbound (parameters) is per value: the caller picked the kind, the engine
decides what Python object its driver binds.
"""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import json
import math
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf import timestamp_pb2

from dbgateway.v1 import value_pb2

from .errors import GatewayError, Reason, invalid_parameter

Value = value_pb2.Value
Column = value_pb2.Column
Row = value_pb2.Row
ColumnBatch = value_pb2.ColumnBatch
Converter = Callable[[Any], value_pb2.Value]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
#: Deepest list nesting accepted in a parameter (PostgreSQL allows 6 dimensions).
MAX_LIST_DEPTH = 6

NULL = Value(null_value="NULL_VALUE")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_UTC = dt.UTC


# ---------------------------------------------------------------------------
# Outbound: Python -> Value
# ---------------------------------------------------------------------------


def _int(v: int) -> value_pb2.Value:
    if INT64_MIN <= v <= INT64_MAX:
        return Value(int_value=v)
    if 0 <= v <= UINT64_MAX:
        return Value(uint_value=v)
    return Value(decimal_value=str(v))


def _uint(v: int) -> value_pb2.Value:
    return Value(uint_value=v) if v >= 0 else Value(int_value=v)


def _bool(v: Any) -> value_pb2.Value:
    return Value(bool_value=bool(v))


def _float(v: float) -> value_pb2.Value:
    return Value(double_value=v)


def _str(v: str) -> value_pb2.Value:
    return Value(string_value=v)


def _bytes(v: bytes | bytearray | memoryview) -> value_pb2.Value:
    return Value(bytes_value=bytes(v))


def decimal_text(v: decimal.Decimal) -> str:
    """Exact text for a Decimal, never in exponent form ("1E-7" -> "0.0000001").

    ``str`` gives the same text as ``format(v, "f")`` whenever it has no
    exponent (it writes one only beyond the plain form's range), at a third of
    the cost; the rest are formatted."""
    if type(v) is decimal.Decimal:
        text = str(v)
        if "E" not in text and "e" not in text:
            return text
    return format(v, "f")


def _decimal(v: decimal.Decimal) -> value_pb2.Value:
    return Value(decimal_value=decimal_text(v))


def timestamp_of(v: dt.datetime) -> timestamp_pb2.Timestamp:
    """An aware datetime as a protobuf Timestamp (exact to the microsecond)."""
    delta = v - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000
    )


def _timestamp(v: dt.datetime) -> value_pb2.Value:
    if v.tzinfo is None:
        v = v.replace(tzinfo=_UTC)
    delta = v - _EPOCH
    # Filled in place from a dict: building a Timestamp first and copying it
    # into the Value costs three times as much, on every timestamp of a result.
    return Value(
        timestamp_value={
            "seconds": delta.days * 86400 + delta.seconds,
            "nanos": delta.microseconds * 1000,
        }
    )


def _datetime(v: dt.datetime) -> value_pb2.Value:
    return Value(datetime_value=v.isoformat())


def _date(v: dt.date) -> value_pb2.Value:
    return Value(date_value=v.isoformat())


def _time(v: dt.time) -> value_pb2.Value:
    return Value(time_value=v.isoformat())


def duration_text(v: dt.timedelta) -> str:
    """A MySQL TIME value (a signed duration) as ``[-]HH:MM:SS[.ffffff]``."""
    micros = (v.days * 86400 + v.seconds) * 1_000_000 + v.microseconds
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    seconds, fraction = divmod(micros, 1_000_000)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{sign}{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{text}.{fraction:06d}" if fraction else text


def _duration_as_time(v: dt.timedelta) -> value_pb2.Value:
    return Value(time_value=duration_text(v))


def _timedelta_interval(v: dt.timedelta) -> value_pb2.Value:
    return Value(
        interval_value=value_pb2.Interval(
            days=v.days, microseconds=v.seconds * 1_000_000 + v.microseconds
        )
    )


def _interval_tuple(v: tuple[int, int, int]) -> value_pb2.Value:
    months, days, micros = v
    return Value(interval_value={"months": months, "days": days, "microseconds": micros})


def _json(v: Any) -> value_pb2.Value:
    if isinstance(v, str):
        return Value(json_value=v)
    if isinstance(v, bytes | bytearray):
        return Value(json_value=bytes(v).decode())
    return Value(json_value=json.dumps(v))


def _uuid(v: Any) -> value_pb2.Value:
    return Value(uuid_value=str(v))


def _list_of(element: Converter) -> Converter:
    def convert(v: Any) -> value_pb2.Value:
        return Value(
            list_value=value_pb2.ListValue(values=[NULL if x is None else element(x) for x in v])
        )

    return convert


def _fallback_list(v: Sequence[Any]) -> value_pb2.Value:
    return Value(list_value=value_pb2.ListValue(values=[from_python(x) for x in v]))


_BY_PYTHON_TYPE: dict[type, Converter] = {
    bool: _bool,
    int: _int,
    float: _float,
    str: _str,
    bytes: _bytes,
    bytearray: _bytes,
    memoryview: _bytes,
    decimal.Decimal: _decimal,
    dt.date: _date,
    dt.time: _time,
    dt.timedelta: _timedelta_interval,
    uuid.UUID: _uuid,
    list: _fallback_list,
    tuple: _fallback_list,
    dict: _json,
}


def from_python(v: Any) -> value_pb2.Value:
    """Any driver value -> Value, by its Python type (the slow, general path)."""
    if v is None:
        return NULL
    conv = _BY_PYTHON_TYPE.get(type(v))
    if conv is not None:
        return conv(v)
    if isinstance(v, dt.datetime):
        return _timestamp(v) if v.tzinfo is not None else _datetime(v)
    for base, conv in _BY_PYTHON_TYPE.items():
        if isinstance(v, base):
            return conv(v)
    name = type(v).__name__
    if isinstance(v, uuid.UUID) or name == "UUID":
        return _uuid(v)
    by_name = _BY_DRIVER_TYPE_NAME.get(name)
    if by_name is not None and type(v).__module__.startswith("asyncpg"):
        return by_name(v)
    if isinstance(
        v,
        ipaddress.IPv4Address
        | ipaddress.IPv6Address
        | ipaddress.IPv4Network
        | ipaddress.IPv6Network
        | ipaddress.IPv4Interface
        | ipaddress.IPv6Interface,
    ):
        return _net(v)
    # Never str() of an object: a repr is not a value anyone can use or write back.
    raise GatewayError(
        Reason.UNSUPPORTED, f"the gateway has no Value kind for {type(v).__module__}.{name}"
    )


def nullable(conv: Converter) -> Converter:
    """Wraps a column converter: NULL passes through, and a value of a shape the
    converter did not expect (MySQL's zero dates come back as text) falls back to
    :func:`from_python` instead of failing the whole result."""

    def convert(v: Any) -> value_pb2.Value:
        if v is None:
            return NULL
        try:
            return conv(v)
        except (TypeError, ValueError, AttributeError):
            return from_python(v)

    convert.strict = conv  # type: ignore[attr-defined]  # see convert_rows
    return convert


def convert_rows(
    records: Sequence[Sequence[Any]], converters: Sequence[Converter]
) -> list[value_pb2.Row]:
    """Driver rows -> ``Row`` messages with one converter per column.

    The fast path calls each column's converter directly (NULLs inline, no
    wrapper call and no try block per value); should a value of an unexpected
    shape make one fail, the batch is converted again through the
    :func:`nullable` wrappers, which fall back per value."""
    strict = list(enumerate(getattr(conv, "strict", conv) for conv in converters))
    try:
        if len(strict) == 1:
            ((_, only),) = strict
            return [Row(values=[NULL if r[0] is None else only(r[0])]) for r in records]
        return [
            Row(values=[NULL if (v := r[i]) is None else conv(v) for i, conv in strict])
            for r in records
        ]
    except (TypeError, ValueError, AttributeError):
        pairs = list(enumerate(converters))
        return [Row(values=[conv(r[i]) for i, conv in pairs]) for r in records]


# -- Columnar encoding (RESULT_ENCODING_COLUMNS) ------------------------------

#: The ``ColumnValues`` list a column of simple values travels in, by the
#: column's converter: decided once per column from the same type information
#: the row encoding uses. Only converters that put a driver value into the
#: ``Value`` unchanged are listed, so the typed list holds what ``Value``
#: would hold.
_KIND_BY_CONVERTER: dict[Any, str] = {
    _int: "ints",
    _float: "doubles",
    _str: "strings",
    _bytes: "bytes",
    _bool: "bools",
}
#: Columns whose values are converted by their Python type (SQLite, unknown
#: types): the list is chosen per batch, when every value has the same type.
BY_PYTHON_TYPE = "python"
#: Every other column: ``values``, one ``Value`` each, as the row encoding sends it.
AS_VALUES = "values"
_KIND_BY_PYTHON_TYPE: dict[type, str] = {
    int: "ints",
    float: "doubles",
    str: "strings",
    bytes: "bytes",
    bool: "bools",
}


def _micros_since_epoch(values: Sequence[dt.datetime]) -> list[int]:
    """Aware datetimes -> microseconds since the epoch, exactly. A naive one
    raises TypeError: PostgreSQL's ±infinity (asyncpg's naive max/min), sent
    as ``values`` instead, as the row encoding sends it."""
    out = []
    epoch = _EPOCH
    for v in values:
        d = v - epoch
        out.append((d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds)
    return out


def _micros_assuming_utc(values: Sequence[dt.datetime]) -> list[int]:
    # MySQL TIMESTAMP: naive, in the session's time zone, which is UTC (_timestamp).
    return _micros_since_epoch([v if v.tzinfo else v.replace(tzinfo=_UTC) for v in values])


#: Kind given to MySQL's TIMESTAMP columns (naive UTC values).
_UTC_TIMESTAMPS = "utc timestamps"
#: Column kind -> (its ``ColumnValues`` list, the values of that list from the
#: driver's values), for the kinds whose list does not take the driver's
#: values themselves. A packer raises TypeError or ValueError for a value
#: that does not fit (the column then goes as ``values``).
_PACKERS: dict[str, tuple[str, Callable[[Sequence[Any]], list[Any]]]] = {
    "decimals": ("decimals", lambda values: [decimal_text(v) for v in values]),
    "timestamps": ("timestamps", _micros_since_epoch),
    _UTC_TIMESTAMPS: ("timestamps", _micros_assuming_utc),
}


def column_kind(converter: Converter, *, v2: bool = False) -> str:
    """Which ``ColumnValues`` list a column with this converter travels in
    (``v2``: in RESULT_ENCODING_COLUMNS_V2, which packs more types)."""
    if converter is from_python:
        return BY_PYTHON_TYPE
    strict = getattr(converter, "strict", converter)
    if v2:
        return _V2_KIND_BY_CONVERTER.get(strict, AS_VALUES)
    return _KIND_BY_CONVERTER.get(strict, AS_VALUES)


def column_kinds(converters: Sequence[Converter], *, v2: bool = False) -> list[str]:
    return [column_kind(conv, v2=v2) for conv in converters]


def pack_columns(
    records: Sequence[Sequence[Any]], converters: Sequence[Converter], kinds: Sequence[str]
) -> value_pb2.ColumnBatch:
    """Driver rows -> one ``ColumnBatch`` (see :func:`column_kinds`).

    A typed list is filled in one ``extend`` (C speed); should a value not fit
    it (a type the column was not expected to give, an integer beyond int64),
    the column falls back to ``values``, converted exactly as the row encoding
    converts them, so the two encodings always carry the same values."""
    batch = ColumnBatch(row_count=len(records))
    add = batch.columns.add
    for i, (conv, kind) in enumerate(zip(converters, kinds, strict=True)):
        column = add()
        values = [r[i] for r in records]
        if None in values:
            column.null_indexes.extend([j for j, v in enumerate(values) if v is None])
            values = [v for v in values if v is not None]
        if not values:
            continue
        if kind == BY_PYTHON_TYPE:
            first = type(values[0])
            same = all(type(v) is first for v in values)
            kind = _KIND_BY_PYTHON_TYPE.get(first, AS_VALUES) if same else AS_VALUES
        if kind != AS_VALUES:
            packed = _PACKERS.get(kind)
            field = kind if packed is None else packed[0]
            try:
                getattr(column, field).extend(values if packed is None else packed[1](values))
                continue
            except (TypeError, ValueError, AttributeError):
                column.ClearField(field)
        # As convert_rows does: the column's converter itself, and through its
        # nullable() wrapper (which falls back per value) only if one failed.
        strict = getattr(conv, "strict", conv)
        try:
            converted = [strict(v) for v in values]
        except (TypeError, ValueError, AttributeError):
            converted = [conv(v) for v in values]
        column.values.extend(converted)
    return batch


# -- PostgreSQL (asyncpg) column types ---------------------------------------

#: PostgreSQL's text for the infinite dates and timestamps, which asyncpg
#: reads as (and writes from) the largest and smallest Python values.
PG_INFINITY = "infinity"
PG_NEGATIVE_INFINITY = "-infinity"
_DATETIME_INFINITIES = {dt.datetime.max: PG_INFINITY, dt.datetime.min: PG_NEGATIVE_INFINITY}
_DATE_INFINITIES = {dt.date.max: PG_INFINITY, dt.date.min: PG_NEGATIVE_INFINITY}


_INFINITE_DATETIMES = {text: value for value, text in _DATETIME_INFINITIES.items()}
_INFINITE_DATES = {text: value for value, text in _DATE_INFINITIES.items()}


def _pg_timestamptz(v: dt.datetime) -> value_pb2.Value:
    # asyncpg gives ±infinity as a naive datetime.max/min; every real instant is aware.
    if v.tzinfo is None and v in _DATETIME_INFINITIES:
        return Value(datetime_value=_DATETIME_INFINITIES[v])
    return _timestamp(v)


def _pg_timestamp(v: dt.datetime) -> value_pb2.Value:
    special = _DATETIME_INFINITIES.get(v) if v.year in (1, 9999) else None
    return Value(datetime_value=special or v.isoformat())


def _pg_date(v: dt.date) -> value_pb2.Value:
    special = _DATE_INFINITIES.get(v) if v.year in (1, 9999) else None
    return Value(date_value=special or v.isoformat())


#: What RESULT_ENCODING_COLUMNS_V2 adds to the columnar lists (see
#: :func:`column_kind`): decimals and instants, each value in the form its
#: ``Value`` would carry it (see _PACKERS).
_V2_KIND_BY_CONVERTER: dict[Any, str] = {
    **_KIND_BY_CONVERTER,
    _decimal: "decimals",
    _pg_timestamptz: "timestamps",
    _timestamp: _UTC_TIMESTAMPS,  # MySQL TIMESTAMP
}


def _bits(v: Any) -> value_pb2.Value:
    # asyncpg's BitString: its as_string() groups the bits by 8 with spaces.
    return Value(string_value=v.as_string().replace(" ", ""))


_QUOTE_IN_BOUND = re.compile(r'[\s,()\[\]"\\]')


def _range_bound(v: Any) -> str:
    if isinstance(v, dt.datetime):
        text = _DATETIME_INFINITIES.get(v) or v.isoformat(sep=" ")
    elif isinstance(v, dt.date):
        text = _DATE_INFINITIES.get(v) or v.isoformat()
    elif isinstance(v, decimal.Decimal):
        text = decimal_text(v)
    else:
        text = str(v)  # int, or a user-defined range's own element text
    if _QUOTE_IN_BOUND.search(text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def range_text(v: Any) -> str:
    """An asyncpg Range in PostgreSQL's range text form (``[1,5)``, ``empty``)."""
    if v.isempty:
        return "empty"
    lower = "" if v.lower_inf or v.lower is None else _range_bound(v.lower)
    upper = "" if v.upper_inf or v.upper is None else _range_bound(v.upper)
    return f"{'[' if v.lower_inc else '('}{lower},{upper}{']' if v.upper_inc else ')'}"


def _range(v: Any) -> value_pb2.Value:
    return Value(string_value=range_text(v))


def _multirange(v: Sequence[Any]) -> value_pb2.Value:
    return Value(string_value="{" + ",".join(range_text(r) for r in v) + "}")


def _coordinate(v: float) -> str:
    return repr(float(v))


def _point_text(p: Sequence[float]) -> str:
    return f"({_coordinate(p[0])},{_coordinate(p[1])})"


def _geometry(v: Any) -> value_pb2.Value:
    """asyncpg's geometric types in PostgreSQL's text form."""
    name = type(v).__name__
    if name == "Point":
        text = _point_text(v)
    elif name == "Box":
        text = f"{_point_text(v.high)},{_point_text(v.low)}"
    elif name == "LineSegment":
        text = f"[{_point_text(v.p1)},{_point_text(v.p2)}]"
    elif name == "Line":
        text = "{" + ",".join(_coordinate(c) for c in v) + "}"
    elif name == "Circle":
        text = f"<{_point_text(v.center)},{_coordinate(v.radius)}>"
    elif name in ("Path", "Polygon"):
        points = ",".join(_point_text(p) for p in v.points)
        text = f"({points})" if v.is_closed or name == "Polygon" else f"[{points}]"
    else:
        raise TypeError(f"not a geometric value: {name}")
    return Value(string_value=text)


def _net(v: Any) -> value_pb2.Value:
    # ipaddress objects print as PostgreSQL prints inet and cidr.
    return Value(string_value=str(v))


def _snapshot(v: tuple[int, int, Sequence[int]]) -> value_pb2.Value:
    xmin, xmax, running = v
    return Value(string_value=f"{xmin}:{xmax}:{','.join(str(x) for x in running)}")


def _tid(v: tuple[int, int]) -> value_pb2.Value:
    return Value(string_value=f"({v[0]},{v[1]})")


def _lsn(v: int) -> value_pb2.Value:
    return Value(string_value=f"{v >> 32:X}/{v & 0xFFFFFFFF:X}")


#: asyncpg's objects of no builtin Python type, by class name.
_BY_DRIVER_TYPE_NAME: dict[str, Converter] = {
    "BitString": _bits,
    "Range": _range,
    "Point": _geometry,
    "Box": _geometry,
    "Line": _geometry,
    "LineSegment": _geometry,
    "Path": _geometry,
    "Polygon": _geometry,
    "Circle": _geometry,
    "Record": lambda v: Value(
        list_value=value_pb2.ListValue(values=[from_python(x) for x in v.values()])
    ),
}


_PG_CONVERTERS: dict[str, Converter] = {
    "bool": _bool,
    "int2": _int,
    "int4": _int,
    "int8": _int,
    "oid": _int,
    "xid": _int,
    "float4": _float,
    "float8": _float,
    "numeric": _decimal,
    "money": _str,
    "text": _str,
    "varchar": _str,
    "bpchar": _str,
    "char": _str,
    "name": _str,
    "citext": _str,
    "xml": _str,
    "bytea": _bytes,
    "date": _pg_date,
    "time": _time,
    "timetz": _time,
    "timestamp": _pg_timestamp,
    "timestamptz": _pg_timestamptz,
    "interval": _interval_tuple,
    "json": _json,
    "jsonb": _json,
    "jsonpath": _str,
    "uuid": _uuid,
    "bit": _bits,
    "varbit": _bits,
    "int4range": _range,
    "int8range": _range,
    "numrange": _range,
    "daterange": _range,
    "tsrange": _range,
    "tstzrange": _range,
    "int4multirange": _multirange,
    "int8multirange": _multirange,
    "nummultirange": _multirange,
    "datemultirange": _multirange,
    "tsmultirange": _multirange,
    "tstzmultirange": _multirange,
    "point": _geometry,
    "line": _geometry,
    "lseg": _geometry,
    "box": _geometry,
    "path": _geometry,
    "polygon": _geometry,
    "circle": _geometry,
    "inet": _net,
    "cidr": _net,
    "macaddr": _str,
    "macaddr8": _str,
    "cid": _int,
    "xid8": _int,
    "pg_lsn": _lsn,
    "pg_snapshot": _snapshot,
    "txid_snapshot": _snapshot,
    "tid": _tid,
    "tsvector": _str,
    "tsquery": _str,
    "refcursor": _str,
    "aclitem": _str,
    "regclass": _str,
    "regcollation": _str,
    "regconfig": _str,
    "regdictionary": _str,
    "regnamespace": _str,
    "regoper": _str,
    "regoperator": _str,
    "regproc": _str,
    "regprocedure": _str,
    "regrole": _str,
    "regtype": _str,
    "int2vector": _str,
    "oidvector": _str,
    # Read by asyncpg as text; PostgreSQL refuses them as input (no round trip).
    "pg_node_tree": _str,
    "pg_ndistinct": _str,
    "pg_dependencies": _str,
    "pg_mcv_list": _str,
    "pg_brin_bloom_summary": _str,
    "pg_brin_minmax_multi_summary": _str,
    "gtsvector": _str,
}
#: Types of no fixed name, by their kind (user-defined ranges and multiranges).
_PG_CONVERTERS_BY_KIND: dict[str, Converter] = {"range": _range, "multirange": _multirange}


def pg_converter(type_name: str, kind: str) -> Converter:
    """The converter for a PostgreSQL column of type ``type_name`` (pg_type.typname)."""
    conv = _PG_CONVERTERS.get(type_name) or _PG_CONVERTERS_BY_KIND.get(kind)
    if conv is not None:
        return nullable(conv)
    if kind == "array":
        # asyncpg names an array type after its element ("jsonb[]"); the
        # catalog's own name is "_jsonb".
        array_suffix = type_name.endswith("[]")
        element_name = type_name[:-2] if array_suffix else type_name.removeprefix("_")
        element = _PG_CONVERTERS.get(element_name)
        return nullable(_list_of(_nested(element or from_python)))
    # Enums, domains and extension types: asyncpg decodes them as their base
    # type or as text, so their Python type decides.
    return from_python


def pg_converter_is_deliberate(type_name: str, kind: str) -> bool:
    """Whether a PostgreSQL type has a converter of its own (not the
    by-Python-type fallback), for the type walk's test."""
    if type_name.endswith("[]"):
        type_name, kind = type_name[:-2], "scalar"
    return type_name in _PG_CONVERTERS or kind in _PG_CONVERTERS_BY_KIND


def _nested(element: Converter) -> Converter:
    # Multi-dimensional arrays arrive as nested lists.
    def convert(v: Any) -> value_pb2.Value:
        if isinstance(v, list):
            return _list_of(convert)(v)
        return element(v)

    return convert


# -- MySQL / MariaDB (PyMySQL field types) -----------------------------------

_MYSQL_TYPE_NAMES: dict[int, str] = {
    0: "DECIMAL",
    1: "TINYINT",
    2: "SMALLINT",
    3: "INT",
    4: "FLOAT",
    5: "DOUBLE",
    6: "NULL",
    7: "TIMESTAMP",
    8: "BIGINT",
    9: "MEDIUMINT",
    10: "DATE",
    11: "TIME",
    12: "DATETIME",
    13: "YEAR",
    14: "DATE",
    15: "VARCHAR",
    16: "BIT",
    245: "JSON",
    246: "DECIMAL",
    247: "ENUM",
    248: "SET",
    249: "TINYBLOB",
    250: "MEDIUMBLOB",
    251: "LONGBLOB",
    252: "BLOB",
    253: "VARCHAR",
    254: "CHAR",
    255: "GEOMETRY",
}
_MYSQL_TEXT_NAMES = {
    "TINYBLOB": "TINYTEXT",
    "MEDIUMBLOB": "MEDIUMTEXT",
    "LONGBLOB": "LONGTEXT",
    "BLOB": "TEXT",
}
_MYSQL_BINARY_NAMES = {"VARCHAR": "VARBINARY", "CHAR": "BINARY"}
MYSQL_BINARY_CHARSET = 63
MYSQL_UNSIGNED_FLAG = 32


def mysql_column(type_code: int, flags: int, charsetnr: int) -> tuple[str, Converter]:
    """(db_type, converter) for a MySQL/MariaDB result field."""
    name = _MYSQL_TYPE_NAMES.get(type_code, f"TYPE_{type_code}")
    binary = charsetnr == MYSQL_BINARY_CHARSET
    unsigned = bool(flags & MYSQL_UNSIGNED_FLAG)
    conv: Converter
    if type_code in (1, 2, 3, 9, 13):
        conv = _int
    elif type_code == 8:
        conv = _uint if unsigned else _int
    elif type_code in (0, 246):
        conv = _decimal
    elif type_code in (4, 5):
        conv = _float
    elif type_code == 7:
        conv = _timestamp  # the session time zone is UTC, so this is the instant
    elif type_code == 12:
        conv = _datetime
    elif type_code in (10, 14):
        conv = _date
    elif type_code == 11:
        conv = _duration_as_time
    elif type_code == 245:
        conv = _json
    elif type_code in (16, 255):
        conv = _bytes
    elif binary:
        conv = _bytes
        name = _MYSQL_BINARY_NAMES.get(name, name)
    else:
        conv = _str
        name = _MYSQL_TEXT_NAMES.get(name, name)
    if unsigned and type_code in (1, 2, 3, 8, 9, 0, 246, 4, 5):
        name += " UNSIGNED"
    return name, nullable(conv)


# ---------------------------------------------------------------------------
# Inbound: Value -> Python, per engine
# ---------------------------------------------------------------------------

_TIME_RE = re.compile(r"^(-)?(\d+):(\d{2}):(\d{2})(?:\.(\d{1,6}))?$")


#: Most digits a decimal parameter may have written out in full (what the
#: engines store: PostgreSQL's numeric keeps at most 16,383 digits after the
#: point, MySQL's DECIMAL 65 in all). A bound on the written-out form, not on
#: the text: "1E+300000000" is 12 characters but 300 million digits, and
#: expanding it would stall every call on the event loop.
MAX_DECIMAL_DIGITS = 16_383


def _parse_decimal(text: str, index: int) -> decimal.Decimal:
    if len(text) > MAX_DECIMAL_DIGITS + 16:  # sign, point, exponent: never parse a huge text
        raise invalid_parameter(index, f"decimal_value has more than {MAX_DECIMAL_DIGITS} digits")
    try:
        value = decimal.Decimal(text)
    except decimal.InvalidOperation:
        raise invalid_parameter(
            index, f"decimal_value {text[:40]!r} is not a decimal number"
        ) from None
    if value.is_finite():
        _, digits, exponent = value.as_tuple()
        assert isinstance(exponent, int)
        written = len(digits) + exponent if exponent >= 0 else max(len(digits), -exponent)
        if written > MAX_DECIMAL_DIGITS:
            raise invalid_parameter(
                index,
                f"decimal_value {text[:40]!r} has {written} digits written out, "
                f"more than {MAX_DECIMAL_DIGITS}",
            )
    return value


def _parse_iso(parse: Callable[[str], Any], text: str, kind: str, index: int) -> Any:
    try:
        return parse(text)
    except ValueError:
        raise invalid_parameter(index, f"{kind} {text!r} is not ISO 8601") from None


def _parse_uuid(text: str, index: int) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise invalid_parameter(index, f"uuid_value {text!r} is not a UUID") from None


def _parse_duration(text: str, index: int) -> dt.timedelta:
    match = _TIME_RE.match(text)
    if match is None:
        raise invalid_parameter(index, f"time_value {text!r} is not [-]HH:MM:SS[.ffffff]")
    sign, h, m, s, frac = match.groups()
    delta = dt.timedelta(
        hours=int(h), minutes=int(m), seconds=int(s), microseconds=int((frac or "0").ljust(6, "0"))
    )
    return -delta if sign else delta


def _ts_to_datetime(ts: timestamp_pb2.Timestamp, index: int) -> dt.datetime:
    try:
        return _EPOCH + dt.timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)
    except OverflowError:
        raise invalid_parameter(index, "timestamp_value is out of range") from None


def _check_json(text: str, index: int) -> str:
    return text


class ParamDecoder:
    """Value -> the Python object one engine's driver binds. Subclassed per engine
    for the kinds the engine represents differently."""

    engine = "generic"

    def decode_all(self, params: Sequence[value_pb2.Value]) -> list[Any]:
        return [self.decode(p, i, 0) for i, p in enumerate(params)]

    def decode(self, v: value_pb2.Value, index: int, depth: int) -> Any:
        kind = v.WhichOneof("kind")
        if kind is None or kind == "null_value":
            return None
        if kind == "string_value":
            return v.string_value
        if kind == "int_value":
            return v.int_value
        if kind == "bool_value":
            return v.bool_value
        if kind == "double_value":
            return v.double_value
        if kind == "bytes_value":
            return v.bytes_value
        if kind == "uint_value":
            return self.uint(v.uint_value, index)
        if kind == "decimal_value":
            return self.decimal(_parse_decimal(v.decimal_value, index))
        if kind == "timestamp_value":
            return self.timestamp(_ts_to_datetime(v.timestamp_value, index))
        if kind == "datetime_value":
            return self.datetime(
                _parse_iso(dt.datetime.fromisoformat, v.datetime_value, "datetime_value", index)
            )
        if kind == "date_value":
            return self.date(_parse_iso(dt.date.fromisoformat, v.date_value, "date_value", index))
        if kind == "time_value":
            return self.time(v.time_value, index)
        if kind == "json_value":
            return self.json(v.json_value)
        if kind == "uuid_value":
            return self.uuid(_parse_uuid(v.uuid_value, index))
        if kind == "interval_value":
            i = v.interval_value
            return self.interval(i.months, i.days, i.microseconds, index)
        if kind == "list_value":
            if depth >= MAX_LIST_DEPTH:
                raise invalid_parameter(
                    index, f"list_value is nested deeper than {MAX_LIST_DEPTH} levels"
                )
            return self.list([self.decode(x, index, depth + 1) for x in v.list_value.values], index)
        raise invalid_parameter(index, f"unsupported value kind {kind}")  # pragma: no cover

    # Defaults suit drivers that understand the Python types directly.
    def uint(self, value: int, index: int) -> Any:
        return value

    def decimal(self, value: decimal.Decimal) -> Any:
        return value

    def timestamp(self, value: dt.datetime) -> Any:
        return value

    def datetime(self, value: dt.datetime) -> Any:
        return value

    def date(self, value: dt.date) -> Any:
        return value

    def time(self, text: str, index: int) -> Any:
        return _parse_iso(dt.time.fromisoformat, text, "time_value", index)

    def json(self, text: str) -> Any:
        return text

    def uuid(self, value: uuid.UUID) -> Any:
        return value

    def interval(self, months: int, days: int, micros: int, index: int) -> Any:
        if months:
            raise GatewayError(
                Reason.UNSUPPORTED,
                f"params[{index}]: {self.engine} has no interval type that keeps months",
            )
        return dt.timedelta(days=days, microseconds=micros)

    def list(self, items: list[Any], index: int) -> Any:
        raise GatewayError(Reason.UNSUPPORTED, f"params[{index}]: {self.engine} has no array type")


class PostgresParams(ParamDecoder):
    engine = "PostgreSQL"

    def decode(self, v: value_pb2.Value, index: int, depth: int) -> Any:
        kind = v.WhichOneof("kind")
        # ±infinity as asyncpg binds it: the largest and smallest Python values.
        if kind == "datetime_value" and v.datetime_value in _INFINITE_DATETIMES:
            return _INFINITE_DATETIMES[v.datetime_value]
        if kind == "date_value" and v.date_value in _INFINITE_DATES:
            return _INFINITE_DATES[v.date_value]
        return super().decode(v, index, depth)

    def interval(self, months: int, days: int, micros: int, index: int) -> Any:
        # Bound with the tuple interval codec, which keeps the three parts exact.
        return (months, days, micros)

    def list(self, items: list[Any], index: int) -> Any:
        return items


class MySQLParams(ParamDecoder):
    engine = "MySQL"

    def decode(self, v: value_pb2.Value, index: int, depth: int) -> Any:
        if v.WhichOneof("kind") == "double_value" and not math.isfinite(v.double_value):
            raise invalid_parameter(
                index, f"double_value {v.double_value}: MySQL stores no NaN or infinity"
            )
        return super().decode(v, index, depth)

    def uint(self, value: int, index: int) -> Any:
        return value

    def timestamp(self, value: dt.datetime) -> Any:
        # The session time zone is UTC: a naive UTC datetime is the instant.
        return value.astimezone(_UTC).replace(tzinfo=None)

    def datetime(self, value: dt.datetime) -> Any:
        if value.tzinfo is not None:
            return value.astimezone(_UTC).replace(tzinfo=None)
        return value

    def time(self, text: str, index: int) -> Any:
        # MySQL TIME is a signed duration up to 838 hours.
        return _parse_duration(text, index)

    def uuid(self, value: uuid.UUID) -> Any:
        return str(value)


class SQLiteParams(ParamDecoder):
    """SQLite stores INTEGER, REAL, TEXT and BLOB: richer kinds become exact text."""

    engine = "SQLite"

    def decode(self, v: value_pb2.Value, index: int, depth: int) -> Any:
        kind = v.WhichOneof("kind")
        if kind == "bool_value":
            return int(v.bool_value)
        if kind == "double_value" and math.isnan(v.double_value):
            # SQLite would store NULL in its place, silently.
            raise invalid_parameter(index, "double_value NaN: SQLite stores NaN as NULL")
        return super().decode(v, index, depth)

    def uint(self, value: int, index: int) -> Any:
        if value > INT64_MAX:
            raise invalid_parameter(index, "SQLite integers are signed 64-bit; value is too large")
        return value

    def decimal(self, value: decimal.Decimal) -> Any:
        return decimal_text(value)

    def timestamp(self, value: dt.datetime) -> Any:
        return value.isoformat()

    def datetime(self, value: dt.datetime) -> Any:
        return value.isoformat()

    def date(self, value: dt.date) -> Any:
        return value.isoformat()

    def time(self, text: str, index: int) -> Any:
        return str(super().time(text, index).isoformat())

    def uuid(self, value: uuid.UUID) -> Any:
        return str(value)

    def interval(self, months: int, days: int, micros: int, index: int) -> Any:
        raise GatewayError(Reason.UNSUPPORTED, f"params[{index}]: SQLite has no interval type")


POSTGRES_PARAMS = PostgresParams()
MYSQL_PARAMS = MySQLParams()
SQLITE_PARAMS = SQLiteParams()
