"""Settings: a TOML file (plus ``${ENV}`` interpolation) read into frozen dataclasses.

Every problem is reported as one :class:`ConfigError` line naming the key, e.g.
``databases.orders.pool.max_size: must be at least min_size (5), got 2``.
Unknown keys are errors too: a misspelt setting must not be silently ignored.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_SQLITE_FILE = "dbgateway.sqlite3"
DEFAULT_DATABASE = "default"

MiB = 1024 * 1024
#: The largest message the server sends (``grpc.max_send_message_length``). A
#: client that wants every unary result the server may give must accept this
#: much (``grpc.max_receive_message_length``); gRPC's default is 4 MiB.
MAX_MESSAGE_BYTES = 32 * MiB
#: Room in a response for columns, stats and framing besides the rows.
RESPONSE_OVERHEAD_BYTES = 1 * MiB
#: Every StreamQuery message stays under gRPC's default receive limit, so any
#: client with default settings (grpcurl included) can read any stream.
STREAM_MESSAGE_LIMIT_BYTES = 4 * MiB

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class ConfigError(ValueError):
    """A configuration problem; ``str()`` is the one line to show the operator."""


class Engine(StrEnum):
    POSTGRES = "postgresql"
    MYSQL = "mysql"
    SQLITE = "sqlite"


_SCHEMES: Mapping[str, Engine] = {
    "postgresql": Engine.POSTGRES,
    "postgres": Engine.POSTGRES,
    "mysql": Engine.MYSQL,
    "mariadb": Engine.MYSQL,
    "sqlite": Engine.SQLITE,
}


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Connection pool of one database. Durations are seconds."""

    min_size: int = 1
    max_size: int = 10
    acquire_timeout: float = 5.0
    max_waiting: int = 1024
    max_idle_time: float = 300.0
    max_lifetime: float = 1800.0
    validate_after_idle: float = 30.0

    def __post_init__(self) -> None:
        _require(self.min_size >= 0, "min_size", f"must be >= 0, got {self.min_size}")
        _require(self.max_size >= 1, "max_size", f"must be >= 1, got {self.max_size}")
        _require(
            self.max_size >= self.min_size,
            "max_size",
            f"must be at least min_size ({self.min_size}), got {self.max_size}",
        )
        for name in ("acquire_timeout", "max_idle_time", "max_lifetime", "validate_after_idle"):
            value = getattr(self, name)
            _require(value > 0, name, f"must be a positive number of seconds, got {value}")
        _require(self.max_waiting >= 0, "max_waiting", f"must be >= 0, got {self.max_waiting}")


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """Retries of failures on the way to the database, and of whole
    transactions after a conflict. ``max_attempts`` bounds a statement call; a
    transaction runs again until its deadline. Durations are seconds; the wait
    before attempt n+1 is uniform in
    ``[0, min(max_backoff, initial_backoff * 2**(n-1))]`` (full jitter)."""

    max_attempts: int = 3
    initial_backoff: float = 0.05
    max_backoff: float = 1.0

    def __post_init__(self) -> None:
        _require(self.max_attempts >= 1, "max_attempts", f"must be >= 1, got {self.max_attempts}")
        for name in ("initial_backoff", "max_backoff"):
            value = getattr(self, name)
            _require(value > 0, name, f"must be a positive number of seconds, got {value}")
        _require(
            self.max_backoff >= self.initial_backoff,
            "max_backoff",
            f"must be at least initial_backoff ({self.initial_backoff}), got {self.max_backoff}",
        )


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """The circuit breaker of one database endpoint. Durations are seconds.

    It opens after ``failure_threshold`` consecutive infrastructure failures,
    or when at least ``min_calls`` calls in the last ``window`` seconds failed
    at a rate of ``failure_rate`` or more. A call counts once whatever its
    attempts; a call that timed out counts when a check of the database (a
    fresh connection and a ping within ``probe_timeout``) stalls too. While
    open, a background probe (bounded by ``probe_timeout``) runs every
    ``probe_interval`` and closes the circuit as soon as one succeeds. Real
    traffic is let through as a probe after ``open_time``, doubled after every
    failed probe up to ``max_open_time``, when no background probe runs;
    half-open lets ``half_open_probes`` calls through.
    """

    failure_threshold: int = 5
    failure_rate: float = 0.5
    window: float = 10.0
    min_calls: int = 20
    open_time: float = 5.0
    max_open_time: float = 60.0
    half_open_probes: int = 1
    probe_interval: float = 1.0
    probe_timeout: float = 2.0

    def __post_init__(self) -> None:
        for name in ("failure_threshold", "min_calls", "half_open_probes"):
            value = getattr(self, name)
            _require(value >= 1, name, f"must be >= 1, got {value}")
        _require(
            0 < self.failure_rate <= 1,
            "failure_rate",
            f"must be a fraction in (0, 1], got {self.failure_rate}",
        )
        for name in ("window", "open_time", "max_open_time", "probe_interval", "probe_timeout"):
            value = getattr(self, name)
            _require(value > 0, name, f"must be a positive number of seconds, got {value}")
        _require(
            self.max_open_time >= self.open_time,
            "max_open_time",
            f"must be at least open_time ({self.open_time}), got {self.max_open_time}",
        )


