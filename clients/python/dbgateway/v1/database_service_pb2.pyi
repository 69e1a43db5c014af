import datetime

from dbgateway.v1 import subscription_pb2 as _subscription_pb2
from dbgateway.v1 import value_pb2 as _value_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReadPreference(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    READ_PREFERENCE_UNSPECIFIED: _ClassVar[ReadPreference]
    READ_PREFERENCE_PRIMARY: _ClassVar[ReadPreference]
    READ_PREFERENCE_REPLICA_PREFERRED: _ClassVar[ReadPreference]
    READ_PREFERENCE_REPLICA: _ClassVar[ReadPreference]

class ResultEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESULT_ENCODING_UNSPECIFIED: _ClassVar[ResultEncoding]
    RESULT_ENCODING_ROWS: _ClassVar[ResultEncoding]
    RESULT_ENCODING_COLUMNS: _ClassVar[ResultEncoding]
    RESULT_ENCODING_COLUMNS_V2: _ClassVar[ResultEncoding]

class IsolationLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ISOLATION_LEVEL_UNSPECIFIED: _ClassVar[IsolationLevel]
    ISOLATION_LEVEL_READ_UNCOMMITTED: _ClassVar[IsolationLevel]
    ISOLATION_LEVEL_READ_COMMITTED: _ClassVar[IsolationLevel]
    ISOLATION_LEVEL_REPEATABLE_READ: _ClassVar[IsolationLevel]
    ISOLATION_LEVEL_SERIALIZABLE: _ClassVar[IsolationLevel]
READ_PREFERENCE_UNSPECIFIED: ReadPreference
READ_PREFERENCE_PRIMARY: ReadPreference
READ_PREFERENCE_REPLICA_PREFERRED: ReadPreference
READ_PREFERENCE_REPLICA: ReadPreference
RESULT_ENCODING_UNSPECIFIED: ResultEncoding
RESULT_ENCODING_ROWS: ResultEncoding
RESULT_ENCODING_COLUMNS: ResultEncoding
RESULT_ENCODING_COLUMNS_V2: ResultEncoding
ISOLATION_LEVEL_UNSPECIFIED: IsolationLevel
ISOLATION_LEVEL_READ_UNCOMMITTED: IsolationLevel
ISOLATION_LEVEL_READ_COMMITTED: IsolationLevel
ISOLATION_LEVEL_REPEATABLE_READ: IsolationLevel
ISOLATION_LEVEL_SERIALIZABLE: IsolationLevel

class RequestOptions(_message.Message):
    __slots__ = ("timeout", "max_rows", "idempotent", "tag", "encoding", "read_preference", "read_after")
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENT_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    READ_PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    READ_AFTER_FIELD_NUMBER: _ClassVar[int]
    timeout: _duration_pb2.Duration
    max_rows: int
    idempotent: bool
    tag: str
    encoding: ResultEncoding
    read_preference: ReadPreference
    read_after: str
    def __init__(self, timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_rows: _Optional[int] = ..., idempotent: _Optional[bool] = ..., tag: _Optional[str] = ..., encoding: _Optional[_Union[ResultEncoding, str]] = ..., read_preference: _Optional[_Union[ReadPreference, str]] = ..., read_after: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("database", "sql", "params", "options", "transaction_id")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    database: str
    sql: str
    params: _containers.RepeatedCompositeFieldContainer[_value_pb2.Value]
    options: RequestOptions
    transaction_id: str
    def __init__(self, database: _Optional[str] = ..., sql: _Optional[str] = ..., params: _Optional[_Iterable[_Union[_value_pb2.Value, _Mapping]]] = ..., options: _Optional[_Union[RequestOptions, _Mapping]] = ..., transaction_id: _Optional[str] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("columns", "rows", "truncated", "stats", "column_batches")
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    COLUMN_BATCHES_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedCompositeFieldContainer[_value_pb2.Column]
    rows: _containers.RepeatedCompositeFieldContainer[_value_pb2.Row]
    truncated: bool
    stats: ExecutionStats
    column_batches: _containers.RepeatedCompositeFieldContainer[_value_pb2.ColumnBatch]
    def __init__(self, columns: _Optional[_Iterable[_Union[_value_pb2.Column, _Mapping]]] = ..., rows: _Optional[_Iterable[_Union[_value_pb2.Row, _Mapping]]] = ..., truncated: _Optional[bool] = ..., stats: _Optional[_Union[ExecutionStats, _Mapping]] = ..., column_batches: _Optional[_Iterable[_Union[_value_pb2.ColumnBatch, _Mapping]]] = ...) -> None: ...

class ExecuteRequest(_message.Message):
    __slots__ = ("database", "sql", "params", "options", "transaction_id")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    database: str
    sql: str
    params: _containers.RepeatedCompositeFieldContainer[_value_pb2.Value]
    options: RequestOptions
    transaction_id: str
    def __init__(self, database: _Optional[str] = ..., sql: _Optional[str] = ..., params: _Optional[_Iterable[_Union[_value_pb2.Value, _Mapping]]] = ..., options: _Optional[_Union[RequestOptions, _Mapping]] = ..., transaction_id: _Optional[str] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("rows_affected", "last_insert_id", "columns", "rows", "stats", "read_token")
    ROWS_AFFECTED_FIELD_NUMBER: _ClassVar[int]
    LAST_INSERT_ID_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    READ_TOKEN_FIELD_NUMBER: _ClassVar[int]
    rows_affected: int
    last_insert_id: int
    columns: _containers.RepeatedCompositeFieldContainer[_value_pb2.Column]
    rows: _containers.RepeatedCompositeFieldContainer[_value_pb2.Row]
    stats: ExecutionStats
    read_token: str
    def __init__(self, rows_affected: _Optional[int] = ..., last_insert_id: _Optional[int] = ..., columns: _Optional[_Iterable[_Union[_value_pb2.Column, _Mapping]]] = ..., rows: _Optional[_Iterable[_Union[_value_pb2.Row, _Mapping]]] = ..., stats: _Optional[_Union[ExecutionStats, _Mapping]] = ..., read_token: _Optional[str] = ...) -> None: ...

class ParamSet(_message.Message):
    __slots__ = ("params",)
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    params: _containers.RepeatedCompositeFieldContainer[_value_pb2.Value]
    def __init__(self, params: _Optional[_Iterable[_Union[_value_pb2.Value, _Mapping]]] = ...) -> None: ...

class ExecuteBatchRequest(_message.Message):
    __slots__ = ("database", "sql", "param_sets", "transaction_id", "options")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    PARAM_SETS_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    database: str
    sql: str
    param_sets: _containers.RepeatedCompositeFieldContainer[ParamSet]
    transaction_id: str
    options: RequestOptions
    def __init__(self, database: _Optional[str] = ..., sql: _Optional[str] = ..., param_sets: _Optional[_Iterable[_Union[ParamSet, _Mapping]]] = ..., transaction_id: _Optional[str] = ..., options: _Optional[_Union[RequestOptions, _Mapping]] = ...) -> None: ...

class ExecuteBatchResponse(_message.Message):
    __slots__ = ("rows_affected", "stats", "read_token")
    ROWS_AFFECTED_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    READ_TOKEN_FIELD_NUMBER: _ClassVar[int]
    rows_affected: int
    stats: ExecutionStats
    read_token: str
    def __init__(self, rows_affected: _Optional[int] = ..., stats: _Optional[_Union[ExecutionStats, _Mapping]] = ..., read_token: _Optional[str] = ...) -> None: ...

class TransactionOptions(_message.Message):
    __slots__ = ("isolation", "read_only", "deferrable", "idle_timeout", "read_preference")
    ISOLATION_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    DEFERRABLE_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    READ_PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    isolation: IsolationLevel
    read_only: bool
    deferrable: bool
    idle_timeout: _duration_pb2.Duration
    read_preference: ReadPreference
    def __init__(self, isolation: _Optional[_Union[IsolationLevel, str]] = ..., read_only: _Optional[bool] = ..., deferrable: _Optional[bool] = ..., idle_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., read_preference: _Optional[_Union[ReadPreference, str]] = ...) -> None: ...

class Statement(_message.Message):
    __slots__ = ("sql", "params", "options")
    SQL_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    sql: str
    params: _containers.RepeatedCompositeFieldContainer[_value_pb2.Value]
    options: RequestOptions
    def __init__(self, sql: _Optional[str] = ..., params: _Optional[_Iterable[_Union[_value_pb2.Value, _Mapping]]] = ..., options: _Optional[_Union[RequestOptions, _Mapping]] = ...) -> None: ...

class StatementResult(_message.Message):
    __slots__ = ("columns", "rows", "rows_affected", "last_insert_id", "truncated", "error")
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ROWS_AFFECTED_FIELD_NUMBER: _ClassVar[int]
    LAST_INSERT_ID_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedCompositeFieldContainer[_value_pb2.Column]
    rows: _containers.RepeatedCompositeFieldContainer[_value_pb2.Row]
    rows_affected: int
    last_insert_id: int
    truncated: bool
    error: _status_pb2.Status
    def __init__(self, columns: _Optional[_Iterable[_Union[_value_pb2.Column, _Mapping]]] = ..., rows: _Optional[_Iterable[_Union[_value_pb2.Row, _Mapping]]] = ..., rows_affected: _Optional[int] = ..., last_insert_id: _Optional[int] = ..., truncated: _Optional[bool] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class RunTransactionRequest(_message.Message):
    __slots__ = ("database", "statements", "options", "max_attempts")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    database: str
    statements: _containers.RepeatedCompositeFieldContainer[Statement]
    options: TransactionOptions
    max_attempts: int
    def __init__(self, database: _Optional[str] = ..., statements: _Optional[_Iterable[_Union[Statement, _Mapping]]] = ..., options: _Optional[_Union[TransactionOptions, _Mapping]] = ..., max_attempts: _Optional[int] = ...) -> None: ...

class RunTransactionResponse(_message.Message):
    __slots__ = ("results", "attempts", "read_token")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    READ_TOKEN_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[StatementResult]
    attempts: int
    read_token: str
    def __init__(self, results: _Optional[_Iterable[_Union[StatementResult, _Mapping]]] = ..., attempts: _Optional[int] = ..., read_token: _Optional[str] = ...) -> None: ...

class TransactionRequest(_message.Message):
    __slots__ = ("begin", "statement", "commit", "rollback")
    class Begin(_message.Message):
        __slots__ = ("database", "options")
        DATABASE_FIELD_NUMBER: _ClassVar[int]
        OPTIONS_FIELD_NUMBER: _ClassVar[int]
        database: str
        options: TransactionOptions
        def __init__(self, database: _Optional[str] = ..., options: _Optional[_Union[TransactionOptions, _Mapping]] = ...) -> None: ...
    class Commit(_message.Message):
        __slots__ = ()
        def __init__(self) -> None: ...
    class Rollback(_message.Message):
        __slots__ = ()
        def __init__(self) -> None: ...
    BEGIN_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    begin: TransactionRequest.Begin
    statement: Statement
    commit: TransactionRequest.Commit
    rollback: TransactionRequest.Rollback
    def __init__(self, begin: _Optional[_Union[TransactionRequest.Begin, _Mapping]] = ..., statement: _Optional[_Union[Statement, _Mapping]] = ..., commit: _Optional[_Union[TransactionRequest.Commit, _Mapping]] = ..., rollback: _Optional[_Union[TransactionRequest.Rollback, _Mapping]] = ...) -> None: ...

class TransactionResponse(_message.Message):
    __slots__ = ("begun", "result", "committed", "rolled_back")
    class Begun(_message.Message):
        __slots__ = ("transaction_id",)
        TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
        transaction_id: str
        def __init__(self, transaction_id: _Optional[str] = ...) -> None: ...
    class Committed(_message.Message):
        __slots__ = ("read_token",)
        READ_TOKEN_FIELD_NUMBER: _ClassVar[int]
        read_token: str
        def __init__(self, read_token: _Optional[str] = ...) -> None: ...
    class RolledBack(_message.Message):
        __slots__ = ()
        def __init__(self) -> None: ...
    BEGUN_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    ROLLED_BACK_FIELD_NUMBER: _ClassVar[int]
    begun: TransactionResponse.Begun
    result: StatementResult
    committed: TransactionResponse.Committed
    rolled_back: TransactionResponse.RolledBack
    def __init__(self, begun: _Optional[_Union[TransactionResponse.Begun, _Mapping]] = ..., result: _Optional[_Union[StatementResult, _Mapping]] = ..., committed: _Optional[_Union[TransactionResponse.Committed, _Mapping]] = ..., rolled_back: _Optional[_Union[TransactionResponse.RolledBack, _Mapping]] = ...) -> None: ...

class BeginTransactionRequest(_message.Message):
    __slots__ = ("database", "options")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    database: str
    options: TransactionOptions
    def __init__(self, database: _Optional[str] = ..., options: _Optional[_Union[TransactionOptions, _Mapping]] = ...) -> None: ...

class BeginTransactionResponse(_message.Message):
    __slots__ = ("transaction_id", "expire_time")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, transaction_id: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("transaction_id", "database")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    database: str
    def __init__(self, transaction_id: _Optional[str] = ..., database: _Optional[str] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("read_token",)
    READ_TOKEN_FIELD_NUMBER: _ClassVar[int]
    read_token: str
    def __init__(self, read_token: _Optional[str] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("transaction_id", "database")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    database: str
    def __init__(self, transaction_id: _Optional[str] = ..., database: _Optional[str] = ...) -> None: ...

class RollbackResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StreamQueryResponse(_message.Message):
    __slots__ = ("columns", "rows", "truncated", "stats", "column_batch")
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    COLUMN_BATCH_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedCompositeFieldContainer[_value_pb2.Column]
    rows: _containers.RepeatedCompositeFieldContainer[_value_pb2.Row]
    truncated: bool
    stats: ExecutionStats
    column_batch: _value_pb2.ColumnBatch
    def __init__(self, columns: _Optional[_Iterable[_Union[_value_pb2.Column, _Mapping]]] = ..., rows: _Optional[_Iterable[_Union[_value_pb2.Row, _Mapping]]] = ..., truncated: _Optional[bool] = ..., stats: _Optional[_Union[ExecutionStats, _Mapping]] = ..., column_batch: _Optional[_Union[_value_pb2.ColumnBatch, _Mapping]] = ...) -> None: ...

class SessionRequest(_message.Message):
    __slots__ = ("calls", "cancel")
    CALLS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    calls: _containers.RepeatedCompositeFieldContainer[SessionCall]
    cancel: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, calls: _Optional[_Iterable[_Union[SessionCall, _Mapping]]] = ..., cancel: _Optional[_Iterable[int]] = ...) -> None: ...

class SessionCall(_message.Message):
    __slots__ = ("id", "timeout", "query", "execute", "execute_batch", "run_transaction", "trace_context")
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    EXECUTE_FIELD_NUMBER: _ClassVar[int]
    EXECUTE_BATCH_FIELD_NUMBER: _ClassVar[int]
    RUN_TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    id: int
    timeout: _duration_pb2.Duration
    query: QueryRequest
    execute: ExecuteRequest
    execute_batch: ExecuteBatchRequest
    run_transaction: RunTransactionRequest
    trace_context: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[int] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., query: _Optional[_Union[QueryRequest, _Mapping]] = ..., execute: _Optional[_Union[ExecuteRequest, _Mapping]] = ..., execute_batch: _Optional[_Union[ExecuteBatchRequest, _Mapping]] = ..., run_transaction: _Optional[_Union[RunTransactionRequest, _Mapping]] = ..., trace_context: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SessionResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SessionResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SessionResult, _Mapping]]] = ...) -> None: ...

class SessionResult(_message.Message):
    __slots__ = ("id", "query", "execute", "execute_batch", "run_transaction", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    EXECUTE_FIELD_NUMBER: _ClassVar[int]
    EXECUTE_BATCH_FIELD_NUMBER: _ClassVar[int]
    RUN_TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: int
    query: QueryResponse
    execute: ExecuteResponse
    execute_batch: ExecuteBatchResponse
    run_transaction: RunTransactionResponse
    error: _status_pb2.Status
    def __init__(self, id: _Optional[int] = ..., query: _Optional[_Union[QueryResponse, _Mapping]] = ..., execute: _Optional[_Union[ExecuteResponse, _Mapping]] = ..., execute_batch: _Optional[_Union[ExecuteBatchResponse, _Mapping]] = ..., run_transaction: _Optional[_Union[RunTransactionResponse, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...
