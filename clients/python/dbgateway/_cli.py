"""The client side of the ``dbgateway`` command: ``query``, ``exec``, ``health``,
``databases``, ``listen``.

``dbgateway_server.cli`` registers these next to ``serve``. Nothing here needs
the server's database drivers, so they work from a plain ``pip install
dbgateway``.

Parameters on the command line are text unless they name a type::

    dbgateway query --database pg 'SELECT * FROM t WHERE id = $1 AND day > $2' int:7 date:2024-05-01

``TYPE:VALUE`` with TYPE one of ``str int float bool null decimal bytes json
date time datetime uuid``; anything else (including text that merely contains
a colon) is sent as text. ``str:`` sends the rest as text verbatim.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import decimal
import json
import os
import re
import sys
import tomllib
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TextIO

__all__ = [
    "COMMANDS",
    "add_commands",
    "databases_table",
    "format_table",
    "parse_param",
    "run",
    "server_settings",
    "statements_table",
]

COMMANDS = ("query", "exec", "health", "databases", "statements", "listen")
DEFAULT_SERVER = "127.0.0.1:50051"
SERVER_ENV = "DBGATEWAY_SERVER"
TOKEN_ENV = "DBGATEWAY_TOKEN"
CONFIG_ENV = "DBGATEWAY_CONFIG"
TLS_ENV = "DBGATEWAY_TLS"
CA_ENV = "DBGATEWAY_CA"
CERT_ENV = "DBGATEWAY_CERT"
KEY_ENV = "DBGATEWAY_KEY"
SERVER_NAME_ENV = "DBGATEWAY_SERVER_NAME"
#: Exit status of a failed call, and (as Docker's HEALTHCHECK expects) of an
#: unhealthy server.
EXIT_FAILED = 1
#: Exit status of a command line that could not be used (bad parameter, file).
EXIT_USAGE = 2


# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "t", "yes", "y", "1", "on"):
        return True
    if lowered in ("false", "f", "no", "n", "0", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _null(text: str) -> None:
    if text:
        raise ValueError("null: takes no value")
    return None


def _json(text: str) -> Any:
    from ._values import Json

    return Json(json.loads(text))


_PARAM_TYPES: dict[str, Callable[[str], Any]] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": _bool,
    "null": _null,
    "decimal": decimal.Decimal,
    "bytes": bytes.fromhex,
    "json": _json,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "datetime": dt.datetime.fromisoformat,
    "uuid": uuid.UUID,
}


def parse_param(text: str) -> Any:
    """A command-line parameter: ``TYPE:VALUE`` for a known TYPE, else text."""
    kind, colon, rest = text.partition(":")
    parse = _PARAM_TYPES.get(kind) if colon else None
    if parse is None:
        return text
    try:
        return parse(rest)
    except (ValueError, ArithmeticError) as exc:
        raise ValueError(f"{text!r} is not a valid {kind}: {exc}") from None


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def _duration_text(value: Any) -> str:
    from ._values import Interval

    if isinstance(value, Interval):
        months, days, micros = value.months, value.days, value.microseconds
    else:
        months, days, micros = 0, value.days, value.seconds * 1_000_000 + value.microseconds
    seconds = decimal.Decimal(micros) / 1_000_000
    text = "P"
    if months:
        text += f"{months}M"
    if days or not (months or micros):
        text += f"{days}D"
    if micros:
        text += f"T{seconds.normalize():f}S"
    return text


def _json_ready(value: Any) -> Any:
    """A result value as JSON: exact numbers as text, bytes as base64."""
    from ._values import Interval

    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta | Interval):
        return _duration_text(value)
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    return str(value)


_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def _clock_text(value: dt.timedelta) -> str:
    """A MySQL TIME (a duration of up to 838 hours, maybe negative) as the
    database writes it: ``[-]H:MM:SS[.ffffff]``."""
    sign = "-" if value < dt.timedelta(0) else ""
    micros = abs(value) // dt.timedelta(microseconds=1)
    seconds, fraction = divmod(micros, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    text = f"{sign}{hours:02d}:{minute:02d}:{second:02d}"
    return f"{text}.{fraction:06d}" if fraction else text


def _is_clock_type(db_type: str) -> bool:
    return db_type.strip().upper().split("(")[0] == "TIME"


def _cell(value: Any, db_type: str = "") -> str:
    """A result value as one line of table text."""
    from ._values import Interval

    if isinstance(value, dt.timedelta) and _is_clock_type(db_type):
        return _clock_text(value)
    if value is None:
        text = "NULL"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, bytes):
        text = "\\x" + value.hex()
    elif isinstance(value, dict | list):
        text = json.dumps(_json_ready(value), ensure_ascii=False)
    elif isinstance(value, dt.datetime | dt.date | dt.time):
        text = value.isoformat()
    elif isinstance(value, dt.timedelta | Interval):
        text = _duration_text(value)
    elif isinstance(value, str):
        # One row per line: control characters are shown escaped.
        text = value.translate(_ESCAPES)
    else:
        text = str(value)
    return text


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float | decimal.Decimal) and not isinstance(value, bool)


def format_table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], types: Sequence[str] = ()
) -> list[str]:
    """An aligned text table: numbers right-aligned, NULL spelled out;
    ``types`` (the columns' db_type) tells a MySQL TIME from an interval."""
    kinds = list(types) or [""] * len(columns)
    cells = [[_cell(v, t) for v, t in zip(row, kinds, strict=True)] for row in rows]
    widths = [len(c) for c in columns]
    for line in cells:
        for i, text in enumerate(line):
            widths[i] = max(widths[i], len(text))
    out = [" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    out.append("-+-".join("-" * w for w in widths))
    for row, line in zip(rows, cells, strict=True):
        parts = [
            text.rjust(w) if _numeric(v) else text.ljust(w)
            for v, text, w in zip(row, line, widths, strict=True)
        ]
        out.append(" | ".join(parts).rstrip())
    return out


def _rows_footer(count: int, truncated: bool = False) -> str:
    text = f"({count} row{'' if count == 1 else 's'})"
    return f"{text} (truncated: more rows were available)" if truncated else text


def _print_json_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO) -> None:
    for row in rows:
        record = {c: _json_ready(v) for c, v in zip(columns, row, strict=True)}
        print(json.dumps(record, ensure_ascii=False), file=out)


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _connection_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group(
        "connection",
        "Each option also comes from its DBGATEWAY_* variable (named in its help), so "
        "a container's HEALTHCHECK needs no flags; --config takes the address and "
        "whether TLS is on from the server's own config file.",
    )
    group.add_argument(
        "--server",
        default=os.environ.get(SERVER_ENV) or None,
        metavar="HOST:PORT",
        help=f"the gateway (default: ${SERVER_ENV}, else --config's listen, else {DEFAULT_SERVER})",
    )
    group.add_argument(
        "--config",
        default=os.environ.get(CONFIG_ENV) or None,
        metavar="FILE",
        help=f"the server's dbgateway.toml (${CONFIG_ENV}): connect to its [server] "
        "listen (a wildcard address as loopback), with TLS when it has tls_cert",
    )
    group.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV) or None,
        help=f"bearer token (default: ${TOKEN_ENV}; prefer the variable, "
        "command lines are visible to other users)",
    )
    group.add_argument(
        "--tls",
        action="store_true",
        default=_env_flag(TLS_ENV),
        help=f"use TLS with the system's CA roots (${TLS_ENV}=1)",
    )
    group.add_argument(
        "--ca",
        default=os.environ.get(CA_ENV) or None,
        metavar="FILE",
        help=f"PEM CA bundle for the server, implies --tls (${CA_ENV})",
    )
    group.add_argument(
        "--cert",
        default=os.environ.get(CERT_ENV) or None,
        metavar="FILE",
        help=f"client certificate for mutual TLS (${CERT_ENV})",
    )
    group.add_argument(
        "--key",
        default=os.environ.get(KEY_ENV) or None,
        metavar="FILE",
        help=f"client private key for mutual TLS (${KEY_ENV})",
    )
    group.add_argument(
        "--server-name",
        default=os.environ.get(SERVER_NAME_ENV) or None,
        help=f"name to check in the server certificate (${SERVER_NAME_ENV})",
    )
    group.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="deadline of the call (default 30; health and databases 5)",
    )
    return common


