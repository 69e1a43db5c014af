"""Python client for dbgateway, the gRPC database-access gateway.

    async with dbgateway.AsyncClient("127.0.0.1:50051") as db:
        result = await db.query("SELECT id, body FROM notes WHERE id = $1", 7, database="orders")
        for id_, body in result:
            ...

:class:`AsyncClient` and :class:`Client` (synchronous) have the same methods.
Parameters and results are native Python values (see :mod:`dbgateway._values`
for the mapping); failures raise :class:`DbGatewayError` subclasses. The
generated protobuf and gRPC modules live in :mod:`dbgateway.v1`.
"""

__version__ = "0.1.0"

from ._client import DEFAULT_TARGET, AsyncClient, Client
from ._config import ClientConfig, KeepaliveConfig, RetryPolicy, TLSConfig
from ._errors import (
    DbGatewayError,
    DeadlineExceeded,
    IntegrityError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    SqlError,
    TransactionAborted,
    Unavailable,
    UniqueViolation,
)
from ._health import HealthStatus
from ._result import Column, ExecuteResult, Result
from ._values import Interval, Json

__all__ = [
    "DEFAULT_TARGET",
    "AsyncClient",
    "Client",
    "ClientConfig",
    "Column",
    "DbGatewayError",
    "DeadlineExceeded",
    "ExecuteResult",
    "HealthStatus",
    "IntegrityError",
    "Interval",
    "Json",
    "KeepaliveConfig",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Result",
    "RetryPolicy",
    "SqlError",
    "TLSConfig",
    "TransactionAborted",
    "Unavailable",
    "UniqueViolation",
    "__version__",
]
