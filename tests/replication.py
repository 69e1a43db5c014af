"""Private replicated database servers for the read-replica tests.

:class:`PostgresReplication` is a PostgreSQL primary and a streaming replica
(``initdb`` into a temporary directory as the ``postgres`` user, then
``pg_basebackup -R``); :class:`MariaDBReplication` is a MariaDB primary and a
GTID replica (two private ``mariadbd`` processes with their own datadirs).
Both listen on free ports on 127.0.0.1 and never touch the machine's own
database services. Every process is started here and stopped here, by PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PG_BIN = Path(os.environ.get("DBGATEWAY_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
MARIADBD = os.environ.get("DBGATEWAY_TEST_MARIADBD", "/usr/sbin/mariadbd")
MARIADB_INSTALL_DB = os.environ.get("DBGATEWAY_TEST_MARIADB_INSTALL_DB", "mariadb-install-db")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Polls ``check`` until it is true; fails naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # not there yet
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last})")


def _kill(pid: int | None, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """Signals ``pid`` and waits for it to be gone (SIGKILL after ``timeout``)."""
    if pid is None:
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# -- PostgreSQL ------------------------------------------------------------------


class PostgresServer:
    """One private PostgreSQL server (``postgres -D``), run as the postgres user."""

    def __init__(self, datadir: Path, port: int, log: Path) -> None:
        self.datadir = datadir
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/app"

    def pid(self) -> int | None:
        """The postmaster's own PID (runuser in between is not it)."""
        pidfile = self.datadir / "postmaster.pid"
        try:
            return int(pidfile.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    "runuser", "-u", "postgres", "--",
                    str(PG_BIN / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
                    "-k", str(self.datadir), "-c", "listen_addresses=127.0.0.1",
                    "-c", "fsync=off", "-c", "synchronous_commit=off",
                    "-c", "full_page_writes=off", "-c", "shared_buffers=16MB",
                    "-c", "max_connections=60", "-c", "wal_receiver_status_interval=1s",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_for(f"PostgreSQL on port {self.port}", self.ready)

    def ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"postgres exited:\n{self.log.read_text(errors='replace')[-2000:]}")
        result = subprocess.run(
            [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
            check=False,
        )
        return result.returncode == 0

    def kill(self) -> None:
        """Kills the postmaster at once (SIGKILL): an outage, not a shutdown."""
        _kill(self.pid(), signal.SIGKILL)
        self._reap()
        # Its children notice the postmaster is gone and exit; the port is freed.
        wait_for(f"port {self.port} to be free", lambda: not self.ready(), 30)
        (self.datadir / "postmaster.pid").unlink(missing_ok=True)

    def stop(self) -> None:
        _kill(self.pid(), signal.SIGINT)  # fast shutdown
        self._reap()

    def _reap(self) -> None:
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.process = None


class PostgresReplication:
    """A PostgreSQL primary and one streaming replica of it, with a database
    ``app``, in a temporary directory of their own (removed by :meth:`stop`):
    the postgres user must reach it, which pytest's private tmp_path forbids."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="dbgw-pg-replication-"))
        root = self.root
        self.primary = PostgresServer(root / "primary", free_port(), root / "primary.log")
        self.replica = PostgresServer(root / "replica", free_port(), root / "replica.log")

    def _as_postgres(self, *cmd: str) -> None:
        result = subprocess.run(
            ["runuser", "-u", "postgres", "--", *cmd], check=False, capture_output=True
        )
        if result.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {result.stderr.decode(errors='replace')}")

    def start(self) -> PostgresReplication:
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root, "postgres", "postgres")
        self.root.chmod(0o755)
        for log in (self.primary.log, self.replica.log):
            log.touch()
            shutil.chown(log, "postgres", "postgres")
        self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.primary.datadir), "-U", "postgres",
            "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8",
        )  # fmt: skip
        self.primary.start()
        self.fetch(self.primary, "CREATE DATABASE app", database="postgres")
        self._as_postgres(
            str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary.port),
            "-U", "postgres", "-D", str(self.replica.datadir), "-R", "-X", "stream", "--no-sync",
            "--checkpoint=fast",
        )  # fmt: skip
        self.replica.start()
        wait_for("the replica to stream", lambda: self.streaming())
        return self

    def streaming(self) -> bool:
        rows = self.fetch(self.primary, "SELECT count(*) FROM pg_stat_replication")
        return bool(rows[0][0] == 1)

    def stop(self) -> None:
        for server in (self.replica, self.primary):
            try:
                server.stop()
            except Exception:
                _kill(server.pid(), signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)

    def fetch(self, server: PostgresServer, sql: str, *args: Any, database: str = "app") -> Any:
        import asyncio

        import asyncpg

        async def run() -> Any:
            conn = await asyncpg.connect(
                f"postgresql://postgres@127.0.0.1:{server.port}/{database}", timeout=5
            )
            try:
                return await conn.fetch(sql, *args)
            finally:
                await conn.close()

        return asyncio.run(run())

    def pause_replay(self) -> None:
        self.fetch(self.replica, "SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        self.fetch(self.replica, "SELECT pg_wal_replay_resume()")

    def caught_up(self) -> bool:
        lsn = self.fetch(self.primary, "SELECT pg_current_wal_lsn()")[0][0]
        return bool(self.fetch(self.replica, "SELECT pg_last_wal_replay_lsn() >= $1", lsn)[0][0])


@contextlib.contextmanager
def postgres_replication() -> Iterator[PostgresReplication]:
    cluster = PostgresReplication()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


# -- MariaDB --------------------------------------------------------------------


class MariaDBServer:
    """One private ``mariadbd`` (run as root, its own datadir and port)."""

    def __init__(self, datadir: Path, port: int, server_id: int) -> None:
        self.datadir = datadir
        self.port = port
        self.server_id = server_id
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.datadir.parent / f"mariadb-{self.server_id}.log"

    @property
    def socket(self) -> Path:
        return self.datadir.parent / f"mariadb-{self.server_id}.sock"

    @property
    def dsn(self) -> str:
        return f"mysql://dbgw:dbgw@127.0.0.1:{self.port}/app"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    MARIADBD, "--no-defaults", f"--datadir={self.datadir}", "--user=root",
                    f"--port={self.port}", "--bind-address=127.0.0.1",
                    f"--socket={self.socket}", f"--pid-file={self.datadir}/mariadbd.pid",
                    f"--server-id={self.server_id}", "--log-bin=binlog", "--log-slave-updates",
                    "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M",
                    "--innodb-flush-log-at-trx-commit=0", "--sync-binlog=0",
                    "--skip-name-resolve", "--max-connections=100",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_for(f"MariaDB on port {self.port}", self.ready)

    def ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"mariadbd exited:\n{self.log.read_text(errors='replace')[-2000:]}")
        self.fetch("SELECT 1")
        return True

    def fetch(self, sql: str, *, database: str | None = None) -> list[tuple[Any, ...]]:
        """Runs ``sql`` as root over the server's socket (no grants needed)."""
        import pymysql

        conn = pymysql.connect(
            unix_socket=str(self.socket), user="root", database=database, connect_timeout=5
        )
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                rows = list(cur.fetchall())
            conn.commit()
            return rows
        finally:
            conn.close()

    def kill(self) -> None:
        """SIGKILL: an outage, not a shutdown."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


class MariaDBReplication:
    """A MariaDB primary and one GTID replica of it, with a database ``app``
    and a user ``dbgw`` (password ``dbgw``) on both."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.primary = MariaDBServer(root / "primary", free_port(), 1)
        self.replica = MariaDBServer(root / "replica", free_port(), 2)

    def start(self) -> MariaDBReplication:
        self.root.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                MARIADB_INSTALL_DB, "--no-defaults", f"--datadir={self.primary.datadir}",
                "--user=root", "--skip-test-db", "--auth-root-authentication-method=socket",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        # The replica starts from the same empty datadir: both are at GTID 0.
        shutil.copytree(self.primary.datadir, self.replica.datadir)
        self.primary.start()
        self.replica.start()
        for server in (self.primary, self.replica):
            # Local setup stays out of the binlog: each server has its own.
            for statement in (
                "CREATE USER IF NOT EXISTS 'dbgw'@'127.0.0.1' IDENTIFIED BY 'dbgw'",
                "GRANT ALL PRIVILEGES ON *.* TO 'dbgw'@'127.0.0.1'",
            ):
                self._setup(server, statement)
        self.primary.fetch("CREATE DATABASE app")
        self.replica.fetch(
            f"CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {self.primary.port}, "
            "MASTER_USER = 'dbgw', MASTER_PASSWORD = 'dbgw', MASTER_USE_GTID = slave_pos, "
            "MASTER_CONNECT_RETRY = 1"
        )
        self.replica.fetch("START SLAVE")
        wait_for("the MariaDB replica to have database app", self._has_app)
        return self

    def _setup(self, server: MariaDBServer, statement: str) -> None:
        import pymysql

        conn = pymysql.connect(unix_socket=str(server.socket), user="root", connect_timeout=5)
        try:
            with conn.cursor() as cur:
                cur.execute("SET SESSION sql_log_bin = 0")
                cur.execute(statement)
        finally:
            conn.close()

    def _has_app(self) -> bool:
        return ("app",) in self.replica.fetch("SHOW DATABASES")

    def stop_sql_thread(self) -> None:
        self.replica.fetch("STOP SLAVE SQL_THREAD")

    def start_sql_thread(self) -> None:
        self.replica.fetch("START SLAVE SQL_THREAD")

    def caught_up(self) -> bool:
        position = self.primary.fetch("SELECT @@global.gtid_binlog_pos")[0][0]
        return bool(self.replica.fetch(f"SELECT MASTER_GTID_WAIT('{position}', 0)")[0][0] == 0)

    def stop(self) -> None:
        for server in (self.replica, self.primary):
            try:
                server.stop()
            except Exception:
                server.kill()


@contextlib.contextmanager
def mariadb_replication(root: Path) -> Iterator[MariaDBReplication]:
    cluster = MariaDBReplication(root)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
