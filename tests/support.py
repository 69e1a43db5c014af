"""Shared test helpers: test databases, a real server process, value builders."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from dbgateway.v1 import value_pb2

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

POSTGRES_DSN = os.environ.get(
    "DBGATEWAY_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
MYSQL_DSN = os.environ.get("DBGATEWAY_TEST_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test")

START_POSTGRES = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
START_MARIADB = "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


def unique_name(prefix: str = "dbgw_test") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


# -- PostgreSQL ----------------------------------------------------------------


def _pg(sql: str, dsn: str = POSTGRES_DSN) -> Any:
    import asyncpg

    async def run() -> Any:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            return await conn.fetch(sql)
        finally:
            await conn.close()

    return asyncio.run(run())


def pg_fetch(dsn: str, sql: str) -> list[Any]:
    """Runs SQL directly (not through the gateway) and returns the records."""
    return list(_pg(sql, dsn))


def create_postgres_database() -> str:
    name = unique_name()
    try:
        _pg(f'CREATE DATABASE "{name}"')
    except (OSError, ConnectionError) as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_DSN} ({exc}). Start it with:\n"
            f"  {START_POSTGRES}\nor point DBGATEWAY_TEST_POSTGRES_DSN at another server.",
            pytrace=False,
        )
    return _with_database(POSTGRES_DSN, name)


def drop_postgres_database(dsn: str) -> None:
    name = urlsplit(dsn).path.lstrip("/")
    _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- MariaDB / MySQL -------------------------------------------------------------


def _mysql_connect(database: str | None = None) -> Any:
    import pymysql

    parts = urlsplit(MYSQL_DSN)
    return pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        database=database,
        autocommit=True,
        connect_timeout=5,
    )


def mysql_fetch(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    conn = _mysql_connect(urlsplit(dsn).path.lstrip("/"))
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


def create_mysql_database() -> str:
    name = unique_name()
    try:
        conn = _mysql_connect()
    except Exception as exc:
        pytest.fail(
            f"MariaDB/MySQL is not reachable at {MYSQL_DSN} ({exc}). Start it with:\n"
            f"  {START_MARIADB}\nor point DBGATEWAY_TEST_MYSQL_DSN at another server.",
            pytrace=False,
        )
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    finally:
        conn.close()
    return _with_database(MYSQL_DSN, name)


def drop_mysql_database(dsn: str) -> None:
    conn = _mysql_connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{urlsplit(dsn).path.lstrip('/')}`")
    finally:
        conn.close()


# -- A real server -------------------------------------------------------------

_LISTENING = re.compile(r"dbgateway listening on (\S+):(\d+)")


@dataclass
class ServerProcess:
    """``dbgateway serve`` in a subprocess, on a port the OS picked."""

    workdir: Path
    config: str | None = None
    args: list[str] = field(default_factory=list)
    env: Mapping[str, str] | None = None
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    #: The command to run instead of this environment's ``dbgateway serve``.
    start_command: list[str] | None = None
    #: The CA that signed the server's certificate: the server speaks TLS.
    tls_ca: Path | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 30.0) -> ServerProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = self.start_command or [str(BIN / "dbgateway"), "serve", "--listen", "127.0.0.1:0"]
        if self.config is not None:
            path = self.workdir / "dbgateway.toml"
            path.write_text(self.config)
            cmd += ["--config", str(path)]
        cmd += self.args
        env = dict(os.environ)
        env.update(self.env or {})
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                cmd, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log())
            if match:
                self.port = int(match.group(2))
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited {self.process.returncode}:\n{self.log()}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not start within {timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 20.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def channel(
        self, *, cert: Path | None = None, key: Path | None = None, token: str | None = None
    ) -> grpc.Channel:
        """A channel to the server: TLS when the server speaks it (with a
        client certificate when given), sending ``token`` as a bearer token."""
        if self.tls_ca is None:
            return grpc.insecure_channel(self.address)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.tls_ca.read_bytes(),
            private_key=key.read_bytes() if key else None,
            certificate_chain=cert.read_bytes() if cert else None,
        )
        if token is not None:
            credentials = grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(token)
            )
        return grpc.secure_channel(self.address, credentials)


# -- Values and errors -----------------------------------------------------------


class V:
    """Builders for ``Value`` messages."""

    @staticmethod
    def null() -> value_pb2.Value:
        return value_pb2.Value(null_value="NULL_VALUE")

    @staticmethod
    def of(**kind: Any) -> value_pb2.Value:
        return value_pb2.Value(**kind)

    @staticmethod
    def ts(when: dt.datetime) -> value_pb2.Value:
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(when)
        return value_pb2.Value(timestamp_value=stamp)

    @staticmethod
    def list(*items: value_pb2.Value) -> value_pb2.Value:
        return value_pb2.Value(list_value=value_pb2.ListValue(values=list(items)))


@dataclass
class CallError:
    code: grpc.StatusCode
    message: str
    reason: str
    metadata: dict[str, str]
    retry_delay: float | None
    field_violations: list[tuple[str, str]]


def call_error(exc: grpc.RpcError) -> CallError:
    """Decodes the ``google.rpc.Status`` details of a failed call."""
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    reason, metadata, delay, violations = "", {}, None, []
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                delay = retry.retry_delay.ToTimedelta().total_seconds()
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations = [(v.field, v.description) for v in bad.field_violations]
    return CallError(
        exc.code(),  # type: ignore[attr-defined]
        exc.details() or "",  # type: ignore[attr-defined]
        reason,
        metadata,
        delay,
        violations,
    )
