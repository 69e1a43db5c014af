"""PostgreSQL's text forms of the types asyncpg binds only from its own
objects (bit strings, ranges, multiranges, geometric types), parsed for the
parameters that give them as ``string_value``. The outbound direction, the
same text forms, is in :mod:`..values`.

Which parameters need it is known from the prepared statement's parameter
types, so it is decided once per statement (:func:`coercions`) and costs
nothing for the others.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
from asyncpg.pgproto import types as pgtypes

from ..errors import invalid_parameter
from ..values import PG_INFINITY, PG_NEGATIVE_INFINITY

Parse = Callable[[str], Any]


def _datetime(text: str) -> dt.datetime:
    if text == PG_INFINITY:
        return dt.datetime.max
    if text == PG_NEGATIVE_INFINITY:
        return dt.datetime.min
    return dt.datetime.fromisoformat(text)


def _instant(text: str) -> dt.datetime:
    value = _datetime(text)
    if value.tzinfo is None and value not in (dt.datetime.max, dt.datetime.min):
        value = value.replace(tzinfo=dt.UTC)  # the gateway's sessions run in UTC
    return value


def _date(text: str) -> dt.date:
    if text == PG_INFINITY:
        return dt.date.max
    if text == PG_NEGATIVE_INFINITY:
        return dt.date.min
    return dt.date.fromisoformat(text)


#: Range type -> how its bounds are parsed.
RANGE_ELEMENTS: dict[str, Parse] = {
    "int4range": int,
    "int8range": int,
    "numrange": decimal.Decimal,
    "daterange": _date,
    "tsrange": _datetime,
    "tstzrange": _instant,
}
MULTIRANGES = {name.replace("range", "multirange"): name for name in RANGE_ELEMENTS}

_RANGE = re.compile(
    r'\s*([\[(])\s*("(?:[^"\\]|\\.)*"|[^,]*?)\s*,\s*("(?:[^"\\]|\\.)*"|[^\])]*?)\s*([\])])\s*'
)


def _bound(text: str, parse: Parse) -> Any:
    if not text:
        return None
    if text.startswith('"'):
        text = re.sub(r"\\(.)", r"\1", text[1:-1])
    return parse(text)


def parse_range(text: str, parse: Parse) -> asyncpg.Range:
    """``[1,5)``, ``(,10]``, ``empty`` -> an asyncpg Range."""
    if text.strip().lower() == "empty":
        return asyncpg.Range(empty=True)
    match = _RANGE.fullmatch(text)
    if match is None:
        raise ValueError("not a range: expected [lower,upper), (lower,upper], ... or empty")
    open_, lower, upper, close = match.groups()
    return asyncpg.Range(
        _bound(lower, parse),
        _bound(upper, parse),
        lower_inc=open_ == "[" and bool(lower),
        upper_inc=close == "]" and bool(upper),
    )


def _split_ranges(text: str) -> list[str]:
    """The ranges of a multirange's ``{...}`` text."""
    body = text.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise ValueError("not a multirange: expected {range, ...}")
    parts, depth, quoted, start = [], 0, False, 1
    for i, ch in enumerate(body[1:-1], 1):
        if ch == '"' and body[i - 1] != "\\":
            quoted = not quoted
        elif not quoted and ch in "[(":
            depth += 1
        elif not quoted and ch in "])":
            depth -= 1
        elif not quoted and ch == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    if body[start:-1].strip():
        parts.append(body[start:-1])
    return parts


def parse_multirange(text: str, parse: Parse) -> list[asyncpg.Range]:
    return [parse_range(part, parse) for part in _split_ranges(text)]


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:inf(?:inity)?|nan)", re.I)


def _numbers(text: str, count: int | None = None) -> list[float]:
    found = [float(n) for n in _NUMBER.findall(text)]
    if (
        not found
        or (count is not None and len(found) != count)
        or (len(found) % 2 and count is None)
    ):
        raise ValueError("wrong number of coordinates")
    return found


def _points(text: str) -> list[tuple[float, float]]:
    n = _numbers(text)
    return [(n[i], n[i + 1]) for i in range(0, len(n), 2)]


def _geometry(name: str) -> Parse:
    def parse(text: str) -> Any:
        if name == "point":
            return pgtypes.Point(*_numbers(text, 2))
        if name == "box":
            x1, y1, x2, y2 = _numbers(text, 4)
            return pgtypes.Box((x1, y1), (x2, y2))
        if name == "lseg":
            x1, y1, x2, y2 = _numbers(text, 4)
            return pgtypes.LineSegment((x1, y1), (x2, y2))
        if name == "line":
            return pgtypes.Line(*_numbers(text, 3))
        if name == "circle":
            x, y, r = _numbers(text, 3)
            return pgtypes.Circle((x, y), r)
        if name == "polygon":
            return pgtypes.Polygon(*_points(text))
        return pgtypes.Path(*_points(text), is_closed=not text.strip().startswith("["))

    return parse


def _bits(text: str) -> Any:
    if text.strip(" 01"):
        raise ValueError("a bit string has only 0 and 1")
    return asyncpg.BitString(text.replace(" ", ""))


def _parser(name: str, kind: str) -> Parse | None:
    """How a ``string_value`` for a parameter of this type becomes what
    asyncpg binds; None when asyncpg takes the text as it is."""
    if name in ("bit", "varbit"):
        return _bits
    if name in ("point", "box", "lseg", "line", "circle", "path", "polygon"):
        return _geometry(name)
    if name in RANGE_ELEMENTS:
        element = RANGE_ELEMENTS[name]
        return lambda text: parse_range(text, element)
    if name in MULTIRANGES:
        element = RANGE_ELEMENTS[MULTIRANGES[name]]
        return lambda text: parse_multirange(text, element)
    return None


def _coercion(name: str, kind: str) -> Callable[[Any], Any] | None:
    if kind == "array" and name.endswith("[]"):
        element = _coercion(name[:-2], "scalar")
        if element is None:
            return None
        inner = element

        def each(value: Any) -> Any:
            if isinstance(value, list):
                return [None if v is None else each(v) for v in value]
            return inner(value)

        return each
    parse = _parser(name, kind)
    if parse is None:
        return None
    chosen = parse

    def one(value: Any) -> Any:
        return chosen(value) if isinstance(value, str) else value

    return one


def coercions(parameter_types: Sequence[Any]) -> list[tuple[int, Callable[[Any], Any]]]:
    """(index, coercion) for each parameter given as text that asyncpg would
    not bind as text."""
    found = []
    for index, t in enumerate(parameter_types):
        coerce = _coercion(t.name, t.kind)
        if coerce is not None:
            found.append((index, coerce))
    return found


def apply(args: list[Any], plan: Sequence[tuple[int, Callable[[Any], Any]]]) -> list[Any]:
    """``args`` with the text of ``plan``'s parameters parsed; INVALID_PARAMETER
    naming the parameter when a text is not of its type's form."""
    for index, coerce in plan:
        value = args[index]
        if value is None:
            continue
        try:
            args[index] = coerce(value)
        except (ValueError, TypeError, decimal.InvalidOperation) as exc:
            raise invalid_parameter(index, f"{value!r:.60} is not valid here: {exc}") from None
    return args
