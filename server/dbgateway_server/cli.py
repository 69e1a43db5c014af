"""The ``dbgateway`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
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
    serve.add_argument("--worker-dir", default="", help=argparse.SUPPRESS)
    reload = commands.add_parser(
        "reload",
        help="make running gateways reload their configuration (SIGHUP)",
        description="Send SIGHUP to a running 'dbgateway serve' (by default every one this "
        "user runs on this machine): it reads its --config file again and applies it without "
        "a restart; a bad file is logged and changes nothing.",
    )
    reload.add_argument("--pid", type=int, help="the process to signal")
    # The client commands live in the client package: they need no server driver.
    client_commands.add_commands(commands)
    return parser


def _serve_processes() -> list[int]:
    """The ``dbgateway serve`` processes of this user (not their workers,
    which their parent signals)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv if a]
        command = " ".join(words[:3])
        serving = "serve" in words and ("dbgateway" in command or "dbgateway_server" in command)
        if serving and "--worker" not in words:
            found.append(int(entry.name))
    return sorted(found)


def _reload(args: argparse.Namespace) -> int:
    pids = [args.pid] if args.pid else _serve_processes()
    if not pids:
        print("dbgateway: no running 'dbgateway serve' found (give --pid)", file=sys.stderr)
        return 1
    for pid in pids:
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError as exc:
            print(f"dbgateway: cannot signal {pid}: {exc.strerror}", file=sys.stderr)
            return 1
        print(f"sent SIGHUP to {pid}; its log says whether the new configuration was taken")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _serve(args: argparse.Namespace) -> int:
    from .config import Config, ConfigError, check_exposure, load_config, parse_listen

    def load() -> Config:
        """The configuration as the command line and the file say now (read
        again on SIGHUP)."""
        config = load_config(args.config) if args.config else Config.default()
        if args.listen:
            config = replace(
                config, server=replace(config.server, listen=parse_listen(args.listen))
            )
        check_exposure(config)
        if args.worker is not None:
            from .workers import worker_config

            index, _, count = args.worker.partition("/")
            config = worker_config(config, int(index), int(count))
        return config

    try:
        config = load()
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
        from .workers import notify_ready

        def on_started(app: Any) -> None:
            notify_ready(args.ready_fd)

    runner: Callable[[Coroutine[Any, Any, None]], None]
    try:
        import uvloop

        runner = uvloop.run
    except ModuleNotFoundError:  # pragma: no cover - uvloop is in the server extra
        runner = asyncio.run
    try:
        runner(
            serve(
                config,
                on_started=on_started,
                worker=args.worker,
                worker_dir=args.worker_dir,
                reload=load,
            )
        )
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
    if args.command == "reload":
        return _reload(args)
    if args.command in client_commands.COMMANDS:
        return client_commands.run(args)
    raise AssertionError(args.command)  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