class ReadPreference(StrEnum):
    """Where a database's reads go when the call does not say."""

    PRIMARY = "primary"
    #: A usable replica (circuit closed, lag within ``max_replica_lag``), else the primary.
    REPLICA_PREFERRED = "replica_preferred"
    #: A usable replica, or the call fails UNAVAILABLE / NO_REPLICA_AVAILABLE.
    REPLICA = "replica"


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """One configured database."""

    name: str
    dsn: str
    engine: Engine
    pool: PoolSettings = field(default_factory=PoolSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    statement_timeout: float = 30.0
    connect_timeout: float = 5.0
    #: A unary Query fails with RESULT_TOO_LARGE beyond this many rows ...
    max_result_rows: int = 100_000
    #: ... or this many bytes of encoded rows.
    max_result_bytes: int = 16 * MiB
    #: The encoded size a StreamQuery row chunk stays under.
    stream_chunk_bytes: int = 1 * MiB
    #: DSNs of read replicas of this database (same engine), in order:
    #: ``replica-1``, ``replica-2``, ...
    replicas: tuple[str, ...] = ()
    read_preference: ReadPreference = ReadPreference.PRIMARY
    #: A replica further behind than this many seconds takes no reads.
    max_replica_lag: float = 10.0
    #: Each replica's own pool; None: the same settings as ``pool``.
    replica_pool: PoolSettings | None = None
    #: How long a read with ``read_after`` waits for a replica to replay
    #: that far before it reads the primary instead.
    replica_wait: float = 0.1

    def __post_init__(self) -> None:
        _require(
            self.max_result_rows >= 1,
            "max_result_rows",
            f"must be at least 1, got {self.max_result_rows}",
        )
        limit = MAX_MESSAGE_BYTES - RESPONSE_OVERHEAD_BYTES
        _require(
            1024 <= self.max_result_bytes <= limit,
            "max_result_bytes",
            f"must be between 1024 and {limit} (the server's {MAX_MESSAGE_BYTES // MiB} MiB "
            f"message limit less room for columns), got {self.max_result_bytes}",
        )
        limit = STREAM_MESSAGE_LIMIT_BYTES - RESPONSE_OVERHEAD_BYTES
        _require(
            1024 <= self.stream_chunk_bytes <= limit,
            "stream_chunk_bytes",
            f"must be between 1024 and {limit} (gRPC's default 4 MiB message limit "
            f"less room for framing), got {self.stream_chunk_bytes}",
        )

    @property
    def redacted_dsn(self) -> str:
        """The DSN with any password replaced, for logs and admin output."""
        return redact_dsn(self.dsn)

    @property
    def address(self) -> str:
        """``host:port`` (or the SQLite file): where it is, never credentials."""
        return dsn_address(self.dsn)

    def replica(self, index: int) -> DatabaseConfig:
        """The settings of replica ``index`` (0-based): this database's, with
        the replica's DSN and pool, and no replicas of its own."""
        return replace(
            self,
            dsn=self.replicas[index],
            pool=self.replica_pool or self.pool,
            replicas=(),
            replica_pool=None,
        )


LOG_FORMATS = ("text", "json")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: str = DEFAULT_LISTEN
    #: Seconds in-flight calls get after SIGTERM. Below ``docker stop``'s 10 s
    #: (and Kubernetes' 30 s terminationGracePeriodSeconds), with room to
    #: cancel what is left and close the pools before a SIGKILL.
    shutdown_grace: float = 7.0
    #: HOST:PORT of the Prometheus ``/metrics`` and ``/healthz`` endpoint; empty: off.
    metrics_listen: str = ""
    #: ``text`` (one human-readable line per record) or ``json`` (one object per line).
    log_format: str = "text"
    #: Statements slower than this many seconds are logged with their SQL text.
    slow_query_threshold: float = 1.0
    #: Transactions open longer than this many seconds are warned about.
    long_transaction_threshold: float = 60.0
    #: PEM files: the server's certificate chain and key (TLS) ...
    tls_cert: str = ""
    tls_key: str = ""
    #: ... and the CA that client certificates must chain to (mutual TLS).
    tls_client_ca: str = ""
    #: Listen beyond loopback without TLS and principals, deliberately.
    allow_insecure: bool = False
    #: Largest request message accepted (``grpc.max_receive_message_length``).
    max_request_bytes: int = 4 * MiB
    #: Longest SQL text accepted, in characters.
    max_sql_length: int = 1_000_000
    #: Most parameters one statement (or one parameter set of a batch) may have.
    max_parameters: int = 65_535
    #: Calls one principal may have in flight at once: streams and open
    #: handle-based transactions count too, so no principal holds the pool.
    max_concurrent_calls: int = 1000
    #: Seconds a stream may sit silent before it is ended: a Transaction
    #: stream waiting for its client's next message (rolled back), or a
    #: StreamQuery whose client takes no message (its query stopped).
    stream_idle_timeout: float = 60.0
    #: Write parameter values into the slow-query log; never logged otherwise.
    log_parameters: bool = False
    #: Calls one Session stream may have in flight; beyond it the server stops
    #: reading the stream and gRPC flow control pushes back on the client.
    max_session_calls: int = 256
    #: Seconds after which a Session takes no new calls and ends once its
    #: calls are answered (the client reopens, so load spreads across replicas).
    max_session_age: float = 300.0
    #: Notifications queued per subscriber; one that falls further behind is
    #: ended with RESOURCE_EXHAUSTED rather than buffered without limit.
    subscription_queue: int = 1000
    #: Distinct statements whose statistics are kept (AdminService/ListStatements);
    #: the least recently executed are forgotten beyond it. 0: none are kept.
    statement_stats: int = 1000

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    def __post_init__(self) -> None:
        _require(
            bool(self.tls_cert) == bool(self.tls_key),
            "tls_key" if self.tls_cert else "tls_cert",
            "tls_cert and tls_key go together",
        )
        _require(
            not self.tls_client_ca or bool(self.tls_cert),
            "tls_client_ca",
            "mutual TLS needs tls_cert and tls_key too",
        )
        _require(
            1024 <= self.max_request_bytes <= MAX_MESSAGE_BYTES,
            "max_request_bytes",
            f"must be between 1024 and {MAX_MESSAGE_BYTES}, got {self.max_request_bytes}",
        )
        for name in (
            "max_sql_length",
            "max_parameters",
            "max_concurrent_calls",
            "max_session_calls",
            "subscription_queue",
        ):
            value = getattr(self, name)
            _require(value >= 1, name, f"must be at least 1, got {value}")
        _require(
            0 <= self.statement_stats <= 1_000_000,
            "statement_stats",
            f"must be between 0 and 1000000, got {self.statement_stats}",
        )
        if self.metrics_listen:
            _validate_listen(self.metrics_listen, "metrics_listen")
        _require(
            self.log_format in LOG_FORMATS,
            "log_format",
            f"must be one of {', '.join(LOG_FORMATS)}, got {self.log_format!r}",
        )
        for name in (
            "slow_query_threshold",
            "long_transaction_threshold",
            "stream_idle_timeout",
            "max_session_age",
        ):
            value = getattr(self, name)
            _require(value > 0, name, f"must be a positive number of seconds, got {value}")


class Access(StrEnum):
    """What a principal may do on one database."""

    #: Statements run in a read-only transaction; Execute and ExecuteBatch are refused.
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True, slots=True)
class PrincipalConfig:
    """A calling service: who presents the bearer token whose SHA-256 is
    ``token_sha256`` (the token itself is never stored), and its rights."""

    name: str
    token_sha256: str
    databases: Mapping[str, Access] = field(default_factory=dict)
    admin: bool = False
    #: PostgreSQL role its calls run as (``SET LOCAL ROLE`` in each call's
    #: transaction); empty: the DSN's own role.
    postgres_role: str = ""


