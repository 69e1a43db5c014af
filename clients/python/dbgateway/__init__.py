"""Python client for dbgateway, the gRPC database-access gateway.

    async with dbgateway.AsyncClient("127.0.0.1:50051") as db:
        result = await db.query("SELECT id, body FROM notes WHERE id = $1", 7, database="orders")
        for id_, body in result:
            ...
        async with db.transaction(database="orders", isolation="serializable") as tx:
            await tx.execute("UPDATE notes SET stars = stars + 1 WHERE id = $1", 7)
        async for id_, body in db.stream("SELECT id, body FROM notes", database="orders"):
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
from ._replicas import ReadPreference, ReadYourWrites
from ._result import Column, ExecuteResult, Result, StatementResult, TransactionResult
from ._stream import AsyncRowStream, RowStream
from ._subscription import AsyncSubscription, Notification, Subscription
from ._transaction import AsyncTransaction, Isolation, Transaction
from ._values import Interval, Json

__all__ = [
    "DEFAULT_TARGET",
    "AsyncClient",
    "AsyncRowStream",
    "AsyncSubscription",
    "AsyncTransaction",
    "Client",
    "ClientConfig",
    "Column",
    "DbGatewayError",
    "DeadlineExceeded",
    "ExecuteResult",
    "HealthStatus",
    "IntegrityError",
    "Interval",
    "Isolation",
    "Json",
    "KeepaliveConfig",
    "NotFound",
    "Notification",
    "PermissionDenied",
    "ReadPreference",
    "ReadYourWrites",
    "ResourceExhausted",
    "Result",
    "RetryPolicy",
    "RowStream",
    "SqlError",
    "StatementResult",
    "Subscription",
    "TLSConfig",
    "Transaction",
    "TransactionAborted",
    "TransactionResult",
    "Unavailable",
    "UniqueViolation",
    "__version__",
]
