"""What the gateway tells whom: passwords in DSNs never reach the log, a
metrics endpoint beyond loopback is refused like the main port, and an unknown
database name lists only the databases the caller may use."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc as pb_grpc
from tests.support import BIN, ServerProcess, call_error

pytestmark = pytest.mark.postgres

PASSWORD = "pw-in-the-query-string-7731"
TOKEN = "narrow-principal-token"


def serve_once(tmp_path: Path, config: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "gw.toml").write_text(config)
    return subprocess.run(
        [str(BIN / "dbgateway"), "serve", "--config", "gw.toml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ),
    )


@pytest.fixture(scope="module")
def narrow(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[ServerProcess]:
    """A gateway whose PostgreSQL DSN carries ``?password=`` (trust auth lets
    it in anyway) and whose only principal may use ``lite`` alone."""
    workdir = tmp_path_factory.mktemp("exposure")
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    config = f"""
[databases.pg]
dsn = "{postgres_dsn}?password={PASSWORD}&application_name=gw"

[databases.lite]
dsn = "sqlite://{workdir / "lite.sqlite3"}"

[databases.payroll_secret]
dsn = "sqlite://{workdir / "payroll.sqlite3"}"

[[principals]]
name = "narrow"
token_sha256 = "{digest}"
databases = {{ lite = "write" }}
"""
    server = ServerProcess(workdir, config=config).start()
    try:
        yield server
    finally:
        server.stop()


def test_a_password_in_the_dsn_query_string_is_never_logged(narrow: ServerProcess):
    log = narrow.log()
    assert "database pg:" in log  # the start line naming the DSN was written
    assert PASSWORD not in log
    assert "password=***" in log


def test_an_unknown_database_lists_only_what_the_principal_may_use(narrow: ServerProcess):
    with narrow.channel() as channel:
        stub = pb_grpc.DatabaseServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Query(
                pb.QueryRequest(database="nope", sql="SELECT 1"),
                metadata=[("authorization", f"Bearer {TOKEN}")],
                timeout=10,
            )
    err = call_error(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_DATABASE")
    assert "lite" in err.message
    assert "payroll_secret" not in err.message
    assert "pg" not in err.message.replace("'nope'", "")


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0"])
def test_metrics_beyond_loopback_are_refused_without_allow_insecure(tmp_path, listen):
    result = serve_once(
        tmp_path,
        f'[server]\nmetrics_listen = "{listen}"\n\n'
        f'[databases.lite]\ndsn = "sqlite://{tmp_path / "x.sqlite3"}"\n',
    )
    assert result.returncode == 2, result.stderr
    assert "server.metrics_listen" in result.stderr
    assert "allow_insecure" in result.stderr
    assert "Traceback" not in result.stderr


def test_metrics_beyond_loopback_start_with_allow_insecure(tmp_path):
    server = ServerProcess(
        tmp_path,
        config=f'[server]\nmetrics_listen = "0.0.0.0:0"\nallow_insecure = true\n\n'
        f'[databases.lite]\ndsn = "sqlite://{tmp_path / "x.sqlite3"}"\n',
    ).start()
    try:
        assert "metrics listening on" in server.log()
    finally:
        server.stop()
