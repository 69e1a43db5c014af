"""``dbgateway serve --workers N``: N server processes sharing one port.

gRPC Python spends most of a unary call's CPU in its core and the event loop,
and one process uses one core. With ``--workers N`` the parent process starts
N workers, each a complete gateway (its own event loop, pools, health service
and metrics) listening on the same HOST:PORT with ``SO_REUSEPORT``, so the
kernel spreads incoming connections over them. The parent serves no calls: it
starts the workers, announces the port once they all listen, forwards SIGTERM
and SIGINT to them (each drains as a single server would) and exits 0 when all
of them exited 0.

What each worker has:

- ``max_size / N`` connections per database (at least 1) and
  ``ceil(min_size / N)`` kept open (at most its max_size): the database sees
  the configured total, not N times it;
- its own health service: every worker checks the same databases, so a health
  call answers the same whichever worker the connection lands on;
- its own Prometheus endpoint when ``metrics_listen`` is set: worker ``i``
  serves on port ``P + i`` (each on a port of its own when ``P`` is 0), and
  every series it reports is its own share, so scrape all N and sum them.

A channel is one connection, so one client channel is served by one worker;
load spreads across workers with the number of client connections. A
handle-based transaction lives in the worker that began it; every worker
also listens on a socket in a private directory the parent makes for the run,
and forwards a call on another worker's transaction there (see cluster.py),
authenticated with a secret the parent hands its workers in the environment.
SIGHUP to the parent reloads every worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

from .cluster import WORKER_SECRET_ENV
from .config import Config

log = logging.getLogger("dbgateway_server")

#: How long the parent waits for every worker to listen.
START_TIMEOUT = 60.0


def worker_config(config: Config, index: int, workers: int) -> Config:
    """Worker ``index``'s share of ``config`` when ``workers`` processes serve it."""
    if workers <= 1:
        return config
    databases = {}
    for name, db in config.databases.items():
        max_size = max(1, db.pool.max_size // workers)
        min_size = min(max_size, -(-db.pool.min_size // workers))
        pool = dataclasses.replace(db.pool, min_size=min_size, max_size=max_size)
        databases[name] = dataclasses.replace(db, pool=pool)
    server = config.server
    if server.metrics_listen:
        host, _, port = server.metrics_listen.rpartition(":")
        if int(port):
            server = dataclasses.replace(server, metrics_listen=f"{host}:{int(port) + index}")
    return dataclasses.replace(config, server=server, databases=databases)


def _reserve(listen: str) -> tuple[socket.socket, int]:
    """Binds (without listening) a SO_REUSEPORT socket on ``listen``, so that
    port 0 becomes one real port every worker can share."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock, int(sock.getsockname()[1])


def run_workers(listen: str, workers: int, argv: Sequence[str]) -> int:
    """The parent: starts ``workers`` copies of ``dbgateway serve`` (``argv``
    without ``--listen`` and ``--workers``), waits until all listen, then
    waits for a signal or for a worker to die."""
    host = listen.rpartition(":")[0]
    try:
        reserved, port = _reserve(listen)
    except OSError as exc:
        print(f"dbgateway: cannot listen on {listen}: {exc}", file=sys.stderr)
        return 1
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

    def on_reload(signum: int, frame: object) -> None:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

    procs: list[subprocess.Popen[bytes]] = []
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_reload)
    ready_r, ready_w = os.pipe()
    # The workers forward handle-based transaction calls to each other over
    # sockets in a directory only this user can enter, authenticated with a
    # secret made for this run (passed in the environment, never in argv).
    worker_dir = tempfile.mkdtemp(prefix="dbgateway-workers-")
    env = {**os.environ, WORKER_SECRET_ENV: secrets.token_urlsafe(32)}
    try:
        for index in range(workers):
            cmd = [
                sys.executable,
                "-m",
                "dbgateway_server",
                *argv,
                "--listen",
                f"{host}:{port}",
                "--worker",
                f"{index}/{workers}",
                "--ready-fd",
                str(ready_w),
                "--worker-dir",
                worker_dir,
            ]
            procs.append(subprocess.Popen(cmd, pass_fds=(ready_w,), env=env))
        os.close(ready_w)
        if not _wait_ready(ready_r, workers, procs, lambda: stop):
            on_signal(signal.SIGTERM, None)
        else:
            reserved.close()
            pids = ", ".join(str(p.pid) for p in procs)
            log.info("dbgateway listening on %s:%d (%d workers: %s)", host, port, workers, pids)
        return _supervise(procs, lambda: stop, on_signal)
    finally:
        reserved.close()
        os.close(ready_r)
        shutil.rmtree(worker_dir, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wait_ready(
    fd: int, workers: int, procs: list[subprocess.Popen[bytes]], stopping: Callable[[], bool]
) -> bool:
    ready = 0
    buffer = b""
    deadline = time.monotonic() + START_TIMEOUT
    while ready < workers:
        if stopping():
            return False
        if any(p.poll() is not None for p in procs):
            log.error("a worker exited during start-up")
            return False
        if time.monotonic() > deadline:
            log.error("workers did not start within %gs", START_TIMEOUT)
            return False
        with contextlib.suppress(InterruptedError):
            readable, _, _ = select.select([fd], [], [], 0.1)
            if readable:
                chunk = os.read(fd, 1024)
                buffer += chunk
                ready = buffer.count(b"\n")
    return True


def _supervise(
    procs: list[subprocess.Popen[bytes]],
    stopping: Callable[[], bool],
    stop_all: Callable[[int, object], None],
) -> int:
    """Waits for all workers; one dying on its own stops the others."""
    failed = False
    while any(p.poll() is None for p in procs):
        if not stopping():
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                log.error(
                    "worker %d exited with %s; stopping the others", dead[0].pid, dead[0].returncode
                )
                failed = True
                stop_all(signal.SIGTERM, None)
        time.sleep(0.1)
    codes = [p.returncode for p in procs]
    return 1 if failed or any(codes) else 0


def notify_ready(fd: int | None) -> None:
    """A worker tells the parent it listens."""
    if fd is None:
        return
    os.write(fd, b"ready\n")
    os.close(fd)