#: The shortest ``[cluster] secret`` accepted, in characters.
MIN_CLUSTER_SECRET = 16
DNS_PEERS_PREFIX = "dns:///"


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """``[cluster]``: the gateway replicas that forward handle-based
    transaction calls to each other.

    ``peers`` is either a static list of ``HOST:PORT`` that includes this
    replica itself, or one ``dns:///NAME:PORT`` (a Kubernetes headless
    Service) whose addresses are the replicas. ``advertise`` is this replica's
    own address as its peers dial it (default: ``server.listen``); transaction
    ids it issues name it. ``secret`` signs transaction ids and authenticates
    forwarded calls: every replica has the same one.
    """

    peers: tuple[str, ...]
    secret: str
    advertise: str = ""
    #: PEM file of the CA that peers' server certificates chain to (default:
    #: ``server.tls_client_ca``, else the system's roots); TLS is used towards
    #: peers whenever this server serves TLS.
    tls_ca: str = ""
    #: The name peers' certificates are checked against, when peers are dialled
    #: by addresses their certificates do not name.
    tls_server_name: str = ""
    #: PEM files of the client certificate a replica shows its peers under
    #: mutual TLS (default: the server's own, which then needs the clientAuth
    #: extended key usage too).
    tls_cert: str = ""
    tls_key: str = ""

    @property
    def dns_name(self) -> str:
        """``NAME:PORT`` of a ``dns:///`` peer list, else empty."""
        if len(self.peers) == 1 and self.peers[0].startswith(DNS_PEERS_PREFIX):
            return self.peers[0][len(DNS_PEERS_PREFIX) :]
        return ""


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig
    databases: Mapping[str, DatabaseConfig]
    #: Empty: no authentication (the loopback default); otherwise every RPC
    #: but health and reflection needs one of these principals' tokens.
    principals: tuple[PrincipalConfig, ...] = ()
    #: None: a cluster of one (``--workers N`` still forwards between its workers).
    cluster: ClusterConfig | None = None

    @classmethod
    def default(cls, directory: Path | None = None) -> Config:
        """The zero-setup configuration: one embedded SQLite database, ``default``."""
        path = (directory or Path.cwd()) / DEFAULT_SQLITE_FILE
        dsn = f"sqlite://{path.resolve()}" if path.is_absolute() else f"sqlite:{path}"
        db = DatabaseConfig(name=DEFAULT_DATABASE, dsn=dsn, engine=Engine.SQLITE)
        return cls(server=ServerConfig(), databases={DEFAULT_DATABASE: db})


