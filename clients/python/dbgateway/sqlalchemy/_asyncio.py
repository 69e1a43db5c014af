"""The ``*_async`` dialects: SQLAlchemy's asyncio adaptation of
:mod:`dbgateway.dbapi.aio`, as its aiosqlite and asyncmy dialects adapt
their drivers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import pool
from sqlalchemy.connectors.asyncio import (
    AsyncAdapt_dbapi_connection,
    AsyncAdapt_dbapi_cursor,
    AsyncAdapt_dbapi_module,
    AsyncAdapt_dbapi_ss_cursor,
    AsyncAdapt_terminate,
)
from sqlalchemy.engine import URL
from sqlalchemy.util.concurrency import await_

from ..dbapi import aio


class AsyncAdapt_dbgateway_cursor(AsyncAdapt_dbapi_cursor):
    __slots__ = ()


class AsyncAdapt_dbgateway_ss_cursor(AsyncAdapt_dbapi_ss_cursor):
    __slots__ = ()

    def _make_new_cursor(self, connection: Any) -> Any:
        return connection.cursor(stream=True)


class AsyncAdapt_dbgateway_connection(AsyncAdapt_terminate, AsyncAdapt_dbapi_connection):
    __slots__ = ()

    _cursor_cls = AsyncAdapt_dbgateway_cursor
    _ss_cursor_cls = AsyncAdapt_dbgateway_ss_cursor

    @property
    def autocommit(self) -> bool:
        return bool(self._connection.autocommit)

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        self._connection.autocommit = value

    @property
    def isolation_level(self) -> str | None:
        return self._connection.isolation_level  # type: ignore[no-any-return]

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._connection.isolation_level = value

    @property
    def read_only(self) -> bool:
        return bool(self._connection.read_only)

    @read_only.setter
    def read_only(self, value: bool) -> None:
        self._connection.read_only = value

    @property
    def deferrable(self) -> bool:
        return bool(self._connection.deferrable)

    @deferrable.setter
    def deferrable(self, value: bool) -> None:
        self._connection.deferrable = value

    def ping(self) -> None:
        try:
            await_(self._connection.ping())
        except Exception as error:
            self._handle_exception(error)

    async def _terminate_graceful_close(self) -> None:
        await self._connection.close()

    def _terminate_force_close(self) -> None:
        self._connection.drop()


class AsyncAdapt_dbgateway_dbapi(AsyncAdapt_dbapi_module):
    """The DB-API module SQLAlchemy sees: the sync module's names (exceptions,
    type objects, paramstyle) with a ``connect`` that awaits
    :func:`dbgateway.dbapi.aio.connect`."""

    def __init__(self, sync_module: Any) -> None:
        super().__init__(aio, dbapi_module=sync_module)
        for name, value in vars(sync_module).items():
            if not name.startswith("__") and name != "connect":
                setattr(self, name, value)

    def connect(self, *args: Any, **kwargs: Any) -> AsyncAdapt_dbgateway_connection:
        connection = await_(aio.connect(*args, **kwargs))
        return AsyncAdapt_dbgateway_connection(self, connection)  # type: ignore[arg-type]


class AsyncGatewayDialectMixin:
    """Mixed in before a sync dbgateway dialect to make its asyncio twin."""

    driver = "dbgateway_async"
    is_async = True
    has_terminate = True
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> Any:
        return AsyncAdapt_dbgateway_dbapi(super().import_dbapi())  # type: ignore[misc]

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        return pool.AsyncAdaptedQueuePool

    def connect(self, *cargs: Any, **cparams: Any) -> Any:
        # A grpc.aio channel belongs to one event loop: each connection has
        # its own client rather than one shared by the engine.
        return self.loaded_dbapi.connect(*cargs, **cparams)  # type: ignore[attr-defined]

    def get_driver_connection(self, connection: Any) -> Any:
        return connection._connection

    def do_terminate(self, dbapi_connection: Any) -> None:
        dbapi_connection.terminate()
