import datetime

from dbgateway.v1 import value_pb2 as _value_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RequestOptions(_message.Message):
    __slots__ = ("timeout", "max_rows", "idempotent", "tag")
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENT_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    timeout: _duration_pb2.Duration
    max_rows: int
    idempotent: bool
    tag: str
    def __init__(self, timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_rows: _Optional[int] = ..., idempotent: _Optional[bool] = ..., tag: _Optional[str] = ...) -> None: ...

class ExecutionStats(_message.Message):
    __slots__ = ("elapsed", "rows", "attempts")
    ELAPSED_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    elapsed: _duration_pb2.Duration
    rows: int
    attempts: int
    def __init__(self, elapsed: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., rows: _Optional[int] = ..., attempts: _Optional[int] = ...) -> None: ...

class QueryRequest(_message.Message):
    __slots__ = ("database", "sql", "params", "options")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    database: str
    sql: str
    params: _containers.RepeatedCompositeFieldContainer[_value_pb2.Value]
    options: RequestOptions
    def __init__(self, database: _Optional[str] = ..., sql: _Optional[str] = ..., params: _Optional[_Iterable[_Union[_value_pb2.Value, _Mapping]]] = ..., options: _Optional[_Union[RequestOptions, _Mapping]] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("columns", "rows", "truncated", "stats")
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedCompositeFieldContainer[_value_pb2.Column]
    rows: _containers.RepeatedCompositeFieldContainer[_value_pb2.Row]
    truncated: bool
    stats: ExecutionStats
    def __init__(self, columns: _Optional[_Iterable[_Union[_value_pb2.Column, _Mapping]]] = ..., rows: _Optional[_Iterable[_Union[_value_pb2.Row, _Mapping]]] = ..., truncated: _Optional[bool] = ..., stats: _Optional[_Union[ExecutionStats, _Mapping]] = ...) -> None: ...

class ExecuteRequest(_message.Message):
    __slots__ = ("database", "sql", "params", "options")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    database: str
    sql: str
    params: _containers.RepeatedCompositeFieldContainer[_value_pb2.Value]
    options: RequestOptions
    def __init__(self, database: _Optional[str] = ..., sql: _Optional[str] = ..., params: _Optional[_Iterable[_Union[_value_pb2.Value, _Mapping]]] = ..., options: _Optional[_Union[RequestOptions, _Mapping]] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("rows_affected", "last_insert_id", "columns", "rows", "stats")
    ROWS_AFFECTED_FIELD_NUMBER: _ClassVar[int]
    LAST_INSERT_ID_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    rows_affected: int
    last_insert_id: int
    columns: _containers.RepeatedCompositeFieldContainer[_value_pb2.Column]
    rows: _containers.RepeatedCompositeFieldContainer[_value_pb2.Row]
    stats: ExecutionStats
    def __init__(self, rows_affected: _Optional[int] = ..., last_insert_id: _Optional[int] = ..., columns: _Optional[_Iterable[_Union[_value_pb2.Column, _Mapping]]] = ..., rows: _Optional[_Iterable[_Union[_value_pb2.Row, _Mapping]]] = ..., stats: _Optional[_Union[ExecutionStats, _Mapping]] = ...) -> None: ...

class StreamQueryResponse(_message.Message):
    __slots__ = ("columns", "rows", "truncated", "stats")
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedCompositeFieldContainer[_value_pb2.Column]
    rows: _containers.RepeatedCompositeFieldContainer[_value_pb2.Row]
    truncated: bool
    stats: ExecutionStats
    def __init__(self, columns: _Optional[_Iterable[_Union[_value_pb2.Column, _Mapping]]] = ..., rows: _Optional[_Iterable[_Union[_value_pb2.Row, _Mapping]]] = ..., truncated: _Optional[bool] = ..., stats: _Optional[_Union[ExecutionStats, _Mapping]] = ...) -> None: ...
