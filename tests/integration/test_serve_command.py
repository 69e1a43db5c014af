"""`dbgateway serve` as an operator runs it: start-up errors, zero-setup default,
and the Dockerfile's own install and start commands."""

from __future__ import annotations

import json
import os
import re
import subprocess
import venv
from pathlib import Path

import pytest

from dbgateway.v1 import database_service_pb2 as pb
from dbgateway.v1 import database_service_pb2_grpc
from tests.support import BIN, ROOT, ServerProcess, V


def run_serve(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "dbgateway"), "serve", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def test_a_bad_config_stops_the_start_with_one_line_naming_the_key(tmp_path):
    (tmp_path / "gw.toml").write_text(
        "[databases.orders]\ndsn = 'postgresql://app@127.0.0.1/orders'\npool = { min_size = 5, max_size = 2 }\n"
    )
    result = run_serve("--config", "gw.toml", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "databases.orders.pool.max_size: must be at least min_size (5), got 2" in lines[0]
    assert "Traceback" not in result.stderr


def test_a_missing_secret_names_the_variable(tmp_path):
    (tmp_path / "gw.toml").write_text(
        "[databases.legacy]\ndsn = 'mysql://app:${LEGACY_PASSWORD}@h/x'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "LEGACY_PASSWORD"}
    result = subprocess.run(
        [str(BIN / "dbgateway"), "serve", "--config", "gw.toml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 2
    assert "databases.legacy.dsn: environment variable LEGACY_PASSWORD is not set" in result.stderr


def test_zero_setup_sqlite_keeps_its_data_across_restarts(tmp_path):
    first = ServerProcess(tmp_path).start()
    try:
        with first.channel() as ch:
            stub = database_service_pb2_grpc.DatabaseServiceStub(ch)
            stub.Execute(pb.ExecuteRequest(sql="CREATE TABLE kept (v TEXT)"))
            stub.Execute(
                pb.ExecuteRequest(
                    sql="INSERT INTO kept VALUES (?)", params=[V.of(string_value="still here")]
                )
            )
    finally:
        assert first.stop() == 0
    assert (tmp_path / "dbgateway.sqlite3").exists()
    second = ServerProcess(tmp_path).start()
    try:
        with second.channel() as ch:
            stub = database_service_pb2_grpc.DatabaseServiceStub(ch)
            reply = stub.Query(pb.QueryRequest(database="default", sql="SELECT v FROM kept"))
            assert reply.rows[0].values[0] == V.of(string_value="still here")
    finally:
        second.stop()


def _dockerfile_commands() -> tuple[str, list[str]]:
    text = (ROOT / "Dockerfile").read_text()
    install = re.search(r'RUN pip install "([^"]+)"', text)
    cmd = re.search(r"^CMD (\[.*\])", text, re.MULTILINE)
    assert install, "the Dockerfile's install command changed shape"
    assert cmd, "the Dockerfile's CMD changed shape"

    return install.group(1), json.loads(cmd.group(1))


@pytest.mark.slow
def test_the_dockerfile_install_and_start_commands_work(tmp_path, postgres_dsn):
    """Runs what the image runs: `pip install ".[server]"` into a clean
    environment, then its CMD with a config at the path the image expects
    (relocated under a temporary root, as there is no Docker engine here)."""
    requirement, cmd = _dockerfile_commands()
    assert requirement == ".[server]"
    assert cmd[:2] == ["dbgateway", "serve"]
    env_dir = tmp_path / "image"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", requirement],
        cwd=ROOT,
        check=True,
        timeout=600,
    )
    config_path = Path(cmd[cmd.index("--config") + 1])
    relocated = tmp_path / config_path.relative_to("/")
    relocated.parent.mkdir(parents=True)
    relocated.write_text(
        f'[server]\nlisten = "127.0.0.1:0"\n[databases.app]\ndsn = "{postgres_dsn}"\n'
    )
    proc = ServerProcess(tmp_path / "run")
    proc.workdir.mkdir()
    proc.start_command = [str(env_dir / "bin" / cmd[0]), *cmd[1:-1], str(relocated)]
    proc.start()
    try:
        with proc.channel() as ch:
            stub = database_service_pb2_grpc.DatabaseServiceStub(ch)
            reply = stub.Query(pb.QueryRequest(sql="SELECT 40 + 2 AS answer"))
            assert reply.rows[0].values[0] == V.of(int_value=42)
    finally:
        assert proc.stop() == 0