#: Query parameters of a DSN that carry a secret (libpq's ``password`` and
#: ``sslpassword``; PyMySQL's ``passwd``).
_SECRET_DSN_PARAMS = frozenset({"password", "sslpassword", "passwd"})


def redact_dsn(dsn: str) -> str:
    """The DSN with every password replaced by ``***``: the ``user:password@``
    form and the ``?password=`` query parameter alike."""
    parts = urlsplit(dsn)
    if parts.password is not None:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        parts = parts._replace(netloc=netloc)
    if parts.query:
        # Pair by pair, so every other parameter stays exactly as written.
        pairs = []
        for pair in parts.query.split("&"):
            key, eq, _ = pair.partition("=")
            secret = eq and unquote(key).lower() in _SECRET_DSN_PARAMS
            pairs.append(f"{key}=***" if secret else pair)
        parts = parts._replace(query="&".join(pairs))
    return parts.geturl()


def dsn_address(dsn: str) -> str:
    """``host:port`` of a server DSN (the path of a SQLite one)."""
    if engine_for_dsn(dsn) is Engine.SQLITE:
        return sqlite_path(dsn)
    parts = urlsplit(dsn)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port}" if parts.port else host


_DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s|m|h)\s*$")
_DURATION_UNITS: Mapping[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float | None:
    """Seconds from a number (of seconds) or a string with a unit (``"250ms"``,
    ``"2s"``, ``"5m"``, ``"1h"``); None when it is neither."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    return None


def engine_for_dsn(dsn: str) -> Engine:
    scheme = dsn.split(":", 1)[0].lower() if ":" in dsn else ""
    scheme = scheme.split("+", 1)[0]
    try:
        return _SCHEMES[scheme]
    except KeyError:
        known = ", ".join(f"{s}://" for s in ("postgresql", "mysql", "sqlite"))
        raise ValueError(f"unknown scheme {scheme!r}; expected one of {known}") from None


def sqlite_path(dsn: str) -> str:
    """The file a ``sqlite:`` DSN names.

    ``sqlite:///var/lib/x.db`` and ``sqlite:////var/lib/x.db`` are absolute,
    ``sqlite:relative/x.db`` is relative to the working directory, and
    ``sqlite::memory:`` is a private in-memory database.
    """
    rest = dsn.split(":", 1)[1]
    if rest in (":memory:", "///:memory:", "//:memory:"):
        return ":memory:"
    if rest.startswith("//"):
        rest = rest[2:]
        if not rest.startswith("/"):
            raise ValueError("sqlite DSN must be sqlite:///absolute/path or sqlite:relative/path")
        rest = "/" + rest.lstrip("/")
    path = unquote(rest.split("?", 1)[0])
    if not path:
        raise ValueError("sqlite DSN names no file")
    return path


@dataclass(frozen=True, slots=True)
class MySQLAddress:
    host: str
    port: int
    user: str
    password: str
    database: str | None
    unix_socket: str | None


def mysql_address(dsn: str) -> MySQLAddress:
    parts = urlsplit(dsn)
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    database = unquote(parts.path.lstrip("/")) or None
    return MySQLAddress(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=database,
        unix_socket=query.get("unix_socket"),
    )


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


class _KeyError(Exception):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(key, problem)
        self.key = key
        self.problem = problem


def _require(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise _KeyError(key, problem)


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Reads and validates a TOML configuration file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_config(raw, env=os.environ if env is None else env, source=str(path))


def parse_config(raw: Mapping[str, Any], *, env: Mapping[str, str], source: str) -> Config:
    try:
        return _parse(_interpolate(raw, env, ""), source)
    except _KeyError as exc:
        raise ConfigError(f"{source}: {exc.key}: {exc.problem}") from None


def _interpolate(node: Any, env: Mapping[str, str], key: str) -> Any:
    if isinstance(node, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise _KeyError(key, f"environment variable {name} is not set")
            return env[name]

        return _ENV_RE.sub(substitute, node)
    if isinstance(node, dict):
        return {k: _interpolate(v, env, f"{key}.{k}" if key else k) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, env, f"{key}[{i}]") for i, v in enumerate(node)]
    return node


def _check_keys(table: Mapping[str, Any], allowed: set[str], key: str) -> None:
    for name in table:
        if name not in allowed:
            where = f"{key}.{name}" if key else name
            raise _KeyError(where, f"unknown key; expected one of {', '.join(sorted(allowed))}")


def _table(raw: Mapping[str, Any], name: str, key: str) -> Mapping[str, Any]:
    value = raw.get(name, {})
    _require(isinstance(value, dict), key, f"must be a table, got {type(value).__name__}")
    return value  # type: ignore[no-any-return]


#: Float settings that are not durations.
_FRACTIONS = frozenset({"failure_rate"})


def _dataclass_from(cls: Any, table: Mapping[str, Any], key: str, **fixed: Any) -> Any:
    names = {f.name for f in fields(cls)} - set(fixed)
    _check_keys(table, names, key)
    kwargs: dict[str, Any] = dict(fixed)
    for f in fields(cls):
        if f.name not in table:
            continue
        value = table[f.name]
        expected = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        where = f"{key}.{f.name}"
        if expected == "int":
            _require(
                isinstance(value, int) and not isinstance(value, bool),
                where,
                f"must be an integer, got {value!r}",
            )
        elif expected == "float" and f.name in _FRACTIONS:
            _require(
                isinstance(value, int | float) and not isinstance(value, bool),
                where,
                f"must be a number, got {value!r}",
            )
            value = float(value)
        elif expected == "float":
            seconds = parse_duration(value)
            _require(
                seconds is not None,
                where,
                'must be a duration: a number of seconds or a string like "250ms", "2s", '
                f'"5m", got {value!r}',
            )
            value = seconds
        elif expected == "str":
            _require(isinstance(value, str), where, f"must be a string, got {value!r}")
        elif expected == "bool":
            _require(isinstance(value, bool), where, f"must be true or false, got {value!r}")
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except _KeyError as exc:
        raise _KeyError(f"{key}.{exc.key}", exc.problem) from None


def _parse(raw: Mapping[str, Any], source: str) -> Config:
    _check_keys(raw, {"server", "databases", "principals", "cluster"}, "")
    base = Path(source).parent if source else Path.cwd()
    server = _dataclass_from(ServerConfig, _table(raw, "server", "server"), "server")
    _validate_listen(server.listen, "server.listen")
    server = replace(
        server,
        **{
            name: _readable_file(getattr(server, name), f"server.{name}", base)
            for name in ("tls_cert", "tls_key", "tls_client_ca")
            if getattr(server, name)
        },
    )
    databases_raw = _table(raw, "databases", "databases")
    _require(bool(databases_raw), "databases", "at least one database must be configured")
    databases: dict[str, DatabaseConfig] = {}
    for name, table in databases_raw.items():
        key = f"databases.{name}"
        _require(
            bool(_NAME_RE.match(name)),
            key,
            "database names use letters, digits, '_', '-' and '.' (at most 63 characters)",
        )
        _require(isinstance(table, dict), key, "must be a table")
        databases[name] = _parse_database(name, table, key, base)
    principals = _parse_principals(raw.get("principals", []), databases)
    cluster = _parse_cluster(raw["cluster"], server, base) if "cluster" in raw else None
    return Config(server=server, databases=databases, principals=principals, cluster=cluster)


def _parse_cluster(raw: Any, server: ServerConfig, base: Path) -> ClusterConfig:
    _require(isinstance(raw, dict), "cluster", "must be a table")
    _check_keys(
        raw,
        {
            "peers",
            "secret",
            "secret_file",
            "advertise",
            "tls_ca",
            "tls_server_name",
            "tls_cert",
            "tls_key",
        },
        "cluster",
    )
    _require(
        bool(raw.get("tls_cert")) == bool(raw.get("tls_key")),
        "cluster.tls_key" if raw.get("tls_cert") else "cluster.tls_cert",
        "tls_cert and tls_key go together",
    )
    peers = raw.get("peers")
    _require(
        isinstance(peers, list) and bool(peers) and all(isinstance(p, str) for p in peers),
        "cluster.peers",
        'must be a non-empty list of "HOST:PORT" strings, or ["dns:///NAME:PORT"]',
    )
    if any(p.startswith(DNS_PEERS_PREFIX) for p in peers):
        _require(
            len(peers) == 1,
            "cluster.peers",
            "a dns:/// name stands alone: its addresses are the peers",
        )
        _validate_listen(peers[0][len(DNS_PEERS_PREFIX) :], "cluster.peers")
    else:
        for index, peer in enumerate(peers):
            _validate_listen(peer, f"cluster.peers[{index}]")
        _require(len(set(peers)) == len(peers), "cluster.peers", "lists an address twice")
    _require(
        not ("secret" in raw and "secret_file" in raw),
        "cluster.secret_file",
        "give secret or secret_file, not both",
    )
    if "secret_file" in raw:
        where = "cluster.secret_file"
        _require(isinstance(raw["secret_file"], str), where, "must be a path")
        path = Path(raw["secret_file"])
        path = path if path.is_absolute() else base / path
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise _KeyError(where, f"cannot read {path}: {exc.strerror}") from None
    else:
        where = "cluster.secret"
        secret = raw.get("secret", "")
        _require(isinstance(secret, str), where, "must be a string")
    _require(
        len(secret) >= MIN_CLUSTER_SECRET,
        where,
        f"is required and must have at least {MIN_CLUSTER_SECRET} characters "
        "(the same on every replica; e.g. from ${CLUSTER_SECRET})",
    )
    advertise = raw.get("advertise", "")
    _require(isinstance(advertise, str), "cluster.advertise", "must be a string")
    if advertise:
        _validate_listen(advertise, "cluster.advertise")
    cluster = ClusterConfig(
        peers=tuple(peers),
        secret=secret,
        advertise=advertise or server.listen,
        tls_ca=_readable_file(raw["tls_ca"], "cluster.tls_ca", base) if raw.get("tls_ca") else "",
        tls_server_name=str(raw.get("tls_server_name", "")),
        **{
            name: _readable_file(raw[name], f"cluster.{name}", base)
            for name in ("tls_cert", "tls_key")
            if raw.get(name)
        },
    )
    host = cluster.advertise.rpartition(":")[0].strip("[]")
    _require(
        host not in ("0.0.0.0", "::", ""),
        "cluster.advertise",
        f"server.listen {server.listen} is a wildcard address: say which address peers dial "
        'this replica at (e.g. advertise = "${POD_IP}:50051")',
    )
    if not cluster.dns_name:
        _require(
            cluster.advertise in cluster.peers,
            "cluster.peers",
            f"must include this replica's own address {cluster.advertise} "
            "(server.listen, or cluster.advertise)",
        )
    return cluster


def _readable_file(value: str, key: str, base: Path) -> str:
    path = Path(value) if Path(value).is_absolute() else base / value
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise _KeyError(key, f"cannot read {path}: {exc.strerror}") from None
    return str(path)


def _parse_principals(
    raw: Any, databases: Mapping[str, DatabaseConfig]
) -> tuple[PrincipalConfig, ...]:
    _require(
        isinstance(raw, list),
        "principals",
        "must be an array of tables ([[principals]] sections)",
    )
    principals: list[PrincipalConfig] = []
    names: set[str] = set()
    hashes: set[str] = set()
    for index, table in enumerate(raw):
        key = f"principals[{index}]"
        _require(isinstance(table, dict), key, "must be a table")
        _check_keys(table, {"name", "token_sha256", "databases", "admin", "postgres_role"}, key)
        name = table.get("name")
        _require(
            isinstance(name, str) and bool(_NAME_RE.match(name)),
            f"{key}.name",
            "is required: letters, digits, '_', '-' and '.' (at most 63 characters)",
        )
        _require(name not in names, f"{key}.name", f"{name!r} is used by another principal")
        key = f"principals.{name}"
        digest = table.get("token_sha256")
        _require(
            isinstance(digest, str) and bool(_SHA256_RE.match(digest.lower())),
            f"{key}.token_sha256",
            "must be the 64 hex digits of the token's SHA-256 "
            '(e.g. printf %s "$TOKEN" | sha256sum)',
        )
        digest = digest.lower()
        _require(digest not in hashes, f"{key}.token_sha256", "is used by another principal")
        admin = table.get("admin", False)
        _require(isinstance(admin, bool), f"{key}.admin", f"must be true or false, got {admin!r}")
        rights = _table(table, "databases", f"{key}.databases")
        access: dict[str, Access] = {}
        for db, right in rights.items():
            where = f"{key}.databases.{db}"
            _require(
                db in databases,
                where,
                f"no such database (configured: {', '.join(sorted(databases))})",
            )
            _require(
                right in (Access.READ, Access.WRITE),
                where,
                f'must be "read" or "write", got {right!r}',
            )
            access[db] = Access(right)
        role = table.get("postgres_role", "")
        _require(
            isinstance(role, str) and "\x00" not in role and len(role) <= 63,
            f"{key}.postgres_role",
            f"must be a PostgreSQL role name (at most 63 characters), got {role!r}",
        )
        names.add(name)
        hashes.add(digest)
        principals.append(PrincipalConfig(name, digest, access, admin, role))
    return tuple(principals)


def is_loopback(listen: str) -> bool:
    """Whether ``HOST:PORT`` is reachable from this machine only."""
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(config: Config) -> None:
    """Refuses to serve beyond loopback without TLS and principals, unless the
    operator said ``allow_insecure = true``."""
    server = config.server
    if server.allow_insecure:
        return
    if server.metrics_listen and not is_loopback(server.metrics_listen):
        # The metrics endpoint has neither TLS nor authentication of its own,
        # and its labels name every principal and database.
        raise ConfigError(
            f"server.metrics_listen: {server.metrics_listen} is reachable beyond this machine, "
            "but the metrics endpoint has no TLS and no authentication and names every "
            "principal and database. Listen on loopback (e.g. 127.0.0.1:9090) behind a "
            "scraper that adds them, or set allow_insecure = true in [server] to accept "
            "that deliberately"
        )
    if is_loopback(server.listen):
        return
    missing = [
        what
        for what, ok in (
            ("TLS (tls_cert, tls_key)", server.tls),
            ("principals ([[principals]] with token_sha256)", bool(config.principals)),
        )
        if not ok
    ]
    if missing:
        raise ConfigError(
            f"server.listen: {server.listen} is reachable beyond this machine, but there is no "
            f"{' and no '.join(missing)}: whoever reaches the port would reach every database. "
            "Configure them, or set allow_insecure = true in [server] to accept that deliberately"
        )


_DATABASE_SETTINGS = (
    "statement_timeout",
    "connect_timeout",
    "max_result_rows",
    "max_result_bytes",
    "stream_chunk_bytes",
    "max_replica_lag",
    "replica_wait",
)


def _parse_database(name: str, table: Mapping[str, Any], key: str, base: Path) -> DatabaseConfig:
    _check_keys(
        table,
        {
            "dsn",
            "password_file",
            "pool",
            "retry",
            "breaker",
            *_DATABASE_SETTINGS,
            *_REPLICA_KEYS,
        },
        key,
    )
    _require("dsn" in table, f"{key}.dsn", "is required")
    dsn = table["dsn"]
    _require(isinstance(dsn, str) and dsn != "", f"{key}.dsn", "must be a non-empty string")
    try:
        engine = engine_for_dsn(dsn)
        if engine is Engine.SQLITE:
            sqlite_path(dsn)
        else:
            parts = urlsplit(dsn)
            _ = parts.port  # raises ValueError on a bad port
            _require(bool(parts.hostname) or "host=" in parts.query, f"{key}.dsn", "has no host")
    except ValueError as exc:
        raise _KeyError(f"{key}.dsn", str(exc)) from None
    if "password_file" in table:
        dsn = _with_password_file(dsn, table["password_file"], f"{key}.password_file", base)
    sections = {
        section: _dataclass_from(
            cls, _table(table, section, f"{key}.{section}"), f"{key}.{section}"
        )
        for section, cls in (
            ("pool", PoolSettings),
            ("retry", RetrySettings),
            ("breaker", BreakerSettings),
        )
    }
    rest = {k: v for k, v in table.items() if k in _DATABASE_SETTINGS}
    replicas = _parse_replicas(table, engine, key)
    db: DatabaseConfig = _dataclass_from(
        DatabaseConfig, rest, key, name=name, dsn=dsn, engine=engine, **sections, **replicas
    )
    _require(db.statement_timeout > 0, f"{key}.statement_timeout", "must be positive")
    _require(db.connect_timeout > 0, f"{key}.connect_timeout", "must be positive")
    _require(db.max_replica_lag > 0, f"{key}.max_replica_lag", "must be positive")
    _require(db.replica_wait >= 0, f"{key}.replica_wait", "must not be negative")
    return db


_REPLICA_KEYS = ("replicas", "read_preference", "replica_pool")


def _parse_replicas(table: Mapping[str, Any], engine: Engine, key: str) -> dict[str, Any]:
    """``replicas``, ``read_preference`` and ``replica_pool`` of a database."""
    parsed: dict[str, Any] = {}
    raw = table.get("replicas", [])
    _require(
        isinstance(raw, list), f"{key}.replicas", "must be an array of DSN strings, e.g. [...]"
    )
    dsns: list[str] = []
    for index, dsn in enumerate(raw):
        where = f"{key}.replicas[{index}]"
        _require(isinstance(dsn, str) and dsn != "", where, "must be a non-empty DSN string")
        try:
            replica_engine = engine_for_dsn(dsn)
            _ = urlsplit(dsn).port  # raises ValueError on a bad port
        except ValueError as exc:
            raise _KeyError(where, str(exc)) from None
        _require(
            replica_engine is not Engine.SQLITE,
            where,
            "SQLite has no replicas; replicas are for PostgreSQL and MySQL/MariaDB",
        )
        _require(
            replica_engine is engine,
            where,
            f"must be the same engine as the dsn ({engine}), got {replica_engine}",
        )
        _require(bool(urlsplit(dsn).hostname), where, "has no host")
        _require(dsn not in dsns, where, "is listed twice")
        dsns.append(dsn)
    parsed["replicas"] = tuple(dsns)
    if "read_preference" in table:
        value = table["read_preference"]
        choices = ", ".join(f'"{p}"' for p in ReadPreference)
        _require(
            value in tuple(ReadPreference),
            f"{key}.read_preference",
            f"must be one of {choices}, got {value!r}",
        )
        parsed["read_preference"] = ReadPreference(value)
    if "replica_pool" in table:
        where = f"{key}.replica_pool"
        parsed["replica_pool"] = _dataclass_from(
            PoolSettings, _table(table, "replica_pool", where), where
        )
    for name in _REPLICA_KEYS[1:]:
        _require(
            bool(dsns) or name not in table or table[name] == ReadPreference.PRIMARY,
            f"{key}.{name}",
            "needs replicas = [...] (this database has no replicas)",
        )
    return parsed


def _with_password_file(dsn: str, value: Any, key: str, base: Path) -> str:
    _require(isinstance(value, str), key, "must be a path")
    path = Path(value) if Path(value).is_absolute() else base / value
    try:
        secret = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise _KeyError(key, f"cannot read {path}: {exc.strerror}") from None
    parts = urlsplit(dsn)
    _require(parts.password is None, key, "the dsn already has a password")
    from urllib.parse import quote

    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{user}:{quote(secret, safe='')}@{host}"
    return parts._replace(netloc=netloc).geturl()


def _validate_listen(listen: str, key: str) -> None:
    host, sep, port = listen.rpartition(":")
    _require(bool(sep) and bool(host), key, f"must be HOST:PORT, got {listen!r}")
    _require(port.isdigit() and 0 <= int(port) <= 65535, key, f"port must be 0-65535, got {port!r}")


def parse_listen(listen: str) -> str:
    """Validates a ``--listen`` value given on the command line."""
    try:
        _validate_listen(listen, "--listen")
    except _KeyError as exc:
        raise ConfigError(f"{exc.key}: {exc.problem}") from None
    return listen
