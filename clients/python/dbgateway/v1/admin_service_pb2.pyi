import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Engine(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENGINE_UNSPECIFIED: _ClassVar[Engine]
    ENGINE_POSTGRESQL: _ClassVar[Engine]
    ENGINE_MYSQL: _ClassVar[Engine]
    ENGINE_SQLITE: _ClassVar[Engine]

class DatabaseHealth(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATABASE_HEALTH_UNSPECIFIED: _ClassVar[DatabaseHealth]
    DATABASE_HEALTH_SERVING: _ClassVar[DatabaseHealth]
    DATABASE_HEALTH_NOT_SERVING: _ClassVar[DatabaseHealth]

class CircuitState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CIRCUIT_STATE_UNSPECIFIED: _ClassVar[CircuitState]
    CIRCUIT_STATE_CLOSED: _ClassVar[CircuitState]
    CIRCUIT_STATE_OPEN: _ClassVar[CircuitState]
    CIRCUIT_STATE_HALF_OPEN: _ClassVar[CircuitState]

class EndpointRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENDPOINT_ROLE_UNSPECIFIED: _ClassVar[EndpointRole]
    ENDPOINT_ROLE_PRIMARY: _ClassVar[EndpointRole]
    ENDPOINT_ROLE_REPLICA: _ClassVar[EndpointRole]
ENGINE_UNSPECIFIED: Engine
ENGINE_POSTGRESQL: Engine
ENGINE_MYSQL: Engine
ENGINE_SQLITE: Engine
DATABASE_HEALTH_UNSPECIFIED: DatabaseHealth
DATABASE_HEALTH_SERVING: DatabaseHealth
DATABASE_HEALTH_NOT_SERVING: DatabaseHealth
CIRCUIT_STATE_UNSPECIFIED: CircuitState
CIRCUIT_STATE_CLOSED: CircuitState
CIRCUIT_STATE_OPEN: CircuitState
CIRCUIT_STATE_HALF_OPEN: CircuitState
ENDPOINT_ROLE_UNSPECIFIED: EndpointRole
ENDPOINT_ROLE_PRIMARY: EndpointRole
ENDPOINT_ROLE_REPLICA: EndpointRole

class PoolStats(_message.Message):
    __slots__ = ("size", "idle", "in_use", "waiting", "min_size", "max_size", "acquired_total", "created_total", "closed_total", "acquire_timeouts_total", "dead_on_checkout_total")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    IDLE_FIELD_NUMBER: _ClassVar[int]
    IN_USE_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    MIN_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_SIZE_FIELD_NUMBER: _ClassVar[int]
    ACQUIRED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    CREATED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    CLOSED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ACQUIRE_TIMEOUTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    DEAD_ON_CHECKOUT_TOTAL_FIELD_NUMBER: _ClassVar[int]
    size: int
    idle: int
    in_use: int
    waiting: int
    min_size: int
    max_size: int
    acquired_total: int
    created_total: int
    closed_total: int
    acquire_timeouts_total: int
    dead_on_checkout_total: int
    def __init__(self, size: _Optional[int] = ..., idle: _Optional[int] = ..., in_use: _Optional[int] = ..., waiting: _Optional[int] = ..., min_size: _Optional[int] = ..., max_size: _Optional[int] = ..., acquired_total: _Optional[int] = ..., created_total: _Optional[int] = ..., closed_total: _Optional[int] = ..., acquire_timeouts_total: _Optional[int] = ..., dead_on_checkout_total: _Optional[int] = ...) -> None: ...

class DatabaseInfo(_message.Message):
    __slots__ = ("name", "engine", "server_version", "health", "circuit_state", "pool", "open_transactions", "endpoints", "circuit_cause")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_STATE_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    OPEN_TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_CAUSE_FIELD_NUMBER: _ClassVar[int]
    name: str
    engine: Engine
    server_version: str
    health: DatabaseHealth
    circuit_state: CircuitState
    pool: PoolStats
    open_transactions: int
    endpoints: _containers.RepeatedCompositeFieldContainer[EndpointInfo]
    circuit_cause: CircuitCause
    def __init__(self, name: _Optional[str] = ..., engine: _Optional[_Union[Engine, str]] = ..., server_version: _Optional[str] = ..., health: _Optional[_Union[DatabaseHealth, str]] = ..., circuit_state: _Optional[_Union[CircuitState, str]] = ..., pool: _Optional[_Union[PoolStats, _Mapping]] = ..., open_transactions: _Optional[int] = ..., endpoints: _Optional[_Iterable[_Union[EndpointInfo, _Mapping]]] = ..., circuit_cause: _Optional[_Union[CircuitCause, _Mapping]] = ...) -> None: ...

class EndpointInfo(_message.Message):
    __slots__ = ("name", "role", "address", "serving", "circuit_state", "lag", "pool")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_STATE_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: EndpointRole
    address: str
    serving: bool
    circuit_state: CircuitState
    lag: _duration_pb2.Duration
    pool: PoolStats
    def __init__(self, name: _Optional[str] = ..., role: _Optional[_Union[EndpointRole, str]] = ..., address: _Optional[str] = ..., serving: _Optional[bool] = ..., circuit_state: _Optional[_Union[CircuitState, str]] = ..., lag: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., pool: _Optional[_Union[PoolStats, _Mapping]] = ...) -> None: ...

class CircuitCause(_message.Message):
    __slots__ = ("reason", "sqlstate", "vendor_code", "message")
    REASON_FIELD_NUMBER: _ClassVar[int]
    SQLSTATE_FIELD_NUMBER: _ClassVar[int]
    VENDOR_CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    reason: str
    sqlstate: str
    vendor_code: str
    message: str
    def __init__(self, reason: _Optional[str] = ..., sqlstate: _Optional[str] = ..., vendor_code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ListDatabasesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDatabasesResponse(_message.Message):
    __slots__ = ("databases",)
    DATABASES_FIELD_NUMBER: _ClassVar[int]
    databases: _containers.RepeatedCompositeFieldContainer[DatabaseInfo]
    def __init__(self, databases: _Optional[_Iterable[_Union[DatabaseInfo, _Mapping]]] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BuildInfo(_message.Message):
    __slots__ = ("python_version", "grpc_version", "protobuf_version", "platform")
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    GRPC_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOBUF_VERSION_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    python_version: str
    grpc_version: str
    protobuf_version: str
    platform: str
    def __init__(self, python_version: _Optional[str] = ..., grpc_version: _Optional[str] = ..., protobuf_version: _Optional[str] = ..., platform: _Optional[str] = ...) -> None: ...

class GetServerInfoResponse(_message.Message):
    __slots__ = ("version", "start_time", "uptime", "build")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    UPTIME_FIELD_NUMBER: _ClassVar[int]
    BUILD_FIELD_NUMBER: _ClassVar[int]
    version: str
    start_time: _timestamp_pb2.Timestamp
    uptime: _duration_pb2.Duration
    build: BuildInfo
    def __init__(self, version: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., uptime: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., build: _Optional[_Union[BuildInfo, _Mapping]] = ...) -> None: ...

class ListStatementsRequest(_message.Message):
    __slots__ = ("database", "limit")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    database: str
    limit: int
    def __init__(self, database: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class StatementStats(_message.Message):
    __slots__ = ("database", "text", "calls", "errors", "errors_by_reason", "rows", "total_time", "mean_time", "p99_time", "last_seen")
    class ErrorsByReasonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_BY_REASON_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TIME_FIELD_NUMBER: _ClassVar[int]
    MEAN_TIME_FIELD_NUMBER: _ClassVar[int]
    P99_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    database: str
    text: str
    calls: int
    errors: int
    errors_by_reason: _containers.ScalarMap[str, int]
    rows: int
    total_time: _duration_pb2.Duration
    mean_time: _duration_pb2.Duration
    p99_time: _duration_pb2.Duration
    last_seen: _timestamp_pb2.Timestamp
    def __init__(self, database: _Optional[str] = ..., text: _Optional[str] = ..., calls: _Optional[int] = ..., errors: _Optional[int] = ..., errors_by_reason: _Optional[_Mapping[str, int]] = ..., rows: _Optional[int] = ..., total_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., mean_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., p99_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListStatementsResponse(_message.Message):
    __slots__ = ("statements", "capacity")
    STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    statements: _containers.RepeatedCompositeFieldContainer[StatementStats]
    capacity: int
    def __init__(self, statements: _Optional[_Iterable[_Union[StatementStats, _Mapping]]] = ..., capacity: _Optional[int] = ...) -> None: ...

class ResetStatementsRequest(_message.Message):
    __slots__ = ("database",)
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    database: str
    def __init__(self, database: _Optional[str] = ...) -> None: ...

class ResetStatementsResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...
