"""The ``dbgateway`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from dbgateway import _cli as client_commands

from . import __version__

log = logging.getLogger("dbgateway_server")

DEFAULT_SERVER = "127.0.0.1:50051"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbgateway", description="gRPC database-access gateway.")
    parser.add_argument("--version", action="version", version=f"dbgateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway. Without --config: one SQLite database named "
        "'default' in ./dbgateway.sqlite3, listening on 127.0.0.1:50051.",
    )
    serve.add_argument("--config", type=Path, help="TOML configuration file")
    serve.add_argument("--listen", help="HOST:PORT to listen on (overrides [server] listen)")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="server processes sharing the port (SO_REUSEPORT), each with 1/N of every "
        "pool; default 1",
    )
    # Set by the parent of --workers N for each worker process.
    serve.add_argument("--worker", help=argparse.SUPPRESS)
    serve.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    # The client commands live in the client package: they need no server driver.
    client_commands.add_commands(commands)
    databases = commands.add_parser(
        "databases",
        help="list the databases of a running gateway",
        description="Print every database of a running gateway: engine, health, "
        "circuit, pool (AdminService/ListDatabases).",
    )
    databases.add_argument("--server", default=DEFAULT_SERVER, help="HOST:PORT of the gateway")
    databases.add_argument("--timeout", type=float, default=5.0, help="seconds to wait")
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _serve(args: argparse.Namespace) -> int:
    from .config import Config, ConfigError, load_config, parse_listen

    try:
        config = load_config(args.config) if args.config else Config.default()
        if args.listen:
            config = replace(
                config, server=replace(config.server, listen=parse_listen(args.listen))
            )
    except ConfigError as exc:
        print(f"dbgateway: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        from .app import serve
        from .observability import configure_logging
    except ModuleNotFoundError as exc:
        print(
            f'dbgateway: the server needs {exc.name}: pip install "dbgateway[server]"',
            file=sys.stderr,
        )
        return 2
    configure_logging(args.log_level, config.server.log_format)
    if args.workers > 1 and args.worker is None:
        from .workers import run_workers

        argv = ["serve", "--log-level", args.log_level]
        if args.config:
            argv += ["--config", str(args.config.resolve())]
        return run_workers(config.server.listen, args.workers, argv)
    on_started = None
    if args.worker is not None:
        from .workers import notify_ready, worker_config

        index, _, count = args.worker.partition("/")
        config = worker_config(config, int(index), int(count))

        def on_started(app: Any) -> None:
            notify_ready(args.ready_fd)

    runner: Callable[[Coroutine[Any, Any, None]], None]
    try:
        import uvloop

        runner = uvloop.run
    except ModuleNotFoundError:  # pragma: no cover - uvloop is in the server extra
        runner = asyncio.run
    try:
        runner(serve(config, on_started=on_started, worker=args.worker))
    except OSError as exc:
        print(f"dbgateway: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"dbgateway: {exc}", file=sys.stderr)
        return 2
    return 0


def databases_table(response: Any) -> str:
    """A ``ListDatabasesResponse`` as an aligned text table."""
    from dbgateway.v1 import admin_service_pb2 as pb

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
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _databases(args: argparse.Namespace) -> int:
    """Client side: needs grpcio and the generated code only, no server drivers."""
    import grpc

    from dbgateway.v1 import admin_service_pb2, admin_service_pb2_grpc

    with grpc.insecure_channel(args.server) as channel:
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            response = stub.ListDatabases(
                admin_service_pb2.ListDatabasesRequest(), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            print(f"dbgateway: {args.server}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    print(databases_table(response))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command in client_commands.COMMANDS:
        return client_commands.run(args)
    if args.command == "databases":
        return _databases(args)
    raise AssertionError(args.command)  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
