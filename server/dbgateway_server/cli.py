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
    # The client commands live in the client package: they need no server driver.
    client_commands.add_commands(commands)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from .config import Config, ConfigError, check_exposure, load_config, parse_listen

    try:
        config = load_config(args.config) if args.config else Config.default()
        if args.listen:
            config = replace(
                config, server=replace(config.server, listen=parse_listen(args.listen))
            )
        check_exposure(config)
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
    runner: Callable[[Coroutine[Any, Any, None]], None]
    try:
        import uvloop

        runner = uvloop.run
    except ModuleNotFoundError:  # pragma: no cover - uvloop is in the server extra
        runner = asyncio.run
    try:
        runner(serve(config))
    except OSError as exc:
        print(f"dbgateway: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"dbgateway: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command in client_commands.COMMANDS:
        return client_commands.run(args)
    raise AssertionError(args.command)  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
