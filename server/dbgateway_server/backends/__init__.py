"""One module per engine behind the contract in :mod:`.base`; drivers are
imported only when a database of that engine is configured."""

from __future__ import annotations

import importlib

from ..config import DatabaseConfig, Engine
from .base import Backend

_MODULES = {
    Engine.POSTGRES: ("postgres", "PostgresBackend", "asyncpg"),
    Engine.MYSQL: ("mysql", "MySQLBackend", "aiomysql"),
    Engine.SQLITE: ("sqlite", "SQLiteBackend", "aiosqlite"),
}


def backend_for(config: DatabaseConfig) -> Backend:
    module_name, class_name, driver = _MODULES[config.engine]
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            f"database {config.name!r} needs the {driver} driver: "
            'install the server extra, pip install "dbgateway[server]"'
        ) from exc
    backend: Backend = getattr(module, class_name)(config)
    return backend