_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def server_settings(path: str) -> tuple[str, bool]:
    """The address to reach a server at, and whether it speaks TLS, from its
    config file: ``[server] listen`` (``${ENV}`` expanded; a wildcard host
    becomes loopback, as a health check runs next to the server) and
    ``tls_cert``."""
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    server = raw.get("server", {})
    if not isinstance(server, dict):
        raise ValueError(f"{path}: [server] must be a table")
    listen = _INTERPOLATION.sub(
        lambda m: os.environ.get(m.group(1), ""), str(server.get("listen", DEFAULT_SERVER))
    )
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host in ("[::]", "::"):
        host = "[::1]"
    return f"{host}:{port}", bool(server.get("tls_cert"))


def add_commands(commands: Any) -> None:
    """Adds ``query``, ``exec``, ``health`` and ``databases`` to the ``dbgateway``
    subparsers."""
    common = _connection_options()
    for name, verb in (("query", "run a read and print its rows"), ("exec", "run a write")):
        sub = commands.add_parser(
            name,
            parents=[common],
            help=verb,
            description=f"{verb[0].upper()}{verb[1:]}. Parameters are text unless written "
            "TYPE:VALUE, TYPE one of: " + " ".join(_PARAM_TYPES) + " (e.g. int:7, null:).",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("--database", "-d", help="configured database name")
        sub.add_argument("--json", action="store_true", help="print rows as JSON lines")
        if name == "query":
            sub.add_argument("--max-rows", type=int, help="return at most this many rows")
            sub.add_argument(
                "--stream",
                action="store_true",
                help="read through StreamQuery and print rows as they arrive (any size; "
                "tab-separated, or JSON lines with --json)",
            )
        else:
            sub.add_argument(
                "--idempotent", action="store_true", help="the write is safe to run twice"
            )
        sub.add_argument("sql", metavar="SQL")
        sub.add_argument("params", metavar="PARAM", nargs="*")
    health = commands.add_parser(
        "health",
        parents=[common],
        help="check the gateway's health (exit 0 only when SERVING)",
        description="Prints the health status; exits 0 when SERVING, 1 otherwise "
        "(not serving, unknown service, unreachable).",
    )
    health.add_argument(
        "--service",
        default="",
        help='"" (the server, default), dbgateway.v1.DatabaseService, or db/NAME',
    )
    commands.add_parser(
        "databases",
        parents=[common],
        help="list the databases of a running gateway",
        description="Print every database of a running gateway: engine, health, "
        "circuit, pool, open transactions (AdminService/ListDatabases).",
    )
    listen = commands.add_parser(
        "listen",
        parents=[common],
        help="print a PostgreSQL database's notifications (LISTEN) as they come",
        description="Subscribe to notification channels of a PostgreSQL database "
        "and print one line per notification (CHANNEL, a tab, PAYLOAD) until "
        "interrupted. A gap (the gateway reconnected; some may be missed) is "
        "reported on stderr.",
    )
    listen.add_argument("--json", action="store_true", help="print notifications as JSON lines")
    listen.add_argument(
        "--count", type=int, metavar="N", help="exit after N notifications (gaps not counted)"
    )
    listen.add_argument("database", metavar="DATABASE")
    listen.add_argument("channels", metavar="CHANNEL", nargs="+")
    statements = commands.add_parser(
        "statements",
        parents=[common],
        help="list the statements that cost the databases most time",
        description="Print the statements of a running gateway by total time, highest "
        "first: calls, errors, rows, total / mean / p99 time (AdminService/ListStatements). "
        "Literals are folded to ?, so one line stands for every value.",
    )
    statements.add_argument("--database", "-d", default="", help="only this database")
    statements.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    statements.add_argument(
        "--reset", action="store_true", help="forget the statistics after printing them"
    )


def _client(args: argparse.Namespace, default_timeout: float) -> Any:
    from ._client import Client
    from ._config import ClientConfig, RetryPolicy, TLSConfig

    target, config_tls = args.server, False
    if args.config:
        listen, config_tls = server_settings(args.config)
        target = target or listen
    target = target or DEFAULT_SERVER
    tls: TLSConfig | None = None
    if config_tls or args.tls or args.ca or args.cert or args.key or args.server_name:
        tls = TLSConfig(
            ca_file=args.ca, cert_file=args.cert, key_file=args.key, server_name=args.server_name
        )
    timeout = args.timeout if args.timeout is not None else default_timeout
    # A person at a terminal wants the answer now: no retries, so an open
    # circuit fails at once with its cause instead of waiting out RetryInfo.
    config = ClientConfig(retry=RetryPolicy(max_attempts=1))
    # One command is one call: a session stream would only add its own set-up
    # (and a reader thread) to it.
    return Client(
        target, tls=tls, token=args.token, timeout=timeout, config=config, transport="unary"
    )


def _query(args: argparse.Namespace, params: list[Any], out: TextIO, err: TextIO) -> int:
    if args.stream:
        return _stream(args, params, out)
    with _client(args, 30.0) as db:
        result = db.query(args.sql, *params, database=args.database, max_rows=args.max_rows)
    types = [c.db_type for c in result.column_info]
    if args.json:
        _print_json_rows(result.columns, result.rows, out)
    else:
        for line in format_table(result.columns, result.rows, types):
            print(line, file=out)
        print(_rows_footer(len(result.rows), result.truncated), file=out)
    if not result.columns:
        # The statement ran (a write goes through Query too) but returned no
        # result set: say so rather than print an empty table silently.
        print(
            "dbgateway: the statement returned no result set; if it was a write it ran: "
            "use `dbgateway exec` to see the rows it affected",
            file=err,
        )
    return 0


def _stream(args: argparse.Namespace, params: list[Any], out: TextIO) -> int:
    """Prints a read of any size row by row as StreamQuery delivers it."""
    count = 0
    with (
        _client(args, 30.0) as db,
        db.stream(args.sql, *params, database=args.database, max_rows=args.max_rows) as rows,
    ):
        columns: Sequence[str] = ()
        types: list[str] = []
        for row in rows:
            if count == 0:
                columns = rows.columns or ()
                types = [c.db_type for c in rows.column_info or ()]
                if not args.json:
                    print("\t".join(columns), file=out)
            if args.json:
                _print_json_rows(columns, [row], out)
            else:
                print("\t".join(_cell(v, t) for v, t in zip(row, types, strict=True)), file=out)
            count += 1
        if count == 0 and not args.json:
            print("\t".join(rows.columns or ()), file=out)
        truncated = rows.truncated
    if not args.json:
        print(_rows_footer(count, truncated), file=out)
    return 0


def _exec(args: argparse.Namespace, params: list[Any], out: TextIO) -> int:
    with _client(args, 30.0) as db:
        result = db.execute(args.sql, *params, database=args.database, idempotent=args.idempotent)
    if args.json:
        if result.columns:
            _print_json_rows(result.columns, result.rows, out)
        else:
            summary = {"rows_affected": result.rows_affected}
            if result.last_insert_id is not None:
                summary["last_insert_id"] = result.last_insert_id
            print(json.dumps(summary), file=out)
        return 0
    if result.columns:
        for line in format_table(result.columns, result.rows):
            print(line, file=out)
    text = f"rows affected: {result.rows_affected}"
    if result.last_insert_id is not None:
        text += f", last insert id: {result.last_insert_id}"
    print(text, file=out)
    return 0


def _health(args: argparse.Namespace, out: TextIO) -> int:
    from ._health import HealthStatus

    with _client(args, 5.0) as db:
        status = db.health(args.service)
    print(status.value, file=out)
    return 0 if status is HealthStatus.SERVING else EXIT_FAILED


def databases_table(response: Any) -> str:
    """A ``ListDatabasesResponse`` as an aligned text table, then (after a
    blank line) why each circuit that is not closed is so."""
    from .v1 import admin_service_pb2 as pb

    def short(enum: Any, value: int, prefix: str) -> str:
        return str(enum.Name(value)).removeprefix(prefix).lower().replace("_", "-")

    header = (
        *("NAME", "ENGINE", "VERSION", "HEALTH", "CIRCUIT", "SIZE", "IDLE", "IN USE"),
        *("WAITING", "MIN", "MAX", "ACQUIRED", "CREATED", "CLOSED", "TIMEOUTS", "TX"),
    )
    rows: list[tuple[str, ...]] = [header]
    for db in response.databases:
        p = db.pool
        rows.append(
            (
                db.name,
                short(pb.Engine, db.engine, "ENGINE_"),
                db.server_version or "-",
                short(pb.DatabaseHealth, db.health, "DATABASE_HEALTH_"),
                short(pb.CircuitState, db.circuit_state, "CIRCUIT_STATE_"),
                *map(str, (p.size, p.idle, p.in_use, p.waiting, p.min_size, p.max_size)),
                *map(str, (p.acquired_total, p.created_total, p.closed_total)),
                str(p.acquire_timeouts_total),
                str(db.open_transactions),
            )
        )
    sections = [_aligned(rows)]
    endpoints = _endpoints_table(response)
    if endpoints:
        sections.append(endpoints)
    causes = [
        f"{db.name}: circuit not closed because of {_cause_text(db.circuit_cause)}"
        for db in response.databases
        if db.HasField("circuit_cause")
    ]
    if causes:
        sections.append("\n".join(causes))
    return "\n\n".join(sections)


def _aligned(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _cause_text(cause: Any) -> str:
    codes = ", ".join(c for c in (cause.sqlstate, cause.vendor_code) if c)
    where = f" ({codes})" if codes else ""
    return f"{cause.reason}{where}: {cause.message}"


def _endpoints_table(response: Any) -> str:
    """The endpoints of databases with replicas (empty when none has any)."""
    from .v1 import admin_service_pb2 as pb

    header = (
        *("DATABASE", "ENDPOINT", "ROLE", "ADDRESS", "SERVING", "CIRCUIT", "LAG"),
        *("SIZE", "IN USE", "WAITING", "MAX"),
    )
    rows: list[tuple[str, ...]] = [header]
    for db in response.databases:
        if len(db.endpoints) < 2:
            continue
        for e in db.endpoints:
            lag = "-"
            if e.role == pb.ENDPOINT_ROLE_REPLICA:
                lag = f"{e.lag.ToTimedelta().total_seconds():.3f}s" if e.HasField("lag") else "?"
            rows.append(
                (
                    db.name,
                    e.name,
                    str(pb.EndpointRole.Name(e.role)).removeprefix("ENDPOINT_ROLE_").lower(),
                    e.address,
                    "yes" if e.serving else "no",
                    str(pb.CircuitState.Name(e.circuit_state))
                    .removeprefix("CIRCUIT_STATE_")
                    .lower()
                    .replace("_", "-"),
                    lag,
                    *map(str, (e.pool.size, e.pool.in_use, e.pool.waiting, e.pool.max_size)),
                )
            )
    return _aligned(rows) if len(rows) > 1 else ""


def _databases(args: argparse.Namespace, out: TextIO) -> int:
    with _client(args, 5.0) as db:
        response = db._list_databases()
    print(databases_table(response), file=out)
    return 0


def _listen(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.count is not None and args.count < 1:
        raise ValueError("--count must be at least 1")
    received = 0
    with _client(args, 30.0) as db, db.subscribe(args.database, *args.channels) as subscription:
        print(f"listening on {', '.join(args.channels)}", file=err, flush=True)
        for n in subscription:
            if n.gap:
                if args.json:
                    print(json.dumps({"gap": True}), file=out, flush=True)
                print("gap: the gateway reconnected; notifications may be missed", file=err)
                continue
            if args.json:
                line = json.dumps(
                    {
                        "channel": n.channel,
                        "payload": n.payload,
                        "sender_pid": n.sender_pid,
                        "received_at": n.received_at.isoformat() if n.received_at else None,
                    }
                )
            else:
                line = f"{n.channel}\t{n.payload}"
            print(line, file=out, flush=True)
            received += 1
            if args.count is not None and received >= args.count:
                break
    return 0


def _millis(duration: Any) -> str:
    return f"{duration.seconds * 1000 + duration.nanos / 1e6:.3f}"


def statements_table(response: Any) -> str:
    """A ``ListStatementsResponse`` as an aligned text table (times in ms)."""
    header = ("DATABASE", "CALLS", "ERRORS", "ROWS", "TOTAL MS", "MEAN MS", "P99 MS", "STATEMENT")
    rows: list[tuple[str, ...]] = [header]
    for st in response.statements:
        errors = str(st.errors)
        if st.errors_by_reason:
            errors += " (" + ", ".join(f"{k} {v}" for k, v in sorted(st.errors_by_reason.items()))
            errors += ")"
        rows.append(
            (
                st.database,
                str(st.calls),
                errors,
                str(st.rows),
                _millis(st.total_time),
                _millis(st.mean_time),
                _millis(st.p99_time),
                st.text if len(st.text) <= 120 else st.text[:117] + "...",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _statements(args: argparse.Namespace, out: TextIO) -> int:
    with _client(args, 5.0) as db:
        response = db._list_statements(args.database, args.limit)
        if args.reset:
            db._reset_statements(args.database)
    print(statements_table(response), file=out)
    return 0


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Runs a parsed client command; failures print one line and return non-zero."""
    from ._errors import DbGatewayError

    out = out or sys.stdout
    err = err or sys.stderr
    try:
        if args.command == "health":
            return _health(args, out)
        if args.command == "databases":
            return _databases(args, out)
        if args.command == "listen":
            return _listen(args, out, err)
        if args.command == "statements":
            return _statements(args, out)
        try:
            params = [parse_param(p) for p in args.params]
        except ValueError as exc:
            print(f"dbgateway: {exc}", file=err)
            return EXIT_USAGE
        if args.command == "query":
            return _query(args, params, out, err)
        return _exec(args, params, out)
    except DbGatewayError as exc:
        print(f"dbgateway: {exc.summary()}", file=err)
        if exc.reason == "RESULT_TOO_LARGE" and args.command == "query":
            print(
                "dbgateway: hint: add --stream to print a result of any size as it "
                "arrives, or --max-rows N to see the first N rows",
                file=err,
            )
        return EXIT_FAILED
    except (OSError, ValueError, TypeError) as exc:
        # Unreadable TLS files, a malformed target, a value the client cannot send.
        print(f"dbgateway: {exc}", file=err)
        admin = args.command in ("health", "databases", "statements")
        return EXIT_FAILED if admin else EXIT_USAGE
    except KeyboardInterrupt:
        return 130
