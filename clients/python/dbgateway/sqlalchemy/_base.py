"""What the six dialects share: the URL, the shared client, isolation levels
as transaction options, pings and disconnect detection.

The gateway refuses session-wide ``SET`` on its pooled connections (one
caller's settings must never reach the next), so every piece of session state
SQLAlchemy would normally set with a statement lives on the DB-API connection
instead and travels with each transaction's begin: the isolation level,
``read_only``, ``deferrable`` and autocommit.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy.engine import URL
from sqlalchemy.engine.interfaces import DBAPIConnection, IsolationLevel

from .. import dbapi as dbapi_module
from .._client import DEFAULT_TARGET, Client
from .._config import TLSConfig

#: The environment variable a URL without a token takes it from.
TOKEN_ENV = "DBGATEWAY_TOKEN"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _flag(name: str, text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise dbapi_module.InterfaceError(f"URL option {name}={text!r}: expected true or false")


def connect_args(url: URL) -> dict[str, Any]:
    """The client's keyword arguments from a ``ENGINE+dbgateway://`` URL."""
    query = {k: v if isinstance(v, str) else v[-1] for k, v in url.query.items()}
    host = url.host or DEFAULT_TARGET.rsplit(":", 1)[0]
    port = url.port or int(DEFAULT_TARGET.rsplit(":", 1)[1])
    tls: TLSConfig | bool | None = None
    if "tls_ca" in query or "tls_cert" in query:
        try:
            tls = TLSConfig(
                ca_file=query.pop("tls_ca", None),
                cert_file=query.pop("tls_cert", None),
                key_file=query.pop("tls_key", None),
            )
        except ValueError as exc:
            raise dbapi_module.InterfaceError(str(exc)) from None
        query.pop("tls", None)
    elif "tls" in query:
        tls = _flag("tls", query.pop("tls")) or None
    token = query.pop("token", None) or url.password or os.environ.get(TOKEN_ENV) or None
    timeout_text = query.pop("timeout", None)
    try:
        timeout = float(timeout_text) if timeout_text else None
    except ValueError:
        raise dbapi_module.InterfaceError(
            f"URL option timeout={timeout_text!r}: expected seconds"
        ) from None
    if query:
        raise dbapi_module.InterfaceError(
            f"unknown URL option(s) {', '.join(sorted(query))}; "
            "known: tls, tls_ca, tls_cert, tls_key, token, timeout"
        )
    return {
        "target": f"{host}:{port}",
        "database": url.database or None,
        "tls": tls,
        "token": token,
        "timeout": timeout,
    }


class SharedClients:
    """One :class:`dbgateway.Client` (one gRPC channel, safe between threads)
    per engine and target, shared by every pooled DB-API connection."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[tuple[Any, ...], Client] = {}

    def get(self, target: str, tls: Any, token: str | None, timeout: float | None) -> Client:
        key = (target, repr(tls), token, timeout)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = Client(target, tls=tls, token=token, timeout=timeout)
                self._clients[key] = client
            return client


#: Isolation level names SQLAlchemy uses -> the client's names.
ISOLATION_LEVELS = {
    "READ UNCOMMITTED": "read uncommitted",
    "READ COMMITTED": "read committed",
    "REPEATABLE READ": "repeatable read",
    "SERIALIZABLE": "serializable",
}


class GatewayDialectMixin:
    """Mixed in before the engine's own SQLAlchemy dialect class."""

    driver = "dbgateway"
    supports_statement_cache = True
    supports_server_side_cursors = True
    #: The engine's default isolation level, answered without asking the
    #: server (asking would open a gateway transaction on every new connection).
    #: A connection that asks for nothing gets it.
    default_isolation_name = "READ COMMITTED"
    #: The isolation levels the engine gives through TransactionOptions.
    gateway_isolation_levels: tuple[str, ...] = tuple(ISOLATION_LEVELS)

    _gateway_paramstyle = "qmark"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("paramstyle", self._gateway_paramstyle)
        super().__init__(*args, **kwargs)
        self._shared_clients = SharedClients()

    @classmethod
    def import_dbapi(cls) -> Any:
        return dbapi_module

    def create_connect_args(self, url: URL) -> tuple[list[Any], dict[str, Any]]:
        return [], connect_args(url)

    def connect(self, *cargs: Any, **cparams: Any) -> Any:
        client = self._shared_clients.get(
            cparams.pop("target"), cparams.pop("tls"), cparams.pop("token"), cparams.pop("timeout")
        )
        return dbapi_module.connect(client=client, **cparams)

    # -- isolation levels: state of the DB-API connection, sent at begin --

    def get_isolation_level_values(self, dbapi_conn: DBAPIConnection) -> Sequence[IsolationLevel]:
        return cast(list[IsolationLevel], [*self.gateway_isolation_levels, "AUTOCOMMIT"])

    def set_isolation_level(self, dbapi_connection: DBAPIConnection, level: IsolationLevel) -> None:
        if level == "AUTOCOMMIT":
            dbapi_connection.autocommit = True
            return
        dbapi_connection.autocommit = False
        # The engine's default is the database's own: ask for nothing, as a
        # connection SQLAlchemy resets to it is back to asking for nothing.
        dbapi_connection.isolation_level = (
            None if level == self.default_isolation_name else ISOLATION_LEVELS[level]
        )

    def get_isolation_level(self, dbapi_connection: DBAPIConnection) -> IsolationLevel:
        if dbapi_connection.autocommit:
            return "AUTOCOMMIT"
        level = dbapi_connection.isolation_level
        return cast(IsolationLevel, level.upper() if level else self.default_isolation_name)

    def detect_autocommit_setting(self, dbapi_connection: Any) -> bool:
        return bool(dbapi_connection.autocommit)

    # -- liveness --

    def do_ping(self, dbapi_connection: Any) -> bool:
        # A SELECT 1 through a cursor would open a gateway transaction.
        dbapi_connection.ping()
        return True

    def is_disconnect(self, e: Any, connection: Any, cursor: Any) -> bool:
        if isinstance(e, dbapi_module.InterfaceError):
            return "closed" in str(e)
        if isinstance(e, dbapi_module.DatabaseError):
            return e.reason in dbapi_module.DISCONNECT_REASONS or (
                not e.reason and isinstance(e, dbapi_module.OperationalError)
            )
        return False


def server_side_cursor(context: Any) -> Any:
    """The cursor for ``stream_results`` / ``yield_per``: reads through
    ``StreamQuery``."""
    connection = context._dbapi_connection
    if hasattr(connection, "dbapi"):  # SQLAlchemy's asyncio adaptation
        return connection.cursor(server_side=True)
    return connection.cursor(stream=True)
