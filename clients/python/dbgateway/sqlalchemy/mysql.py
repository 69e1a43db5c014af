"""``mysql+dbgateway`` and ``mysql+dbgateway_async`` (MySQL and MariaDB).

The gateway runs aiomysql (PyMySQL underneath), so values come back as
PyMySQL returns them; the dialect reads the server version with
``SELECT VERSION()`` and everything else SQLAlchemy's MySQL dialect detects
(sql_mode, ANSI quotes, identifier case) with ``SHOW VARIABLES``, which the
gateway allows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.mysql.base import MySQLDialect, MySQLExecutionContext

from ._asyncio import AsyncGatewayDialectMixin
from ._base import GatewayDialectMixin, server_side_cursor

__all__ = ["MySQLDialectAsync_dbgateway", "MySQLDialect_dbgateway"]


class MySQLExecutionContext_dbgateway(MySQLExecutionContext):
    def create_server_side_cursor(self) -> Any:
        return server_side_cursor(self)


class MySQLDialect_dbgateway(GatewayDialectMixin, MySQLDialect):
    """MySQL / MariaDB through dbgateway (sync)."""

    supports_statement_cache = True

    _gateway_paramstyle = "format"
    default_paramstyle = "format"
    execution_ctx_cls = MySQLExecutionContext_dbgateway
    supports_native_decimal = True
    # The gateway's MySQL connections report changed rows, not matched rows
    # (PyMySQL's dialect asks for CLIENT.FOUND_ROWS): an UPDATE that sets a
    # row to what it holds counts 0, which the ORM must not take for a
    # stale row.
    supports_sane_rowcount = False
    supports_sane_multi_rowcount = False
    default_isolation_name = "REPEATABLE READ"
    gateway_isolation_levels = (
        "READ UNCOMMITTED",
        "READ COMMITTED",
        "REPEATABLE READ",
        "SERIALIZABLE",
    )

    def do_execute(self, cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
        # The "format" paramstyle doubles every literal %; the gateway undoes
        # that (as PyMySQL does) only when it interpolates parameters.
        if not parameters:
            statement = statement.replace("%%", "%")
        cursor.execute(statement, parameters)

    def _detect_charset(self, connection: Any) -> str:
        # The gateway's connections speak utf8mb4.
        return "utf8mb4"

    def _extract_error_code(self, exception: Any) -> int | None:
        code = getattr(exception, "metadata", {}).get("vendor_code")
        return int(code) if code and code.lstrip("-").isdigit() else None

    def is_disconnect(self, e: Any, connection: Any, cursor: Any) -> bool:
        return GatewayDialectMixin.is_disconnect(self, e, connection, cursor)


class MySQLDialectAsync_dbgateway(AsyncGatewayDialectMixin, MySQLDialect_dbgateway):
    """MySQL / MariaDB through dbgateway (asyncio: ``create_async_engine``)."""

    supports_statement_cache = True


dialect = MySQLDialect_dbgateway
