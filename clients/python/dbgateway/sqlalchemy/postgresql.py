"""``postgresql+dbgateway`` and ``postgresql+dbgateway_async``.

The gateway runs asyncpg against PostgreSQL, so these dialects compile SQL
exactly as SQLAlchemy's asyncpg dialect does (``$n`` placeholders with
rendered casts, so that the server's prepared statements infer the types the
values carry) and read values as asyncpg returns them (JSON already decoded,
arrays as lists, ``Decimal`` for numeric).
"""

from __future__ import annotations

import decimal
import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import types as sqltypes
from sqlalchemy.dialects.postgresql import BIT, JSON, JSONB, ranges
from sqlalchemy.dialects.postgresql.asyncpg import (
    AsyncpgCHAR,
    AsyncpgFloat,
    AsyncpgNumeric,
    PGCompiler_asyncpg,
    PGDialect_asyncpg,
    PGIdentifierPreparer_asyncpg,
)
from sqlalchemy.dialects.postgresql.base import PGDialect, PGExecutionContext
from sqlalchemy.engine import processors

from ._asyncio import AsyncGatewayDialectMixin
from ._base import GatewayDialectMixin, server_side_cursor

__all__ = ["PGDialectAsync_dbgateway", "PGDialect_dbgateway"]


_FLOAT_TYPES = frozenset({"float4", "float8", "_float4", "_float8"})
_EXACT_TYPES = frozenset({"numeric", "_numeric", "int2", "int4", "int8", "oid", "_int2", "_int4"})


def _numeric_result(numeric: Any, coltype: Any) -> Callable[[Any], Any] | None:
    """asyncpg's numeric result rules, keyed by the type name the gateway
    reports (``cursor.description``) instead of asyncpg's type OID."""
    name = str(coltype or "").lower()
    if numeric.asdecimal:
        if name in _EXACT_TYPES:
            return None
        to_decimal: Callable[[Any], Any] = processors.to_decimal_processor_factory(
            decimal.Decimal, numeric._effective_decimal_return_scale
        )
        return to_decimal
    if name in _FLOAT_TYPES:
        return None
    to_float: Callable[[Any], Any] = processors.to_float
    return to_float


class _GatewayNumeric(AsyncpgNumeric):
    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        return _numeric_result(self, coltype)


class _GatewayFloat(AsyncpgFloat):
    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        return _numeric_result(self, coltype)


def _json_result(dialect: Any) -> Callable[[Any], Any] | None:
    """The gateway sends JSON already parsed; a custom ``json_deserializer``
    given to ``create_engine`` still gets to build the values."""
    deserializer = dialect._json_deserializer
    if deserializer is None:
        return None

    def process(value: Any) -> Any:
        return None if value is None else deserializer(json.dumps(value))

    return process


class _GatewayJSON(JSON):
    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        return _json_result(dialect)


class _GatewayJSONB(JSONB):
    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        return _json_result(dialect)


class _GatewayCHAR(AsyncpgCHAR):
    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        # PostgreSQL's one-byte "char" (pg_attribute.attgenerated, ...) is
        # empty as a NUL byte; the gateway sends it as text, where the
        # catalog readers of SQLAlchemy's PostgreSQL dialect expect "".
        if str(coltype or "").lower() != "char":
            return None

        def process(value: Any) -> Any:
            return "" if value == "\x00" else value

        return process


#: asyncpg's types, less those that expect asyncpg's own value classes
#: (BitString, Range), which the gateway sends as plain values.
_COLSPECS = {
    **{
        k: v
        for k, v in PGDialect_asyncpg.colspecs.items()
        if k not in (BIT, ranges.AbstractSingleRange, ranges.AbstractMultiRange)
    },
    sqltypes.Numeric: _GatewayNumeric,
    sqltypes.Float: _GatewayFloat,
    sqltypes.CHAR: _GatewayCHAR,
    sqltypes.JSON: _GatewayJSON,
    JSONB: _GatewayJSONB,
}
for _k in (BIT, ranges.AbstractSingleRange, ranges.AbstractMultiRange):
    if _k in PGDialect.colspecs:
        _COLSPECS[_k] = PGDialect.colspecs[_k]
    else:
        _COLSPECS.pop(_k, None)


class PGExecutionContext_dbgateway(PGExecutionContext):
    def create_server_side_cursor(self) -> Any:
        return server_side_cursor(self)


class PGDialect_dbgateway(GatewayDialectMixin, PGDialect):
    """PostgreSQL through dbgateway (sync)."""

    supports_statement_cache = True

    _gateway_paramstyle = "numeric_dollar"
    default_paramstyle = "numeric_dollar"
    render_bind_cast = True
    # executemany inside a transaction runs statement by statement and adds
    # up the counts.
    supports_sane_multi_rowcount = True
    execution_ctx_cls = PGExecutionContext_dbgateway
    statement_compiler = PGCompiler_asyncpg
    preparer = PGIdentifierPreparer_asyncpg
    supports_native_json_serialization = False
    supports_native_json_deserialization = True
    dialect_injects_custom_json_deserializer = True
    colspecs = _COLSPECS
    default_isolation_name = "READ COMMITTED"
    # PostgreSQL runs READ UNCOMMITTED as READ COMMITTED; SQLAlchemy's own
    # PostgreSQL dialects do not offer it.
    gateway_isolation_levels = ("READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE")

    def set_readonly(self, connection: Any, value: bool) -> None:
        connection.read_only = value

    def get_readonly(self, connection: Any) -> bool:
        return bool(connection.read_only)

    def set_deferrable(self, connection: Any, value: bool) -> None:
        connection.deferrable = value

    def get_deferrable(self, connection: Any) -> bool:
        return bool(connection.deferrable)


class PGDialectAsync_dbgateway(AsyncGatewayDialectMixin, PGDialect_dbgateway):
    """PostgreSQL through dbgateway (asyncio: ``create_async_engine``)."""

    supports_statement_cache = True


dialect = PGDialect_dbgateway
