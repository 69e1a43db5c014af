"""``sqlite+dbgateway`` and ``sqlite+dbgateway_async``.

SQLite has one writer at a time, and the gateway serialises read-write
transactions on it: use ``isolation_level="AUTOCOMMIT"`` (each statement
alone) for services with many concurrent writers. Values come back as the
SQLite file holds them (dates and times as ISO text), and SQLAlchemy's SQLite
types parse them exactly as they do for pysqlite.
"""

from __future__ import annotations

import types
from typing import Any

from sqlalchemy.dialects.sqlite.base import SQLiteDialect, SQLiteExecutionContext

from .. import dbapi as dbapi_module
from ._asyncio import AsyncGatewayDialectMixin
from ._base import GatewayDialectMixin, server_side_cursor

__all__ = ["SQLiteDialectAsync_dbgateway", "SQLiteDialect_dbgateway"]

#: SQLAlchemy's SQLite dialect reads the library version from its DB-API
#: module before it connects; the real one is read from the server in
#: ``initialize``. RETURNING (3.35) is assumed until then.
_ASSUMED_VERSION = (3, 35, 0)


def _sqlite_dbapi() -> types.ModuleType:
    module = types.ModuleType("dbgateway.dbapi (sqlite)")
    module.__dict__.update({k: v for k, v in vars(dbapi_module).items() if not k.startswith("__")})
    module.sqlite_version_info = _ASSUMED_VERSION  # type: ignore[attr-defined]
    return module


class SQLiteExecutionContext_dbgateway(SQLiteExecutionContext):
    def create_server_side_cursor(self) -> Any:
        return server_side_cursor(self)


class SQLiteDialect_dbgateway(GatewayDialectMixin, SQLiteDialect):
    """SQLite through dbgateway (sync)."""

    supports_statement_cache = True

    _gateway_paramstyle = "qmark"
    default_paramstyle = "qmark"
    execution_ctx_cls = SQLiteExecutionContext_dbgateway
    supports_native_decimal = False
    default_isolation_name = "SERIALIZABLE"
    gateway_isolation_levels = ("SERIALIZABLE",)

    @classmethod
    def import_dbapi(cls) -> Any:
        return _sqlite_dbapi()

    def _get_server_version_info(self, connection: Any) -> tuple[int, ...]:
        text = connection.exec_driver_sql("SELECT sqlite_version()").scalar()
        return tuple(int(part) for part in str(text).split(".") if part.isdigit())

    def initialize(self, connection: Any) -> None:
        super().initialize(connection)
        if self.server_version_info and self.server_version_info < (3, 35):
            self.update_returning = self.delete_returning = self.insert_returning = False


class SQLiteDialectAsync_dbgateway(AsyncGatewayDialectMixin, SQLiteDialect_dbgateway):
    """SQLite through dbgateway (asyncio: ``create_async_engine``)."""

    supports_statement_cache = True


dialect = SQLiteDialect_dbgateway
